//! Many cameras and zones in one daemon (issue 27), with the real binary, the demo model and
//! clips from the independent generator (`tests/common/scenes.rs`):
//!
//! - the recorded clip and a generated recording on two cameras at once give each camera
//!   exactly the events it gives alone;
//! - a shape crossing from one zone into another starts and ends in each zone, in order, each
//!   within the trigger's lag of when its centre crossed into or out of the zone.

#[path = "common/scenes.rs"]
mod scenes;

use std::path::{Path, PathBuf};
use std::process::Command;

use edgeclip::event::{Event, EventKind};
use scenes::{Background, Colour, Recipe, Shape, Thing, VIEW, VIEW_X0, ensure};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_edgeclip"))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The demo's four prompts and its trigger, as `firmware-config/demo.toml` has them.
const PROMPTS: &str = r#"
[[prompts]]
label = "red_circle"
text = "a photo of a red circle"
[[prompts]]
label = "blue_square"
text = "a photo of a blue square"
[[prompts]]
label = "yellow_star"
text = "a photo of a yellow star"
[[prompts]]
label = "orange_triangle"
text = "a photo of a orange triangle"
[matcher]
background = ["an empty scene"]
threshold = 0.5
score = "prob"
[trigger]
enter_frames = 3
exit_frames = 3
[stats]
interval_s = 0
"#;

/// `[model]` for the demo bundle.
fn model() -> String {
    format!(
        "[model]\nbundle = {:?}\nruntime = \"cpu\"\nthreads = 1\n",
        root().join("models/demo").display().to_string()
    )
}

/// One `[[cameras]]` entry replaying `dir`'s frames at 15 fps, with `extra` keys and tables.
fn camera(name: &str, dir: &Path, extra: &str) -> String {
    format!(
        "[[cameras]]\nname = {name:?}\nsource = {:?}\nfps = 15\n{extra}\n",
        format!("files:{}/*.jpg", dir.display())
    )
}

/// Every event of `edgeclip run --lossless` (every frame of every camera processed) on `config`.
fn run(dir: &Path, name: &str, config: &str) -> Vec<Event> {
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, config).unwrap();
    let out = Command::new(bin())
        .args(["run", "--lossless", "--config"])
        .arg(&file)
        .env("RUST_LOG", "warn")
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .env("XDG_DATA_HOME", dir.join("data"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("{\"type\""))
        .map(|l| Event::from_json(l).unwrap())
        .collect()
}

/// What must match between two runs: kind, camera, zone, label and frame.
fn key(e: &Event) -> (String, String, String, String, u64) {
    (
        e.kind.as_str().to_owned(),
        e.camera.clone(),
        e.zone.clone(),
        e.label.clone(),
        e.frame,
    )
}

fn of(events: &[Event], camera: &str) -> Vec<(String, String, String, String, u64)> {
    events
        .iter()
        .filter(|e| e.camera == camera)
        .map(key)
        .collect()
}

#[test]
fn two_cameras_in_one_daemon_give_each_its_own_events() {
    let tmp = tempfile::tempdir().unwrap();
    let clip = root().join("tests/data/clip");
    let other = ensure(&Recipe::targets(Background::Temple, 1)).unwrap();
    let mut lone = Vec::new();
    for (name, dir) in [("porch", &clip), ("yard", &other)] {
        let config = format!("{}{}{PROMPTS}", camera(name, dir, ""), model());
        let events = run(tmp.path(), name, &config);
        assert!(
            events.iter().filter(|e| e.kind == EventKind::Start).count() >= 2,
            "{name} alone: too few events to compare: {events:?}"
        );
        lone.push(of(&events, name));
    }
    let both = format!(
        "{}{}{}{PROMPTS}",
        camera("porch", &clip, ""),
        camera("yard", &other, ""),
        model()
    );
    let events = run(tmp.path(), "both", &both);
    assert_eq!(of(&events, "porch"), lone[0], "the recorded clip's camera");
    assert_eq!(of(&events, "yard"), lone[1], "the generated clip's camera");
    assert_eq!(events.len(), lone[0].len() + lone[1].len());
    assert!(events.iter().all(|e| e.zone == "all"));
}

/// A zone as `rect = [x, y, w, h]` over a square of the scene `side` pixels wide at `x0, y0`
/// (frame pixels, 640 x 480).
fn zone(name: &str, x0: f32, y0: f32, side: f32) -> String {
    format!(
        "[[cameras.zones]]\nname = {name:?}\nrect = [{}, {}, {}, {}]\n",
        x0 / 640.0,
        y0 / 480.0,
        side / 640.0,
        side / 480.0
    )
}

#[test]
fn a_shape_crossing_from_one_zone_into_another_starts_and_ends_in_each_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let frames = tmp.path().join("crossing");
    std::fs::create_dir(&frames).unwrap();
    // Two square zones side by side across the middle of the view; a red circle rests in the
    // left one, glides into the right one, rests there and leaves.
    let side = VIEW / 2.0;
    let (left_x, right_x, top) = (VIEW_X0, VIEW_X0 + side, VIEW / 4.0);
    let centre = |x0: f32| [x0 + side / 2.0, top + side / 2.0];
    let fps = 10;
    let clip = scenes::Clip::crossing(
        Background::Raccoon,
        7,
        Thing::Shape(Colour::Red, Shape::Circle),
        centre(left_x),
        centre(right_x),
        16.0,
        fps,
    )
    .unwrap();
    clip.render_frames_to(&frames).unwrap();
    let config = format!(
        "{}{}{PROMPTS}",
        camera(
            "drive",
            &frames,
            &format!(
                "whole_frame = false\n{}{}",
                zone("left", left_x, top, side),
                zone("right", right_x, top, side)
            )
        ),
        model()
    );
    let events = run(tmp.path(), "crossing", &config);
    for e in &events {
        eprintln!(
            "{} {} {} frame {} prob {:.2}",
            e.kind.as_str(),
            e.zone,
            e.label,
            e.frame,
            e.prob
        );
    }
    // The truth: the frames whose circle centre is inside each zone.
    let inside = |f: u32, x0: f32| {
        clip.poses(f)
            .iter()
            .any(|(_, p)| p.cx >= x0 && p.cx < x0 + side && p.cy >= top && p.cy < top + side)
    };
    let span = |x0: f32| {
        let on: Vec<u32> = (0..clip.frames()).filter(|&f| inside(f, x0)).collect();
        (*on.first().unwrap() as i64, *on.last().unwrap() as i64 + 1)
    };
    let red: Vec<&Event> = events.iter().filter(|e| e.label == "red_circle").collect();
    let find = |zone: &str, kind: EventKind| {
        let found: Vec<&&Event> = red
            .iter()
            .filter(|e| e.zone == zone && e.kind == kind)
            .collect();
        assert_eq!(found.len(), 1, "one {} in {zone}: {red:#?}", kind.as_str());
        found[0].frame as i64
    };
    let (enter, exit) = (3i64, 3i64);
    // How far an event may be from its zone's truth: the trigger's frames, plus the frames the
    // circle needs to be mostly in or out of a zone while it glides across the edge.
    let slack = 4i64;
    for (zone, x0) in [("left", left_x), ("right", right_x)] {
        let (s, e) = span(x0);
        let start = find(zone, EventKind::Start);
        let end = find(zone, EventKind::End);
        assert!(
            (start - (s + enter - 1)).abs() <= slack,
            "{zone}: start at {start}, the circle's centre entered at {s}"
        );
        assert!(
            (end - (e + exit - 1)).abs() <= slack,
            "{zone}: end at {end}, the circle's centre left at {e}"
        );
    }
    assert!(find("left", EventKind::Start) < find("right", EventKind::Start));
    assert!(find("left", EventKind::End) <= find("right", EventKind::Start) + slack);
    assert!(find("left", EventKind::End) < find("right", EventKind::End));
    // Nothing else fired: no other label, no whole frame.
    assert!(
        events
            .iter()
            .all(|e| e.label == "red_circle" && e.zone != "all"),
        "{events:#?}"
    );
}

#[test]
fn replay_takes_one_camera_by_name_and_names_a_missing_one() {
    let tmp = tempfile::tempdir().unwrap();
    let clip = root().join("tests/data/clip");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::copy(clip.join("frame_0000.jpg"), empty.join("frame_0000.jpg")).unwrap();
    let config = format!(
        "{}{}{}{PROMPTS}",
        camera("first", &empty, ""),
        camera("second", &clip, ""),
        model()
    );
    let file = tmp.path().join("two.toml");
    std::fs::write(&file, config).unwrap();
    let replay = |camera: &str| {
        Command::new(bin())
            .args(["replay", "--camera", camera, "--config"])
            .arg(&file)
            .env("RUST_LOG", "warn")
            .env("XDG_CACHE_HOME", tmp.path().join("cache"))
            .output()
            .unwrap()
    };
    let out = replay("second");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<Event> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("{\"type\""))
        .map(|l| Event::from_json(l).unwrap())
        .collect();
    assert!(events.len() >= 4, "the clip's events: {events:?}");
    assert!(events.iter().all(|e| e.camera == "second"));
    let out = replay("third");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no camera is named \"third\"") && err.contains("first, second"),
        "{err}"
    );
}

#[test]
fn a_camera_that_fails_goes_offline_alone_and_the_other_keeps_its_events() {
    let tmp = tempfile::tempdir().unwrap();
    let clip = root().join("tests/data/clip");
    let alone = format!("{}{}{PROMPTS}", camera("porch", &clip, ""), model());
    let lone = of(&run(tmp.path(), "alone", &alone), "porch");
    // A pipe camera whose command exits at once, every time it is restarted.
    let broken = "[[cameras]]\nname = \"shed\"\nsource = \"pipe:exit 3\"\nformat = \"mjpeg\"\n";
    let config = format!("{}{broken}{}{PROMPTS}", camera("porch", &clip, ""), model());
    let file = tmp.path().join("broken.toml");
    std::fs::write(&file, config).unwrap();
    // The broken camera never finishes (a live camera is retried for ever): the daemon runs
    // until stopped. Stop it once the working camera's recording has given all its events.
    #[allow(clippy::zombie_processes)] // waited for below, once its output is read
    let mut child = std::process::Command::new(bin())
        .args(["run", "--lossless", "--config"])
        .arg(&file)
        .env("RUST_LOG", "info")
        .env("XDG_CACHE_HOME", tmp.path().join("cache"))
        .env("XDG_DATA_HOME", tmp.path().join("data"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let log_reader = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap());
    // If the events never come, the test must still end (and fail below).
    let guard_pid = pid.clone();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(180));
        let _ = Command::new("kill").args(["-TERM", &guard_pid]).status();
    });
    let mut events = Vec::new();
    for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
        let line = line.unwrap();
        if line.starts_with("{\"type\"") {
            events.push(Event::from_json(&line).unwrap());
        }
        if events.len() == lone.len() {
            // Anything more would be a wrong event: give it a moment to show, then stop.
            std::thread::sleep(std::time::Duration::from_secs(1));
            Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        }
    }
    let log = log_reader.join().unwrap();
    assert_eq!(
        of(&events, "porch"),
        lone,
        "the working camera's events\n{log}"
    );
    assert!(events.iter().all(|e| e.camera == "porch"));
    assert!(log.contains("camera shed: offline"), "{log}");
    assert!(!log.contains("camera porch: offline"), "{log}");
}

#[test]
fn max_fps_holds_a_camera_back_without_making_it_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let clip = root().join("tests/data/clip");
    // One frame every 2.5 s through the model, while the camera delivers 15 a second and counts
    // as offline after 1 s without a frame.
    let config = format!(
        "{}{}{PROMPTS}",
        camera(
            "slow",
            &clip,
            "loop = true\nmax_fps = 0.4\noffline_after_s = 1\n"
        ),
        model()
    );
    let file = tmp.path().join("slow.toml");
    std::fs::write(&file, config).unwrap();
    let out = Command::new("timeout")
        .args(["-s", "TERM", "6"])
        .arg(bin())
        .args(["run", "--config"])
        .arg(&file)
        .env("RUST_LOG", "info")
        .env("XDG_CACHE_HOME", tmp.path().join("cache"))
        .env("XDG_DATA_HOME", tmp.path().join("data"))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let summary = log
        .lines()
        .find(|l| l.contains("stopped:"))
        .unwrap_or_else(|| panic!("no summary:\n{log}"));
    // "stopped: C frames captured, P processed, D dropped, ..."
    let number = |word: &str| -> u64 {
        let before = summary.split(word).next().unwrap();
        before
            .split_whitespace()
            .last()
            .unwrap()
            .trim_end_matches(',')
            .parse()
            .unwrap()
    };
    let (captured, processed) = (number(" frames captured"), number(" processed"));
    assert!(captured >= 45, "the camera delivered at 15 fps: {summary}");
    assert!(
        (2..=4).contains(&processed),
        "about one frame each 2.5 s went through: {summary}"
    );
    assert!(!log.contains("offline"), "{log}");
}

#[test]
fn a_reload_that_changes_the_zones_takes_effect_without_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let clip = root().join("tests/data/clip");
    let zones = |names: &[&str]| -> String {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| zone(n, VIEW_X0 + i as f32 * VIEW / 2.0, VIEW / 4.0, VIEW / 2.0))
            .collect()
    };
    let config = |names: &[&str]| {
        format!(
            "{}{}{PROMPTS}",
            camera("drive", &clip, &format!("loop = true\n{}", zones(names))),
            model()
        )
    };
    let file = tmp.path().join("zones.toml");
    std::fs::write(&file, config(&["left", "right"])).unwrap();
    let child = Command::new(bin())
        .args(["run", "--config"])
        .arg(&file)
        .env("RUST_LOG", "info")
        .env("XDG_CACHE_HOME", tmp.path().join("cache"))
        .env("XDG_DATA_HOME", tmp.path().join("data"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let signal = |sig: &str| {
        Command::new("kill").args([sig, &pid]).status().unwrap();
    };
    std::thread::sleep(std::time::Duration::from_secs(4));
    // One zone fewer, and a new one: the zone list shrinks under the running loop.
    std::fs::write(&file, config(&["gate"])).unwrap();
    signal("-HUP");
    std::thread::sleep(std::time::Duration::from_secs(6));
    signal("-TERM");
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("prompts reloaded"), "{log}");
    let events: Vec<Event> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("{\"type\""))
        .map(|l| Event::from_json(l).unwrap())
        .collect();
    assert!(
        events
            .iter()
            .all(|e| ["all", "left", "right", "gate"].contains(&e.zone.as_str())),
        "{events:#?}"
    );
    // Every start has its end (the reload ends the old zones' labels, SIGTERM the rest).
    let starts = events.iter().filter(|e| e.kind == EventKind::Start).count();
    assert_eq!(starts * 2, events.len(), "{events:#?}");
}
