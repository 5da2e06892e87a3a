//! The store and `edgeclip search` (issue 26), with the real binary and the demo model: the
//! daemon replays the demo clip losslessly with `[store]` on (every frame stored), then `edgeclip
//! search` finds the red circle where the clip's ground truth has it. A corrupt database file
//! at the store's path is moved aside and a new store started; a search before anything is
//! stored prints that it found nothing and succeeds; an empty text is refused.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_edgeclip")
}

fn root() -> PathBuf {
    std::env::var_os("EDGECLIP_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf())
}

/// `firmware-config/demo.toml` with absolute paths, snapshots off and the store in `dir`.
fn config(dir: &Path) -> PathBuf {
    let root = root();
    let demo = std::fs::read_to_string(root.join("firmware-config/demo.toml")).unwrap();
    let clip = root.join("tests/data/clip/*.jpg");
    let text = demo
        .replace(
            "\"files:../tests/data/clip/*.jpg\"",
            &format!("\"files:{}\"", clip.display()),
        )
        .replace(
            "\"../models/demo\"",
            &format!("\"{}\"", root.join("models/demo").display()),
        );
    assert_ne!(text, demo, "demo.toml's paths changed: update this test");
    let text = format!(
        "{text}\n[snapshots]\nenabled = false\n\n[store]\nenabled = true\npath = \"store.sqlite\"\nsample_s = 0\n"
    );
    let path = dir.join("edgeclip.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn edgeclip(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("RUST_LOG", "info")
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .env("XDG_DATA_HOME", dir.join("data"))
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The frames whose ground truth shows `label`.
fn truth(label: &str) -> Vec<u64> {
    let text = std::fs::read_to_string(root().join("tests/data/clip/ground_truth.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["labels"].as_array().unwrap().iter().any(|l| l == label))
        .map(|f| f["frame"].as_u64().unwrap())
        .collect()
}

#[test]
fn the_daemon_stores_the_clip_and_search_finds_the_red_circle_where_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let c = config.to_str().unwrap();
    // Something that is not a database where the store goes: moved aside, a new store started.
    let db = dir.path().join("store.sqlite");
    std::fs::write(&db, b"not a database ".repeat(500)).unwrap();

    let run = edgeclip(dir.path(), &["run", "--lossless", "--config", c]);
    ok(&run);
    let log = String::from_utf8_lossy(&run.stderr);
    assert!(log.contains("not a readable edgeclip store"), "{log}");
    let aside: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("store.sqlite.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(
        std::fs::read(&aside[0])
            .unwrap()
            .starts_with(b"not a database")
    );
    assert!(log.contains("0 dropped"), "{log}");

    let out = ok(&edgeclip(
        dir.path(),
        &["search", "--config", c, "--json", "a photo of a red circle"],
    ));
    let moments: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!moments.is_empty(), "{out}");
    let best = &moments[0];
    for key in ["ts", "camera", "frame", "score", "thumbnail"] {
        assert!(best.get(key).is_some(), "{key} missing: {best}");
    }
    assert_eq!(best["camera"], "demo");
    let red = truth("a photo of a red circle");
    let (first, last) = (red[0], red[red.len() - 1]);
    let frames = best["frames"].as_array().unwrap();
    let (from, to) = (frames[0].as_u64().unwrap(), frames[1].as_u64().unwrap());
    // The best moment covers the red circle's frames (a frame of slack either side: the shape
    // enters and leaves the picture) and its best frame shows it.
    assert!(
        from <= first + 1 && to + 1 >= last,
        "{best} vs {first}-{last}"
    );
    assert!(
        from + 3 >= first && to <= last + 3,
        "{best} vs {first}-{last}"
    );
    assert!(red.contains(&best["frame"].as_u64().unwrap()), "{best}");
    // The scores come best first.
    let scores: Vec<f64> = moments
        .iter()
        .map(|m| m["score"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    // Without --thumbnails, no thumbnail paths.
    assert!(moments.iter().all(|m| m["thumbnail"].is_null()), "{out}");

    // With --thumbnails DIR: each moment's thumbnail (its camera's nearest at or before its best
    // frame) is written there, a JPEG 160 px wide, and named in the JSON.
    let thumbs = dir.path().join("thumbs");
    let out = ok(&edgeclip(
        dir.path(),
        &[
            "search",
            "--config",
            c,
            "--json",
            "--thumbnails",
            thumbs.to_str().unwrap(),
            "a photo of a red circle",
        ],
    ));
    let best: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let file = PathBuf::from(best["thumbnail"].as_str().expect("a thumbnail path"));
    assert!(file.starts_with(&thumbs), "{}", file.display());
    let image = edgeclip::preprocess::load_image(&file).unwrap();
    assert_eq!(image.width, 160);
    let shown: u64 = file
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .rsplit('-')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(shown <= best["frame"].as_u64().unwrap(), "{best}");
    // Without --json, the path follows its moment's line.
    let out = ok(&edgeclip(
        dir.path(),
        &[
            "search",
            "--config",
            c,
            "--limit",
            "1",
            "--thumbnails",
            thumbs.to_str().unwrap(),
            "a photo of a red circle",
        ],
    ));
    assert!(
        out.contains(&format!("    thumbnail {}", file.display())),
        "{out}"
    );
    assert!(log.contains(" thumbnails)"), "{log}");

    // Another camera's history: nothing, and it says so.
    let out = ok(&edgeclip(
        dir.path(),
        &[
            "search",
            "--config",
            c,
            "--camera",
            "porch",
            "a photo of a red circle",
        ],
    ));
    assert!(out.contains("no moments"), "{out}");
}

#[test]
fn a_search_before_anything_is_stored_finds_nothing_and_an_empty_text_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let c = config.to_str().unwrap();
    let out = ok(&edgeclip(
        dir.path(),
        &["search", "--config", c, "a photo of a red circle"],
    ));
    assert!(out.contains("no moments"), "{out}");
    assert!(!dir.path().join("store.sqlite").exists());

    let out = edgeclip(dir.path(), &["search", "--config", c, " "]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the text is empty"), "{err}");

    let out = edgeclip(
        dir.path(),
        &["search", "--config", c, "--until", "soon", "x"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--until \"soon\""), "{err}");
}

#[test]
fn a_bundle_without_a_text_tower_refuses_a_text_it_has_no_embedding_for() {
    let dir = tempfile::tempdir().unwrap();
    // The demo bundle's image tower alone: no text tower, no precomputed prompts (they belong to
    // the text tower's fingerprint), its fingerprint then the image tower's.
    let bundle = dir.path().join("bundle");
    std::fs::create_dir(&bundle).unwrap();
    let demo = root().join("models/demo");
    for f in ["visual.onnx", "visual.fp32.onnx", "visual.fp16.onnx"] {
        std::fs::copy(demo.join(f), bundle.join(f)).unwrap();
    }
    let manifest = std::fs::read_to_string(demo.join("bundle.toml")).unwrap();
    let fingerprint = edgeclip::model::fingerprint_of(&bundle.join("visual.onnx")).unwrap();
    let mut kept = Vec::new();
    let mut dropped = false;
    for line in manifest.lines() {
        if line.starts_with('[') {
            dropped = !(line.starts_with("[image]") || line.starts_with("[[image"));
        }
        if line.starts_with("fingerprint") {
            kept.push(format!("fingerprint = \"{fingerprint}\""));
        } else if !dropped {
            kept.push(line.to_owned());
        }
    }
    std::fs::write(bundle.join("bundle.toml"), kept.join("\n")).unwrap();
    let config = config(dir.path());
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(
            &root().join("models/demo").display().to_string(),
            &bundle.display().to_string(),
        )
        .replace("[matcher]", "[matcher]\nvocabulary = \"none\"");
    std::fs::write(&config, text).unwrap();
    let c = config.to_str().unwrap();

    let out = edgeclip(
        dir.path(),
        &["search", "--config", c, "a photo of a red car"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has no text tower"), "{err}");
    assert!(err.contains("a photo of a red car"), "{err}");
}
