//! Events to an MQTT broker (rumqttc), with a bounded queue that survives broker restarts.
//!
//! Topics (`P` = `mqtt.prefix`, `C` = camera name, `L` = label):
//!
//! | topic                | payload                     | QoS         | retained |
//! |----------------------|-----------------------------|-------------|----------|
//! | `P/C/events`         | event JSON                  | `mqtt.qos`  | no       |
//! | `P/C/L/state`        | `ON` / `OFF`                | `mqtt.qos`  | yes      |
//! | `P/availability`     | `online` / `offline` (will) | `mqtt.qos`  | yes      |
//! | `P/C/stats`          | statistics JSON             | 0           | no       |
//! | `D/binary_sensor/N/L/config` (discovery) | Home Assistant config | `mqtt.qos` | yes |
//!
//! # Delivery
//!
//! [`MqttSink::publish`] never touches the network: it appends the event to the sink's own
//! bounded queue and returns. An event is *accepted* when `publish` returns `Ok`; an accepted
//! event stays in the queue until the broker acknowledged it (PUBACK for QoS 1, PUBREC for
//! QoS 2, written to the socket for QoS 0), so a broker restart loses nothing: when the
//! connection drops, every unacknowledged event is sent again, in order, after the reconnect
//! (at-least-once; a consumer may see an event twice, never out of order within a session).
//! rumqttc's own replay of unacknowledged packets is switched off by clearing its pending list,
//! so this queue is the single source of truth. When the queue is full, new events are refused
//! (`Err(QueueFull)`), counted and logged at WARN.
//!
//! A worker thread drives rumqttc's [`rumqttc::Connection`]: it reconnects with a capped
//! exponential backoff, republishes `online`, the discovery configs and the retained state of
//! every label on each connect, and feeds the queue to rumqttc through a small window of
//! in-flight messages (smaller than rumqttc's bounded request channel and in-flight limit, so
//! neither can fill up or collide).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rumqttc::{
    Client, Connection, ConnectionError, Event as MqttEvent, LastWill, Outgoing, Packet, QoS,
};

use super::{EventSink, SinkError};
use crate::config::MqttConfig;
use crate::event::{Event, Stats};

/// Largest MQTT packet the sink sends or accepts.
const MAX_PACKET: usize = 256 * 1024;
/// rumqttc's in-flight limit; our window stays well below it so packet ids never collide.
const RUMQTTC_INFLIGHT: u16 = 100;

/// What went wrong with the MQTT sink. Variants name the broker (`host:port`) or the topic.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// An option would make rumqttc assert (or is otherwise unusable); config validation
    /// normally catches it first.
    #[error("mqtt option {key}: {message}")]
    InvalidOption {
        /// The config key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The TLS CA file could not be read.
    #[error("mqtt.tls_ca {path}: cannot read the CA certificate: {source}")]
    TlsCa {
        /// The CA file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The offline queue is full: the event was dropped.
    #[error(
        "mqtt {broker}: event queue full ({capacity} events waiting for the broker); event \
         dropped ({dropped} dropped so far)"
    )]
    QueueFull {
        /// `host:port`.
        broker: String,
        /// The queue bound (`mqtt.queue`).
        capacity: usize,
        /// Events dropped since start.
        dropped: u64,
    },
    /// A message is larger than the packet limit.
    #[error("mqtt topic {topic}: payload of {size} bytes exceeds the {max} byte packet limit")]
    PayloadTooLarge {
        /// The topic.
        topic: String,
        /// The payload size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The sink was closed.
    #[error("mqtt {broker}: the sink is closed")]
    Closed {
        /// `host:port`.
        broker: String,
    },
    /// Accepted events were still undelivered when `close` gave up waiting for the broker.
    #[error("mqtt {broker}: {count} accepted events were not delivered before close")]
    Undelivered {
        /// `host:port`.
        broker: String,
        /// How many.
        count: usize,
    },
    /// The connection thread could not be started.
    #[error("mqtt {broker}: cannot start the connection thread: {source}")]
    Thread {
        /// `host:port`.
        broker: String,
        /// The spawn error.
        #[source]
        source: std::io::Error,
    },
    /// Connecting to the broker failed (probe).
    #[error("mqtt {broker}: cannot connect: {source}")]
    Connect {
        /// `host:port`.
        broker: String,
        /// rumqttc's error.
        #[source]
        source: Box<ConnectionError>,
    },
    /// The broker did not answer in time (probe).
    #[error("mqtt {broker}: no CONNACK within {after:?}")]
    Timeout {
        /// `host:port`.
        broker: String,
        /// The time waited.
        after: Duration,
    },
}

/// Knobs of the sink that are not in the config file (timings; tests shorten them).
#[derive(Debug, Clone)]
pub struct MqttOptions {
    /// First reconnect delay after a failure. Default 250 ms.
    pub reconnect_min: Duration,
    /// Longest reconnect delay. Default 10 s.
    pub reconnect_max: Duration,
    /// TCP + MQTT connect timeout. Default 5 s.
    pub connect_timeout: Duration,
    /// How long `close` waits for queued events and `offline` to be acknowledged. Default 5 s.
    pub close_timeout: Duration,
    /// Most messages handed to rumqttc and not yet acknowledged. Default 32.
    pub window: usize,
}

impl Default for MqttOptions {
    fn default() -> Self {
        MqttOptions {
            reconnect_min: Duration::from_millis(250),
            reconnect_max: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            close_timeout: Duration::from_secs(5),
            window: 32,
        }
    }
}

/// The topic names of one camera.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// `P/C/events`.
    pub events: String,
    /// `P/availability`.
    pub availability: String,
    /// `P/C/stats`.
    pub stats: String,
    prefix: String,
    camera: String,
    discovery_prefix: String,
    node: String,
}

impl Topics {
    /// The topics for `camera` under `prefix` (and `discovery_prefix` for Home Assistant).
    pub fn new(prefix: &str, camera: &str, discovery_prefix: &str) -> Topics {
        let node: String = format!("{prefix}_{camera}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Topics {
            events: format!("{prefix}/{camera}/events"),
            availability: format!("{prefix}/availability"),
            stats: format!("{prefix}/{camera}/stats"),
            prefix: prefix.to_owned(),
            camera: camera.to_owned(),
            discovery_prefix: discovery_prefix.to_owned(),
            node,
        }
    }

    /// `P/C/L/state`.
    pub fn state(&self, label: &str) -> String {
        format!("{}/{}/{label}/state", self.prefix, self.camera)
    }

    /// `D/binary_sensor/N/L/config`, where `N` is the node id (`P_C`, sanitised).
    pub fn discovery(&self, label: &str) -> String {
        format!(
            "{}/binary_sensor/{}/{label}/config",
            self.discovery_prefix, self.node
        )
    }

    /// The Home Assistant discovery config of one label's binary sensor.
    pub fn discovery_payload(&self, label: &str) -> String {
        serde_json::json!({
            "name": label,
            "unique_id": format!("{}_{label}", self.node),
            "state_topic": self.state(label),
            "availability_topic": self.availability,
            "payload_on": "ON",
            "payload_off": "OFF",
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": {
                "identifiers": [self.node],
                "name": format!("edgeclip {}", self.camera),
                "model": "edgeclip",
                "manufacturer": "edgeclip",
                "sw_version": env!("CARGO_PKG_VERSION"),
            },
        })
        .to_string()
    }
}

fn qos_of(n: u8) -> QoS {
    match n {
        0 => QoS::AtMostOnce,
        2 => QoS::ExactlyOnce,
        _ => QoS::AtLeastOnce,
    }
}

/// The default client id: `edgeclip-<hostname>-<camera>`.
fn default_client_id(camera: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if host.is_empty() {
        format!("edgeclip-{camera}")
    } else {
        format!("edgeclip-{host}-{camera}")
    }
}

/// Builds rumqttc options, checking every value rumqttc would assert on before calling its
/// setters.
fn build_options(
    cfg: &MqttConfig,
    camera: &str,
    client_suffix: &str,
    connect_timeout: Duration,
) -> Result<(rumqttc::MqttOptions, rumqttc::NetworkOptions), MqttError> {
    if !(5..=u64::from(u16::MAX)).contains(&cfg.keep_alive_s) {
        return Err(MqttError::InvalidOption {
            key: "mqtt.keep_alive_s",
            message: format!("must be in [5, 65535], got {}", cfg.keep_alive_s),
        });
    }
    if cfg.qos > 2 {
        return Err(MqttError::InvalidOption {
            key: "mqtt.qos",
            message: format!("must be 0, 1 or 2, got {}", cfg.qos),
        });
    }
    if cfg.queue == 0 {
        return Err(MqttError::InvalidOption {
            key: "mqtt.queue",
            message: "must be at least 1".into(),
        });
    }
    let client_id = match &cfg.client_id {
        Some(id) if id.is_empty() => {
            return Err(MqttError::InvalidOption {
                key: "mqtt.client_id",
                message: "must not be empty".into(),
            });
        }
        Some(id) => id.clone(),
        None => default_client_id(camera),
    };
    let topics = Topics::new(&cfg.prefix, camera, &cfg.discovery_prefix);
    let mut o = rumqttc::MqttOptions::new(
        format!("{client_id}{client_suffix}"),
        cfg.host.clone(),
        cfg.port,
    );
    o.set_keep_alive(Duration::from_secs(cfg.keep_alive_s))
        .set_clean_session(true)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET)
        .set_inflight(RUMQTTC_INFLIGHT)
        .set_last_will(LastWill::new(
            topics.availability,
            "offline",
            qos_of(cfg.qos),
            true,
        ));
    if let Some(user) = &cfg.username {
        o.set_credentials(user.clone(), cfg.password.clone().unwrap_or_default());
    }
    if let Some(ca_path) = &cfg.tls_ca {
        let ca = std::fs::read(ca_path).map_err(|source| MqttError::TlsCa {
            path: ca_path.clone(),
            source,
        })?;
        o.set_transport(rumqttc::Transport::tls(ca, None, None));
    }
    let mut net = rumqttc::NetworkOptions::new();
    net.set_connection_timeout(connect_timeout.as_secs().max(1));
    Ok((o, net))
}

/// One message waiting to be sent.
#[derive(Debug, Clone)]
struct Msg {
    topic: String,
    payload: Vec<u8>,
    qos: QoS,
    retain: bool,
}

/// What an in-flight message is, so its acknowledgement can be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    /// An accepted event, by id.
    Event(u64),
    /// Anything regenerated on each connect (availability, discovery, state, stats).
    Other,
}

#[derive(Debug)]
struct Inflight {
    tag: Tag,
    qos: QoS,
    /// Set when rumqttc reports the packet as written.
    pkid: Option<u16>,
}

#[derive(Debug)]
struct Queued {
    id: u64,
    msg: Msg,
    acked: bool,
}

struct State {
    client: Option<Client>,
    connected: bool,
    /// `close` started: no new events are accepted.
    closing: bool,
    /// The worker must exit.
    stop: bool,
    /// The worker has exited.
    finished: bool,
    /// Accepted events not yet acknowledged, oldest first; ids are contiguous.
    queue: VecDeque<Queued>,
    /// Entries of `queue` handed to rumqttc in this session (always a prefix).
    sent: usize,
    next_id: u64,
    /// Messages handed to rumqttc and not yet acknowledged, in send order.
    inflight: VecDeque<Inflight>,
    /// Connect-time and best-effort messages, sent before the queue.
    control: VecDeque<Msg>,
    /// The latest state of every label.
    states: BTreeMap<String, bool>,
    /// Labels whose state must be (re)sent once the queue is through.
    dirty: BTreeSet<String>,
    dropped: u64,
    delivered: u64,
}

struct Shared {
    state: Mutex<State>,
    cond: Condvar,
    cfg: MqttConfig,
    broker: String,
    topics: Topics,
    labels: Vec<String>,
    window: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn qos(&self) -> QoS {
        qos_of(self.cfg.qos)
    }

    /// Hands as many messages to rumqttc as the window allows: control messages, then the
    /// event queue in order, then (once the queue is through) the dirty states.
    fn flush(&self, st: &mut State) {
        if !st.connected {
            return;
        }
        while st.inflight.len() < self.window {
            let (msg, tag) = if let Some(m) = st.control.front() {
                (m.clone(), Tag::Other)
            } else if let Some(q) = st.queue.get(st.sent) {
                if q.acked {
                    st.sent += 1;
                    continue;
                }
                (q.msg.clone(), Tag::Event(q.id))
            } else if let Some(label) = st.dirty.first().cloned() {
                let on = st.states.get(&label).copied().unwrap_or(false);
                let msg = Msg {
                    topic: self.topics.state(&label),
                    payload: if on { b"ON".to_vec() } else { b"OFF".to_vec() },
                    qos: self.qos(),
                    retain: true,
                };
                (msg, Tag::Other)
            } else {
                return;
            };
            let Some(client) = &st.client else { return };
            match client.try_publish(msg.topic.clone(), msg.qos, msg.retain, msg.payload) {
                Ok(()) => {
                    st.inflight.push_back(Inflight {
                        tag,
                        qos: msg.qos,
                        pkid: None,
                    });
                    match tag {
                        Tag::Event(_) => st.sent += 1,
                        Tag::Other if !st.control.is_empty() => {
                            st.control.pop_front();
                        }
                        Tag::Other => {
                            st.dirty.pop_first();
                        }
                    }
                }
                Err(e) => {
                    // The request channel is full or gone; retry on the next wake-up.
                    log::debug!("mqtt {}: rumqttc refused a request: {e}", self.broker);
                    return;
                }
            }
        }
    }

    /// Applies the completion of the in-flight message at `index`.
    fn complete(&self, st: &mut State, index: usize) {
        let Some(done) = st.inflight.remove(index) else {
            return;
        };
        if let Tag::Event(id) = done.tag {
            if let Some(front) = st.queue.front().map(|q| q.id)
                && id >= front
                && let Some(q) = st.queue.get_mut((id - front) as usize)
            {
                q.acked = true;
            }
            while st.queue.front().is_some_and(|q| q.acked) {
                st.queue.pop_front();
                st.sent = st.sent.saturating_sub(1);
                st.delivered += 1;
            }
        }
        self.cond.notify_all();
    }

    /// The connection is gone: everything in flight is to be sent again after reconnecting.
    fn reset(&self, st: &mut State, connection: &mut Connection) {
        st.connected = false;
        // Stop rumqttc from replaying its own copy of unacknowledged packets; we resend ours.
        connection.eventloop.clean();
        connection.eventloop.pending.clear();
        connection.eventloop.state.events.clear();
        connection.eventloop.state.collision = None;
        st.inflight.clear();
        st.sent = 0;
        st.control.clear();
        self.cond.notify_all();
    }

    /// A new session: announce availability, discovery and every label's state, then resend
    /// the queue.
    fn on_connected(&self, st: &mut State) {
        st.connected = true;
        st.control.clear();
        if !st.closing {
            st.control.push_back(Msg {
                topic: self.topics.availability.clone(),
                payload: b"online".to_vec(),
                qos: self.qos(),
                retain: true,
            });
        }
        if self.cfg.homeassistant_discovery {
            for label in &self.labels {
                st.control.push_back(Msg {
                    topic: self.topics.discovery(label),
                    payload: self.topics.discovery_payload(label).into_bytes(),
                    qos: self.qos(),
                    retain: true,
                });
            }
        }
        st.dirty = st.states.keys().cloned().collect();
        self.flush(st);
        self.cond.notify_all();
    }

    fn pending(st: &State) -> usize {
        st.queue.len() + st.control.len() + st.dirty.len() + st.inflight.len()
    }
}

/// Publishes events, label states, availability, statistics and discovery to an MQTT broker.
pub struct MqttSink {
    name: String,
    shared: Arc<Shared>,
    worker: Option<JoinHandle<()>>,
    close_timeout: Duration,
    closed: bool,
}

impl MqttSink {
    /// Starts the sink: the connection is made in the background (a broker that is down now is
    /// retried with backoff; events wait in the queue meanwhile). `labels` are the prompt
    /// labels, whose state starts `OFF` and whose discovery configs are published when
    /// `homeassistant_discovery` is on.
    pub fn connect(
        cfg: &MqttConfig,
        camera: &str,
        labels: &[String],
        options: MqttOptions,
    ) -> Result<MqttSink, MqttError> {
        let broker = format!("{}:{}", cfg.host, cfg.port);
        let (opts, net) = build_options(cfg, camera, "", options.connect_timeout)?;
        let window = options.window.clamp(1, usize::from(RUMQTTC_INFLIGHT) / 2);
        let (client, mut connection) = Client::new(opts, window + 4);
        connection.eventloop.set_network_options(net);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                client: Some(client),
                connected: false,
                closing: false,
                stop: false,
                finished: false,
                queue: VecDeque::new(),
                sent: 0,
                next_id: 0,
                inflight: VecDeque::new(),
                control: VecDeque::new(),
                states: labels.iter().map(|l| (l.clone(), false)).collect(),
                dirty: BTreeSet::new(),
                dropped: 0,
                delivered: 0,
            }),
            cond: Condvar::new(),
            cfg: cfg.clone(),
            broker: broker.clone(),
            topics: Topics::new(&cfg.prefix, camera, &cfg.discovery_prefix),
            labels: labels.to_vec(),
            window,
        });
        let worker_shared = Arc::clone(&shared);
        let opts = options.clone();
        let worker = std::thread::Builder::new()
            .name("edgeclip-mqtt".into())
            .spawn(move || run(&worker_shared, &mut connection, &opts))
            .map_err(|source| MqttError::Thread {
                broker: broker.clone(),
                source,
            })?;
        log::info!("mqtt: publishing to {broker} under {}/", cfg.prefix);
        Ok(MqttSink {
            name: format!("mqtt://{broker}"),
            shared,
            worker: Some(worker),
            close_timeout: options.close_timeout,
            closed: false,
        })
    }

    /// The topics this sink publishes to.
    pub fn topics(&self) -> &Topics {
        &self.shared.topics
    }

    /// Whether the broker connection is up.
    pub fn is_connected(&self) -> bool {
        self.shared.lock().connected
    }

    /// Accepted events not yet acknowledged by the broker.
    pub fn queued(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// Events refused because the queue was full, since start.
    pub fn dropped(&self) -> u64 {
        self.shared.lock().dropped
    }

    /// Events acknowledged by the broker, since start.
    pub fn delivered(&self) -> u64 {
        self.shared.lock().delivered
    }

    /// Waits up to `timeout` for the broker connection to be up; returns whether it is.
    pub fn wait_connected(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, |st| st.connected)
    }

    /// Waits up to `timeout` until every accepted event and state message is acknowledged;
    /// returns whether that happened.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, |st| st.connected && Shared::pending(st) == 0)
    }

    fn wait_until(&self, timeout: Duration, ready: impl Fn(&State) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        loop {
            if ready(&st) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || st.finished {
                return false;
            }
            st = self
                .shared
                .cond
                .wait_timeout(st, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    fn check_size(topic: &str, payload: &[u8]) -> Result<(), MqttError> {
        let size = topic.len() + payload.len();
        if size > MAX_PACKET - 64 {
            return Err(MqttError::PayloadTooLarge {
                topic: topic.to_owned(),
                size,
                max: MAX_PACKET - 64,
            });
        }
        Ok(())
    }
}

impl EventSink for MqttSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn publish(&mut self, event: &Event) -> Result<(), SinkError> {
        let sh = &self.shared;
        let msg = Msg {
            topic: sh.topics.events.clone(),
            payload: event.to_json().into_bytes(),
            qos: sh.qos(),
            retain: false,
        };
        MqttSink::check_size(&msg.topic, &msg.payload)?;
        let mut st = sh.lock();
        if st.closing || st.finished {
            return Err(MqttError::Closed {
                broker: sh.broker.clone(),
            }
            .into());
        }
        if st.queue.len() >= sh.cfg.queue {
            st.dropped += 1;
            let dropped = st.dropped;
            log::warn!(
                "mqtt {}: queue full ({} events waiting for the broker), dropped {} event for \
                 {:?} (frame {}); {dropped} dropped so far",
                sh.broker,
                st.queue.len(),
                event.kind.as_str(),
                event.label,
                event.frame
            );
            return Err(MqttError::QueueFull {
                broker: sh.broker.clone(),
                capacity: sh.cfg.queue,
                dropped,
            }
            .into());
        }
        let id = st.next_id;
        st.next_id += 1;
        st.queue.push_back(Queued {
            id,
            msg,
            acked: false,
        });
        let on = event.kind == crate::event::EventKind::Start;
        st.states.insert(event.label.clone(), on);
        st.dirty.insert(event.label.clone());
        sh.flush(&mut st);
        Ok(())
    }

    /// Statistics are best effort (QoS 0): sent when connected, dropped otherwise.
    fn publish_stats(&mut self, stats: &Stats) -> Result<(), SinkError> {
        let sh = &self.shared;
        let payload = stats.to_json().into_bytes();
        MqttSink::check_size(&sh.topics.stats, &payload)?;
        let mut st = sh.lock();
        if st.connected && !st.closing && st.control.len() < 8 {
            st.control.push_back(Msg {
                topic: sh.topics.stats.clone(),
                payload,
                qos: QoS::AtMostOnce,
                retain: false,
            });
            sh.flush(&mut st);
        }
        Ok(())
    }

    /// Waits (up to the close timeout) for the queue to drain, publishes `offline` (retained),
    /// disconnects and stops the connection thread. Returns `Undelivered` when accepted events
    /// could not be delivered in time.
    fn close(&mut self) -> Result<(), SinkError> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        let sh = Arc::clone(&self.shared);
        let deadline = Instant::now() + self.close_timeout;
        {
            let mut st = sh.lock();
            st.closing = true;
            // Drain the queue (states and control messages only matter while connected: they
            // are regenerated on the next connect anyway).
            while (!st.queue.is_empty() || (st.connected && Shared::pending(&st) > 0))
                && !st.finished
            {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                st = sh
                    .cond
                    .wait_timeout(st, deadline - now)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            // Say goodbye (the will is not sent on a clean disconnect).
            if st.connected {
                st.control.push_back(Msg {
                    topic: sh.topics.availability.clone(),
                    payload: b"offline".to_vec(),
                    qos: sh.qos(),
                    retain: true,
                });
                sh.flush(&mut st);
                let offline_deadline =
                    Instant::now() + Duration::from_secs(2).min(self.close_timeout);
                while st.connected
                    && !st.finished
                    && (!st.control.is_empty() || !st.inflight.is_empty())
                {
                    let now = Instant::now();
                    if now >= offline_deadline {
                        break;
                    }
                    st = sh
                        .cond
                        .wait_timeout(st, offline_deadline - now)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
                if let Some(client) = &st.client
                    && let Err(e) = client.try_disconnect()
                {
                    log::debug!("mqtt {}: disconnect request failed: {e}", sh.broker);
                }
            }
            st.stop = true;
            sh.cond.notify_all();
        }
        // Give the worker a moment to send DISCONNECT, then close the request channel so it
        // stops even if it is blocked on the connection.
        let stop_deadline = Instant::now() + Duration::from_secs(2);
        {
            let mut st = sh.lock();
            while !st.finished && Instant::now() < stop_deadline {
                let wait = stop_deadline.saturating_duration_since(Instant::now());
                st = sh
                    .cond
                    .wait_timeout(st, wait)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            st.client = None;
        }
        let undelivered = sh.lock().queue.len();
        if let Some(w) = self.worker.take() {
            if sh.lock().finished {
                if w.join().is_err() {
                    log::error!("mqtt {}: the connection thread panicked", sh.broker);
                }
            } else {
                // Blocked in a connect attempt; it exits by itself when that times out.
                log::debug!("mqtt {}: not waiting for the connection thread", sh.broker);
            }
        }
        if undelivered > 0 {
            log::warn!(
                "mqtt {}: {undelivered} events not delivered at close",
                sh.broker
            );
            return Err(MqttError::Undelivered {
                broker: sh.broker.clone(),
                count: undelivered,
            }
            .into());
        }
        log::info!("mqtt {}: closed", sh.broker);
        Ok(())
    }
}

impl Drop for MqttSink {
    fn drop(&mut self) {
        if !self.closed {
            let mut st = self.shared.lock();
            st.stop = true;
            st.closing = true;
            st.client = None;
            self.shared.cond.notify_all();
        }
    }
}

/// The connection thread: polls rumqttc, applies acknowledgements, reconnects with backoff.
fn run(sh: &Shared, connection: &mut Connection, opts: &MqttOptions) {
    let mut backoff = opts.reconnect_min;
    let mut failures: u32 = 0;
    loop {
        if sh.lock().stop {
            break;
        }
        match connection.recv() {
            Ok(Ok(event)) => {
                let mut st = sh.lock();
                match event {
                    MqttEvent::Incoming(Packet::ConnAck(_)) => {
                        let queued = st.queue.len();
                        if failures > 0 {
                            log::info!(
                                "mqtt {}: reconnected; resending {queued} queued events",
                                sh.broker
                            );
                        } else {
                            log::info!("mqtt {}: connected", sh.broker);
                        }
                        failures = 0;
                        backoff = opts.reconnect_min;
                        sh.on_connected(&mut st);
                    }
                    MqttEvent::Outgoing(Outgoing::Publish(pkid)) => {
                        if let Some(i) = st.inflight.iter().position(|f| f.pkid.is_none()) {
                            st.inflight[i].pkid = Some(pkid);
                            if st.inflight[i].qos == QoS::AtMostOnce {
                                sh.complete(&mut st, i);
                            }
                        }
                    }
                    MqttEvent::Incoming(Packet::PubAck(ack)) => {
                        if let Some(i) = st
                            .inflight
                            .iter()
                            .position(|f| f.pkid == Some(ack.pkid) && f.qos == QoS::AtLeastOnce)
                        {
                            sh.complete(&mut st, i);
                        }
                    }
                    MqttEvent::Incoming(Packet::PubRec(rec)) => {
                        if let Some(i) = st
                            .inflight
                            .iter()
                            .position(|f| f.pkid == Some(rec.pkid) && f.qos == QoS::ExactlyOnce)
                        {
                            sh.complete(&mut st, i);
                        }
                    }
                    MqttEvent::Outgoing(Outgoing::AwaitAck(pkid)) => {
                        log::error!(
                            "mqtt {}: packet id {pkid} collided (the broker acknowledges out of \
                             order)",
                            sh.broker
                        );
                    }
                    MqttEvent::Outgoing(Outgoing::Disconnect) if st.stop || st.closing => {
                        break;
                    }
                    _ => {}
                }
                sh.flush(&mut st);
            }
            Ok(Err(e)) => {
                let mut st = sh.lock();
                let was_connected = st.connected;
                sh.reset(&mut st, connection);
                if st.stop {
                    break;
                }
                failures = failures.saturating_add(1);
                if was_connected || failures == 1 {
                    log::warn!(
                        "mqtt {}: {} ({e}); {} events queued, retrying in {backoff:?}",
                        sh.broker,
                        if was_connected {
                            "connection lost"
                        } else {
                            "cannot connect"
                        },
                        st.queue.len()
                    );
                } else {
                    log::debug!("mqtt {}: still cannot connect: {e}", sh.broker);
                }
                // Sleep the backoff, waking early on close.
                let until = Instant::now() + backoff;
                while !st.stop {
                    let now = Instant::now();
                    if now >= until {
                        break;
                    }
                    st = sh
                        .cond
                        .wait_timeout(st, until - now)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
                backoff = (backoff * 2).min(opts.reconnect_max);
            }
            // Every client handle is gone.
            Err(_) => break,
        }
    }
    let mut st = sh.lock();
    st.connected = false;
    st.finished = true;
    sh.cond.notify_all();
}

/// Connects once to the configured broker (with a client id suffixed `-probe`, so a running
/// daemon is not kicked off), waits up to `timeout` for the CONNACK, and disconnects.
pub fn probe(cfg: &MqttConfig, camera: &str, timeout: Duration) -> Result<String, MqttError> {
    let broker = format!("{}:{}", cfg.host, cfg.port);
    let (mut opts, net) = build_options(cfg, camera, "-probe", timeout)?;
    // Should the probe die mid-way, its will must not overwrite the daemon's availability.
    opts.set_last_will(LastWill::new(
        format!("{}/probe", cfg.prefix),
        "",
        QoS::AtMostOnce,
        false,
    ));
    let (client, mut connection) = Client::new(opts, 4);
    connection.eventloop.set_network_options(net);
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(MqttError::Timeout {
                broker,
                after: timeout,
            });
        }
        match connection.recv_timeout(left) {
            Ok(Ok(MqttEvent::Incoming(Packet::ConnAck(_)))) => {
                let _ = client.try_disconnect();
                // Let the DISCONNECT go out.
                let _ = connection.recv_timeout(Duration::from_millis(200));
                return Ok(format!("connected to {broker}"));
            }
            Ok(Ok(_)) => {}
            Ok(Err(source)) => {
                return Err(MqttError::Connect {
                    broker,
                    source: Box::new(source),
                });
            }
            Err(_) => {
                return Err(MqttError::Timeout {
                    broker,
                    after: timeout,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> MqttConfig {
        MqttConfig {
            host: "localhost".into(),
            port: 1883,
            prefix: "edgeclip".into(),
            client_id: Some("test".into()),
            username: None,
            password: None,
            tls_ca: None,
            qos: 1,
            keep_alive_s: 30,
            homeassistant_discovery: true,
            discovery_prefix: "homeassistant".into(),
            queue: 4,
        }
    }

    #[test]
    fn topic_names() {
        let t = Topics::new("edgeclip", "cam0", "homeassistant");
        assert_eq!(t.events, "edgeclip/cam0/events");
        assert_eq!(t.availability, "edgeclip/availability");
        assert_eq!(t.stats, "edgeclip/cam0/stats");
        assert_eq!(t.state("person"), "edgeclip/cam0/person/state");
        assert_eq!(
            t.discovery("person"),
            "homeassistant/binary_sensor/edgeclip_cam0/person/config"
        );
        let t = Topics::new("home/cams", "front-door", "ha");
        assert_eq!(
            t.discovery("cat"),
            "ha/binary_sensor/home_cams_front-door/cat/config"
        );
    }

    #[test]
    fn discovery_payload_fields() {
        let t = Topics::new("edgeclip", "cam0", "homeassistant");
        let v: serde_json::Value = serde_json::from_str(&t.discovery_payload("person")).unwrap();
        assert_eq!(v["name"], "person");
        assert_eq!(v["unique_id"], "edgeclip_cam0_person");
        assert_eq!(v["state_topic"], "edgeclip/cam0/person/state");
        assert_eq!(v["availability_topic"], "edgeclip/availability");
        assert_eq!(v["payload_on"], "ON");
        assert_eq!(v["payload_off"], "OFF");
        assert_eq!(v["device"]["identifiers"][0], "edgeclip_cam0");
        assert_eq!(v["device"]["manufacturer"], "edgeclip");
        assert_eq!(v["device"]["model"], "edgeclip");
        assert!(v["device"]["name"].as_str().unwrap().contains("cam0"));
    }

    #[test]
    fn options_that_rumqttc_asserts_on_are_refused_first() {
        let mut c = cfg();
        c.keep_alive_s = 0;
        let err = build_options(&c, "cam0", "", Duration::from_secs(1))
            .err()
            .expect("an error");
        assert!(err.to_string().contains("mqtt.keep_alive_s"), "{err}");
        let mut c = cfg();
        c.client_id = Some(String::new());
        let err = build_options(&c, "cam0", "", Duration::from_secs(1))
            .err()
            .expect("an error");
        assert!(err.to_string().contains("mqtt.client_id"), "{err}");
        let mut c = cfg();
        c.qos = 7;
        assert!(build_options(&c, "cam0", "", Duration::from_secs(1)).is_err());
        let mut c = cfg();
        c.tls_ca = Some("/nonexistent/ca.pem".into());
        let err = build_options(&c, "cam0", "", Duration::from_secs(1))
            .err()
            .expect("an error");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
        let (o, _) = build_options(&cfg(), "cam0", "-probe", Duration::from_secs(1)).unwrap();
        assert_eq!(o.client_id(), "test-probe");
        assert_eq!(o.keep_alive(), Duration::from_secs(30));
        let will = o.last_will().unwrap();
        assert_eq!(will.topic, "edgeclip/availability");
        assert_eq!(&will.message[..], b"offline");
        assert!(will.retain);
    }

    #[test]
    fn default_client_id_names_the_camera() {
        let id = default_client_id("cam0");
        assert!(id.starts_with("edgeclip-") && id.ends_with("-cam0") || id == "edgeclip-cam0");
        assert!(!id.contains(char::is_whitespace));
    }

    fn event(frame: u64) -> Event {
        Event {
            kind: crate::event::EventKind::Start,
            camera: "cam0".into(),
            label: "person".into(),
            prompt: "p".into(),
            score: 0.0,
            prob: 1.0,
            frame,
            ts: std::time::SystemTime::UNIX_EPOCH,
            latency_ms: 0.0,
        }
    }

    #[test]
    fn queue_is_bounded_while_the_broker_is_away() {
        // Port 1 on loopback: nothing listens, connecting fails at once.
        let mut c = cfg();
        c.host = "127.0.0.1".into();
        c.port = 1;
        let mut sink = MqttSink::connect(
            &c,
            "cam0",
            &["person".into()],
            MqttOptions {
                close_timeout: Duration::from_millis(100),
                ..MqttOptions::default()
            },
        )
        .unwrap();
        for f in 0..4 {
            sink.publish(&event(f)).unwrap();
        }
        let err = sink.publish(&event(4)).unwrap_err();
        assert!(err.to_string().contains("queue full"), "{err}");
        assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
        assert_eq!(sink.dropped(), 1);
        assert_eq!(sink.queued(), 4);
        assert!(!sink.is_connected());
        let err = sink.close().unwrap_err();
        assert!(err.to_string().contains("4 accepted events"), "{err}");
        let err = sink.publish(&event(5)).unwrap_err();
        assert!(err.to_string().contains("closed"), "{err}");
    }

    #[test]
    fn probe_names_the_broker() {
        let mut c = cfg();
        c.host = "127.0.0.1".into();
        c.port = 1;
        let err = probe(&c, "cam0", Duration::from_secs(3)).unwrap_err();
        assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    }
}
