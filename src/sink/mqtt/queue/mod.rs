//! The MQTT sink's delivery queue: what to send next, and what a broker's answer settles.
//!
//! Delivery is where the sink's promises live (accepted events are dropped only by the rule
//! below, never reordered within a session, every watched thing's retained state ends equal to
//! its last event), and those promises are about orderings of events a live broker rarely shows:
//! a disconnect between a write and its PUBACK, a reconnect with half the window in flight.
//! So the logic is a state machine with no locks, no I/O, no clock and no rumqttc client: the
//! connection thread ([`super::worker`]) feeds it the events of delivery and hands rumqttc
//! what it says to send, and the tests drive it through any interleaving they like.
//!
//! **The rule, in one sentence:** accepted events are sent in order, at least once, and an event
//! is only ever dropped (and counted) when the queue is full (then the oldest waiting episode, a
//! start with its end, goes whole) or when it is older than `max_age` when (re)sent, while the
//! retained states are not queued events at all: every watched thing's latest state is
//! republished after each (re)connect, so they always equal the trigger's.
//!
//! One queue serves every camera of the daemon over one connection: what it keys by is a
//! [`Watched`] (camera, zone, label), where a single-camera daemon had a label. An episode is
//! the start and end of one watched thing; events of all cameras share the one bound and keep
//! their order among each other.
//!
//! Why episodes: dropping the oldest event keeps the newest (what a doorbell wants), but a
//! dropped start would leave its end an orphan. So whenever a start is dropped its end goes too
//! (at once when it waits already, on arrival when the watched thing is still active), and a consumer
//! never gets an end whose start it did not get. A full queue drops the oldest waiting start
//! (and its end); only when no start waits does it drop the oldest end (whose start was
//! delivered: that consumer then sees a start without its end, the state topic still says
//! `OFF`); when every waiting event is already in flight, the new event is dropped instead.
//! An event that waited for a (re)connect (accepted while the broker was away, or in flight
//! when the connection dropped) is sent with `"replayed":true` added, its `ts` unchanged.
//!
//! The events of delivery:
//!
//! - [`Queue::accept`]: an event to deliver. Bounded: when `capacity` events wait, the oldest
//!   episode is dropped to make room (see above); the watched thing's state follows the event
//!   always.
//! - [`Queue::expire`]: drops the waiting events older than `max_age` (and the ends of expired
//!   starts), before anything is handed over.
//! - [`Queue::next_to_send`] / [`Queue::sent`]: the next message for rumqttc, while fewer than
//!   `window` messages are in flight: connect-time and best-effort messages first, then the
//!   accepted events in order, then (once every event is handed over) the states, then the
//!   snapshots.
//! - [`Queue::offer_snapshot`]: a watched thing's latest snapshot (retained). Like a state,
//!   only the latest per watched thing is kept and delivered, after a reconnect too: memory is
//!   one JPEG per camera, zone and label.
//! - [`Queue::written`]: rumqttc wrote a PUBLISH (and gave it its packet id); this completes a
//!   QoS 0 message.
//! - [`Queue::acked`]: a PUBACK (QoS 1) or PUBREC (QoS 2) completes the message with that
//!   packet id. An event leaves the queue once it and every older event are acknowledged.
//! - [`Queue::connected`]: on every (re)connect: `online`, each camera's availability, the
//!   discovery configs, the retained state of everything watched, every unacknowledged event
//!   again, in order, and every latest snapshot.
//! - [`Queue::camera_status`]: a camera's availability (retained, like a state: the latest of
//!   each camera is republished on each connect).
//! - [`Queue::set_watched`]: what is watched after a reload: discovery configs for new
//!   (camera, zone, label), empty retained configs (Home Assistant's delete) for removed ones.
//! - [`Queue::disconnected`]: whatever was in flight is to be sent again, in order.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, SystemTime};

use rumqttc::QoS;

use super::topics::Topics;
use crate::sink::mqtt::topics::Watched;

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

/// What [`Queue::accept`] did with an event it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The event's id.
    pub id: u64,
    /// Ids of older events dropped to make room (an episode: a start and its end), oldest
    /// first; empty when there was room.
    pub evicted: Vec<u64>,
}

/// Why [`Queue::accept`] did not take an event (the watched thing's state follows it anyway, unless
/// closed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// [`Queue::close`] was called.
    Closed,
    /// `capacity` events wait and every one is already in flight: the event was dropped and
    /// counted.
    Full {
        /// Events waiting (the capacity).
        queued: usize,
        /// Events dropped so far, this one included.
        dropped: u64,
    },
    /// The end of an episode whose start was dropped: dropped and counted with it.
    StartDropped {
        /// Events dropped so far, this one included.
        dropped: u64,
        /// Ids dropped to make room (its start among them, when the queue was full).
        evicted: Vec<u64>,
    },
}

/// The fixed parameters of a [`Queue`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// The topic names.
    pub topics: Topics,
    /// What is watched (camera, zone, label): each one's state is published (starting `OFF`)
    /// and, with `discovery`, its discovery configs are.
    pub watched: Vec<Watched>,
    /// The QoS of events, states, availability and discovery (statistics use QoS 0).
    pub qos: QoS,
    /// Publish Home Assistant discovery configs on connect.
    pub discovery: bool,
    /// The daemon writes snapshots: with `discovery`, each watched thing also gets an `image`
    /// entity.
    pub snapshots: bool,
    /// Most accepted events waiting for their acknowledgement (at least 1).
    pub capacity: usize,
    /// Events older than this (by their `ts`) when they would be (re)sent are dropped; `None`:
    /// no limit.
    pub max_age: Option<Duration>,
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
    watched: Watched,
    /// A start (else an end).
    start: bool,
    /// When it happened (the event's `ts`).
    ts: SystemTime,
    message: Message,
    /// Accepted in the current session and not yet through a disconnect: its first send is
    /// live; otherwise it waited for a (re)connect and is sent as replayed.
    live: bool,
    acked: bool,
}

/// The delivery state of one MQTT sink. See the module documentation.
#[derive(Debug)]
pub struct Queue {
    settings: Settings,
    connected: bool,
    /// `close` started: no new events are accepted, no `online` is sent.
    closing: bool,
    /// Accepted events not yet acknowledged, oldest first; ids increase (dropped events leave
    /// gaps). An event acknowledged out of order stays (marked) until every older one is
    /// acknowledged.
    events: VecDeque<Queued>,
    /// Entries of `events` handed to rumqttc in this session (always a prefix).
    sent: usize,
    next_id: u64,
    /// Messages handed to rumqttc and not yet completed, in send order.
    inflight: VecDeque<Inflight>,
    /// Connect-time and best-effort messages, sent before the events.
    control: VecDeque<Message>,
    /// The latest state of everything watched.
    states: BTreeMap<Watched, bool>,
    /// Those whose state must be (re)sent once the events are through.
    dirty: BTreeSet<Watched>,
    /// The latest snapshot (JPEG) of every watched thing that has one.
    snapshots: BTreeMap<Watched, Vec<u8>>,
    /// Those whose snapshot must be (re)sent once the states are through.
    dirty_snapshots: BTreeSet<Watched>,
    /// Those whose active episode's start was dropped: their end is dropped on arrival (and
    /// counted like its start: `true` for age).
    orphans: BTreeMap<Watched, bool>,
    /// Each camera's availability, once known.
    camera_online: BTreeMap<String, bool>,
    /// Those removed by a reload: their discovery configs are deleted on each connect.
    retired: BTreeSet<Watched>,
    /// Events dropped because the queue was full (the ends of their episodes included).
    dropped_full: u64,
    /// Events dropped because they were older than `max_age`.
    dropped_old: u64,
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
    /// An empty queue, disconnected, everything watched `OFF`.
    pub fn new(settings: Settings) -> Queue {
        let states = settings
            .watched
            .iter()
            .map(|w| (w.clone(), false))
            .collect();
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
            orphans: BTreeMap::new(),
            camera_online: BTreeMap::new(),
            retired: BTreeSet::new(),
            dropped_full: 0,
            dropped_old: 0,
            delivered: 0,
        }
    }

    /// Takes an event about `watched` (`on`: its state after it, i.e. a start) that happened
    /// at `ts`, with its JSON `payload` (an object: a replay adds a member to it); it goes to
    /// the events topic of `watched`'s camera. The state follows the event whatever becomes of
    /// the event (unless closing), and is (re)sent after the events. When `capacity` events
    /// wait, the oldest episode is dropped to make room (see the module documentation).
    pub fn accept(
        &mut self,
        watched: &Watched,
        on: bool,
        ts: SystemTime,
        payload: Vec<u8>,
    ) -> Result<Accepted, Refused> {
        if self.closing {
            return Err(Refused::Closed);
        }
        self.states.insert(watched.clone(), on);
        self.dirty.insert(watched.clone());
        let evicted = self.make_room(watched, on)?;
        let id = self.next_id;
        self.next_id += 1;
        self.events.push_back(Queued {
            id,
            watched: watched.clone(),
            start: on,
            ts,
            message: Message {
                topic: self.settings.topics.events(&watched.camera),
                payload,
                qos: self.settings.qos,
                retain: false,
            },
            live: self.connected,
            acked: false,
        });
        Ok(Accepted { id, evicted })
    }

    /// Takes `camera`'s statistics, best effort (QoS 0, not retained): only while connected
    /// and not closing, and while fewer than 8 such messages wait. Returns whether they were
    /// taken.
    pub fn offer_stats(&mut self, camera: &str, payload: Vec<u8>) -> bool {
        if !self.connected || self.closing || self.control.len() >= MAX_BEST_EFFORT {
            return false;
        }
        self.control.push_back(Message {
            topic: self.settings.topics.stats(camera),
            payload,
            qos: QoS::AtMostOnce,
            retain: false,
        });
        true
    }

    /// Takes `watched`'s latest snapshot (a JPEG), to be published retained after the states;
    /// it replaces one not yet sent. Kept for the next connect when the broker is away; refused
    /// (`false`) once closing.
    pub fn offer_snapshot(&mut self, watched: &Watched, jpeg: Vec<u8>) -> bool {
        if self.closing {
            return false;
        }
        self.snapshots.insert(watched.clone(), jpeg);
        self.dirty_snapshots.insert(watched.clone());
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
                let mut message = q.message.clone();
                if !q.live {
                    message.payload = replayed(&message.payload);
                }
                ToSend {
                    tag: Tag::Event(q.id),
                    message,
                }
            }
            Source::State => {
                let watched = self.dirty.first()?;
                ToSend {
                    tag: Tag::Other,
                    message: self.state_message(watched),
                }
            }
            Source::Snapshot => {
                let watched = self.dirty_snapshots.first()?;
                ToSend {
                    tag: Tag::Other,
                    message: Message {
                        topic: self.settings.topics.snapshot(watched),
                        payload: self.snapshots.get(watched)?.clone(),
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
            if let Ok(i) = self.events.binary_search_by_key(&id, |q| q.id) {
                self.events[i].acked = true;
            }
            self.pop_delivered();
        }
        Some(done.tag)
    }

    /// Removes the acknowledged events at the front: delivered, with every older one.
    fn pop_delivered(&mut self) {
        while self.events.front().is_some_and(|q| q.acked) {
            self.events.pop_front();
            self.sent = self.sent.saturating_sub(1);
            self.delivered += 1;
        }
    }

    /// A new session: `online` (unless closing), each camera's known availability, the
    /// discovery configs, every state and latest snapshot are to be sent, and every
    /// unacknowledged event again, in order.
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
            let cameras: Vec<(String, bool)> = self
                .camera_online
                .iter()
                .map(|(c, on)| (c.clone(), *on))
                .collect();
            for (camera, online) in cameras {
                self.push_camera(&camera, online);
            }
        }
        let watched = self.settings.watched.clone();
        self.announce(&watched, true);
        let retired: Vec<Watched> = self.retired.iter().cloned().collect();
        self.announce(&retired, false);
        self.dirty = self.states.keys().cloned().collect();
        self.dirty_snapshots = self.snapshots.keys().cloned().collect();
    }

    /// With discovery on: queues the discovery configs of `watched` (`add`), or their
    /// deletion (an empty retained payload, Home Assistant's way to remove an entity).
    fn announce(&mut self, watched: &[Watched], add: bool) {
        if !self.settings.discovery {
            return;
        }
        let (topics, qos) = (&self.settings.topics, self.settings.qos);
        for w in watched {
            let mut configs = vec![(topics.discovery(w), topics.discovery_payload(w))];
            if self.settings.snapshots {
                configs.push((topics.image_discovery(w), topics.image_discovery_payload(w)));
            }
            for (topic, payload) in configs {
                self.control.push_back(Message {
                    topic,
                    payload: if add { payload.into_bytes() } else { vec![] },
                    qos,
                    retain: true,
                });
            }
        }
    }

    /// What is watched after a reload: each new (camera, zone, label) gets its discovery
    /// configs (now when connected, and on each connect), each removed one gets its deleted.
    /// The states of removed ones stay (their end events set them `OFF`).
    pub fn set_watched(&mut self, watched: &[Watched]) {
        let old: BTreeSet<Watched> = self.settings.watched.iter().cloned().collect();
        let new: BTreeSet<Watched> = watched.iter().cloned().collect();
        let added: Vec<Watched> = watched
            .iter()
            .filter(|w| !old.contains(*w))
            .cloned()
            .collect();
        let removed: Vec<Watched> = old.difference(&new).cloned().collect();
        for w in &added {
            self.retired.remove(w);
            if !self.states.contains_key(w) {
                self.states.insert(w.clone(), false);
                self.dirty.insert(w.clone());
            }
        }
        self.retired.extend(removed.iter().cloned());
        self.settings.watched = watched.to_vec();
        if self.connected && !self.closing {
            self.announce(&added, true);
            self.announce(&removed, false);
        }
    }

    /// `camera`'s availability: `online` (frames arrive) or not; published retained now when
    /// connected, and again on each connect.
    pub fn camera_status(&mut self, camera: &str, online: bool) {
        if self.closing {
            return;
        }
        self.camera_online.insert(camera.to_owned(), online);
        if self.connected {
            self.push_camera(camera, online);
        }
    }

    fn push_camera(&mut self, camera: &str, online: bool) {
        self.control.push_back(Message {
            topic: self.settings.topics.camera_availability(camera),
            payload: if online {
                b"online".to_vec()
            } else {
                b"offline".to_vec()
            },
            qos: self.settings.qos,
            retain: true,
        });
    }

    /// The connection is gone: everything in flight is to be sent again after reconnecting,
    /// in order, as replayed; connect-time and best-effort messages are dropped (the next
    /// connect regenerates the former).
    pub fn disconnected(&mut self) {
        self.connected = false;
        self.inflight.clear();
        self.sent = 0;
        self.control.clear();
        for q in &mut self.events {
            q.live = false;
        }
    }

    /// Closing: no new events are accepted, and a reconnect no longer announces `online`.
    pub fn close(&mut self) {
        self.closing = true;
    }

    /// Queues `offline` (retained) for every camera (those watched and those whose status was
    /// given) and the process before anything else not yet sent: the goodbye of a clean
    /// disconnect, which sends no will.
    pub fn say_offline(&mut self) {
        let mut cameras: BTreeSet<String> = self.camera_online.keys().cloned().collect();
        cameras.extend(self.settings.watched.iter().map(|w| w.camera.clone()));
        for camera in cameras {
            self.push_camera(&camera, false);
        }
        self.control.push_back(Message {
            topic: self.settings.topics.availability.clone(),
            payload: b"offline".to_vec(),
            qos: self.settings.qos,
            retain: true,
        });
    }

    fn state_message(&self, watched: &Watched) -> Message {
        let on = self.states.get(watched).copied().unwrap_or(false);
        Message {
            topic: self.settings.topics.state(watched),
            payload: if on { b"ON".to_vec() } else { b"OFF".to_vec() },
            qos: self.settings.qos,
            retain: true,
        }
    }

    /// Whether a session is up.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Whether Home Assistant discovery configs are published.
    pub fn discovery(&self) -> bool {
        self.settings.discovery
    }

    /// Whether [`Queue::close`] was called.
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// Accepted events not yet acknowledged.
    pub fn queued(&self) -> usize {
        self.events.len()
    }

    /// Events dropped: for room ([`Queue::dropped_full`]) and for age
    /// ([`Queue::dropped_old`]).
    pub fn dropped(&self) -> u64 {
        self.dropped_full + self.dropped_old
    }

    /// Events dropped because the queue was full (the ends of their episodes included).
    pub fn dropped_full(&self) -> u64 {
        self.dropped_full
    }

    /// Events dropped because they were older than `max_age` when they would be (re)sent.
    pub fn dropped_old(&self) -> u64 {
        self.dropped_old
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

mod drops;
pub use drops::replayed;

#[cfg(test)]
mod tests;
