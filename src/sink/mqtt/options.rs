//! rumqttc's options, built from an `[mqtt]` table that has already been validated.
//!
//! rumqttc asserts on some option values (a keep-alive under 5 s, an empty client id without a
//! clean session), so every value must be checked before its setters are called. That check
//! is [`MqttConfig::validate`], the same code the config file goes through: nothing here checks
//! a value again. The sink's entry points ([`super::MqttSink::connect`], [`super::probe`]) run
//! it first, because their table may come from code rather than from a checked file.
//!
//! TLS is built here, with rustls (rumqttc's TLS stack): the trusted roots come from
//! `mqtt.tls_ca`, or, with `tls = true` alone, from the system's store through
//! `rustls-native-certs` (the files `ca-certificates` keeps in `/etc/ssl/certs`, so a private CA
//! added with `update-ca-certificates` is trusted and the roots follow the OS's updates; it
//! honours `SSL_CERT_FILE` / `SSL_CERT_DIR`). The PEM files are parsed here, at start-up, so a
//! bad file is an error naming its key and path instead of a failed handshake at every retry.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::tokio_rustls::rustls::pki_types::pem::PemObject;
use rumqttc::tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rumqttc::tokio_rustls::rustls::{ClientConfig, RootCertStore};
use rumqttc::{LastWill, QoS, TlsConfiguration, Transport};

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
/// unknown; suffixed `-device` when it equals the name of one of the `cameras`, whose
/// availability topic it would otherwise share).
pub(super) fn device_name(cfg: &MqttConfig, cameras: &[&str]) -> String {
    if let Some(device) = &cfg.device {
        return device.clone();
    }
    let host = host_name();
    let host = if host.is_empty() {
        "edgeclip".to_owned()
    } else {
        host
    };
    if cameras.contains(&host.as_str()) {
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

/// rumqttc's options for a daemon of `cameras` (the default client id names the first), the
/// client id suffixed with `client_suffix`.
///
/// `cfg` must have passed [`MqttConfig::validate`]: the values rumqttc asserts on are not
/// checked again here. Reading the TLS files (or the system's roots) is the only thing that
/// can fail.
pub(super) fn build(
    cfg: &MqttConfig,
    cameras: &[&str],
    client_suffix: &str,
    connect_timeout: Duration,
) -> Result<(rumqttc::MqttOptions, rumqttc::NetworkOptions), super::MqttError> {
    let client_id = match &cfg.client_id {
        Some(id) => id.clone(),
        None => default_client_id(cameras.first().copied().unwrap_or("edgeclip")),
    };
    let topics = Topics::new(
        &cfg.prefix,
        &device_name(cfg, cameras),
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
        let password = cfg.password.as_ref().map_or("", |p| p.expose());
        o.set_credentials(user.clone(), password);
    }
    if cfg.tls {
        let tls = tls_config(cfg)?;
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(tls),
        )));
    }
    let mut net = rumqttc::NetworkOptions::new();
    net.set_connection_timeout(connect_timeout.as_secs().max(1));
    Ok((o, net))
}

/// rustls's client config for `cfg` (which has `tls` on): the roots of `mqtt.tls_ca` or of
/// the system, and the client certificate of `mqtt.tls_cert` / `mqtt.tls_key` when set.
pub(super) fn tls_config(cfg: &MqttConfig) -> Result<ClientConfig, super::MqttError> {
    let mut roots = RootCertStore::empty();
    match &cfg.tls_ca {
        Some(ca) => {
            let certs = read_certs("mqtt.tls_ca", ca, "CA certificate")?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(file_error(
                    "mqtt.tls_ca",
                    ca,
                    "none of its certificates can be used as a CA certificate".into(),
                ));
            }
        }
        None => {
            let certs = rustls_native_certs::load_native_certs().map_err(|e| {
                super::MqttError::TlsRoots {
                    message: format!("cannot read the system's CA certificates: {e}"),
                }
            })?;
            roots.add_parsable_certificates(certs);
            if roots.is_empty() {
                return Err(super::MqttError::TlsRoots {
                    message: "the system has no CA certificates (install ca-certificates), so \
                              no broker can be trusted; set mqtt.tls_ca"
                        .into(),
                });
            }
        }
    }
    let builder = ClientConfig::builder().with_root_certificates(roots);
    let (Some(cert), Some(key)) = (&cfg.tls_cert, &cfg.tls_key) else {
        return Ok(builder.with_no_client_auth());
    };
    let chain = read_certs("mqtt.tls_cert", cert, "certificate")?;
    let pem = read("mqtt.tls_key", key)?;
    let private = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        file_error(
            "mqtt.tls_key",
            key,
            format!(
                "no private key in it (expected a PEM \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \
                 \"EC PRIVATE KEY\"): {e}"
            ),
        )
    })?;
    builder
        .with_client_auth_cert(chain, private)
        .map_err(|e| file_error("mqtt.tls_key", key, format!("unusable private key: {e}")))
}

fn file_error(key: &'static str, path: &Path, message: String) -> super::MqttError {
    super::MqttError::TlsFile {
        key,
        path: path.to_owned(),
        message,
    }
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, super::MqttError> {
    std::fs::read(path).map_err(|e| file_error(key, path, format!("cannot read it: {e}")))
}

/// The PEM certificates in the file of `key`, at least one.
fn read_certs(
    key: &'static str,
    path: &Path,
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, super::MqttError> {
    let pem = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(key, path, format!("not a valid PEM {what} file: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(
            key,
            path,
            format!("no {what} in it (expected PEM: -----BEGIN CERTIFICATE-----)"),
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::super::tests::cfg;
    use super::*;

    #[test]
    fn options_carry_the_config() {
        let (o, _) = build(&cfg(), &["cam0"], "-probe", Duration::from_secs(1)).unwrap();
        assert_eq!(o.client_id(), "test-probe");
        assert_eq!(o.keep_alive(), Duration::from_secs(30));
        assert!(o.clean_session());
        assert_eq!(o.inflight(), RUMQTTC_INFLIGHT);
        let will = o.last_will().unwrap();
        assert_eq!(
            will.topic,
            format!("edgeclip/{}/availability", device_name(&cfg(), &["cam0"]))
        );
        assert_eq!(&will.message[..], b"offline");
        assert_eq!(will.qos, QoS::AtLeastOnce);
        assert!(will.retain);
        let mut c = cfg();
        c.client_id = None;
        c.username = Some("u".into());
        c.password = Some("p".into());
        let (o, _) = build(&c, &["cam0"], "", Duration::from_secs(1)).unwrap();
        assert_eq!(o.client_id(), default_client_id("cam0"));
        assert_eq!(o.credentials(), Some(("u".to_owned(), "p".to_owned())));
    }

    #[test]
    fn an_unreadable_ca_names_the_file() {
        let mut c = cfg();
        c.tls = true;
        c.tls_ca = Some("/nonexistent/ca.pem".into());
        let err = build(&c, &["cam0"], "", Duration::from_secs(1))
            .err()
            .expect("an error");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    /// The test-only TLS files of `tests/data/tls`.
    fn tls_file(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/tls")
            .join(name)
    }

    fn tls_cfg() -> MqttConfig {
        let mut c = cfg();
        c.tls = true;
        c.tls_ca = Some(tls_file("ca.pem"));
        c.tls_cert = Some(tls_file("client.pem"));
        c.tls_key = Some(tls_file("client.key"));
        c
    }

    /// The error `build` gives for `c`, as text.
    fn tls_error(c: &MqttConfig) -> String {
        build(c, &["cam0"], "", Duration::from_secs(1))
            .err()
            .expect("an error")
            .to_string()
    }

    #[test]
    fn tls_with_a_client_certificate_builds() {
        let (o, _) = build(&tls_cfg(), &["cam0"], "", Duration::from_secs(1)).unwrap();
        match o.transport() {
            Transport::Tls(TlsConfiguration::Rustls(c)) => {
                assert!(c.client_auth_cert_resolver.has_certs())
            }
            _ => panic!("not rustls TLS"),
        }
        let mut c = tls_cfg();
        c.tls_cert = None;
        c.tls_key = None;
        let (o, _) = build(&c, &["cam0"], "", Duration::from_secs(1)).unwrap();
        match o.transport() {
            Transport::Tls(TlsConfiguration::Rustls(c)) => {
                assert!(!c.client_auth_cert_resolver.has_certs())
            }
            _ => panic!("not rustls TLS"),
        }
        // Without `tls`, plain TCP whatever else is set (validation refuses that mix first).
        c.tls = false;
        let (o, _) = build(&c, &["cam0"], "", Duration::from_secs(1)).unwrap();
        assert!(matches!(o.transport(), Transport::Tcp));
    }

    #[test]
    fn bad_tls_files_name_their_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("text.pem");
        std::fs::write(&text, "not a certificate\n").unwrap();
        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\n%%%\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let shown = |p: &Path| p.display().to_string();

        let mut c = tls_cfg();
        c.tls_ca = Some(text.clone());
        let e = tls_error(&c);
        assert!(
            e.starts_with(&format!(
                "mqtt.tls_ca {}: no CA certificate in it",
                shown(&text)
            )),
            "{e}"
        );
        c.tls_ca = Some(broken.clone());
        let e = tls_error(&c);
        assert!(
            e.starts_with(&format!("mqtt.tls_ca {}: not a valid PEM", shown(&broken))),
            "{e}"
        );
        c.tls_ca = Some(dir.path().join("missing.pem"));
        let e = tls_error(&c);
        assert!(
            e.starts_with("mqtt.tls_ca ") && e.contains("missing.pem: cannot read it"),
            "{e}"
        );

        // A key where the certificate belongs, a certificate where the key belongs.
        let mut c = tls_cfg();
        c.tls_cert = Some(tls_file("client.key"));
        let e = tls_error(&c);
        assert!(
            e.starts_with(&format!(
                "mqtt.tls_cert {}: no certificate in it",
                shown(&tls_file("client.key"))
            )),
            "{e}"
        );
        let mut c = tls_cfg();
        c.tls_key = Some(tls_file("client.pem"));
        let e = tls_error(&c);
        assert!(
            e.starts_with(&format!(
                "mqtt.tls_key {}: no private key in it",
                shown(&tls_file("client.pem"))
            )),
            "{e}"
        );
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
        assert_eq!(device_name(&c, &["cam0"]), "pi4");
        let (o, _) = build(&c, &["cam0"], "", Duration::from_secs(1)).unwrap();
        assert_eq!(o.last_will().unwrap().topic, "edgeclip/pi4/availability");
        c.device = None;
        let host = device_name(&c, &["cam0"]);
        assert!(
            !host.is_empty()
                && host
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "-_".contains(ch))
        );
        assert_eq!(
            device_name(&c, &[&host]),
            format!("{host}-device"),
            "never the camera's topic"
        );
        assert_eq!(
            device_name(&c, &["cam0", &host]),
            format!("{host}-device"),
            "nor another camera's"
        );
    }

    #[test]
    fn default_client_id_names_the_camera() {
        let id = default_client_id("cam0");
        assert!(id.starts_with("edgeclip-") && id.ends_with("-cam0") || id == "edgeclip-cam0");
        assert!(!id.contains(char::is_whitespace));
    }
}
