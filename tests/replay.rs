//! `edgeclip replay` and `edgeclip calibrate` on the recorded clip with the demo model and the
//! shipped demo config: the real binary, the real pipeline, no mocks.
//!
//! - replay's JSON has a line for every frame, and its events are exactly the daemon's
//!   (`edgeclip run` on the same clip);
//! - `--plot` writes a PNG of the size asked for;
//! - calibrate, on the clip's empty frames with the clip's own frames of each shape as positive
//!   examples, proposes thresholds that `check-config` accepts through `matcher.calibration`
//!   and that still find every shape; it refuses a label whose "positives" are empty frames.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Frames kept away from any change of what is in view (objects slide in and out).
const MARGIN: usize = 4;

/// Runs the binary; its state folder (`edgeclip run`'s snapshots) is a temporary one.
fn edgeclip(args: &[&str]) -> Output {
    let state = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_edgeclip"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env("STATE_DIRECTORY", state.path())
        .output()
        .expect("edgeclip runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn demo_config() -> String {
    common::root()
        .join("firmware-config/demo.toml")
        .display()
        .to_string()
}

/// The JSON lines of `stdout`.
fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    text(stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// What identifies an event across runs (not its wall time or latency).
fn event_key(e: &serde_json::Value) -> String {
    format!(
        "{} {} frame {} score {} prob {} runner-up {}",
        e["type"], e["label"], e["frame"], e["score"], e["prob"], e["runner_up"]
    )
}

#[test]
fn replay_json_has_every_frame_and_the_daemons_events() {
    let replay = edgeclip(&["replay", "--config", &demo_config(), "--json"]);
    assert!(replay.status.success(), "{}", text(&replay.stderr));
    let lines = json_lines(&replay.stdout);
    let frames: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l.get("labels").is_some()).collect();
    let events: Vec<String> = lines
        .iter()
        .filter(|l| matches!(l["type"].as_str(), Some("start" | "end")))
        .map(event_key)
        .collect();
    assert_eq!(frames.len(), 172, "one line per frame of the clip");
    let labels = [
        "red_circle",
        "blue_square",
        "yellow_star",
        "orange_triangle",
    ];
    let mut on = BTreeMap::new();
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f["frame"], i as u64);
        let t = f["t_s"].as_f64().unwrap();
        assert!((t - i as f64 / 15.0).abs() < 1e-9, "frame {i} at {t} s");
        for l in labels {
            let s = &f["labels"][l];
            let prob = s["prob"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&prob), "{f}");
            assert!(s["score"].as_f64().is_some(), "{f}");
            let state = s["state"].as_str().unwrap();
            assert!(state == "on" || state == "off", "{f}");
            if state == "on" {
                *on.entry(l).or_insert(0) += 1;
            }
            let runner = &f["runner_up"][l];
            assert!(runner["label"].as_str().is_some_and(|n| n != l), "{f}");
        }
    }
    assert_eq!(on.len(), 4, "every shape is on for a while: {on:?}");
    // The summary: a row per label, on stdout without --json, on stderr with it.
    let err = text(&replay.stderr);
    for l in labels {
        assert!(err.lines().any(|line| line.starts_with(l)), "{err}");
    }

    let run = edgeclip(&["run", "--config", &demo_config()]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let daemon: Vec<String> = json_lines(&run.stdout)
        .iter()
        .filter(|l| matches!(l["type"].as_str(), Some("start" | "end")))
        .map(event_key)
        .collect();
    assert_eq!(daemon.len(), 8, "{daemon:#?}");
    assert_eq!(events, daemon, "replay's events are the daemon's");
}

#[test]
fn replay_plot_is_a_png_of_the_size_asked() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("replay.png");
    let out = edgeclip(&[
        "replay",
        "--config",
        &demo_config(),
        "--plot",
        png.to_str().unwrap(),
        "--plot-size",
        "900x700",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("172 frames"), "{stdout}");
    assert!(
        stdout.lines().any(|l| l.starts_with("red_circle")),
        "{stdout}"
    );
    let img = image::open(&png).unwrap();
    assert_eq!((img.width(), img.height()), (900, 700));

    let bad = edgeclip(&["replay", "--config", &demo_config(), "--plot-size", "900"]);
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("WIDTHxHEIGHT"),
        "{}",
        text(&bad.stderr)
    );
}

/// The label names of the demo config by prompt text.
fn labels_by_text() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        ("a photo of a red circle", "red_circle"),
        ("a photo of a blue square", "blue_square"),
        ("a photo of a yellow star", "yellow_star"),
        ("a photo of a orange triangle", "orange_triangle"),
    ])
}

/// Copies the clip's frames with nothing in view (and nothing within MARGIN frames) to
/// `dir/quiet/`, and each shape's frames (in view for MARGIN frames either side) to
/// `dir/positives/<label>/`. Returns the number of quiet frames.
fn split_clip(dir: &Path) -> usize {
    let truth: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::data("clip/ground_truth.json")).unwrap(),
    )
    .unwrap();
    let frames = truth["frames"].as_array().unwrap();
    let in_view = |i: usize| -> Vec<&str> {
        frames[i]["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect()
    };
    let by_text = labels_by_text();
    std::fs::create_dir_all(dir.join("quiet")).unwrap();
    let mut quiet = 0;
    for i in 0..frames.len() {
        let file = frames[i]["file"].as_str().unwrap();
        let near = i.saturating_sub(MARGIN)..(i + MARGIN + 1).min(frames.len());
        let source = common::data("clip").join(file);
        if near.clone().all(|j| in_view(j).is_empty()) {
            std::fs::copy(&source, dir.join("quiet").join(file)).unwrap();
            quiet += 1;
        }
        for text in in_view(i) {
            if near.clone().all(|j| in_view(j).contains(&text)) {
                let folder = dir.join("positives").join(by_text[text]);
                std::fs::create_dir_all(&folder).unwrap();
                std::fs::copy(&source, folder.join(file)).unwrap();
            }
        }
    }
    quiet
}

/// The demo config with absolute paths, in `dir`, plus `extra` under `[matcher]`.
fn config_in(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let root = common::root();
    let text = std::fs::read_to_string(root.join("firmware-config/demo.toml"))
        .unwrap()
        .replace("\"../", &format!("\"{}/", root.display()))
        .replace("files:../", &format!("files:{}/", root.display()))
        .replace("[matcher]\n", &format!("[matcher]\n{extra}"));
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The `label = value` lines of a calibration file's `[thresholds]`.
fn thresholds(calib: &Path) -> BTreeMap<String, f64> {
    let table: toml::Table = toml::from_str(&std::fs::read_to_string(calib).unwrap()).unwrap();
    table["thresholds"]
        .as_table()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_float().unwrap()))
        .collect()
}

#[test]
fn calibrated_thresholds_are_accepted_and_still_find_every_shape() {
    let dir = tempfile::tempdir().unwrap();
    let quiet = split_clip(dir.path());
    assert!(quiet >= 30, "{quiet} quiet frames");
    let config = config_in(dir.path(), "demo.toml", "");
    let calib = dir.path().join("calib.toml");
    let png = dir.path().join("calib.png");
    let source = format!("files:{}/quiet/*.jpg", dir.path().display());
    let out = edgeclip(&[
        "calibrate",
        "--config",
        config.to_str().unwrap(),
        "--source",
        &source,
        "--positives",
        dir.path().join("positives").to_str().unwrap(),
        "--out",
        calib.to_str().unwrap(),
        "--plot",
        png.to_str().unwrap(),
        "--plot-size",
        "800x900",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains(&format!("{quiet} frames")), "{stdout}");
    let proposed = thresholds(&calib);
    assert_eq!(proposed.len(), 4, "{proposed:?}\n{stdout}");
    for (label, t) in &proposed {
        assert!(*t > 0.0 && *t < 1.0, "{label}: {t}");
        let row = stdout
            .lines()
            .find(|l| l.starts_with(label.as_str()))
            .unwrap();
        assert!(
            row.contains("tail"),
            "a few seconds of footage are extrapolated: {row}"
        );
    }
    let img = image::open(&png).unwrap();
    assert_eq!((img.width(), img.height()), (800, 900));

    // The config takes the file; check-config accepts it.
    let calibrated = config_in(
        dir.path(),
        "calibrated.toml",
        "calibration = \"calib.toml\"\n",
    );
    let check = edgeclip(&["check-config", calibrated.to_str().unwrap()]);
    assert!(check.status.success(), "{}", text(&check.stderr));
    assert!(
        text(&check.stdout).contains(": ok"),
        "{}",
        text(&check.stdout)
    );

    // And the clip, replayed with them, still starts each shape once.
    let replay = edgeclip(&["replay", "--config", calibrated.to_str().unwrap()]);
    assert!(replay.status.success(), "{}", text(&replay.stderr));
    let starts: Vec<String> = json_lines(&replay.stdout)
        .iter()
        .filter(|l| l["type"] == "start")
        .map(|l| l["label"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        starts,
        [
            "red_circle",
            "blue_square",
            "yellow_star",
            "orange_triangle"
        ],
        "{}",
        text(&replay.stdout)
    );
    let summary = text(&replay.stdout);
    for (label, t) in &proposed {
        let row = summary
            .lines()
            .find(|l| l.starts_with(label.as_str()))
            .unwrap();
        assert!(row.contains(&t.to_string()), "{label} runs with {t}: {row}");
    }

    // A label's own threshold and the file must not both set one.
    let both = config_in(dir.path(), "both.toml", "calibration = \"calib.toml\"\n")
        .display()
        .to_string();
    let text_both = std::fs::read_to_string(&both).unwrap().replace(
        "label = \"red_circle\"\n",
        "label = \"red_circle\"\nthreshold = 0.6\n",
    );
    std::fs::write(&both, text_both).unwrap();
    let check = edgeclip(&["check-config", &both]);
    assert!(!check.status.success());
    let err = text(&check.stderr);
    assert!(
        err.contains("matcher.calibration:")
            && err.contains("thresholds.red_circle: prompts[0].threshold is set too"),
        "{err}"
    );
}

#[test]
fn calibration_refuses_a_label_whose_quiet_and_positive_scores_overlap() {
    let dir = tempfile::tempdir().unwrap();
    split_clip(dir.path());
    // The red circle's "examples" are empty frames: its quiet and positive scores are the same.
    let fake = dir.path().join("overlap/red_circle");
    std::fs::create_dir_all(&fake).unwrap();
    for entry in std::fs::read_dir(dir.path().join("quiet"))
        .unwrap()
        .take(12)
    {
        let p = entry.unwrap().path();
        std::fs::copy(&p, fake.join(p.file_name().unwrap())).unwrap();
    }
    let config = config_in(dir.path(), "demo.toml", "");
    let calib = dir.path().join("calib.toml");
    let out = edgeclip(&[
        "calibrate",
        "--config",
        config.to_str().unwrap(),
        "--source",
        &format!("files:{}/quiet/*.jpg", dir.path().display()),
        "--positives",
        dir.path().join("overlap").to_str().unwrap(),
        "--out",
        calib.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("no threshold proposed for red_circle: quiet and positive scores overlap"),
        "{err}"
    );
    // The other labels (no examples) got their quiet bound; the refusal is a comment.
    let written = std::fs::read_to_string(&calib).unwrap();
    assert!(
        written.contains("# red_circle: refused: quiet and positive scores overlap"),
        "{written}"
    );
    let proposed = thresholds(&calib);
    assert!(!proposed.contains_key("red_circle"), "{proposed:?}");
    assert_eq!(proposed.len(), 3, "{proposed:?}");

    // A folder that names no label is a typo, not an empty set of examples.
    std::fs::create_dir_all(dir.path().join("overlap/red_cirle")).unwrap();
    let out = edgeclip(&[
        "calibrate",
        "--config",
        config.to_str().unwrap(),
        "--source",
        &format!("files:{}/quiet/*.jpg", dir.path().display()),
        "--positives",
        dir.path().join("overlap").to_str().unwrap(),
        "--out",
        calib.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("red_cirle names no label"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn calibration_without_frames_is_one_line_naming_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path(), "demo.toml", "");
    let calib = dir.path().join("calib.toml");
    let missing = format!("files:{}/nothing/*.jpg", dir.path().display());
    let out = edgeclip(&[
        "calibrate",
        "--config",
        config.to_str().unwrap(),
        "--source",
        &missing,
        "--out",
        calib.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains(&missing), "{err}");
    assert!(!calib.exists());

    // Files that are not images: the source delivers nothing usable.
    std::fs::create_dir_all(dir.path().join("junk")).unwrap();
    std::fs::write(dir.path().join("junk/a.jpg"), b"not a jpeg").unwrap();
    let junk = format!("files:{}/junk/*.jpg", dir.path().display());
    let out = edgeclip(&[
        "calibrate",
        "--config",
        config.to_str().unwrap(),
        "--source",
        &junk,
        "--out",
        calib.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("error: no frames from {junk}")),
        "{err}"
    );

    // A live camera in the config is not replayed by accident.
    let live = dir.path().join("live.toml");
    std::fs::write(
        &live,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("source = \"files:", "source = \"v4l2:/dev/video9\"\n# \""),
    )
    .unwrap();
    let out = edgeclip(&["replay", "--config", live.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("live camera (v4l2:/dev/video9)"),
        "{}",
        text(&out.stderr)
    );
}
