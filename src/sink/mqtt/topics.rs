//! The MQTT topic names of one camera and the Home Assistant discovery payloads.
//!
//! Pure string building, kept apart from the connection so the names and payloads a user's
//! automations depend on can be read (and tested) in one place. The table of topics is in the
//! documentation of [`crate::sink::mqtt`].

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

/// `text` with every character but ASCII letters, digits and `-` replaced by `_`: safe in Home
/// Assistant node ids and MQTT client ids.
pub fn id_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Topics {
    /// The topics for `camera` under `prefix` (and `discovery_prefix` for Home Assistant).
    pub fn new(prefix: &str, camera: &str, discovery_prefix: &str) -> Topics {
        let node = id_safe(&format!("{prefix}_{camera}"));
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
