//! The CPU's image-tower precision chosen by timing (`edgeclip::model::timing`, issue 28), through
//! the binary as a user runs it: `edgeclip bench` loads the tower as the daemon does
//! (`ImageEncoder::load_for`), and `edgeclip warmup` times again.
//!
//! What is checked is the mechanism, not which file wins (that depends on the machine): the first
//! start times and caches, the next one reads the cache and obeys it, a corrupt cache file is
//! ignored with a warning naming it, `--precision` (`model.precision`) wins over the cache, and
//! `EDGECLIP_PRECISION_TIMING=0` keeps the flag-based choice.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `edgeclip ARGS` on the demo bundle with `cache` as the cache folder and int8 dot products
/// assumed (so that both the int8-static and the fp32 file are candidates on any CPU); returns
/// (stdout, stderr).
fn edgeclip(cache: &Path, timing: Option<&str>, args: &[&str]) -> (String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgeclip"));
    cmd.args(args)
        .arg("--model")
        .arg(common::root().join("models/demo"))
        .env("CACHE_DIRECTORY", cache)
        .env("EDGECLIP_INT8_DOT", "1")
        .env("RUST_LOG", "info")
        .env_remove("EDGECLIP_PRECISION_TIMING");
    if let Some(value) = timing {
        cmd.env("EDGECLIP_PRECISION_TIMING", value);
    }
    let out = cmd.output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{args:?}: {stdout}\n{stderr}");
    (stdout, stderr)
}

/// The precision `edgeclip bench` ran: its `model:` line ends "(FILE, PRECISION on cpu)".
fn ran(stdout: &str) -> String {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("model:"))
        .unwrap_or_else(|| panic!("no model line in {stdout}"));
    let inside = line.rsplit_once('(').unwrap().1;
    let precision = inside.split(", ").nth(1).unwrap();
    precision.trim_end_matches(" on cpu)").to_string()
}

/// The one file in the precision cache folder.
fn cache_file(cache: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(cache.join("precision"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

/// The `pick = ...` of a cache file.
fn pick(file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("pick = "))
        .unwrap_or_else(|| panic!("no pick in {text}"))
        .to_string()
}

#[test]
fn the_timed_choice_is_cached_obeyed_and_overridden() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path();
    let bench = ["bench", "--iters", "1"];

    // First start: both files timed, the fastest run and cached.
    let (out, err) = edgeclip(cache, None, &bench);
    assert!(err.contains("p50 on this CPU: int8-static "), "{err}");
    assert!(err.contains(", fp32 "), "{err}");
    let file = cache_file(cache);
    let first = pick(&file);
    assert_eq!(ran(&out), first, "{out}");

    // The next start reads the cache (naming it) and times nothing.
    let (out, err) = edgeclip(cache, None, &bench);
    assert!(
        err.contains(&format!("cached in {}", file.display())),
        "{err}"
    );
    assert_eq!(ran(&out), first);

    // The cache is obeyed whatever it says: made to say the other file, that file runs.
    let other = if first == "fp32" {
        "int8-static"
    } else {
        "fp32"
    };
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace(&format!("pick = {first}"), &format!("pick = {other}")),
    )
    .unwrap();
    let (out, _) = edgeclip(cache, None, &bench);
    assert_eq!(ran(&out), other);

    // `--precision` (the daemon's `model.precision`) wins over the cache.
    let (out, err) = edgeclip(
        cache,
        None,
        &["bench", "--iters", "1", "--precision", first.as_str()],
    );
    assert_eq!(ran(&out), first);
    assert!(!err.contains("p50 on this CPU"), "{err}");

    // A corrupt cache file: a warning naming it, then timed again and rewritten.
    std::fs::write(&file, "pick = fp32\n\u{0}garbage\n").unwrap();
    let (_, err) = edgeclip(cache, None, &bench);
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(err.contains("ignoring the cached precision"), "{err}");
    assert!(err.contains("p50 on this CPU"), "{err}");
    let rewritten = pick(&file);
    assert!(["fp32", "int8-static"].contains(&rewritten.as_str()));

    // Timing off: the flag-based choice (int8 dot products: the default int8-static file).
    let (out, err) = edgeclip(cache, Some("0"), &bench);
    assert_eq!(ran(&out), "int8-static");
    assert!(!err.contains("p50 on this CPU"), "{err}");

    // `edgeclip warmup` on the CPU times again and rewrites the cache.
    std::fs::write(
        &file,
        std::fs::read_to_string(&file)
            .unwrap()
            .replace(&format!("pick = {rewritten}"), "pick = bogus"),
    )
    .unwrap();
    let (out, _) = edgeclip(cache, None, &["warmup"]);
    assert!(out.contains("timed:        int8-static p50 "), "{out}");
    assert!(out.contains("timed:        fp32 p50 "), "{out}");
    assert_ne!(pick(&file), "bogus");
}
