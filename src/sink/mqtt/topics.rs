//! The MQTT topic names of one camera and the Home Assistant discovery payloads.
//!
//! Pure string building, kept apart from the connection so the names and payloads a user's
//! automations depend on can be read (and tested) in one place. The table of topics is in the
//! documentation of [`crate::sink::mqtt`].

/// The topic names of one camera on one device (`D`: `mqtt.device`, the process).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// `P/C/events`.
    pub events: String,
    /// `P/D/availability`: the process (`online` while it runs, `offline` at a clean stop and
    /// as its last will).
    pub availability: String,
    /// `P/C/availability`: the camera (`online` while frames arrive).
    pub camera_availability: String,
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
    /// The topics for `camera` of `device` under `prefix` (and `discovery_prefix` for Home
    /// Assistant).
    pub fn new(prefix: &str, device: &str, camera: &str, discovery_prefix: &str) -> Topics {
        let node = id_safe(&format!("{prefix}_{camera}"));
        Topics {
            events: format!("{prefix}/{camera}/events"),
            availability: format!("{prefix}/{device}/availability"),
            camera_availability: format!("{prefix}/{camera}/availability"),
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

    /// `P/C/L/snapshot`: the label's latest snapshot (JPEG, retained).
    pub fn snapshot(&self, label: &str) -> String {
        format!("{}/{}/{label}/snapshot", self.prefix, self.camera)
    }

    /// `D/binary_sensor/N/L/config`, where `N` is the node id (`P_C`, sanitised).
    pub fn discovery(&self, label: &str) -> String {
        format!(
            "{}/binary_sensor/{}/{label}/config",
            self.discovery_prefix, self.node
        )
    }

    /// `D/image/N/L/config`: the discovery topic of the label's snapshot image.
    pub fn image_discovery(&self, label: &str) -> String {
        format!(
            "{}/image/{}/{label}/config",
            self.discovery_prefix, self.node
        )
    }

    /// The Home Assistant discovery config of one label's binary sensor.
    pub fn discovery_payload(&self, label: &str) -> String {
        serde_json::json!({
            "name": label,
            "unique_id": format!("{}_{label}", self.node),
            "state_topic": self.state(label),
            "availability": self.availability(),
            "availability_mode": "all",
            "payload_on": "ON",
            "payload_off": "OFF",
            "device": self.device(),
        })
        .to_string()
    }

    /// The Home Assistant discovery config of one label's snapshot, an `image` entity fed by
    /// the JPEG on [`Topics::snapshot`].
    pub fn image_discovery_payload(&self, label: &str) -> String {
        serde_json::json!({
            "name": format!("{label} snapshot"),
            "unique_id": format!("{}_{label}_snapshot", self.node),
            "image_topic": self.snapshot(label),
            "content_type": "image/jpeg",
            "availability": self.availability(),
            "availability_mode": "all",
            "device": self.device(),
        })
        .to_string()
    }

    /// Both availabilities an entity depends on (Home Assistant's `availability` list, with
    /// `availability_mode: all`): the process's and the camera's.
    fn availability(&self) -> serde_json::Value {
        let entry = |topic: &str| {
            serde_json::json!({
                "topic": topic,
                "payload_available": "online",
                "payload_not_available": "offline",
            })
        };
        serde_json::json!([entry(&self.availability), entry(&self.camera_availability)])
    }

    /// The device both entities of a label belong to.
    fn device(&self) -> serde_json::Value {
        serde_json::json!({
            "identifiers": [self.node],
            "name": format!("edgeclip {}", self.camera),
            "model": "edgeclip",
            "manufacturer": "edgeclip",
            "sw_version": env!("CARGO_PKG_VERSION"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        let t = Topics::new("edgeclip", "pi4", "cam0", "homeassistant");
        assert_eq!(t.events, "edgeclip/cam0/events");
        assert_eq!(t.availability, "edgeclip/pi4/availability");
        assert_eq!(t.camera_availability, "edgeclip/cam0/availability");
        assert_eq!(t.stats, "edgeclip/cam0/stats");
        assert_eq!(t.state("person"), "edgeclip/cam0/person/state");
        assert_eq!(t.snapshot("person"), "edgeclip/cam0/person/snapshot");
        assert_eq!(
            t.image_discovery("person"),
            "homeassistant/image/edgeclip_cam0/person/config"
        );
        assert_eq!(
            t.discovery("person"),
            "homeassistant/binary_sensor/edgeclip_cam0/person/config"
        );
        let t = Topics::new("home/cams", "pi4", "front-door", "ha");
        assert_eq!(
            t.discovery("cat"),
            "ha/binary_sensor/home_cams_front-door/cat/config"
        );
    }

    #[test]
    fn discovery_payload_fields() {
        let t = Topics::new("edgeclip", "pi4", "cam0", "homeassistant");
        let v: serde_json::Value = serde_json::from_str(&t.discovery_payload("person")).unwrap();
        assert_eq!(v["name"], "person");
        assert_eq!(v["unique_id"], "edgeclip_cam0_person");
        assert_eq!(v["state_topic"], "edgeclip/cam0/person/state");
        let availability = serde_json::json!([
            {"topic": "edgeclip/pi4/availability", "payload_available": "online",
             "payload_not_available": "offline"},
            {"topic": "edgeclip/cam0/availability", "payload_available": "online",
             "payload_not_available": "offline"},
        ]);
        assert_eq!(v["availability"], availability);
        assert_eq!(v["availability_mode"], "all");
        assert_eq!(v["payload_on"], "ON");
        assert_eq!(v["payload_off"], "OFF");
        assert_eq!(v["device"]["identifiers"][0], "edgeclip_cam0");
        assert_eq!(v["device"]["manufacturer"], "edgeclip");
        assert_eq!(v["device"]["model"], "edgeclip");
        assert!(v["device"]["name"].as_str().unwrap().contains("cam0"));
        let image: serde_json::Value =
            serde_json::from_str(&t.image_discovery_payload("person")).unwrap();
        assert_eq!(image["image_topic"], "edgeclip/cam0/person/snapshot");
        assert_eq!(image["content_type"], "image/jpeg");
        assert_eq!(image["unique_id"], "edgeclip_cam0_person_snapshot");
        assert_eq!(image["availability"], availability);
        assert_eq!(image["availability_mode"], "all");
        assert_eq!(image["device"], v["device"], "one device for both entities");
    }
}
