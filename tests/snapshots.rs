//! Snapshots with the real daemon, the demo model and the recorded clip: every start event names
//! a JPEG that exists, decodes, shows what the label describes (the demo model, run again on the
//! file, puts the label's prompt first) and reaches the sinks; retention keeps the newest; an
//! unwritable folder stops the start-up with an error naming it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use edgeclip::config::Config;
use edgeclip::daemon::{Control, Daemon, Delivery, Summary};
use edgeclip::event::{Event, EventKind, Snapshot};
use edgeclip::sink::{EventSink, SinkError};

/// What a sink was given.
#[derive(Clone, Default)]
struct Recorder {
    events: Arc<Mutex<Vec<Event>>>,
    snapshots: Arc<Mutex<Vec<Snapshot>>>,
}

impl EventSink for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    fn publish(&mut self, event: &Event) -> Result<(), SinkError> {
        self.events.lock().unwrap().push(event.clone());
        Ok(())
    }
    fn publish_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), SinkError> {
        self.snapshots.lock().unwrap().push(snapshot.clone());
        Ok(())
    }
}

/// The shipped demo config (4 objects, 4 start events) replayed fast, with `snapshots` as its
/// `[snapshots]` table.
fn demo_config(snapshots: &str) -> Config {
    let path = common::root().join("firmware-config/demo.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("fps = 15", "fps = 60");
    let text = format!("{text}\n[snapshots]\n{snapshots}\n");
    Config::from_toml_str(&text, Some(&path)).unwrap_or_else(|e| panic!("{e}"))
}

fn run(config: Config) -> (Summary, Vec<Event>, Vec<Snapshot>) {
    let daemon = Daemon::new(config).unwrap();
    let source = edgeclip::source::open_source(daemon.config().camera()).unwrap();
    let recorder = Recorder::default();
    let summary = daemon
        .run(
            vec![source],
            vec![Box::new(recorder.clone())],
            &Control::default(),
            Delivery::Lossless,
        )
        .unwrap();
    let events = recorder.events.lock().unwrap().clone();
    let snapshots = recorder.snapshots.lock().unwrap().clone();
    (summary, events, snapshots)
}

/// Every `.jpg` under `dir`, sorted.
fn jpegs(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(jpegs(&p));
        } else if p.extension().is_some_and(|x| x == "jpg") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// `edgeclip classify --json` over `images` with the demo config's prompts and background:
/// the top prompt of each image.
fn top_prompts(config: &Config, images: &[PathBuf]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "classify".into(),
        "--model".into(),
        config.model.bundle.display().to_string(),
        "--json".into(),
    ];
    let texts = config
        .prompts
        .iter()
        .map(|p| p.display_text().to_owned())
        .chain(config.matcher.background.iter().cloned());
    for t in texts {
        args.push("--prompt".into());
        args.push(t);
    }
    args.extend(images.iter().map(|p| p.display().to_string()));
    let out = Command::new(env!("CARGO_BIN_EXE_edgeclip"))
        .args(&args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run edgeclip classify");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["top"]["prompt"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[test]
fn every_start_event_names_a_snapshot_of_its_label() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("snaps");
    let config = demo_config(&format!("dir = \"{}\"", dir.display()));
    let (summary, events, given) = run(config.clone());

    let starts: Vec<&Event> = events
        .iter()
        .filter(|e| e.kind == EventKind::Start)
        .collect();
    assert_eq!(starts.len(), 4, "{events:#?}");
    let mut named = Vec::new();
    for start in &starts {
        let path = start.snapshot.clone().expect("a start names its snapshot");
        assert!(
            path.starts_with(dir.join("demo").join(&start.label)),
            "{}",
            path.display()
        );
        // The end repeats its start's snapshot.
        let end = events
            .iter()
            .find(|e| e.kind == EventKind::End && e.label == start.label)
            .expect("an end");
        assert_eq!(end.snapshot.as_ref(), Some(&path));
        // The JSON carries it.
        let json: serde_json::Value = serde_json::from_str(&start.to_json()).unwrap();
        assert_eq!(json["snapshot"], path.display().to_string());
        named.push(path);
    }
    named.sort();
    assert_eq!(jpegs(&dir), named, "exactly the named files, nothing else");
    assert_eq!(summary.snapshots.written, 4, "{:?}", summary.snapshots);
    assert_eq!(
        (summary.snapshots.failed, summary.snapshots.dropped),
        (0, 0)
    );
    assert!(
        summary.snapshots.kept_frames >= 4,
        "at least the start frames"
    );

    // Each decodes, and the demo model says it shows its label.
    for path in &named {
        let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!((img.width(), img.height()), (640, 480));
    }
    let tops = top_prompts(&config, &named);
    for (path, top) in named.iter().zip(&tops) {
        let label = path
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap();
        let prompt = config.prompts[config.prompt_index(label).unwrap()].display_text();
        assert_eq!(top, prompt, "{}", path.display());
    }

    // The sinks got each file's bytes, once.
    assert_eq!(given.len(), 4);
    for s in &given {
        assert_eq!(s.camera, "demo");
        assert_eq!(std::fs::read(&s.path).unwrap(), s.jpeg);
        assert_eq!(&s.jpeg[..2], [0xFF, 0xD8]);
        assert!(s.path.starts_with(dir.join("demo").join(&s.label)));
    }
}

#[test]
fn retention_keeps_only_the_newest() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("snaps");
    let config = demo_config(&format!("dir = \"{}\"\nmax_count = 2", dir.display()));
    let (summary, events, _) = run(config);
    let named: Vec<PathBuf> = events
        .iter()
        .filter(|e| e.kind == EventKind::Start)
        .filter_map(|e| e.snapshot.clone())
        .collect();
    assert_eq!(named.len(), 4);
    assert_eq!(summary.snapshots.written, 4);
    // The clip's last two objects.
    let mut newest = named[2..].to_vec();
    newest.sort();
    assert_eq!(jpegs(&dir), newest);
}

#[test]
fn snapshots_off_name_nothing_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("snaps");
    let config = demo_config(&format!("enabled = false\ndir = \"{}\"", dir.display()));
    let (summary, events, given) = run(config);
    assert!(!events.is_empty());
    assert!(events.iter().all(|e| e.snapshot.is_none()));
    assert!(
        events
            .iter()
            .all(|e| e.to_json().contains("\"snapshot\":null"))
    );
    assert!(given.is_empty());
    assert!(!dir.exists());
    assert_eq!(summary.snapshots, Default::default());
}

#[test]
fn a_failed_write_at_run_time_is_counted_and_detection_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("snaps");
    // The folder is writable at start-up; one label's folder is a file, so its write fails.
    std::fs::create_dir_all(dir.join("demo")).unwrap();
    std::fs::write(dir.join("demo/blue_square"), b"in the way").unwrap();
    let config = demo_config(&format!("dir = \"{}\"", dir.display()));
    let (summary, events, given) = run(config);
    assert_eq!(
        events.len(),
        8,
        "every start and end published: {events:#?}"
    );
    assert_eq!(summary.snapshots.failed, 1, "{:?}", summary.snapshots);
    assert_eq!(summary.snapshots.written, 3);
    assert_eq!(given.len(), 3);
    assert!(given.iter().all(|s| s.label != "blue_square"));
    assert_eq!(jpegs(&dir).len(), 3);
}

#[test]
fn an_unwritable_folder_stops_the_start_up_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    // A file where a folder must be: fails for root too.
    let file = tmp.path().join("not-a-folder");
    std::fs::write(&file, b"x").unwrap();
    let dir = file.join("snaps");
    let config = demo_config(&format!("dir = \"{}\"", dir.display()));
    let err = Daemon::new(config).expect_err("refused").to_string();
    assert!(err.contains("snapshots.dir"), "{err}");
    assert!(err.contains(&dir.display().to_string()), "{err}");

    // The binary: a clean error line, exit code 1, no events; check-config --probe reports it.
    let path = tmp.path().join("demo.toml");
    let text = std::fs::read_to_string(common::root().join("firmware-config/demo.toml"))
        .unwrap()
        .replace("../", &format!("{}/", common::root().display()));
    std::fs::write(
        &path,
        format!("{text}\n[snapshots]\ndir = \"{}\"\n", dir.display()),
    )
    .unwrap();
    for args in [
        vec!["run", "--config", path.to_str().unwrap()],
        vec!["check-config", "--probe", path.to_str().unwrap()],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_edgeclip"))
            .args(&args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty() || args[0] == "check-config");
        assert!(!stderr.contains("panicked"), "{stderr}");
        let line = stderr
            .lines()
            .find(|l| l.contains("snapshots.dir"))
            .unwrap_or_else(|| panic!("{args:?}: no line names snapshots.dir:\n{stderr}"));
        assert!(line.contains(&dir.display().to_string()), "{line}");
    }
}
