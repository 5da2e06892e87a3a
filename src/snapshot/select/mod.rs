//! Which frame of an event's first moments becomes its snapshot.
//!
//! A start event fires on the frame that completed the trigger's `enter_frames` run, which is
//! rarely the clearest view: the object is often still sliding in. So each start opens a
//! *window* for its label, `window` long; every frame inside it is offered with the label's
//! score, and the best one is kept. The window closes at the first frame past its time, when
//! the label ends earlier, or at shutdown, and then names the frame to write for its event.
//!
//! The code is pure, like the trigger's: time comes in as a [`Duration`] since a fixed origin,
//! nothing here reads a clock, and a frame is an opaque `T` that the caller makes only when
//! asked. [`Selector::offer`] takes a closure that makes it (the daemon moves the frame it owns
//! into an `Arc`), called only when the frame beats the best of some open window and then once:
//! a frame that improves nothing is never copied or kept, and one that improves several windows
//! is made once and cloned (cheaply, as an `Arc`) into each.

use std::time::Duration;

/// The best frame of a window so far.
#[derive(Debug, Clone)]
struct Best<T> {
    score: f32,
    at: Duration,
    frame: T,
}

/// One label's open window.
#[derive(Debug)]
struct Window<K, T> {
    label: usize,
    key: K,
    /// Frames taken after this time are not part of the window.
    until: Duration,
    best: Option<Best<T>>,
}

/// A closed window: write `frame` as the snapshot of the event `key`.
#[derive(Debug, Clone, PartialEq)]
pub struct Chosen<K, T> {
    /// The label the window was opened for.
    pub label: usize,
    /// The event's key, as given to [`Selector::open`] (the daemon: the snapshot's path).
    pub key: K,
    /// The best frame offered while the window was open.
    pub frame: T,
    /// Its score.
    pub score: f32,
    /// When it was taken (the time its offer came with).
    pub at: Duration,
}

/// Whether `score` beats `best`: higher wins, a tie keeps the earlier frame, NaN never wins
/// against a number (but a first frame is always kept, whatever its score).
fn beats(score: f32, best: Option<f32>) -> bool {
    match best {
        None => true,
        Some(b) => !score.is_nan() && (b.is_nan() || score > b),
    }
}

/// The open windows of one camera's labels, at most one per label.
#[derive(Debug)]
pub struct Selector<K, T> {
    window: Duration,
    /// In the order they were opened (a few at most: one per active label).
    open: Vec<Window<K, T>>,
}

impl<K, T: Clone> Selector<K, T> {
    /// No window open; each start will look `window` ahead (zero: only the start frame).
    pub fn new(window: Duration) -> Selector<K, T> {
        Selector {
            window,
            open: Vec::new(),
        }
    }

    /// How long each window lasts.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Whether a window is open for `label`.
    pub fn is_open(&self, label: usize) -> bool {
        self.open.iter().any(|w| w.label == label)
    }

    /// The number of open windows.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Whether no window is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Opens a window for the event `key` of `label`, which started at `now`; frames taken
    /// from `now` to `now + window` (both included) are its candidates. Offer the start frame
    /// next. A window still open for the label (a second start without an end, which the
    /// trigger never does) is closed first and returned.
    pub fn open(&mut self, label: usize, key: K, now: Duration) -> Option<Chosen<K, T>> {
        let previous = self.close(label);
        self.open.push(Window {
            label,
            key,
            until: now.saturating_add(self.window),
            best: None,
        });
        previous
    }

    /// Offers the frame taken at `now` to every open window whose time is not up: `score`
    /// gives its score for a label. `make` is called (once) when the frame beats the best of
    /// at least one window; returns how many windows it improved.
    pub fn offer(
        &mut self,
        now: Duration,
        score: impl Fn(usize) -> f32,
        make: impl FnOnce() -> T,
    ) -> usize {
        let improves = |w: &Window<K, T>| {
            now <= w.until && beats(score(w.label), w.best.as_ref().map(|b| b.score))
        };
        // Counted first, so that the frame is made only when needed and nothing is allocated.
        let count = self.open.iter().filter(|w| improves(w)).count();
        if count == 0 {
            return 0;
        }
        let mut frame = Some(make());
        let mut left = count;
        for w in &mut self.open {
            if !improves(w) {
                continue;
            }
            left -= 1;
            // The last window takes the frame itself, the others a clone.
            let kept = if left == 0 {
                frame.take()
            } else {
                frame.clone()
            };
            let Some(kept) = kept else { break };
            w.best = Some(Best {
                score: score(w.label),
                at: now,
                frame: kept,
            });
        }
        count
    }

    /// Closes the windows whose time is up at `now` (`now` is past their start plus the
    /// window), in the order they were opened. A window no frame was offered to closes
    /// without a result.
    pub fn expire(&mut self, now: Duration) -> Vec<Chosen<K, T>> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.open.len() {
            if now > self.open[i].until {
                out.extend(Self::chosen(self.open.remove(i)));
            } else {
                i += 1;
            }
        }
        out
    }

    /// Closes `label`'s window (the label ended): its best frame so far, if it has one.
    pub fn close(&mut self, label: usize) -> Option<Chosen<K, T>> {
        let i = self.open.iter().position(|w| w.label == label)?;
        Self::chosen(self.open.remove(i))
    }

    /// Closes every window (shutdown, reload), in the order they were opened.
    pub fn close_all(&mut self) -> Vec<Chosen<K, T>> {
        self.open.drain(..).filter_map(Self::chosen).collect()
    }

    fn chosen(w: Window<K, T>) -> Option<Chosen<K, T>> {
        let best = w.best?;
        Some(Chosen {
            label: w.label,
            key: w.key,
            frame: best.frame,
            score: best.score,
            at: best.at,
        })
    }
}

#[cfg(test)]
mod tests;
