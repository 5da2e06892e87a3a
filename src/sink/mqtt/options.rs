//! rumqttc's options, built from an `[mqtt]` table that has already been validated.
//!
//! rumqttc asserts on some option values (a keep-alive under 5 s, an empty client id without a
//! clean session), so every value must be checked before its setters are called. That check
//! is [`MqttConfig::validate`], the same code the config file goes through: nothing here checks
//! a value again. The sink's entry points ([`super::MqttSink::connect`], [`super::probe`]) run
//! it first, because their table may come from code rather than from a checked file.

use std::time::Duration;

use rumqttc::{LastWill, QoS};

use super::topics::{Topics, id_safe};
use crate::config::MqttConfig;

/// Largest MQTT packet the sink sends or accepts: room for the JPEG snapshot of a 1080p frame.
pub(super) const MAX_PACKET: usize = 2 * 1024 * 1024;
/// rumqttc's in-flight limit; our window stays well below it so packet ids never collide.
pub(super) const RUMQTTC_INFLIGHT: u16 = 100;

/// The QoS of `mqtt.qos` (validated: 0, 1 or 2).
pub(super) fn qos_of(n: u8) -> QoS {
    match n {
        0 => QoS::AtMostOnce,
        2 => QoS::ExactlyOnce,
        _ => QoS::AtLeastOnce,
    }
}

/// The host name, [`id_safe`]; empty when unknown.
fn host_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    id_safe(host.trim())
}

/// The device name of `P/D/availability`: `mqtt.device`, else the host name (`edgeclip` when
/// unknown; suffixed `-device` when it equals the camera's name, whose availability topic it
/// would otherwise share).
pub(super) fn device_name(cfg: &MqttConfig, camera: &str) -> String {
    if let Some(device) = &cfg.device {
        return device.clone();
    }
    let host = host_name();
    let host = if host.is_empty() {
        "edgeclip".to_owned()
    } else {
        host
    };
    if host == camera {
        format!("{host}-device")
    } else {
        host
    }
}

/// The default client id: `edgeclip-<hostname>-<camera>`.
pub(super) fn default_client_id(camera: &str) -> String {
    let host = host_name();
    if host.is_empty() {
        format!("edgeclip-{camera}")
    } else {
        format!("edgeclip-{host}-{camera}")
    }
}

/// rumqttc's options for `camera`, the client id suffixed with `client_suffix`.
///
/// `cfg` must have passed [`MqttConfig::validate`]: the values rumqttc asserts on are not
/// checked again here. Reading the TLS CA file is the only thing that can fail.
pub(super) fn build(
    cfg: &MqttConfig,
    camera: &str,
    client_suffix: &str,
    connect_timeout: Duration,
) -> Result<(rumqttc::MqttOptions, rumqttc::NetworkOptions), super::MqttError> {
    let client_id = match &cfg.client_id {
        Some(id) => id.clone(),
        None => default_client_id(camera),
    };
    let topics = Topics::new(
        &cfg.prefix,
        &device_name(cfg, camera),
        camera,
        &cfg.discovery_prefix,
    );
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
        let ca = std::fs::read(ca_path).map_err(|source| super::MqttError::TlsCa {
            path: ca_path.clone(),
            source,
        })?;
        o.set_transport(rumqttc::Transport::tls(ca, None, None));
    }
    let mut net = rumqttc::NetworkOptions::new();
    net.set_connection_timeout(connect_timeout.as_secs().max(1));
    Ok((o, net))
}

#[cfg(test)]
mod tests {
    use super::super::tests::cfg;
    use super::*;

    #[test]
    fn options_carry_the_config() {
        let (o, _) = build(&cfg(), "cam0", "-probe", Duration::from_secs(1)).unwrap();
        assert_eq!(o.client_id(), "test-probe");
        assert_eq!(o.keep_alive(), Duration::from_secs(30));
        assert!(o.clean_session());
        assert_eq!(o.inflight(), RUMQTTC_INFLIGHT);
        let will = o.last_will().unwrap();
        assert_eq!(
            will.topic,
            format!("edgeclip/{}/availability", device_name(&cfg(), "cam0"))
        );
        assert_eq!(&will.message[..], b"offline");
        assert_eq!(will.qos, QoS::AtLeastOnce);
        assert!(will.retain);
        let mut c = cfg();
        c.client_id = None;
        c.username = Some("u".into());
        c.password = Some("p".into());
        let (o, _) = build(&c, "cam0", "", Duration::from_secs(1)).unwrap();
        assert_eq!(o.client_id(), default_client_id("cam0"));
        assert_eq!(o.credentials(), Some(("u".to_owned(), "p".to_owned())));
    }

    #[test]
    fn an_unreadable_ca_names_the_file() {
        let mut c = cfg();
        c.tls_ca = Some("/nonexistent/ca.pem".into());
        let err = build(&c, "cam0", "", Duration::from_secs(1))
            .err()
            .expect("an error");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn qos_numbers() {
        assert_eq!(qos_of(0), QoS::AtMostOnce);
        assert_eq!(qos_of(1), QoS::AtLeastOnce);
        assert_eq!(qos_of(2), QoS::ExactlyOnce);
    }

    #[test]
    fn the_device_is_the_config_s_or_the_host_s() {
        let mut c = cfg();
        c.device = Some("pi4".into());
        assert_eq!(device_name(&c, "cam0"), "pi4");
        let (o, _) = build(&c, "cam0", "", Duration::from_secs(1)).unwrap();
        assert_eq!(o.last_will().unwrap().topic, "edgeclip/pi4/availability");
        c.device = None;
        let host = device_name(&c, "cam0");
        assert!(
            !host.is_empty()
                && host
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "-_".contains(ch))
        );
        assert_eq!(
            device_name(&c, &host),
            format!("{host}-device"),
            "never the camera's topic"
        );
    }

    #[test]
    fn default_client_id_names_the_camera() {
        let id = default_client_id("cam0");
        assert!(id.starts_with("edgeclip-") && id.ends_with("-cam0") || id == "edgeclip-cam0");
        assert!(!id.contains(char::is_whitespace));
    }
}
