//! Events to an MQTT broker (rumqttc), with a bounded queue that survives broker restarts.
//!
//! One sink, one connection, every camera of the daemon. Topics (`P` = `mqtt.prefix`, `D` =
//! `mqtt.device`, `C` = camera name, `Z` = zone name, `L` = label, `N` = the camera's Home
//! Assistant node id `P_C`, `H` = `mqtt.discovery_prefix`):
//!
//! | topic                  | payload                     | QoS         | retained |
//! |------------------------|-----------------------------|-------------|----------|
//! | `P/C/events`           | event JSON (with `"zone"`)  | `mqtt.qos`  | no       |
//! | `P/C/L/state`          | `ON` / `OFF` (zone `all`)   | `mqtt.qos`  | yes      |
//! | `P/C/Z/L/state`        | `ON` / `OFF` (zone `Z`)     | `mqtt.qos`  | yes      |
//! | `P/C/L/snapshot`       | latest snapshot (JPEG), zone `all` | `mqtt.qos` | yes |
//! | `P/C/Z/L/snapshot`     | latest snapshot (JPEG), zone `Z`   | `mqtt.qos` | yes |
//! | `P/D/availability`     | `online` / `offline` (will) | `mqtt.qos`  | yes      |
//! | `P/C/availability`     | `online` / `offline`        | `mqtt.qos`  | yes      |
//! | `P/C/stats`            | statistics JSON             | 0           | no       |
//! | `H/binary_sensor/N/L/config`, `H/binary_sensor/N/Z__L/config` (discovery) | Home Assistant config | `mqtt.qos` | yes |
//! | `H/image/N/L/config`, `H/image/N/Z__L/config` (discovery, with snapshots) | Home Assistant config | `mqtt.qos` | yes |
//!
//! The zone `all` (the whole frame) keeps the topic names, unique ids (`N_L`) and entity names
//! (`L`) of a daemon without zones, so a one-camera config without zones publishes exactly
//! what it did before zones existed; another zone's entity is `N_Z__L`, named `L (Z)`. Each
//! camera is one Home Assistant device (node id `N`); each entity is available while both the
//! process and its camera are. A config whose names would give two entities one unique id (a
//! label with `__` in it, or cameras `a` with label `b_c` and `a_b` with `c`) is logged at
//! ERROR when the sink starts ([`Topics::collisions`]).
//!
//! # Delivery
//!
//! Accepted events are sent in order, at least once, and an event is only ever dropped (and
//! counted, `events_dropped` in the stats) when the queue is full (then the oldest waiting
//! episode, a start with its end, goes whole) or when it is older than `mqtt.max_event_age_s`
//! when (re)sent, while the retained states are not queued events at all: every watched
//! (camera, zone, label)'s latest state is republished after each (re)connect, so they always
//! equal the trigger's. The events of all cameras share one queue (`mqtt.queue` bounds them
//! all) and keep their order among each other. An event
//! that waited for a (re)connect carries `"replayed":true` and its original `ts`. (The details
//! and the reasons: the `queue` module.)
//!
//! [`MqttSink::publish`] never touches the network: it appends the event to the sink's own
//! bounded queue and returns. An event is *accepted* when `publish` returns `Ok`; an accepted
//! event stays in the queue until the broker acknowledged it (PUBACK for QoS 1, PUBREC for
//! QoS 2, written to the socket for QoS 0), so a broker restart loses nothing: when the
//! connection drops, every unacknowledged event is sent again, in order, after the reconnect
//! (at-least-once; a consumer may see an event twice, never out of order within a session).
//! rumqttc's own replay of unacknowledged packets is switched off by clearing its pending list,
//! so this queue is the single source of truth. Drops are logged at WARN.
//!
//! A worker thread drives rumqttc's [`rumqttc::Connection`]: it reconnects with a capped
//! exponential backoff, republishes `online`, each camera's availability, the discovery configs
//! and every retained state on each connect (and each latest snapshot: like a state, only the
//! latest per camera, zone and label is kept, so a broker that was away gets one JPEG each),
//! and feeds the queue to rumqttc through a small window of
//! in-flight messages (smaller than rumqttc's bounded request channel and in-flight limit, so
//! neither can fill up or collide).
//!
//! # Layout
//!
//! [`topics`](Topics) names the topics and builds the discovery payloads; `options` turns a
//! validated `[mqtt]` table into rumqttc's options; `queue` is the delivery logic as a pure
//! state machine (what to send next, what an acknowledgement or a reconnect changes), tested
//! through any interleaving of broker events; `worker` is the connection thread that drives
//! rumqttc and feeds the queue. This file is the sink's API and its close protocol.

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use rumqttc::{Client, ConnectionError};

use super::{CameraStatus, EventSink, SinkError};
use crate::config::{ConfigError, MqttConfig};
use crate::event::{Event, Snapshot, Stats};

mod diagnose;
mod options;
mod probe;
mod queue;
mod topics;
mod worker;

pub use probe::probe;
pub use topics::{Topics, Watched};

use options::{MAX_PACKET, RUMQTTC_INFLIGHT};
use queue::{Queue, Refused, Settings};
use worker::{Shared, State};

/// What went wrong with the MQTT sink. Variants name the broker (`host:port`) or the topic.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// The `[mqtt]` table breaks a rule of [`MqttConfig::validate`] (some would make rumqttc
    /// assert); a config file is refused at load already, a table built in code here.
    #[error("mqtt option {key}: {message}")]
    InvalidOption {
        /// The config key of the first problem.
        key: String,
        /// What is wrong (followed by any further problems, each with its key).
        message: String,
    },
    /// A TLS file (`mqtt.tls_ca`, `mqtt.tls_cert`, `mqtt.tls_key`) cannot be read or holds no
    /// usable PEM.
    #[error("{key} {}: {message}", path.display())]
    TlsFile {
        /// The config key.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The system's CA certificates (`mqtt.tls = true` without `mqtt.tls_ca`) cannot be used.
    #[error("mqtt.tls: {message}")]
    TlsRoots {
        /// Why.
        message: String,
    },
    /// The offline queue is full and every waiting event is in flight: the event was dropped.
    #[error(
        "mqtt {broker}: event queue full ({capacity} events in flight to the broker); event \
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
    /// The end of an episode whose start was dropped (full queue or too old): dropped with it.
    #[error("mqtt {broker}: end event dropped with its start ({dropped} dropped so far)")]
    StartDropped {
        /// `host:port`.
        broker: String,
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
    #[error("mqtt {broker}: {words}")]
    Connect {
        /// `host:port`.
        broker: String,
        /// What failed, in words (`the broker refused the credentials ...`).
        words: String,
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
    /// The daemon writes snapshots: Home Assistant discovery (when on) announces an `image`
    /// entity per label for its snapshot topic. Default off.
    pub snapshots: bool,
}

impl Default for MqttOptions {
    fn default() -> Self {
        MqttOptions {
            reconnect_min: Duration::from_millis(250),
            reconnect_max: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            close_timeout: Duration::from_secs(5),
            window: 32,
            snapshots: false,
        }
    }
}

impl MqttError {
    /// The problems [`MqttConfig::validate`] found, as one error naming the first key (and the
    /// keys of the others in the message).
    fn invalid(err: ConfigError) -> MqttError {
        let mut problems = err.problems.into_iter();
        let Some(first) = problems.next() else {
            return MqttError::InvalidOption {
                key: "mqtt".into(),
                message: err.file.display().to_string(),
            };
        };
        let mut message = first.message;
        for p in problems {
            message.push_str(&format!("; {p}"));
        }
        MqttError::InvalidOption {
            key: first.key,
            message,
        }
    }
}

/// rumqttc's options for `cfg`, which is validated first: the table may come from code rather
/// than from a checked file, and rumqttc asserts on some values.
fn rumqttc_options(
    cfg: &MqttConfig,
    cameras: &[&str],
    client_suffix: &str,
    connect_timeout: Duration,
) -> Result<(rumqttc::MqttOptions, rumqttc::NetworkOptions), MqttError> {
    cfg.validate().map_err(MqttError::invalid)?;
    options::build(cfg, cameras, client_suffix, connect_timeout)
}

/// Publishes events, states, availability, statistics and discovery of every camera to an MQTT
/// broker, over one connection.
pub struct MqttSink {
    name: String,
    shared: Arc<Shared>,
    topics: Topics,
    /// `mqtt.queue`.
    capacity: usize,
    worker: Option<JoinHandle<()>>,
    close_timeout: Duration,
    closed: bool,
}

impl MqttSink {
    /// Starts the sink: the connection is made in the background (a broker that is down now is
    /// retried with backoff; events wait in the queue meanwhile). `watched` is every
    /// (camera, zone, label) of the daemon ([`Watched::all`]): each one's state starts `OFF`
    /// and its discovery configs are published when `homeassistant_discovery` is on. The
    /// default client id names the first camera of `watched`, as for a one-camera daemon; the
    /// default device name (the host's) gets `-device` when it equals any camera's name. `cfg` is validated first (a table built in code may break the
    /// config's rules): a bad value is an [`MqttError::InvalidOption`] naming its key.
    pub fn connect(
        cfg: &MqttConfig,
        watched: &[Watched],
        options: MqttOptions,
    ) -> Result<MqttSink, MqttError> {
        // The cameras in the order they are watched (the config's): the first names the client.
        let mut cameras: Vec<&str> = Vec::new();
        for w in watched {
            if !cameras.contains(&w.camera.as_str()) {
                cameras.push(&w.camera);
            }
        }
        let broker = format!("{}:{}", cfg.host, cfg.port);
        let (opts, net) = rumqttc_options(cfg, &cameras, "", options.connect_timeout)?;
        let window = options.window.clamp(1, usize::from(RUMQTTC_INFLIGHT) / 2);
        let (client, mut connection) = Client::new(opts, window + 4);
        connection.eventloop.set_network_options(net);
        let device = options::device_name(cfg, &cameras);
        let topics = Topics::new(&cfg.prefix, &device, &cfg.discovery_prefix);
        if cfg.homeassistant_discovery {
            log_collisions(&topics, watched);
        }
        let queue = Queue::new(Settings {
            topics: topics.clone(),
            watched: watched.to_vec(),
            qos: options::qos_of(cfg.qos),
            discovery: cfg.homeassistant_discovery,
            snapshots: options.snapshots,
            capacity: cfg.queue,
            max_age: (cfg.max_event_age_s > 0).then(|| Duration::from_secs(cfg.max_event_age_s)),
            window,
        });
        let shared = Arc::new(Shared::new(client, queue, diagnose::Context::of(cfg)));
        let worker_shared = Arc::clone(&shared);
        let opts = options.clone();
        let worker = std::thread::Builder::new()
            .name("edgeclip-mqtt".into())
            .spawn(move || worker::run(&worker_shared, &mut connection, &opts))
            .map_err(|source| MqttError::Thread {
                broker: broker.clone(),
                source,
            })?;
        log::info!("mqtt: publishing to {broker} under {}/", cfg.prefix);
        Ok(MqttSink {
            name: format!("mqtt://{broker}"),
            shared,
            topics,
            capacity: cfg.queue,
            worker: Some(worker),
            close_timeout: options.close_timeout,
            closed: false,
        })
    }

    /// The topics this sink publishes to.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Whether the broker connection is up.
    pub fn is_connected(&self) -> bool {
        self.shared.lock().queue.is_connected()
    }

    /// Accepted events not yet acknowledged by the broker.
    pub fn queued(&self) -> usize {
        self.shared.lock().queue.queued()
    }

    /// Events dropped since start: for room in a full queue, or too old to send.
    pub fn dropped(&self) -> u64 {
        self.shared.lock().queue.dropped()
    }

    /// Events acknowledged by the broker, since start.
    pub fn delivered(&self) -> u64 {
        self.shared.lock().queue.delivered()
    }

    /// Waits up to `timeout` for the broker connection to be up; returns whether it is.
    pub fn wait_connected(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, |st| st.queue.is_connected())
    }

    /// Waits up to `timeout` until every accepted event and state message is acknowledged;
    /// returns whether that happened.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, |st| {
            st.queue.is_connected() && st.queue.pending() == 0
        })
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
            st = self.shared.wait(st, deadline - now);
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

/// Logs at ERROR each pair of watched things whose Home Assistant entities would share a
/// unique id (one would replace the other).
fn log_collisions(topics: &Topics, watched: &[Watched]) {
    for (a, b, id) in topics.collisions(watched) {
        log::error!(
            "mqtt discovery: camera {:?} zone {:?} label {:?} and camera {:?} zone {:?} label \
             {:?} get the same Home Assistant id {id:?}; rename one of them",
            a.camera,
            a.zone,
            a.label,
            b.camera,
            b.zone,
            b.label
        );
    }
}

/// What `event` is about.
fn watched_of(event: &Event) -> Watched {
    Watched {
        camera: event.camera.clone(),
        zone: event.zone.clone(),
        label: event.label.clone(),
    }
}

impl EventSink for MqttSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn publish(&mut self, event: &Event) -> Result<(), SinkError> {
        let sh = &self.shared;
        let payload = event.to_json().into_bytes();
        MqttSink::check_size(&self.topics.events(&event.camera), &payload)?;
        let mut st = sh.lock();
        let closed = || MqttError::Closed {
            broker: sh.broker.clone(),
        };
        if st.finished {
            return Err(closed().into());
        }
        let on = event.kind == crate::event::EventKind::Start;
        let dropped_before = st.queue.dropped();
        st.queue.expire(SystemTime::now());
        let result = st.queue.accept(&watched_of(event), on, event.ts, payload);
        let dropped = st.queue.dropped();
        if dropped > dropped_before {
            log::warn!(
                "mqtt {}: dropped {} event(s) for room or age ({} waiting for the broker, the \
                 {} event for {:?} in zone {:?} of {:?} in frame {} {}); {dropped} dropped so \
                 far ({} for room, {} for age)",
                sh.broker,
                dropped - dropped_before,
                st.queue.queued(),
                event.kind.as_str(),
                event.label,
                event.zone,
                event.camera,
                event.frame,
                if result.is_ok() { "kept" } else { "among them" },
                st.queue.dropped_full(),
                st.queue.dropped_old(),
            );
        }
        // The state changed either way: it goes out after the events.
        sh.flush(&mut st);
        match result {
            Ok(_) => Ok(()),
            Err(Refused::Closed) => Err(closed().into()),
            Err(Refused::Full { .. }) => Err(MqttError::QueueFull {
                broker: sh.broker.clone(),
                capacity: self.capacity,
                dropped,
            }
            .into()),
            Err(Refused::StartDropped { .. }) => Err(MqttError::StartDropped {
                broker: sh.broker.clone(),
                dropped,
            }
            .into()),
        }
    }

    /// Statistics are best effort (QoS 0): sent when connected, dropped otherwise.
    fn publish_stats(&mut self, stats: &Stats) -> Result<(), SinkError> {
        let sh = &self.shared;
        let payload = stats.to_json().into_bytes();
        MqttSink::check_size(&self.topics.stats(&stats.camera), &payload)?;
        let mut st = sh.lock();
        if st.queue.offer_stats(&stats.camera, payload) {
            sh.flush(&mut st);
        }
        Ok(())
    }

    /// Snapshots are state-like: the latest per camera, zone and label is published retained
    /// on `P/C/L/snapshot` (zone `all`) or `P/C/Z/L/snapshot` when connected, and again after
    /// every reconnect; one not yet sent is replaced.
    fn publish_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), SinkError> {
        let sh = &self.shared;
        let watched = Watched {
            camera: snapshot.camera.clone(),
            zone: snapshot.zone.clone(),
            label: snapshot.label.clone(),
        };
        let topic = self.topics.snapshot(&watched);
        MqttSink::check_size(&topic, &snapshot.jpeg)?;
        let mut st = sh.lock();
        if st.finished || !st.queue.offer_snapshot(&watched, snapshot.jpeg.clone()) {
            return Err(MqttError::Closed {
                broker: sh.broker.clone(),
            }
            .into());
        }
        sh.flush(&mut st);
        Ok(())
    }

    /// `P/C/availability` of `camera`, retained: `online` or `offline` (the reason goes to the
    /// log only); the latest of each camera is republished on each connect.
    fn camera_status(&mut self, camera: &str, status: &CameraStatus) -> Result<(), SinkError> {
        let mut st = self.shared.lock();
        st.queue
            .camera_status(camera, matches!(status, CameraStatus::Online));
        self.shared.flush(&mut st);
        Ok(())
    }

    /// Discovery configs for the (camera, zone, label) a reload added, deleted for the ones
    /// it removed.
    fn labels_changed(&mut self, watched: &[Watched]) -> Result<(), SinkError> {
        if self.shared.lock().queue.discovery() {
            log_collisions(&self.topics, watched);
        }
        let mut st = self.shared.lock();
        st.queue.set_watched(watched);
        self.shared.flush(&mut st);
        Ok(())
    }

    fn events_dropped(&self) -> u64 {
        self.dropped()
    }

    fn events_queued(&self) -> u64 {
        self.queued() as u64
    }

    /// Waits (up to the close timeout) for the queue to drain, publishes `offline` (retained) for
    /// every camera and the device, disconnects and stops the connection thread. Returns `Undelivered` when accepted events
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
            st.queue.close();
            // Drain the queue (states and control messages only matter while connected: they
            // are regenerated on the next connect anyway).
            while (st.queue.queued() > 0 || (st.queue.is_connected() && st.queue.pending() > 0))
                && !st.finished
            {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                st = sh.wait(st, deadline - now);
            }
            // Say goodbye (the will is not sent on a clean disconnect).
            if st.queue.is_connected() {
                st.queue.say_offline();
                sh.flush(&mut st);
                let offline_deadline =
                    Instant::now() + Duration::from_secs(2).min(self.close_timeout);
                while st.queue.is_connected() && !st.finished && st.queue.control_or_inflight() {
                    let now = Instant::now();
                    if now >= offline_deadline {
                        break;
                    }
                    st = sh.wait(st, offline_deadline - now);
                }
                if let Some(client) = &st.client
                    && let Err(e) = client.try_disconnect()
                {
                    log::debug!("mqtt {}: disconnect request failed: {e}", sh.broker);
                }
            }
            st.stop = true;
            sh.notify();
        }
        // Give the worker a moment to send DISCONNECT, then close the request channel so it
        // stops even if it is blocked on the connection.
        let stop_deadline = Instant::now() + Duration::from_secs(2);
        {
            let mut st = sh.lock();
            while !st.finished && Instant::now() < stop_deadline {
                let wait = stop_deadline.saturating_duration_since(Instant::now());
                st = sh.wait(st, wait);
            }
            st.client = None;
        }
        let undelivered = sh.lock().queue.queued();
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
            st.queue.close();
            st.client = None;
            self.shared.notify();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid `[mqtt]` table (shared with the other test modules of the sink).
    pub(super) fn cfg() -> MqttConfig {
        MqttConfig {
            host: "localhost".into(),
            port: 1883,
            prefix: "edgeclip".into(),
            client_id: Some("test".into()),
            username: None,
            password: None,
            tls: false,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            qos: 1,
            keep_alive_s: 30,
            homeassistant_discovery: true,
            discovery_prefix: "homeassistant".into(),
            queue: 4,
            max_event_age_s: 3600,
            device: Some("pi4".into()),
        }
    }

    #[test]
    fn options_that_rumqttc_asserts_on_are_refused_first() {
        let mut c = cfg();
        c.keep_alive_s = 0;
        let err = rumqttc_options(&c, &["cam0"], "", Duration::from_secs(1))
            .err()
            .expect("an error");
        assert!(err.to_string().contains("mqtt.keep_alive_s"), "{err}");
        let mut c = cfg();
        c.client_id = Some(String::new());
        let err = rumqttc_options(&c, &["cam0"], "", Duration::from_secs(1))
            .err()
            .expect("an error");
        assert!(err.to_string().contains("mqtt.client_id"), "{err}");
        let mut c = cfg();
        c.qos = 7;
        assert!(rumqttc_options(&c, &["cam0"], "", Duration::from_secs(1)).is_err());
        let mut c = cfg();
        c.tls = true;
        c.tls_ca = Some("/nonexistent/ca.pem".into());
        let err = rumqttc_options(&c, &["cam0"], "", Duration::from_secs(1))
            .err()
            .expect("an error");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
        let (o, _) = rumqttc_options(&cfg(), &["cam0"], "-probe", Duration::from_secs(1)).unwrap();
        assert_eq!(o.client_id(), "test-probe");
        assert_eq!(o.keep_alive(), Duration::from_secs(30));
        let will = o.last_will().unwrap();
        assert_eq!(will.topic, "edgeclip/pi4/availability");
        assert_eq!(&will.message[..], b"offline");
        assert!(will.retain);
    }

    #[test]
    fn a_table_built_in_code_is_checked_by_the_config_rules() {
        // Every problem is reported, the first one's key in the error.
        let mut c = cfg();
        c.queue = 0;
        c.qos = 3;
        let err = MqttSink::connect(&c, &[], MqttOptions::default())
            .err()
            .expect("an error");
        match &err {
            MqttError::InvalidOption { key, message } => {
                assert_eq!(key, "mqtt.qos", "{err}");
                assert!(message.contains("mqtt.queue"), "{err}");
            }
            other => panic!("not InvalidOption: {other}"),
        }
        assert_eq!(
            err.to_string(),
            "mqtt option mqtt.qos: must be 0, 1 or 2, got 3; mqtt.queue: must be in [1, 100000], \
             got 0"
        );
        let mut c = cfg();
        c.host = "mqtt://broker".into();
        let err = probe(&c, "cam0", Duration::from_secs(1)).unwrap_err();
        assert!(err.to_string().contains("mqtt.host"), "{err}");
    }

    /// The event of `frame`: a start when it is even, else an end; `ts` now.
    fn event(frame: u64) -> Event {
        Event {
            kind: if frame.is_multiple_of(2) {
                crate::event::EventKind::Start
            } else {
                crate::event::EventKind::End
            },
            camera: "cam0".into(),
            zone: "all".into(),
            label: "person".into(),
            prompt: "p".into(),
            score: 0.0,
            prob: 1.0,
            frame,
            ts: SystemTime::now(),
            latency_ms: 0.0,
            runner_up: None,
            snapshot: None,
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
            &[Watched::whole("cam0", "person")],
            MqttOptions {
                close_timeout: Duration::from_millis(100),
                ..MqttOptions::default()
            },
        )
        .unwrap();
        for f in 0..4 {
            sink.publish(&event(f)).unwrap();
        }
        // Full: the oldest episode (frames 0 and 1) makes room for the newest event.
        sink.publish(&event(4)).unwrap();
        assert_eq!((sink.dropped(), sink.queued()), (2, 3));
        assert_eq!(sink.events_dropped(), 2);
        // Too old to send (mqtt.max_event_age_s is an hour): dropped at once, with its end.
        let mut old = event(6);
        old.label = "cat".into();
        old.ts = SystemTime::now() - Duration::from_secs(7200);
        sink.publish(&old).unwrap();
        assert_eq!((sink.dropped(), sink.queued()), (3, 3));
        let mut end = event(7);
        end.label = "cat".into();
        let err = sink.publish(&end).unwrap_err();
        assert!(err.to_string().contains("dropped with its start"), "{err}");
        assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
        assert_eq!(sink.dropped(), 4);
        assert!(!sink.is_connected());
        let err = sink.close().unwrap_err();
        assert!(err.to_string().contains("3 accepted events"), "{err}");
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
