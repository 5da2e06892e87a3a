//! The MQTT topic names of every camera, zone and label, and the Home Assistant discovery
//! payloads.
//!
//! Pure string building, kept apart from the connection so the names and payloads a user's
//! automations depend on can be read (and tested) in one place. The table of topics is in the
//! documentation of [`crate::sink::mqtt`].
//!
//! The zone `all` (the whole frame) keeps the names of a one-camera daemon without zones:
//! `P/C/L/state`, object id `L`, unique id `N_L`. Another zone puts its name before the label:
//! `P/C/Z/L/state`, object id `Z__L`, unique id `N_Z__L`, entity name `L (Z)`. Each camera is
//! one Home Assistant device, node id `N` = `P_C` (sanitised).

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{ALL_ZONE, Config};
use crate::event::Event;

/// One thing the daemon watches: a label in a zone of a camera (`crate::sink::Watched`; defined
/// here, in the pure core, because the topics and the delivery queue are keyed by it). Each has its own state (MQTT:
/// `PREFIX/CAMERA/LABEL/state` for the zone `all`, `PREFIX/CAMERA/ZONE/LABEL/state` for the
/// others) and its own Home Assistant entity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Watched {
    /// The camera's name.
    pub camera: String,
    /// The zone's name (`all`: the whole frame).
    pub zone: String,
    /// The label.
    pub label: String,
}

impl Watched {
    /// `label` on the whole frame of `camera`.
    pub fn whole(camera: &str, label: &str) -> Watched {
        Watched {
            camera: camera.to_owned(),
            zone: crate::config::ALL_ZONE.to_owned(),
            label: label.to_owned(),
        }
    }

    /// Every label of every zone of every camera of `config`, in the config's order.
    pub fn all(config: &Config) -> Vec<Watched> {
        let mut out = Vec::new();
        for i in 0..config.cameras.len() {
            let view = config.for_camera(i);
            let camera = &view.camera().name;
            for zone in view.zone_views() {
                for &l in &zone.labels {
                    out.push(Watched {
                        camera: camera.clone(),
                        zone: zone.name.clone(),
                        label: view.prompts[l].label.clone(),
                    });
                }
            }
        }
        out
    }

    /// Whether `event` is about this label, zone and camera.
    pub fn is(&self, event: &Event) -> bool {
        self.camera == event.camera && self.zone == event.zone && self.label == event.label
    }
}

/// The topic names of one process (`D`: `mqtt.device`) under one prefix, for all its cameras.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// `P/D/availability`: the process (`online` while it runs, `offline` at a clean stop and
    /// as its last will).
    pub availability: String,
    prefix: String,
    discovery_prefix: String,
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
    /// The topics of `device` under `prefix` (and `discovery_prefix` for Home Assistant).
    pub fn new(prefix: &str, device: &str, discovery_prefix: &str) -> Topics {
        Topics {
            availability: format!("{prefix}/{device}/availability"),
            prefix: prefix.to_owned(),
            discovery_prefix: discovery_prefix.to_owned(),
        }
    }

    /// `P/C/events`.
    pub fn events(&self, camera: &str) -> String {
        format!("{}/{camera}/events", self.prefix)
    }

    /// `P/C/availability`: the camera (`online` while frames arrive).
    pub fn camera_availability(&self, camera: &str) -> String {
        format!("{}/{camera}/availability", self.prefix)
    }

    /// `P/C/stats`.
    pub fn stats(&self, camera: &str) -> String {
        format!("{}/{camera}/stats", self.prefix)
    }

    /// `P/C/L` for the zone `all`, `P/C/Z/L` for another zone: the level above `state` and
    /// `snapshot`.
    fn base(&self, w: &Watched) -> String {
        if w.zone == ALL_ZONE {
            format!("{}/{}/{}", self.prefix, w.camera, w.label)
        } else {
            format!("{}/{}/{}/{}", self.prefix, w.camera, w.zone, w.label)
        }
    }

    /// `P/C/L/state` (zone `all`) or `P/C/Z/L/state`.
    pub fn state(&self, w: &Watched) -> String {
        format!("{}/state", self.base(w))
    }

    /// `P/C/L/snapshot` (zone `all`) or `P/C/Z/L/snapshot`: the latest snapshot (JPEG,
    /// retained).
    pub fn snapshot(&self, w: &Watched) -> String {
        format!("{}/snapshot", self.base(w))
    }

    /// The Home Assistant node id of `camera`: `P_C`, sanitised (one device per camera).
    pub fn node(&self, camera: &str) -> String {
        id_safe(&format!("{}_{camera}", self.prefix))
    }

    /// The discovery object id: `L` for the zone `all`, `Z__L` for another zone.
    pub fn object_id(w: &Watched) -> String {
        if w.zone == ALL_ZONE {
            w.label.clone()
        } else {
            format!("{}__{}", w.zone, w.label)
        }
    }

    /// `D/binary_sensor/N/O/config`, where `N` is the camera's node id and `O` the object id.
    pub fn discovery(&self, w: &Watched) -> String {
        self.discovery_topic("binary_sensor", w)
    }

    /// `D/image/N/O/config`: the discovery topic of the snapshot image.
    pub fn image_discovery(&self, w: &Watched) -> String {
        self.discovery_topic("image", w)
    }

    fn discovery_topic(&self, component: &str, w: &Watched) -> String {
        format!(
            "{}/{component}/{}/{}/config",
            self.discovery_prefix,
            self.node(&w.camera),
            Topics::object_id(w)
        )
    }

    /// `N_O`: the binary sensor's unique id (the image's adds `_snapshot`).
    fn unique_id(&self, w: &Watched) -> String {
        format!("{}_{}", self.node(&w.camera), Topics::object_id(w))
    }

    /// The entity's name: `L` for the zone `all`, `L (Z)` for another zone.
    fn entity_name(w: &Watched) -> String {
        if w.zone == ALL_ZONE {
            w.label.clone()
        } else {
            format!("{} ({})", w.label, w.zone)
        }
    }

    /// The Home Assistant discovery config of one watched thing's binary sensor.
    pub fn discovery_payload(&self, w: &Watched) -> String {
        serde_json::json!({
            "name": Topics::entity_name(w),
            "unique_id": self.unique_id(w),
            "state_topic": self.state(w),
            "availability": self.availability_of(&w.camera),
            "availability_mode": "all",
            "payload_on": "ON",
            "payload_off": "OFF",
            "device": self.device(&w.camera),
        })
        .to_string()
    }

    /// The Home Assistant discovery config of one watched thing's snapshot, an `image` entity
    /// fed by the JPEG on [`Topics::snapshot`].
    pub fn image_discovery_payload(&self, w: &Watched) -> String {
        serde_json::json!({
            "name": format!("{} snapshot", Topics::entity_name(w)),
            "unique_id": format!("{}_snapshot", self.unique_id(w)),
            "image_topic": self.snapshot(w),
            "content_type": "image/jpeg",
            "availability": self.availability_of(&w.camera),
            "availability_mode": "all",
            "device": self.device(&w.camera),
        })
        .to_string()
    }

    /// Both availabilities an entity depends on (Home Assistant's `availability` list, with
    /// `availability_mode: all`): the process's and its camera's.
    fn availability_of(&self, camera: &str) -> serde_json::Value {
        let entry = |topic: &str| {
            serde_json::json!({
                "topic": topic,
                "payload_available": "online",
                "payload_not_available": "offline",
            })
        };
        serde_json::json!([
            entry(&self.availability),
            entry(&self.camera_availability(camera))
        ])
    }

    /// The device (one per camera) every entity of `camera` belongs to.
    fn device(&self, camera: &str) -> serde_json::Value {
        serde_json::json!({
            "identifiers": [self.node(camera)],
            "name": format!("edgeclip {camera}"),
            "model": "edgeclip",
            "manufacturer": "edgeclip",
            "sw_version": env!("CARGO_PKG_VERSION"),
        })
    }

    /// Pairs of watched things that would share a Home Assistant unique id (and maybe a
    /// discovery topic: then one entity would replace the other), each with the shared id. Names of the
    /// config's alphabet make this possible only in corner cases: a label with `__` in it
    /// (`a__b` on the whole frame against `b` in the zone `a`), or two cameras whose node ids
    /// meet (`a` with the label `b_c` against `a_b` with `c`).
    pub fn collisions(&self, watched: &[Watched]) -> Vec<(Watched, Watched, String)> {
        let mut seen: BTreeMap<String, &Watched> = BTreeMap::new();
        let mut out = Vec::new();
        let mut done = BTreeSet::new();
        for w in watched.iter().filter(|w| done.insert(*w)) {
            // One discovery topic means one node and object id, hence one unique id: checking
            // the unique ids finds both.
            let id = self.unique_id(w);
            match seen.get(&id) {
                Some(first) => out.push(((*first).clone(), w.clone(), id)),
                None => {
                    seen.insert(id, w);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(camera: &str, zone: &str, label: &str) -> Watched {
        Watched {
            camera: camera.into(),
            zone: zone.into(),
            label: label.into(),
        }
    }

    #[test]
    fn topic_names() {
        let t = Topics::new("edgeclip", "pi4", "homeassistant");
        let person = Watched::whole("cam0", "person");
        assert_eq!(t.events("cam0"), "edgeclip/cam0/events");
        assert_eq!(t.availability, "edgeclip/pi4/availability");
        assert_eq!(t.camera_availability("cam0"), "edgeclip/cam0/availability");
        assert_eq!(t.stats("cam0"), "edgeclip/cam0/stats");
        assert_eq!(t.state(&person), "edgeclip/cam0/person/state");
        assert_eq!(t.snapshot(&person), "edgeclip/cam0/person/snapshot");
        assert_eq!(
            t.image_discovery(&person),
            "homeassistant/image/edgeclip_cam0/person/config"
        );
        assert_eq!(
            t.discovery(&person),
            "homeassistant/binary_sensor/edgeclip_cam0/person/config"
        );
        let t = Topics::new("home/cams", "pi4", "ha");
        assert_eq!(
            t.discovery(&Watched::whole("front-door", "cat")),
            "ha/binary_sensor/home_cams_front-door/cat/config"
        );
    }

    #[test]
    fn a_zone_goes_between_the_camera_and_the_label() {
        let t = Topics::new("edgeclip", "pi4", "homeassistant");
        let car = w("garden", "driveway", "car");
        assert_eq!(t.state(&car), "edgeclip/garden/driveway/car/state");
        assert_eq!(t.snapshot(&car), "edgeclip/garden/driveway/car/snapshot");
        assert_eq!(
            t.discovery(&car),
            "homeassistant/binary_sensor/edgeclip_garden/driveway__car/config"
        );
        assert_eq!(
            t.image_discovery(&car),
            "homeassistant/image/edgeclip_garden/driveway__car/config"
        );
        let v: serde_json::Value = serde_json::from_str(&t.discovery_payload(&car)).unwrap();
        assert_eq!(v["name"], "car (driveway)");
        assert_eq!(v["unique_id"], "edgeclip_garden_driveway__car");
        assert_eq!(v["state_topic"], "edgeclip/garden/driveway/car/state");
        assert_eq!(
            v["availability"][1]["topic"],
            "edgeclip/garden/availability"
        );
        assert_eq!(v["device"]["identifiers"][0], "edgeclip_garden");
        let whole: serde_json::Value =
            serde_json::from_str(&t.discovery_payload(&Watched::whole("garden", "car"))).unwrap();
        assert_eq!(v["device"], whole["device"], "one device per camera");
        let image: serde_json::Value =
            serde_json::from_str(&t.image_discovery_payload(&car)).unwrap();
        assert_eq!(image["name"], "car (driveway) snapshot");
        assert_eq!(image["unique_id"], "edgeclip_garden_driveway__car_snapshot");
        assert_eq!(
            image["image_topic"],
            "edgeclip/garden/driveway/car/snapshot"
        );
    }

    #[test]
    fn zones_named_like_labels_or_cameras_do_not_collide() {
        let t = Topics::new("edgeclip", "pi4", "homeassistant");
        let watched = [
            // A zone named like a label of its own camera and of another camera.
            w("cam0", "all", "car"),
            w("cam0", "car", "person"),
            w("cam0", "all", "person"),
            w("cam1", "all", "car"),
            w("cam1", "person", "car"),
            // A camera named like another camera's zone.
            w("cam0_car", "all", "person"),
            w("car", "all", "person"),
        ];
        assert_eq!(t.collisions(&watched), vec![]);
        let mut topics: Vec<String> = watched.iter().map(|x| t.discovery(x)).collect();
        topics.extend(watched.iter().map(|x| t.state(x)));
        let n = topics.len();
        topics.sort();
        topics.dedup();
        assert_eq!(topics.len(), n, "every topic is its own");
    }

    #[test]
    fn the_corner_cases_that_collide_are_found() {
        let t = Topics::new("edgeclip", "pi4", "homeassistant");
        let found = t.collisions(&[
            w("cam0", "all", "a__b"),
            w("cam0", "a", "b"),
            w("x", "all", "y_z"),
            w("x_y", "all", "z"),
            w("x_y", "all", "z"),
        ]);
        assert_eq!(
            found,
            vec![
                (
                    w("cam0", "all", "a__b"),
                    w("cam0", "a", "b"),
                    "edgeclip_cam0_a__b".to_owned()
                ),
                (
                    w("x", "all", "y_z"),
                    w("x_y", "all", "z"),
                    "edgeclip_x_y_z".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn discovery_payload_fields() {
        let t = Topics::new("edgeclip", "pi4", "homeassistant");
        let person = Watched::whole("cam0", "person");
        let v: serde_json::Value = serde_json::from_str(&t.discovery_payload(&person)).unwrap();
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
            serde_json::from_str(&t.image_discovery_payload(&person)).unwrap();
        assert_eq!(image["name"], "person snapshot");
        assert_eq!(image["image_topic"], "edgeclip/cam0/person/snapshot");
        assert_eq!(image["content_type"], "image/jpeg");
        assert_eq!(image["unique_id"], "edgeclip_cam0_person_snapshot");
        assert_eq!(image["availability"], availability);
        assert_eq!(image["availability_mode"], "all");
        assert_eq!(image["device"], v["device"], "one device for both entities");
    }
}
