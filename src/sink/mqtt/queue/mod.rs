//! The MQTT sink's delivery queue: what to send next, and what a broker's answer settles.
//!
//! Delivery is where the sink's promises live (accepted events are never lost within the
//! bound, never reordered within a session, every label's retained state ends equal to its
//! last event), and those promises are about orderings of events a live broker rarely shows:
//! a disconnect between a write and its PUBACK, a reconnect with half the window in flight.
//! So the logic is a state machine with no locks, no I/O, no clock and no rumqttc client: the
//! connection thread ([`super::worker`]) feeds it the events of delivery and hands rumqttc
//! what it says to send, and the tests drive it through any interleaving they like.
//!
//! The events of delivery:
//!
//! - [`Queue::accept`]: an event to deliver. Bounded: when `capacity` events wait, it is refused
//!   and counted.
//! - [`Queue::next_to_send`] / [`Queue::sent`]: the next message for rumqttc, while fewer than
//!   `window` messages are in flight: connect-time and best-effort messages first, then the
//!   accepted events in order, then (once every event is handed over) the labels' states, then
//!   their snapshots.
//! - [`Queue::offer_snapshot`]: a label's latest snapshot (retained). Like a state, only the
//!   latest per label is kept and delivered, after a reconnect too: memory is one JPEG per
//!   label.
//! - [`Queue::written`]: rumqttc wrote a PUBLISH (and gave it its packet id); this completes a
//!   QoS 0 message.
//! - [`Queue::acked`]: a PUBACK (QoS 1) or PUBREC (QoS 2) completes the message with that
//!   packet id. An event leaves the queue once it and every older event are acknowledged.
//! - [`Queue::connected`]: on every (re)connect: `online`, the discovery configs, the retained
//!   state of every label, every unacknowledged event again, in order, and every label's latest
//!   snapshot.
//! - [`Queue::disconnected`]: whatever was in flight is to be sent again, in order.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rumqttc::QoS;

use super::topics::Topics;

/// Most best-effort messages (statistics) waiting to be sent; more are dropped.
const MAX_BEST_EFFORT: usize = 8;

/// One message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The topic.
    pub topic: String,
    /// The payload.
    pub payload: Vec<u8>,
    /// The QoS to publish with.
    pub qos: QoS,
    /// The retain flag.
    pub retain: bool,
}

/// What a message in flight is, so its completion can be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    /// An accepted event, by the id [`Queue::accept`] returned.
    Event(u64),
    /// Anything regenerated on each connect (availability, discovery, state) or best effort
    /// (statistics).
    Other,
}

/// The next message for rumqttc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToSend {
    /// What it is.
    pub tag: Tag,
    /// The message.
    pub message: Message,
}

/// Why [`Queue::accept`] refused an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// [`Queue::close`] was called.
    Closed,
    /// `capacity` events are waiting; the event was dropped and counted.
    Full {
        /// Events waiting (the capacity).
        queued: usize,
        /// Events dropped so far, this one included.
        dropped: u64,
    },
}

/// The fixed parameters of a [`Queue`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// The topics of the camera.
    pub topics: Topics,
    /// The labels whose state is published (each starts `OFF`) and, with `discovery`, whose
    /// discovery configs are.
    pub labels: Vec<String>,
    /// The QoS of events, states, availability and discovery (statistics use QoS 0).
    pub qos: QoS,
    /// Publish Home Assistant discovery configs on connect.
    pub discovery: bool,
    /// The daemon writes snapshots: with `discovery`, each label also gets an `image` entity.
    pub snapshots: bool,
    /// Most accepted events waiting for their acknowledgement (at least 1).
    pub capacity: usize,
    /// Most messages in flight: handed to rumqttc and not yet completed (at least 1).
    pub window: usize,
}

/// A message handed to rumqttc and not yet completed.
#[derive(Debug)]
struct Inflight {
    tag: Tag,
    qos: QoS,
    /// Set when rumqttc reports the packet as written.
    pkid: Option<u16>,
}

/// An accepted event.
#[derive(Debug)]
struct Queued {
    id: u64,
    message: Message,
    acked: bool,
}

/// The delivery state of one MQTT sink. See the module documentation.
#[derive(Debug)]
pub struct Queue {
    settings: Settings,
    connected: bool,
    /// `close` started: no new events are accepted, no `online` is sent.
    closing: bool,
    /// Accepted events not yet acknowledged, oldest first; ids are contiguous. An event
    /// acknowledged out of order stays (marked) until every older one is acknowledged.
    events: VecDeque<Queued>,
    /// Entries of `events` handed to rumqttc in this session (always a prefix).
    sent: usize,
    next_id: u64,
    /// Messages handed to rumqttc and not yet completed, in send order.
    inflight: VecDeque<Inflight>,
    /// Connect-time and best-effort messages, sent before the events.
    control: VecDeque<Message>,
    /// The latest state of every label.
    states: BTreeMap<String, bool>,
    /// Labels whose state must be (re)sent once the events are through.
    dirty: BTreeSet<String>,
    /// The latest snapshot (JPEG) of every label that has one.
    snapshots: BTreeMap<String, Vec<u8>>,
    /// Labels whose snapshot must be (re)sent once the states are through.
    dirty_snapshots: BTreeSet<String>,
    dropped: u64,
    delivered: u64,
}

/// Where the next message comes from.
enum Source {
    Control,
    Event,
    State,
    Snapshot,
}

impl Queue {
    /// An empty queue, disconnected, every label `OFF`.
    pub fn new(settings: Settings) -> Queue {
        let states = settings.labels.iter().map(|l| (l.clone(), false)).collect();
        Queue {
            settings,
            connected: false,
            closing: false,
            events: VecDeque::new(),
            sent: 0,
            next_id: 0,
            inflight: VecDeque::new(),
            control: VecDeque::new(),
            states,
            dirty: BTreeSet::new(),
            snapshots: BTreeMap::new(),
            dirty_snapshots: BTreeSet::new(),
            dropped: 0,
            delivered: 0,
        }
    }

    /// Takes an event for `label` (`on`: the label's state after it) with its JSON `payload`;
    /// returns the event's id. The label's state is (re)sent after the event.
    pub fn accept(&mut self, label: &str, on: bool, payload: Vec<u8>) -> Result<u64, Refused> {
        if self.closing {
            return Err(Refused::Closed);
        }
        if self.events.len() >= self.settings.capacity.max(1) {
            self.dropped += 1;
            return Err(Refused::Full {
                queued: self.events.len(),
                dropped: self.dropped,
            });
        }
        let id = self.next_id;
        self.next_id += 1;
        self.events.push_back(Queued {
            id,
            message: Message {
                topic: self.settings.topics.events.clone(),
                payload,
                qos: self.settings.qos,
                retain: false,
            },
            acked: false,
        });
        self.states.insert(label.to_owned(), on);
        self.dirty.insert(label.to_owned());
        Ok(id)
    }

    /// Takes statistics, best effort (QoS 0, not retained): only while connected and not
    /// closing, and while fewer than 8 such messages wait. Returns whether they were taken.
    pub fn offer_stats(&mut self, payload: Vec<u8>) -> bool {
        if !self.connected || self.closing || self.control.len() >= MAX_BEST_EFFORT {
            return false;
        }
        self.control.push_back(Message {
            topic: self.settings.topics.stats.clone(),
            payload,
            qos: QoS::AtMostOnce,
            retain: false,
        });
        true
    }

    /// Takes `label`'s latest snapshot (a JPEG), to be published retained after the states; it
    /// replaces one not yet sent. Kept for the next connect when the broker is away; refused
    /// (`false`) once closing.
    pub fn offer_snapshot(&mut self, label: &str, jpeg: Vec<u8>) -> bool {
        if self.closing {
            return false;
        }
        self.snapshots.insert(label.to_owned(), jpeg);
        self.dirty_snapshots.insert(label.to_owned());
        true
    }

    /// Where the next message comes from, skipping events acknowledged out of order. `None`
    /// while disconnected, while the window is full, or when nothing waits.
    fn source(&mut self) -> Option<Source> {
        if !self.connected || self.inflight.len() >= self.settings.window.max(1) {
            return None;
        }
        if !self.control.is_empty() {
            return Some(Source::Control);
        }
        while let Some(q) = self.events.get(self.sent) {
            if !q.acked {
                return Some(Source::Event);
            }
            self.sent += 1;
        }
        if !self.dirty.is_empty() {
            return Some(Source::State);
        }
        (!self.dirty_snapshots.is_empty()).then_some(Source::Snapshot)
    }

    /// The next message to hand to rumqttc, if the window has room. Call [`Queue::sent`] once
    /// rumqttc took it; until then, this returns the same message again.
    pub fn next_to_send(&mut self) -> Option<ToSend> {
        Some(match self.source()? {
            Source::Control => ToSend {
                tag: Tag::Other,
                message: self.control.front()?.clone(),
            },
            Source::Event => {
                let q = self.events.get(self.sent)?;
                ToSend {
                    tag: Tag::Event(q.id),
                    message: q.message.clone(),
                }
            }
            Source::State => {
                let label = self.dirty.first()?;
                ToSend {
                    tag: Tag::Other,
                    message: self.state_message(label),
                }
            }
            Source::Snapshot => {
                let label = self.dirty_snapshots.first()?;
                ToSend {
                    tag: Tag::Other,
                    message: Message {
                        topic: self.settings.topics.snapshot(label),
                        payload: self.snapshots.get(label)?.clone(),
                        qos: self.settings.qos,
                        retain: true,
                    },
                }
            }
        })
    }

    /// rumqttc took the message [`Queue::next_to_send`] returned: it is now in flight.
    pub fn sent(&mut self) {
        let tag = match self.source() {
            None => return,
            Some(Source::Control) => {
                let Some(m) = self.control.pop_front() else {
                    return;
                };
                self.inflight.push_back(Inflight {
                    tag: Tag::Other,
                    qos: m.qos,
                    pkid: None,
                });
                return;
            }
            Some(Source::Event) => {
                let Some(q) = self.events.get(self.sent) else {
                    return;
                };
                self.sent += 1;
                Tag::Event(q.id)
            }
            Some(Source::State) => {
                self.dirty.pop_first();
                Tag::Other
            }
            Some(Source::Snapshot) => {
                self.dirty_snapshots.pop_first();
                Tag::Other
            }
        };
        self.inflight.push_back(Inflight {
            tag,
            qos: self.settings.qos,
            pkid: None,
        });
    }

    /// rumqttc wrote a PUBLISH with packet id `pkid` (0 for QoS 0). rumqttc writes in the
    /// order it was handed messages, so this is the oldest message in flight without a packet
    /// id. Completes a QoS 0 message and returns what it was.
    pub fn written(&mut self, pkid: u16) -> Option<Tag> {
        let i = self.inflight.iter().position(|f| f.pkid.is_none())?;
        self.inflight[i].pkid = Some(pkid);
        if self.inflight[i].qos == QoS::AtMostOnce {
            self.complete(i)
        } else {
            None
        }
    }

    /// The broker acknowledged packet `pkid`: `qos` is [`QoS::AtLeastOnce`] for a PUBACK,
    /// [`QoS::ExactlyOnce`] for a PUBREC. Completes the message in flight with that packet id
    /// and QoS and returns what it was; an acknowledgement of nothing in flight is ignored.
    pub fn acked(&mut self, pkid: u16, qos: QoS) -> Option<Tag> {
        let i = self
            .inflight
            .iter()
            .position(|f| f.pkid == Some(pkid) && f.qos == qos)?;
        self.complete(i)
    }

    /// Applies the completion of the in-flight message at `index`.
    fn complete(&mut self, index: usize) -> Option<Tag> {
        let done = self.inflight.remove(index)?;
        if let Tag::Event(id) = done.tag {
            if let Some(front) = self.events.front().map(|q| q.id)
                && id >= front
                && let Some(q) = self.events.get_mut((id - front) as usize)
            {
                q.acked = true;
            }
            while self.events.front().is_some_and(|q| q.acked) {
                self.events.pop_front();
                self.sent = self.sent.saturating_sub(1);
                self.delivered += 1;
            }
        }
        Some(done.tag)
    }

    /// A new session: `online` (unless closing), the discovery configs, every label's state
    /// and latest snapshot are to be sent, and every unacknowledged event again, in order.
    pub fn connected(&mut self) {
        self.connected = true;
        self.inflight.clear();
        self.sent = 0;
        self.control.clear();
        let qos = self.settings.qos;
        let topics = &self.settings.topics;
        if !self.closing {
            self.control.push_back(Message {
                topic: topics.availability.clone(),
                payload: b"online".to_vec(),
                qos,
                retain: true,
            });
        }
        if self.settings.discovery {
            for label in &self.settings.labels {
                self.control.push_back(Message {
                    topic: topics.discovery(label),
                    payload: topics.discovery_payload(label).into_bytes(),
                    qos,
                    retain: true,
                });
                if self.settings.snapshots {
                    self.control.push_back(Message {
                        topic: topics.image_discovery(label),
                        payload: topics.image_discovery_payload(label).into_bytes(),
                        qos,
                        retain: true,
                    });
                }
            }
        }
        self.dirty = self.states.keys().cloned().collect();
        self.dirty_snapshots = self.snapshots.keys().cloned().collect();
    }

    /// The connection is gone: everything in flight is to be sent again after reconnecting,
    /// in order; connect-time and best-effort messages are dropped (the next connect
    /// regenerates the former).
    pub fn disconnected(&mut self) {
        self.connected = false;
        self.inflight.clear();
        self.sent = 0;
        self.control.clear();
    }

    /// Closing: no new events are accepted, and a reconnect no longer announces `online`.
    pub fn close(&mut self) {
        self.closing = true;
    }

    /// Queues `offline` (retained) before anything else not yet sent: the goodbye of a clean
    /// disconnect, which sends no will.
    pub fn say_offline(&mut self) {
        self.control.push_back(Message {
            topic: self.settings.topics.availability.clone(),
            payload: b"offline".to_vec(),
            qos: self.settings.qos,
            retain: true,
        });
    }

    fn state_message(&self, label: &str) -> Message {
        let on = self.states.get(label).copied().unwrap_or(false);
        Message {
            topic: self.settings.topics.state(label),
            payload: if on { b"ON".to_vec() } else { b"OFF".to_vec() },
            qos: self.settings.qos,
            retain: true,
        }
    }

    /// Whether a session is up.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Whether [`Queue::close`] was called.
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// Accepted events not yet acknowledged.
    pub fn queued(&self) -> usize {
        self.events.len()
    }

    /// Events refused because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Events acknowledged (and gone from the queue).
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Everything not yet completed: accepted events, connect-time and best-effort messages,
    /// states and snapshots to send, and messages in flight.
    pub fn pending(&self) -> usize {
        self.events.len()
            + self.control.len()
            + self.dirty.len()
            + self.dirty_snapshots.len()
            + self.inflight.len()
    }

    /// Whether connect-time or best-effort messages wait or anything is in flight (what
    /// `offline` waits behind at close).
    pub fn control_or_inflight(&self) -> bool {
        !self.control.is_empty() || !self.inflight.is_empty()
    }
}

#[cfg(test)]
mod tests;
