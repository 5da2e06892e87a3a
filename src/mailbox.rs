//! The one-item mailbox between a producer thread and a consumer: a newer item replaces an
//! unread one, which counts as dropped, so nothing queues without bound and the consumer always
//! gets the freshest item.
//!
//! It exists once for every hand-over of frames: between the daemon's capture thread and its
//! inference loop, and between a pipe source's reader thread and `next_frame`. The pure part is
//! [`Slot`] (what replaces what, what counts as dropped); [`Mailbox`] puts it behind a `Mutex`
//! and a `Condvar`, with the waits both sides need ([`Delivery::Lossless`] makes the producer
//! wait instead of replacing). Nothing here reads a clock except to bound a wait, and nothing
//! here does I/O.
//!
//! State that must change under the same lock as the slot (a source's error queue, the
//! daemon's capture counters) lives in the mailbox too, as its owner's `extra` value.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How a producer hands items over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Delivery {
    /// Keep only the freshest frame; replaced frames are dropped and counted (live cameras).
    #[default]
    Freshest,
    /// Wait until the previous frame was taken: nothing is dropped (replaying a recording in a
    /// test or an evaluation).
    Lossless,
}

/// One slot: at most one unread item, and the counts of what went through it.
///
/// Every item put is, at any time, exactly one of: taken, dropped (replaced before it was
/// taken) or waiting in the slot: `put() == taken() + dropped() + is_full() as u64`.
#[derive(Debug)]
pub struct Slot<T> {
    item: Option<T>,
    put: u64,
    taken: u64,
    dropped: u64,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot {
            item: None,
            put: 0,
            taken: 0,
            dropped: 0,
        }
    }
}

impl<T> Slot<T> {
    /// Puts `item` in the slot. An unread item there is replaced, counted as dropped and
    /// returned (so that the caller can free it outside a lock).
    pub fn put(&mut self, item: T) -> Option<T> {
        self.put += 1;
        let replaced = self.item.replace(item);
        if replaced.is_some() {
            self.dropped += 1;
        }
        replaced
    }

    /// Takes the unread item, if any.
    pub fn take(&mut self) -> Option<T> {
        let item = self.item.take();
        if item.is_some() {
            self.taken += 1;
        }
        item
    }

    /// The unread item, left in the slot.
    pub fn peek(&self) -> Option<&T> {
        self.item.as_ref()
    }

    /// Whether an unread item waits in the slot.
    pub fn is_full(&self) -> bool {
        self.item.is_some()
    }

    /// Items put since the start.
    pub fn put_count(&self) -> u64 {
        self.put
    }

    /// Items taken since the start.
    pub fn taken(&self) -> u64 {
        self.taken
    }

    /// Items replaced by a newer one before they were taken, since the start.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// What a [`Mailbox`]'s lock guards: the slot, whether the producer is done, and the owner's
/// `extra` state.
#[derive(Debug)]
pub struct Shared<T, S> {
    slot: Slot<T>,
    closed: bool,
    /// Producers waiting in a lossless [`Mailbox::put`] for the slot to empty.
    waiting_to_put: usize,
    /// State the owner changes under the same lock as the slot.
    pub extra: S,
}

impl<T, S> Shared<T, S> {
    /// The slot and its counts.
    pub fn slot(&self) -> &Slot<T> {
        &self.slot
    }

    /// Takes the unread item, if any (a producer waiting in a lossless put is woken when the
    /// [`Mailbox::wait_for`] that took it returns).
    pub fn take(&mut self) -> Option<T> {
        self.slot.take()
    }

    /// Whether the producer said it is done ([`Mailbox::close`]).
    pub fn is_closed(&self) -> bool {
        self.closed
    }
}

/// How often a waiting producer re-checks its `cancelled` condition, which may be a flag set
/// without the lock (a signal handler's).
const PUT_POLL: Duration = Duration::from_millis(50);

/// A [`Slot`] shared between threads, with the owner's `extra` state under the same lock.
#[derive(Debug)]
pub struct Mailbox<T, S = ()> {
    shared: Mutex<Shared<T, S>>,
    changed: Condvar,
}

impl<T, S: Default> Default for Mailbox<T, S> {
    fn default() -> Self {
        Mailbox::new(S::default())
    }
}

impl<T, S> Mailbox<T, S> {
    /// An empty mailbox, open, with the owner's `extra` state.
    pub fn new(extra: S) -> Self {
        Mailbox {
            shared: Mutex::new(Shared {
                slot: Slot::default(),
                closed: false,
                waiting_to_put: 0,
                extra,
            }),
            changed: Condvar::new(),
        }
    }

    /// Locks the shared state. Waiters are not woken by changes made through the guard: call
    /// [`Mailbox::notify`] after changing what they wait for.
    pub fn lock(&self) -> MutexGuard<'_, Shared<T, S>> {
        // A poisoned lock only means the other thread panicked; the state is still consistent.
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes every thread waiting in [`Mailbox::put`] or [`Mailbox::wait_for`], to re-check.
    pub fn notify(&self) {
        self.changed.notify_all();
    }

    /// Hands `item` over. With [`Delivery::Freshest`] it replaces an unread item (counted as
    /// dropped); with [`Delivery::Lossless`] it first waits until the slot is empty, unless
    /// `cancelled()` (checked at least every 50 ms) says to stop waiting, in which case the
    /// unread item is replaced after all.
    pub fn put(&self, item: T, delivery: Delivery, cancelled: impl Fn() -> bool) {
        let mut s = self.lock();
        if delivery == Delivery::Lossless {
            while s.slot.is_full() && !cancelled() {
                s.waiting_to_put += 1;
                s = self.wait(s, PUT_POLL);
                s.waiting_to_put -= 1;
            }
        }
        let replaced = s.slot.put(item);
        drop(s);
        self.changed.notify_all();
        drop(replaced);
    }

    /// Says that the producer is done: nothing more will be put.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// Calls `ready` under the lock until it returns a value, waiting for a change in between
    /// (and re-checking at least every `poll`, for conditions set without the lock). Gives up at
    /// `deadline` (after a last call of `ready`), returning the lock still held as `Err`.
    pub fn wait_for<R>(
        &self,
        deadline: Option<Instant>,
        poll: Option<Duration>,
        mut ready: impl FnMut(&mut Shared<T, S>) -> Option<R>,
    ) -> Result<R, MutexGuard<'_, Shared<T, S>>> {
        let mut s = self.lock();
        loop {
            if let Some(r) = ready(&mut s) {
                let wake = s.waiting_to_put > 0 && !s.slot.is_full();
                drop(s);
                if wake {
                    self.changed.notify_all();
                }
                return Ok(r);
            }
            let now = Instant::now();
            let left = match deadline {
                Some(d) if d <= now => return Err(s),
                Some(d) => Some(d - now),
                None => None,
            };
            s = match (left, poll) {
                (Some(l), Some(p)) => self.wait(s, l.min(p)),
                (Some(d), None) | (None, Some(d)) => self.wait(s, d),
                (None, None) => self.changed.wait(s).unwrap_or_else(|p| p.into_inner()),
            };
        }
    }

    fn wait<'a>(
        &'a self,
        s: MutexGuard<'a, Shared<T, S>>,
        at_most: Duration,
    ) -> MutexGuard<'a, Shared<T, S>> {
        self.changed
            .wait_timeout(s, at_most)
            .map(|r| r.0)
            .unwrap_or_else(|p| p.into_inner().0)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Put,
        Take,
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        proptest::collection::vec(prop_oneof![Just(Op::Put), Just(Op::Take)], 0..200)
    }

    proptest! {
        /// Against a model: a take returns the latest item put since the last take, every
        /// replaced item is counted once, and every item is taken, dropped or still waiting.
        #[test]
        fn slot_keeps_the_freshest_and_counts_every_drop(ops in ops()) {
            let mut slot = Slot::default();
            let mut next = 0u64;
            let mut pending: Option<u64> = None;
            let (mut taken, mut dropped) = (0u64, 0u64);
            for op in ops {
                match op {
                    Op::Put => {
                        let replaced = slot.put(next);
                        prop_assert_eq!(replaced, pending);
                        dropped += u64::from(pending.is_some());
                        pending = Some(next);
                        next += 1;
                    }
                    Op::Take => {
                        let got = slot.take();
                        prop_assert_eq!(got, pending.take());
                        taken += u64::from(got.is_some());
                    }
                }
                prop_assert_eq!(slot.put_count(), next);
                prop_assert_eq!(slot.taken(), taken);
                prop_assert_eq!(slot.dropped(), dropped);
                prop_assert_eq!(
                    slot.put_count(),
                    slot.taken() + slot.dropped() + u64::from(slot.is_full())
                );
            }
        }
    }

    /// Consumes everything from `mailbox` until it is closed and empty, sleeping `pause` after
    /// each item; returns the items in the order taken.
    fn consume(mailbox: &Mailbox<u32>, pause: Duration) -> Vec<u32> {
        let mut got = Vec::new();
        while let Ok(Some(i)) = mailbox.wait_for(None, None, |s| match s.take() {
            Some(i) => Some(Some(i)),
            None if s.is_closed() => Some(None),
            None => None,
        }) {
            got.push(i);
            std::thread::sleep(pause);
        }
        got
    }

    #[test]
    fn lossless_delivers_every_item_in_order_to_a_slow_consumer() {
        let mailbox = Arc::new(Mailbox::<u32>::default());
        let producer = {
            let mailbox = mailbox.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    mailbox.put(i, Delivery::Lossless, || false);
                }
                mailbox.close();
            })
        };
        let got = consume(&mailbox, Duration::from_millis(1));
        producer.join().unwrap();
        assert_eq!(got, (0..50).collect::<Vec<_>>());
        let s = mailbox.lock();
        assert_eq!((s.slot().put_count(), s.slot().dropped()), (50, 0));
    }

    #[test]
    fn freshest_drops_for_a_slow_consumer_and_counts_it() {
        let mailbox = Arc::new(Mailbox::<u32>::default());
        let producer = {
            let mailbox = mailbox.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    mailbox.put(i, Delivery::Freshest, || false);
                }
                mailbox.close();
            })
        };
        let got = consume(&mailbox, Duration::from_millis(2));
        producer.join().unwrap();
        let s = mailbox.lock();
        assert_eq!(s.slot().put_count(), 200);
        assert_eq!(got.len() as u64 + s.slot().dropped(), 200, "{got:?}");
        assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
        // The last item is never replaced, so it is always delivered.
        assert_eq!(got.last(), Some(&199));
    }

    #[test]
    fn a_cancelled_lossless_put_replaces_the_unread_item() {
        let mailbox = Mailbox::<u32>::default();
        let stop = AtomicBool::new(false);
        mailbox.put(1, Delivery::Lossless, || stop.load(Ordering::Relaxed));
        stop.store(true, Ordering::Relaxed);
        mailbox.put(2, Delivery::Lossless, || stop.load(Ordering::Relaxed));
        let mut s = mailbox.lock();
        assert_eq!(s.take(), Some(2));
        assert_eq!(s.slot().dropped(), 1);
    }

    #[test]
    fn wait_for_gives_up_at_the_deadline_with_the_lock_held() {
        let mailbox = Mailbox::<u32, u8>::new(7);
        let t = Instant::now();
        let waited = mailbox.wait_for(Some(t + Duration::from_millis(30)), None, |s| s.take());
        let Err(guard) = waited else {
            panic!("nothing was put")
        };
        assert!(t.elapsed() >= Duration::from_millis(30));
        assert_eq!(guard.extra, 7);
    }

    #[test]
    fn wait_for_sees_a_condition_set_without_the_lock_within_the_poll() {
        let mailbox = Mailbox::<u32>::default();
        let flag = Arc::new(AtomicBool::new(false));
        let setter = {
            let flag = flag.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                flag.store(true, Ordering::Relaxed);
            })
        };
        let waited = mailbox.wait_for(None, Some(Duration::from_millis(5)), |_| {
            flag.load(Ordering::Relaxed).then_some(())
        });
        assert!(waited.is_ok());
        setter.join().unwrap();
    }
}
