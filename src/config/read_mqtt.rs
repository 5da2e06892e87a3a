//! The `[mqtt]` table, read like every other table of [`super::read`] (each key once, with its
//! type, default and meaning), in a file of its own: the broker's address, credentials, TLS,
//! topics and the delivery queue. The password is resolved here (`password_file`, the
//! environment, `password`: see [`super::secrets`]), so a missing password file is a config
//! problem like any other.

use std::path::{Path, PathBuf};

use super::reader::{Presence, Reader, Section, key, resolve};
use super::{MqttConfig, secrets};

/// Reads the keys of `[mqtt]`; paths are resolved against `base`, the config file's folder.
pub(super) fn read(r: &mut Reader, s: &mut Section, base: Option<&Path>) -> MqttConfig {
    let host = r
        .req(
            s,
            key("host", "The broker's host name or address (not a URL).").example("\"localhost\""),
        )
        .unwrap_or_default();
    let port: Option<u16> = r.opt(
        s,
        key(
            "port",
            "The broker's port. Not set: 1883, or 8883 with TLS.",
        )
        .example("8883"),
    );
    let prefix = r.or(
        s,
        key(
            "prefix",
            "Topic prefix: events go to `PREFIX/CAMERA/events`, states to \
             `PREFIX/CAMERA/LABEL/state`.",
        ),
        "edgeclip".to_owned(),
    );
    let client_id = r.opt(
        s,
        key(
            "client_id",
            "The MQTT client id. Not set: `edgeclip-HOSTNAME-CAMERA`.",
        )
        .example("\"edgeclip-door\""),
    );
    let username = r.opt(
        s,
        key("username", "User name. Not set: no authentication.").example("\"edgeclip\""),
    );
    // Read raw: a value of the wrong type must not be echoed in the problem (serde's message
    // would quote it, and an unquoted numeric password is one).
    let inline = match r.raw(
        s,
        key(
            "password",
            "Password (needs `username`). Used when neither `password_file` nor the environment \
             variable `EDGECLIP_MQTT_PASSWORD` gives one. The daemon warns when a file that \
             holds it is readable by others: prefer `password_file`.",
        )
        .example("\"secret\""),
        "string",
        Presence::Optional,
    ) {
        None => None,
        Some(toml::Value::String(p)) => Some(p),
        Some(other) => {
            r.problem(
                s,
                "password",
                format!(
                    "expected a string, got a {} (quote the password)",
                    other.type_str()
                ),
            );
            None
        }
    };
    let password_file = r
        .opt::<PathBuf>(
            s,
            key(
                "password_file",
                "A file holding the password (needs `username`; not with `password`), its \
                 trailing line break ignored. It wins over `EDGECLIP_MQTT_PASSWORD`, which wins \
                 over `password`. An absolute path works with systemd's `LoadCredential=`.",
            )
            .example("\"mqtt-password\""),
        )
        .map(|p| resolve(base, p));
    let password = match secrets::resolve(
        inline,
        password_file,
        std::env::var_os(secrets::PASSWORD_ENV),
    ) {
        Ok(p) => p,
        Err((k, message)) => {
            r.problem(s, k, message);
            None
        }
    };
    let tls_flag: Option<bool> = r.opt(
        s,
        key(
            "tls",
            "Connect with TLS. Not set: TLS when `tls_ca` or `tls_cert` is set. Without \
             `tls_ca` the broker's certificate is checked against the system's CA \
             certificates.",
        )
        .example("true"),
    );
    let mut path = |name: &'static str, doc: &'static str, example: &'static str| {
        r.opt::<PathBuf>(s, key(name, doc).example(example))
            .map(|p| resolve(base, p))
    };
    let tls_ca = path(
        "tls_ca",
        "CA certificate(s) (PEM) the broker's certificate must chain to; implies TLS. Not set: \
         plain TCP, or with `tls = true` the system's CA certificates.",
        "\"/etc/edgeclip/ca.pem\"",
    );
    let tls_cert = path(
        "tls_cert",
        "Client certificate (PEM, may hold its chain) for a broker that asks for one (mutual \
         TLS); needs `tls_key`; implies TLS.",
        "\"/etc/edgeclip/client.pem\"",
    );
    let tls_key = path(
        "tls_key",
        "The client certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1); needs \
         `tls_cert`.",
        "\"/etc/edgeclip/client.key\"",
    );
    let tls = tls_flag.unwrap_or(tls_ca.is_some() || tls_cert.is_some());
    MqttConfig {
        host,
        port: port.unwrap_or(if tls { 8883 } else { 1883 }),
        prefix,
        client_id,
        username,
        password,
        tls,
        tls_ca,
        tls_cert,
        tls_key,
        qos: r.or(
            s,
            key("qos", "QoS of events and state messages: 0, 1 or 2."),
            1,
        ),
        keep_alive_s: r.or(
            s,
            key(
                "keep_alive_s",
                "Keep-alive interval in seconds, at least 5.",
            ),
            30,
        ),
        homeassistant_discovery: r.or(
            s,
            key(
                "homeassistant_discovery",
                "Publish Home Assistant discovery configs (a binary sensor per label).",
            ),
            false,
        ),
        discovery_prefix: r.or(
            s,
            key("discovery_prefix", "Home Assistant's discovery prefix."),
            "homeassistant".to_owned(),
        ),
        queue: r.or(
            s,
            key(
                "queue",
                "Most events held while the broker is away. When it is full the oldest waiting \
                 episode (a start and its end) is dropped whole and counted (`events_dropped` \
                 in the stats); label states are not queued and always end right.",
            ),
            256,
        ),
        max_event_age_s: r.or(
            s,
            key(
                "max_event_age_s",
                "Events older than this (by their `ts`) when they would be sent or resent are \
                 dropped and counted, with the end of a dropped start. 0: no limit.",
            ),
            3600,
        ),
        device: r.opt(
            s,
            key(
                "device",
                "This device's name in `PREFIX/DEVICE/availability` (retained `online`/\
                 `offline`, also the last will). Not set: the host name, with characters other \
                 than A-Z, a-z, 0-9 and '-' made '_'. Must differ from the camera's name.",
            )
            .example("\"pi-frontdoor\""),
        ),
    }
}
