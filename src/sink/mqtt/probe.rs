//! `check-config --probe`'s MQTT check: one connect to the configured broker, without
//! disturbing a running daemon.

use std::time::{Duration, Instant};

use rumqttc::{Client, Event as MqttEvent, LastWill, Packet, QoS};

use super::{MqttError, diagnose, rumqttc_options};
use crate::config::MqttConfig;

/// Connects once to the configured broker (with a client id suffixed `-probe`, so a running
/// daemon is not kicked off), waits up to `timeout` for the CONNACK, and disconnects. `cfg` is
/// validated first, as by [`MqttSink::connect`](super::MqttSink::connect).
pub fn probe(cfg: &MqttConfig, camera: &str, timeout: Duration) -> Result<String, MqttError> {
    let broker = format!("{}:{}", cfg.host, cfg.port);
    let (mut opts, net) = rumqttc_options(cfg, &[camera], "-probe", timeout)?;
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
                    words: diagnose::describe(&source, &diagnose::Context::of(cfg)).words,
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
