//! `[[cameras]]` and their zones: the schema (plain data), and the view of the config that one
//! camera's pipeline runs with (its own prompt list, its zones and which labels each zone
//! watches).
//!
//! A config names one camera with `[camera]` (read as a list of one) or several with
//! `[[cameras]]`. Prompts are global: every camera watches every `[[prompts]]` label unless its
//! `labels` names a subset, and a camera may add prompts of its own (`[[cameras.prompts]]`).
//! Each camera's frame is scored as a whole (the zone `all`, unless `whole_frame = false`) and
//! as each of its `[[cameras.zones]]`: a rectangle cropped from the frame. A label is watched in
//! a zone unless the zone's `labels` or the prompt's `zones` leave it out.

use std::time::Duration;

use super::{CaptureFormat, Config, PromptConfig, SourceSpec};
pub use crate::frame::{ALL_ZONE, Rect};

/// One camera: where frames come from, what it watches and where.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraConfig {
    /// The key path of this camera in the file: `camera` or `cameras[N]` (for messages).
    pub key: String,
    /// Camera name used in events and MQTT topics (`[A-Za-z0-9_-]`).
    pub name: String,
    /// `source = "v4l2:/dev/video0" | "pipe:COMMAND" | "files:GLOB"`.
    pub source: SourceSpec,
    /// Requested (V4L2) or actual (raw pipe) frame width.
    pub width: u32,
    /// Requested (V4L2) or actual (raw pipe) frame height.
    pub height: u32,
    /// Frames per second: requested from V4L2, replay rate of `files:`.
    pub fps: f32,
    /// `max_fps`: at most this many of this camera's frames go through the model each second
    /// (the others are dropped for fresher ones). `None`: as many as the model keeps up with.
    pub max_fps: Option<f32>,
    /// Pixel format: for V4L2 the format to request (`auto` prefers MJPEG); for `pipe:` the
    /// format of the command's stdout (`auto` means MJPEG); for `files:` only `auto`.
    pub format: CaptureFormat,
    /// `loop`: replay `files:` forever.
    pub looping: bool,
    /// `timeout_s`: a source that delivers no frame for this long reports an error instead of
    /// hanging.
    pub timeout_s: f32,
    /// `offline_after_s`: the camera counts as offline when no frame arrives for this long (a
    /// failing source makes it offline at once).
    pub offline_after_s: f32,
    /// `labels`: the `[[prompts]]` labels this camera watches. `None`: all of them.
    pub labels: Option<Vec<String>>,
    /// `[[cameras.prompts]]`: labels only this camera watches, after the global ones.
    pub prompts: Vec<PromptConfig>,
    /// `whole_frame`: the whole frame is scored as the zone `all`.
    pub whole_frame: bool,
    /// `[[cameras.zones]]`, in file order.
    pub zones: Vec<ZoneConfig>,
}

impl CameraConfig {
    /// How long without a frame makes the camera offline (10 s if the value is unusable).
    pub fn offline_after(&self) -> Duration {
        Duration::try_from_secs_f32(self.offline_after_s)
            .ok()
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(10))
    }

    /// The capture timeout as a [`Duration`] (1 s if the configured value is unusable).
    pub fn timeout(&self) -> Duration {
        Duration::try_from_secs_f32(self.timeout_s)
            .ok()
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(1))
    }

    /// The shortest time between two of this camera's frames through the model (`max_fps`);
    /// `None`: no cap.
    pub fn min_interval(&self) -> Option<Duration> {
        self.max_fps
            .filter(|f| f.is_finite() && *f > 0.0)
            .and_then(|f| Duration::try_from_secs_f32(1.0 / f).ok())
    }

    /// The zones a frame of this camera is scored as, in order: `all` first (unless
    /// `whole_frame` is off), then `[[cameras.zones]]`.
    pub fn zone_list(&self) -> Vec<(String, Rect)> {
        let all = self.whole_frame.then(|| (ALL_ZONE.to_owned(), Rect::WHOLE));
        all.into_iter()
            .chain(self.zones.iter().map(|z| (z.name.clone(), z.rect)))
            .collect()
    }
}

/// One `[[cameras.zones]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneConfig {
    /// The zone's name in events, topics and GPIO lines (`[A-Za-z0-9_-]`, unique per camera,
    /// not `all`).
    pub name: String,
    /// `rect = [x, y, w, h]`, relative to the frame.
    pub rect: Rect,
    /// `labels`: the labels watched in this zone. `None`: every label of the camera.
    pub labels: Option<Vec<String>>,
}

/// One zone of one camera as its pipeline sees it: the crop and the labels it watches.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneView {
    /// The zone's name (`all` for the whole frame).
    pub name: String,
    /// The crop.
    pub rect: Rect,
    /// The labels watched here, as positions in the camera's prompt list
    /// ([`Config::for_camera`]'s `prompts`), in that order.
    pub labels: Vec<usize>,
}

impl Config {
    /// The first camera: the one a single-camera command (`replay`, `calibrate`, `--probe`)
    /// uses unless told another. A config that loaded has at least one.
    pub fn camera(&self) -> &CameraConfig {
        &self.cameras[0]
    }

    /// The position of the camera named `name`.
    pub fn camera_index(&self, name: &str) -> Option<usize> {
        self.cameras.iter().position(|c| c.name == name)
    }

    /// The config camera `index` runs with: that camera alone, and as `prompts` the global
    /// prompts it watches (all, or those its `labels` names, in file order) followed by its own
    /// `[[cameras.prompts]]`. Everything built from a config for one camera (the matcher, the
    /// triggers, snapshots) is built from this view.
    pub fn for_camera(&self, index: usize) -> Config {
        let camera = self.cameras[index].clone();
        let mut prompts: Vec<PromptConfig> = self
            .prompts
            .iter()
            .filter(|p| {
                camera
                    .labels
                    .as_ref()
                    .is_none_or(|ls| ls.contains(&p.label))
            })
            .cloned()
            .collect();
        prompts.extend(camera.prompts.iter().cloned());
        Config {
            cameras: vec![camera],
            prompts,
            ..self.clone()
        }
    }

    /// [`for_camera`](Self::for_camera) of the camera named `name` (the first when `None`); an
    /// unknown name is an error naming it, the file and the cameras there are.
    pub fn for_camera_named(&self, name: Option<&str>) -> Result<Config, String> {
        let index = match name {
            None => 0,
            Some(name) => self.camera_index(name).ok_or_else(|| {
                let names: Vec<&str> = self.cameras.iter().map(|c| c.name.as_str()).collect();
                format!(
                    "no camera is named {name:?} in {} (cameras: {})",
                    self.file
                        .as_deref()
                        .unwrap_or(std::path::Path::new("<memory>"))
                        .display(),
                    names.join(", ")
                )
            })?,
        };
        Ok(self.for_camera(index))
    }

    /// The zones of this config's first camera with the labels each watches, as positions in
    /// `self.prompts` (call it on a [`for_camera`](Self::for_camera) view).
    pub fn zone_views(&self) -> Vec<ZoneView> {
        let camera = self.camera();
        camera
            .zone_list()
            .into_iter()
            .map(|(name, rect)| {
                let zone_labels = camera
                    .zones
                    .iter()
                    .find(|z| z.name == name)
                    .and_then(|z| z.labels.as_ref());
                let labels = self
                    .prompts
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| zone_labels.is_none_or(|ls| ls.contains(&p.label)))
                    .filter(|(_, p)| p.zones.as_ref().is_none_or(|zs| zs.contains(&name)))
                    .map(|(i, _)| i)
                    .collect();
                ZoneView { name, rect, labels }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigError;
    use std::path::Path;

    const HOUSE: &str = r#"
[model]
bundle = "models/demo"
[[prompts]]
label = "person"
text = "a photo of a person"
[[prompts]]
label = "car"
text = "a photo of a car"
zones = ["driveway", "all"]

[[cameras]]
name = "door"
source = "v4l2:/dev/video0"
labels = ["person"]
[[cameras.prompts]]
label = "parcel"
text = "a parcel on the doorstep"

[[cameras]]
name = "drive"
source = "pipe:rpicam-vid -o -"
max_fps = 5.0
[[cameras.zones]]
name = "driveway"
rect = [0.5, 0.4, 0.5, 0.6]
[[cameras.zones]]
name = "gate"
rect = [0, 0, 0.25, 1]
labels = ["person"]
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, Some(Path::new("/etc/edgeclip/edgeclip.toml")))
    }

    fn problems(text: &str) -> Vec<(String, String)> {
        match parse(text) {
            Ok(_) => panic!("expected problems in:\n{text}"),
            Err(e) => e.problems.into_iter().map(|p| (p.key, p.message)).collect(),
        }
    }

    #[test]
    fn one_camera_table_is_a_list_of_one_watching_the_whole_frame() {
        let c = parse(
            "[camera]\nsource = \"v4l2:/dev/video0\"\n[model]\nbundle = \"m\"\n\
             [[prompts]]\nlabel = \"person\"\ntext = \"a person\"\n",
        )
        .unwrap();
        assert_eq!(c.cameras.len(), 1);
        assert_eq!(
            (c.camera().key.as_str(), c.camera().name.as_str()),
            ("camera", "cam0")
        );
        let zones = c.for_camera(0).zone_views();
        assert_eq!(zones.len(), 1);
        assert_eq!(
            (zones[0].name.as_str(), zones[0].rect),
            (ALL_ZONE, Rect::WHOLE)
        );
        assert_eq!(zones[0].labels, vec![0]);
        assert_eq!(c.camera().min_interval(), None);
    }

    #[test]
    fn each_camera_watches_its_labels_in_its_zones() {
        let c = parse(HOUSE).unwrap();
        assert_eq!(c.cameras.len(), 2);
        assert_eq!(c.cameras[1].key, "cameras[1]");
        // The door: the global person (not the car), then its own parcel; the whole frame only.
        let door = c.for_camera(0);
        let labels: Vec<&str> = door.prompts.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(labels, ["person", "parcel"]);
        assert_eq!(door.cameras.len(), 1);
        let zones = door.zone_views();
        assert_eq!(zones.len(), 1);
        assert_eq!(zones[0].labels, vec![0, 1]);
        // The drive: both global labels; the whole frame, the driveway and the gate.
        let drive = c.for_camera(1);
        let zones = drive.zone_views();
        let names: Vec<&str> = zones.iter().map(|z| z.name.as_str()).collect();
        assert_eq!(names, ["all", "driveway", "gate"]);
        // person everywhere; car only in the driveway and the whole frame (its `zones`); the
        // gate watches only person (its `labels`).
        assert_eq!(zones[0].labels, vec![0, 1]);
        assert_eq!(zones[1].labels, vec![0, 1]);
        assert_eq!(zones[2].labels, vec![0]);
        assert_eq!(
            zones[1].rect,
            Rect {
                x: 0.5,
                y: 0.4,
                w: 0.5,
                h: 0.6
            }
        );
        let every = c.cameras[1].min_interval().unwrap();
        assert!((every.as_secs_f64() - 0.2).abs() < 1e-6, "{every:?}");
    }

    #[test]
    fn every_mistake_is_listed_with_its_key() {
        let text = r#"
[model]
bundle = "m"
[[prompts]]
label = "person"
text = "a person"
zones = ["porch"]
[[cameras]]
name = "a"
source = "v4l2:/dev/video0"
[[cameras.prompts]]
label = "person"
text = "someone"
[[cameras.zones]]
name = "all"
rect = [0, 0, 1, 1]
[[cameras.zones]]
name = "x"
rect = [0.5, 0.5, 0.6, 0.2]
[[cameras.zones]]
name = "x"
rect = [0.1, 0.1, 0, 0.5]
labels = ["cat"]
[[cameras.zones]]
name = "y"
rect = [-0.1, 0, 0.5, 0.5]
[[cameras.zones]]
name = "z"
rect = [0, 0, 1]
[[cameras]]
name = "a"
source = "v4l2:/dev/video1"
labels = ["dog"]
whole_frame = false
max_fps = 0
[[gpio.lines]]
label = "person"
line = "GPIO17"
camera = "b"
[[gpio.lines]]
label = "person"
line = "GPIO18"
zone = "porch"
"#;
        let p = problems(text);
        let keys: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
        let expect = [
            "cameras[0].zones[4].rect",
            "cameras[1].labels[0]",
            "cameras[0].prompts[0].label",
            "cameras[0].zones[0].name",
            "cameras[0].zones[1].rect",
            "cameras[0].zones[2].name",
            "cameras[0].zones[2].rect",
            "cameras[0].zones[2].labels[0]",
            "cameras[0].zones[3].rect",
            "cameras[1].name",
            "cameras[1].whole_frame",
            "cameras[1].max_fps",
            "prompts[0].zones[0]",
            "gpio.lines[0].camera",
            "gpio.lines[1].zone",
        ];
        for k in expect {
            assert!(keys.contains(&k), "{k} not reported; got {p:#?}");
        }
        let message = |key: &str| &p.iter().find(|(k, _)| k == key).unwrap().1;
        assert!(message("cameras[1].name").contains("duplicate camera name \"a\""));
        assert!(message("cameras[0].zones[1].rect").contains("outside the frame"));
        assert!(message("cameras[0].zones[2].rect").contains("above 0"));
        assert!(message("cameras[0].zones[3].rect").contains("0..1"));
        assert!(message("cameras[0].zones[4].rect").contains("4 numbers"));
        assert!(message("cameras[0].zones[2].name").contains("duplicate zone"));
        assert!(message("prompts[0].zones[0]").contains("\"porch\""));
        assert!(message("gpio.lines[1].zone").contains("\"porch\""));
    }

    #[test]
    fn camera_and_cameras_together_is_one_problem() {
        let p = problems(
            "[camera]\nsource = \"v4l2:/dev/video0\"\n[[cameras]]\nname = \"b\"\n\
             source = \"v4l2:/dev/video1\"\n[model]\nbundle = \"m\"\n\
             [[prompts]]\nlabel = \"person\"\ntext = \"a person\"\n",
        );
        assert_eq!(p.len(), 1, "{p:#?}");
        assert_eq!(p[0].0, "camera");
        assert!(p[0].1.contains("not both"));
    }

    #[test]
    fn a_zone_in_pixels_stays_inside_the_frame() {
        let r = Rect {
            x: 0.5,
            y: 0.4,
            w: 0.5,
            h: 0.6,
        };
        assert_eq!(r.to_pixels(640, 480), (320, 192, 320, 288));
        assert_eq!(Rect::WHOLE.to_pixels(641, 479), (0, 0, 641, 479));
        let tiny = Rect {
            x: 0.999,
            y: 0.999,
            w: 0.0001,
            h: 0.0001,
        };
        assert_eq!(tiny.to_pixels(100, 100), (99, 99, 1, 1));
    }
}
