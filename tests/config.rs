//! The shipped configs parse and validate; a broken config reports every mistake at once.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use edgeclip::config::{Config, SourceSpec};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_shipped_config_is_valid() {
    let pattern = root().join("firmware-config").join("*.toml");
    let files: Vec<PathBuf> = glob::glob(&pattern.to_string_lossy())
        .expect("valid glob")
        .map(|p| p.expect("readable entry"))
        .collect();
    assert!(
        files.len() >= 4,
        "expected the shipped configs in firmware-config/, found {files:?}"
    );
    let mut failures = Vec::new();
    for f in &files {
        if let Err(e) = Config::from_file(f) {
            failures.push(e.to_string());
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn demo_config_resolves_paths_against_its_folder() {
    let file = root().join("firmware-config").join("demo.toml");
    let c = Config::from_file(&file).unwrap_or_else(|e| panic!("{e}"));
    let dir = file.parent().unwrap();
    assert_eq!(c.model.bundle, dir.join("../models/demo"));
    match &c.camera().source {
        SourceSpec::Files { pattern } => {
            assert_eq!(
                Path::new(pattern),
                dir.join("../tests/data/clip/*.jpg").as_path()
            );
        }
        other => panic!("demo.toml should replay files, got {other}"),
    }
    assert!(!c.camera().looping);
    assert_eq!(c.camera().fps, 15.0);
    assert!(c.mqtt.is_none());
    assert!(c.events.stdout);
    assert!(c.prompts.len() >= 3);
    for p in &c.prompts {
        assert!(
            p.texts.iter().all(|t| t.starts_with("a photo of a ")),
            "{:?} is not in the demo model's prompt set",
            p.texts
        );
    }
}

#[test]
fn device_configs_have_what_their_names_promise() {
    let load = |name: &str| {
        Config::from_file(root().join("firmware-config").join(name))
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let usb = load("pi5-usb-camera.toml");
    assert!(matches!(usb.camera().source, SourceSpec::V4l2 { .. }));
    assert!(usb.mqtt.is_some());
    let gpio = usb.gpio.expect("pi5-usb-camera.toml drives a GPIO line");
    assert_eq!(gpio.chip.as_deref(), Some("gpiochip0"));
    assert_eq!(
        gpio.lines[0].line,
        edgeclip::config::LineRef::Name("GPIO17".into())
    );
    let csi = load("pi5-csi-rpicam.toml");
    assert!(
        matches!(&csi.camera().source, SourceSpec::Pipe { command } if command.starts_with("rpicam-vid"))
    );
    let two = load("pi5-two-cameras.toml");
    let names: Vec<&str> = two.cameras.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["driveway", "door"]);
    assert!(
        matches!(&two.cameras[0].source, SourceSpec::Pipe { command } if command.starts_with("rpicam-vid"))
    );
    assert!(matches!(two.cameras[1].source, SourceSpec::V4l2 { .. }));
    for i in 0..2 {
        let zones: Vec<String> = two
            .for_camera(i)
            .zone_views()
            .into_iter()
            .map(|z| z.name)
            .collect();
        assert_eq!(
            zones.len(),
            2,
            "the whole frame and a zone on each camera: {zones:?}"
        );
    }
    let jetson = load("jetson-csi.toml");
    assert!(
        matches!(&jetson.camera().source, SourceSpec::Pipe { command } if command.contains("nvarguscamerasrc"))
    );
}

#[test]
fn broken_config_lists_every_mistake_with_its_key_path() {
    let file = root().join("tests/data/configs/broken.toml");
    let err = Config::from_file(&file).expect_err("broken.toml must not load");
    let keys: BTreeSet<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
    let expected: BTreeSet<&str> = [
        "camera.name",
        "camera.source",
        "camera.fps",
        "camera.resolution",
        "model.runtime",
        "prompts[1].label",
        "prompts[1].text[1]",
        "prompts[2].threshold",
        "trigger.enter_frames",
        "mqtt.host",
        "mqtt.qos",
        "mqtt.keep_alive_s",
        "gpio.lines[0].label",
        "gpio.lines[0].mode",
        "stats.interval_s",
    ]
    .into_iter()
    .collect();
    assert_eq!(keys, expected, "all problems:\n{err}");
    assert_eq!(
        err.problems.len(),
        expected.len(),
        "each mistake once:\n{err}"
    );
    let text = err.to_string();
    assert_eq!(text.lines().count(), expected.len());
    let shown = file.display().to_string();
    for line in text.lines() {
        assert!(line.starts_with(&format!("{shown}: ")), "{line}");
    }
    assert!(
        text.contains(&format!(
            "{shown}: prompts[2].threshold: must be in [0, 1], got 1.5"
        )),
        "{text}"
    );
    assert!(
        text.contains("mqtt.keep_alive_s: must be in [5, 65535], got 2"),
        "{text}"
    );
    assert!(
        text.contains("gpio.lines[0].label: \"dog\" is not a prompt label"),
        "{text}"
    );
    assert!(text.contains("camera.resolution: unknown key"), "{text}");
}
