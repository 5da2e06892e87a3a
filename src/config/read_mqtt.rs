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
