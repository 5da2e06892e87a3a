//! The MQTT sink's connection thread, and the lock it shares with the sink.
//!
//! Everything that touches rumqttc at run time is here: the thread that drives its
//! [`Connection`] (reconnecting with a capped exponential backoff), the translation of its
//! notifications into the events of the pure [`Queue`] (written, acknowledged, connected,
//! disconnected), and [`Shared::flush`], which hands rumqttc what the queue says to send.
//! The queue lives behind one `Mutex` with a `Condvar` that wakes whoever waits on delivery
//! (`close`, `wait_idle`) and the backoff sleep. A failed attempt is logged in words
//! ([`super::diagnose`]): the first of its kind at once, a repeat once a minute with a count.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rumqttc::{Client, Connection, Event as MqttEvent, Outgoing, Packet, QoS};

use super::MqttOptions;
use super::diagnose::{self, Context, Reporter, Severity};
use super::queue::Queue;

/// What the sink and its connection thread share.
pub(super) struct State {
    /// rumqttc's request handle; `None` once the sink let go of the connection.
    pub(super) client: Option<Client>,
    /// The delivery state.
    pub(super) queue: Queue,
    /// The worker must exit.
    pub(super) stop: bool,
    /// The worker has exited.
    pub(super) finished: bool,
}

/// [`State`] behind its lock, with the condition variable signalled on every change that
/// someone may wait for, and the broker's name for logs.
pub(super) struct Shared {
    state: Mutex<State>,
    cond: Condvar,
    /// `host:port`.
    pub(super) broker: String,
    /// How the sink connects, for the words of a failed attempt.
    pub(super) context: Context,
}

impl Shared {
    pub(super) fn new(client: Client, queue: Queue, context: Context) -> Shared {
        Shared {
            state: Mutex::new(State {
                client: Some(client),
                queue,
                stop: false,
                finished: false,
            }),
            cond: Condvar::new(),
            broker: format!("{}:{}", context.host, context.port),
            context,
        }
    }

    /// The state (a panic while it was held poisons nothing we rely on).
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits on the condition variable for at most `timeout`.
    pub(super) fn wait<'a>(
        &self,
        guard: MutexGuard<'a, State>,
        timeout: Duration,
    ) -> MutexGuard<'a, State> {
        self.cond
            .wait_timeout(guard, timeout)
            .map(|(g, _)| g)
            .unwrap_or_else(|p| p.into_inner().0)
    }

    /// Wakes every waiter.
    pub(super) fn notify(&self) {
        self.cond.notify_all();
    }

    /// Hands rumqttc as many messages as the queue's window allows, after dropping the events
    /// too old to send (`mqtt.max_event_age_s`).
    pub(super) fn flush(&self, st: &mut State) {
        let expired = st.queue.expire(std::time::SystemTime::now());
        if !expired.is_empty() {
            log::warn!(
                "mqtt {}: dropped {} event(s) older than mqtt.max_event_age_s; {} dropped so far \
                 ({} for room, {} for age)",
                self.broker,
                expired.len(),
                st.queue.dropped(),
                st.queue.dropped_full(),
                st.queue.dropped_old()
            );
        }
        while let Some(next) = st.queue.next_to_send() {
            let Some(client) = &st.client else { return };
            let m = next.message;
            match client.try_publish(m.topic, m.qos, m.retain, m.payload) {
                Ok(()) => st.queue.sent(),
                Err(e) => {
                    // The request channel is full or gone; retry on the next wake-up.
                    log::debug!("mqtt {}: rumqttc refused a request: {e}", self.broker);
                    return;
                }
            }
        }
    }

    /// The connection is gone: rumqttc must not replay its own copy of unacknowledged
    /// packets (the queue resends ours), and whatever was in flight is to be sent again.
    fn reset(&self, st: &mut State, connection: &mut Connection) {
        // `clean` moves rumqttc's in-flight packets and the requests still in its channel to
        // its pending list, which it would send first on reconnecting: drop them all.
        connection.eventloop.clean();
        connection.eventloop.pending.clear();
        connection.eventloop.state.events.clear();
        connection.eventloop.state.collision = None;
        st.queue.disconnected();
        self.notify();
    }
}

/// The connection thread: polls rumqttc, applies acknowledgements, reconnects with backoff.
pub(super) fn run(sh: &Shared, connection: &mut Connection, opts: &MqttOptions) {
    let mut backoff = opts.reconnect_min;
    let mut failures: u32 = 0;
    let mut reporter = Reporter::default();
    loop {
        if sh.lock().stop {
            break;
        }
        match connection.recv() {
            Ok(Ok(event)) => {
                let mut st = sh.lock();
                let changed = match event {
                    MqttEvent::Incoming(Packet::ConnAck(_)) => {
                        let queued = st.queue.queued();
                        if failures > 0 {
                            log::info!(
                                "mqtt {}: reconnected; resending {queued} queued events",
                                sh.broker
                            );
                        } else {
                            log::info!("mqtt {}: connected", sh.broker);
                        }
                        failures = 0;
                        reporter.connected();
                        backoff = opts.reconnect_min;
                        st.queue.connected();
                        true
                    }
                    MqttEvent::Outgoing(Outgoing::Publish(pkid)) => {
                        st.queue.written(pkid).is_some()
                    }
                    MqttEvent::Incoming(Packet::PubAck(ack)) => {
                        st.queue.acked(ack.pkid, QoS::AtLeastOnce).is_some()
                    }
                    MqttEvent::Incoming(Packet::PubRec(rec)) => {
                        st.queue.acked(rec.pkid, QoS::ExactlyOnce).is_some()
                    }
                    MqttEvent::Outgoing(Outgoing::AwaitAck(pkid)) => {
                        log::error!(
                            "mqtt {}: packet id {pkid} collided (the broker acknowledges out of \
                             order)",
                            sh.broker
                        );
                        false
                    }
                    MqttEvent::Outgoing(Outgoing::Disconnect)
                        if st.stop || st.queue.is_closing() =>
                    {
                        break;
                    }
                    _ => false,
                };
                sh.flush(&mut st);
                if changed {
                    sh.notify();
                }
            }
            Ok(Err(e)) => {
                let mut st = sh.lock();
                let was_connected = st.queue.is_connected();
                sh.reset(&mut st, connection);
                if st.stop {
                    break;
                }
                failures = failures.saturating_add(1);
                if was_connected {
                    log::warn!(
                        "mqtt {}: connection lost ({e}); {} events queued, retrying in \
                         {backoff:?}",
                        sh.broker,
                        st.queue.queued()
                    );
                } else {
                    log_failure(sh, &mut reporter, &e, backoff, opts, st.queue.queued());
                }
                // Sleep the backoff, waking early on close.
                let until = Instant::now() + backoff;
                while !st.stop {
                    let now = Instant::now();
                    if now >= until {
                        break;
                    }
                    st = sh.wait(st, until - now);
                }
                backoff = (backoff * 2).min(opts.reconnect_max);
            }
            // Every client handle is gone.
            Err(_) => break,
        }
    }
    let mut st = sh.lock();
    st.queue.disconnected();
    st.finished = true;
    sh.notify();
}

/// Logs a failed connection attempt, if [`Reporter`] says it is news: the first line of a
/// kind, then a reminder with a count once a minute. Refusals (credentials, certificates) are
/// errors an operator must fix; an absent broker is a warning.
fn log_failure(
    sh: &Shared,
    reporter: &mut Reporter,
    e: &rumqttc::ConnectionError,
    backoff: Duration,
    opts: &MqttOptions,
    queued: usize,
) {
    let failure = diagnose::describe(e, &sh.context);
    let level = match failure.severity {
        Severity::Refused => log::Level::Error,
        Severity::Transient => log::Level::Warn,
    };
    match reporter.failed(&failure.words, Instant::now()) {
        Some(diagnose::Report::First) => log::log!(
            level,
            "mqtt {}: {}; retrying in {backoff:?}, then up to every {:?}; {queued} events queued",
            sh.broker,
            failure.words,
            opts.reconnect_max
        ),
        Some(diagnose::Report::Reminder { attempts }) => log::log!(
            level,
            "mqtt {}: still: {} ({attempts} more attempts since the last report, retrying every \
             {:?}); {queued} events queued",
            sh.broker,
            failure.words,
            opts.reconnect_max
        ),
        None => log::debug!("mqtt {}: still cannot connect: {e}", sh.broker),
    }
}
