//! What the queue drops, and why: room for a new event when it is full (the oldest episode
//! goes whole), events past `max_age`, and the ends of episodes whose start went; and the
//! `"replayed":true` mark of an event that waited for a (re)connect. The rule is stated in
//! [`super`]'s documentation.

use std::time::SystemTime;

use super::{Queue, Refused};
use crate::sink::mqtt::topics::Watched;

impl Queue {
    /// Before `watched`'s event (`on`: a start) joins the queue: drops the end of an episode
    /// whose start was dropped (`Err`), and when `capacity` events wait, makes room by dropping
    /// the oldest waiting episode (of any camera); returns the ids dropped for room. Counts
    /// every drop.
    pub(super) fn make_room(&mut self, watched: &Watched, on: bool) -> Result<Vec<u64>, Refused> {
        self.drop_orphan_end(watched, on, vec![])?;
        let mut evicted = Vec::new();
        if self.events.len() >= self.settings.capacity.max(1) {
            // The oldest start not in flight, else the oldest end not in flight.
            let waiting = self.sent..self.events.len();
            let victim = waiting
                .clone()
                .find(|&i| self.events[i].start && self.droppable(i))
                .or_else(|| waiting.clone().find(|&i| self.droppable(i)));
            match victim {
                Some(i) => evicted = self.drop_episode(i, false),
                None => {
                    if on {
                        self.orphans.insert(watched.clone(), false);
                    }
                    self.dropped_full += 1;
                    return Err(Refused::Full {
                        queued: self.events.len(),
                        dropped: self.dropped(),
                    });
                }
            }
            self.dropped_full += evicted.len() as u64;
        }
        // The room may have been made by dropping this end's own start.
        self.drop_orphan_end(watched, on, evicted)
    }

    /// Drops `watched`'s event when it is the end (`!on`) of an episode whose start was
    /// dropped; else hands `evicted` back. A start clears the mark (the old episode never
    /// ends).
    fn drop_orphan_end(
        &mut self,
        watched: &Watched,
        on: bool,
        evicted: Vec<u64>,
    ) -> Result<Vec<u64>, Refused> {
        match self.orphans.remove(watched) {
            Some(old) if !on => {
                if old {
                    self.dropped_old += 1;
                } else {
                    self.dropped_full += 1;
                }
                Err(Refused::StartDropped {
                    dropped: self.dropped(),
                    evicted,
                })
            }
            _ => Ok(evicted),
        }
    }

    /// Whether the event at `index` may be dropped: not acknowledged, and not a start whose end
    /// was acknowledged already (out of order, in an earlier session): that end is delivered,
    /// so its start must be too.
    fn droppable(&self, index: usize) -> bool {
        let q = &self.events[index];
        if q.acked {
            return false;
        }
        !q.start
            || !(index + 1..self.events.len())
                .find(|&i| self.events[i].watched == q.watched)
                .is_some_and(|i| !self.events[i].start && self.events[i].acked)
    }

    /// Removes the waiting (not in flight) event at `index` and, when it is a start, its
    /// episode's end: the next end of that watched thing when it waits, else its end to come.
    /// Returns the ids removed, oldest first; counts nothing (`old`: dropped for age, how the
    /// end to come will be counted).
    pub(super) fn drop_episode(&mut self, index: usize, old: bool) -> Vec<u64> {
        let Some(q) = self.events.remove(index) else {
            return vec![];
        };
        let mut ids = vec![q.id];
        if q.start {
            match (index..self.events.len()).find(|&i| self.events[i].watched == q.watched) {
                // Its end, unless already acknowledged (out of order): that one is delivered.
                Some(i) if !self.events[i].start && !self.events[i].acked => {
                    ids.extend(self.events.remove(i).map(|e| e.id));
                }
                Some(_) => {}
                None => {
                    self.orphans.insert(q.watched, old);
                }
            }
        }
        // An event acknowledged out of order that only waited for this one is delivered now.
        self.pop_delivered();
        ids
    }

    /// Drops every waiting (not in flight) event whose `ts` is older than `max_age` at `now`,
    /// with the ends of the starts among them; returns their ids. Call it before handing
    /// messages over, so no event is sent older than the limit.
    pub fn expire(&mut self, now: SystemTime) -> Vec<u64> {
        let Some(max_age) = self.settings.max_age else {
            return vec![];
        };
        let mut ids = Vec::new();
        let mut i = self.sent;
        while i < self.events.len() {
            let q = &self.events[i];
            let old = now.duration_since(q.ts).is_ok_and(|age| age > max_age);
            if old && self.droppable(i) {
                ids.extend(self.drop_episode(i, true));
                // The front may have moved (events delivered): look again from the start.
                i = self.sent;
            } else {
                i += 1;
            }
        }
        self.dropped_old += ids.len() as u64;
        ids
    }
}

/// An event's JSON object with `"replayed":true` added as its last member: what an event that
/// waited for a (re)connect is sent as (its `ts` and everything else unchanged).
pub fn replayed(payload: &[u8]) -> Vec<u8> {
    match payload.iter().rposition(|&b| b == b'}') {
        Some(end) => {
            let body = &payload[..end];
            let empty = body.iter().rev().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
            let mut out = body.to_vec();
            out.extend_from_slice(if empty {
                b"\"replayed\":true"
            } else {
                b",\"replayed\":true"
            });
            out.extend_from_slice(&payload[end..]);
            out
        }
        None => payload.to_vec(),
    }
}
