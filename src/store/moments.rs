//! Pure: a search's scored frames merged into moments.
//!
//! Every stored frame in the window gets its cosine with the text. The frames that stand out are
//! the hits: a score at least halfway from the median frame's score to the best one (the median
//! stands for "what the camera usually sees"; with one frame, it is its own hit). Hits of one
//! camera at most `gap` apart form a moment (its range, its best frame); moments come best
//! first.

use crate::event::format_millis;

/// One scored frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// Milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// The camera's name.
    pub camera: String,
    /// The frame's sequence number.
    pub frame: u64,
    /// Its cosine with the text.
    pub score: f32,
    /// The thumbnail's path or address, when one is stored.
    pub thumbnail: Option<String>,
}

/// Neighbouring hits of one camera.
#[derive(Debug, Clone, PartialEq)]
pub struct Moment {
    /// The best-scoring frame of the moment.
    pub best: Hit,
    /// The first hit's time (ms since the epoch).
    pub start_ms: i64,
    /// The last hit's time.
    pub end_ms: i64,
    /// The first and last hits' frame numbers.
    pub frames: (u64, u64),
    /// How many hits it merges.
    pub hits: usize,
}

impl Moment {
    /// The moment as `edgeclip search --json` prints it and `/api/search` lists it:
    /// `{"ts", "camera", "frame", "score", "thumbnail", "start", "end", "frames"}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "ts": format_millis(self.best.ts_ms),
            "camera": self.best.camera,
            "frame": self.best.frame,
            "score": self.best.score,
            "thumbnail": self.best.thumbnail,
            "start": format_millis(self.start_ms),
            "end": format_millis(self.end_ms),
            "frames": [self.frames.0, self.frames.1],
        })
    }
}

/// The score a frame needs to be a hit: halfway from the median score to the best.
pub fn hit_threshold(scores: &[f32]) -> Option<f32> {
    let mut s: Vec<f32> = scores.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(f32::total_cmp);
    let median = s[(s.len() - 1) / 2];
    let best = s[s.len() - 1];
    Some(median + (best - median) / 2.0)
}

/// Keeps the hits of `frames` (any order, [`hit_threshold`]) and merges them into moments, best
/// first, at most `limit`.
pub fn moments(mut frames: Vec<Hit>, gap_ms: i64, limit: usize) -> Vec<Moment> {
    let scores: Vec<f32> = frames.iter().map(|h| h.score).collect();
    let Some(threshold) = hit_threshold(&scores) else {
        return Vec::new();
    };
    frames.retain(|h| h.score >= threshold);
    merge(frames, gap_ms, limit)
}

/// Merges `hits` (any order, all of them hits) into moments, best first, at most `limit`.
pub fn merge(mut frames: Vec<Hit>, gap_ms: i64, limit: usize) -> Vec<Moment> {
    frames.sort_by(|a, b| a.camera.cmp(&b.camera).then(a.ts_ms.cmp(&b.ts_ms)));
    let mut out: Vec<Moment> = Vec::new();
    for h in frames {
        if let Some(m) = out.last_mut()
            && m.best.camera == h.camera
            && h.ts_ms - m.end_ms <= gap_ms
        {
            m.end_ms = h.ts_ms;
            m.frames.1 = h.frame;
            m.hits += 1;
            if h.score > m.best.score {
                m.best = h;
            }
            continue;
        }
        out.push(Moment {
            start_ms: h.ts_ms,
            end_ms: h.ts_ms,
            frames: (h.frame, h.frame),
            hits: 1,
            best: h,
        });
    }
    out.sort_by(|a, b| b.best.score.total_cmp(&a.best.score));
    out.truncate(limit);
    out
}
