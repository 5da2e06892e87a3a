//! The `[mqtt]` table, read like every other table of [`super::read`] (each key once, with its
//! type, default and meaning), in a file of its own: the broker's address, credentials, TLS,
//! topics and the delivery queue.

use std::path::{Path, PathBuf};

use super::MqttConfig;
use super::reader::{Reader, Section, key, resolve};

/// Reads the keys of `[mqtt]`; paths are resolved against `base`, the config file's folder.
pub(super) fn read(r: &mut Reader, s: &mut Section, base: Option<&Path>) -> MqttConfig {
    MqttConfig {
        host: r
            .req(
                s,
                key("host", "The broker's host name or address (not a URL).")
                    .example("\"localhost\""),
            )
            .unwrap_or_default(),
        port: r.or(s, key("port", "The broker's port."), 1883),
        prefix: r.or(
            s,
            key(
                "prefix",
                "Topic prefix: events go to `PREFIX/CAMERA/events`, states to \
                 `PREFIX/CAMERA/LABEL/state`.",
            ),
            "edgeclip".to_owned(),
        ),
        client_id: r.opt(
            s,
            key(
                "client_id",
                "The MQTT client id. Not set: `edgeclip-HOSTNAME-CAMERA`.",
            )
            .example("\"edgeclip-door\""),
        ),
        username: r.opt(
            s,
            key("username", "User name. Not set: no authentication.").example("\"edgeclip\""),
        ),
        password: r.opt(
            s,
            key("password", "Password (needs `username`).").example("\"secret\""),
        ),
        tls_ca: r
            .opt::<PathBuf>(
                s,
                key(
                    "tls_ca",
                    "A CA certificate (PEM) to connect with TLS. Not set: plain TCP.",
                )
                .example("\"/etc/edgeclip/ca.pem\""),
            )
            .map(|p| resolve(base, p)),
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
                "Most events held while the broker is away; beyond it new events are refused \
                 and counted.",
            ),
            256,
        ),
    }
}
