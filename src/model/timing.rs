//! The CPU's image-tower precision chosen by measurement: each file the bundle ships that is not
//! known to be slow here is loaded and timed for a bounded budget, the fastest is run, and the
//! choice is cached.
//!
//! Flags alone ([`super::device::pick_cpu_precision`]) picked the slower of the demo bundle's two
//! files on the x86 this project builds on (issue 28: int8-static 5.00 ms against fp32 4.03 ms,
//! with VNNI), because whether tract's integer kernels pay depends on the layer shapes as much as
//! on the instructions. So when `model.precision` is not set and the tower runs on the CPU:
//!
//! - **Candidates**: every precision the image tower is shipped in (the bundle vouches for each:
//!   they share its fingerprint, its embedding space), except those [`super::device::slow_on_cpu`]
//!   names (fp16: seconds per frame; integer-kernel int8 without int8 dot products: up to 60x
//!   fp32), which would spend the whole budget on one run. With fewer than two candidates there
//!   is nothing to time and the flag-based choice stands.
//! - **Timing**: each candidate is loaded, run once (not counted: first-run allocations), then
//!   run on a fixed pseudo-random image until its share of [`BUDGET`] is spent; its median is
//!   compared. Loading is not in the budget (the graph cache makes it cheap after the first start).
//! - **Cache**: the pick and the figures are kept in the cache folder
//!   ([`crate::paths::precision_cache_dir`]), one file per key: the bundle's fingerprint, the
//!   candidate files' sizes, the CPU model, the thread count and this build. The next start reads
//!   it; a file that does not parse is ignored with a warning naming it, and replaced.
//!   `edgeclip warmup` times again and rewrites it.
//! - **Off**: `EDGECLIP_PRECISION_TIMING=0` ([`TIMING_ENV`]) keeps the flag-based choice.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::ModelError;
use super::bundle::{Bundle, hex16};
use super::device::{cpu_has_int8_dot, slow_on_cpu};
use super::options::Precision;

/// The environment variable that turns timing off (`0`) and keeps the flag-based choice.
pub const TIMING_ENV: &str = "EDGECLIP_PRECISION_TIMING";

/// The time spent running candidates, in all (loading them is not counted).
pub const BUDGET: Duration = Duration::from_millis(500);

/// At most this many counted runs per candidate (a tiny tower needs no more for a median).
const MAX_RUNS: usize = 200;

/// One candidate's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Timed {
    /// The file's precision.
    pub precision: Precision,
    /// The median of the counted runs, in milliseconds.
    pub p50_ms: f64,
    /// How many runs were counted.
    pub runs: usize,
}

/// The precision chosen by timing, with its figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// The fastest candidate.
    pub precision: Precision,
    /// Every candidate's figures, in the bundle's order.
    pub timed: Vec<Timed>,
    /// The cache file it was read from, when it was.
    pub cached: Option<PathBuf>,
}

impl Choice {
    /// The figures and the reason, for the log: "int8-static 5.00 ms, fp32 4.03 ms (p50 of 50 /
    /// 60 runs): fp32 is the fastest".
    pub fn summary(&self) -> String {
        let figures: Vec<String> = self
            .timed
            .iter()
            .map(|t| format!("{} {:.2} ms ({} runs)", t.precision, t.p50_ms, t.runs))
            .collect();
        format!(
            "p50 on this CPU: {}; the {} file is the fastest",
            figures.join(", "),
            self.precision
        )
    }
}

/// `model.precision_timing`, as [`set_enabled`] last set it (on until then).
static ENABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Turns timing on or off for this process (`model.precision_timing`; the daemon sets it from
/// its config before it loads the image tower).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether timing is on: `model.precision_timing` ([`set_enabled`]) and unless [`TIMING_ENV`]
/// is `0`.
pub fn enabled() -> bool {
    ENABLED.load(std::sync::atomic::Ordering::Relaxed)
        && std::env::var(TIMING_ENV).as_deref() != Ok("0")
}

/// The shipped precisions worth timing on this CPU (`int8_dot`: it has int8 dot products), in
/// the bundle's order.
pub fn candidates(available: &[Precision], int8_dot: bool) -> Vec<Precision> {
    available
        .iter()
        .copied()
        .filter(|&p| slow_on_cpu(p, int8_dot).is_none())
        .collect()
}

/// Times `run` for `budget`: one uncounted first run, then counted runs until the budget is
/// spent (at least one, at most [`MAX_RUNS`]). A first run that alone exceeds the budget is the
/// figure.
pub fn time_runs(
    precision: Precision,
    budget: Duration,
    mut run: impl FnMut() -> Result<(), ModelError>,
) -> Result<Timed, ModelError> {
    let started = Instant::now();
    run()?;
    let first = started.elapsed();
    let mut times = Vec::new();
    if first >= budget {
        times.push(first);
    }
    while times.len() < MAX_RUNS && (times.is_empty() || started.elapsed() < budget) {
        let t = Instant::now();
        run()?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok(Timed {
        precision,
        p50_ms: times[times.len() / 2].as_secs_f64() * 1e3,
        runs: times.len(),
    })
}

/// The fastest of `timed` (the first of equals, so the bundle's order breaks a tie).
pub fn fastest(timed: &[Timed]) -> Option<Precision> {
    timed
        .iter()
        .fold(None::<&Timed>, |best, t| match best {
            Some(b) if b.p50_ms <= t.p50_ms => Some(b),
            _ => Some(t),
        })
        .map(|t| t.precision)
}

/// The CPU's model, as `/proc/cpuinfo` names it (`model name`, else Arm's implementer and part
/// numbers), or `"unknown"`.
pub fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim() == name)
            .map(|(_, v)| v.trim().to_string())
    };
    if let Some(model) = field("model name") {
        return model;
    }
    match (field("CPU implementer"), field("CPU part")) {
        (Some(i), Some(p)) => format!("arm implementer {i} part {p}"),
        _ => "unknown".into(),
    }
}

/// What a cached choice is valid for: the bundle's fingerprint and the candidates' file sizes,
/// the CPU model, the thread count, this build, and whether integer convolutions load fused
/// (`int8_conv`: it halves the int8 towers' time on some CPUs, so a choice timed without it,
/// by an older build or with it turned off, is timed again).
pub fn cache_key(bundle: &Bundle, candidates: &[Precision], cpu: &str, threads: usize) -> String {
    let files: Vec<String> = candidates
        .iter()
        .map(|&p| {
            let size = bundle
                .image_onnx(Some(p))
                .ok()
                .and_then(|(path, _)| std::fs::metadata(path).ok())
                .map_or(0, |m| m.len());
            format!("{p}:{size}")
        })
        .collect();
    let loading = if super::int8_conv::enabled() {
        "int8 convolutions fused"
    } else {
        "int8 convolutions as written"
    };
    format!(
        "{} {} | {cpu} | {threads} threads | edgeclip {} | {loading}",
        bundle.fingerprint(),
        files.join(","),
        env!("CARGO_PKG_VERSION")
    )
}

/// The cache file for `key` in `dir`.
pub fn cache_file(dir: &Path, key: &str) -> PathBuf {
    use sha2::{Digest, Sha256};
    dir.join(format!("{}.txt", hex16(&Sha256::digest(key.as_bytes()))))
}

/// The cache file's text for a choice made under `key`.
pub fn render(key: &str, choice: &Choice) -> String {
    let mut text = format!(
        "# edgeclip: the image tower's precision, timed on this CPU (`edgeclip warmup` times again)\nkey = {key}\npick = {}\n",
        choice.precision
    );
    for t in &choice.timed {
        text.push_str(&format!(
            "time = {} {:.4} ms {} runs\n",
            t.precision, t.p50_ms, t.runs
        ));
    }
    text
}

/// Reads a cache file written by [`render`]. `Ok(None)`: no file, or one for another key (a hash
/// collision, or a file copied from elsewhere). `Err`: the warning for a file that does not parse,
/// naming it and what is wrong.
pub fn read_cache(
    path: &Path,
    key: &str,
    candidates: &[Precision],
) -> Result<Option<Choice>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let bad = |line: usize, what: &str| {
        format!(
            "{}:{line}: {what}; ignoring the cached precision and timing again",
            path.display()
        )
    };
    let (mut seen_key, mut pick, mut timed) = (None, None, Vec::new());
    for (n, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once(" = ") else {
            return Err(bad(n, "expected `name = value`"));
        };
        match name {
            "key" => seen_key = Some(value.to_string()),
            "pick" => {
                let p: Precision = value
                    .parse()
                    .map_err(|_| bad(n, &format!("pick: unknown precision {value:?}")))?;
                pick = Some(p);
            }
            "time" => timed.push(parse_time(value).ok_or_else(|| {
                bad(
                    n,
                    &format!("time: expected `PRECISION MS ms RUNS runs`, got {value:?}"),
                )
            })?),
            other => return Err(bad(n, &format!("unknown name {other:?}"))),
        }
    }
    let Some(seen_key) = seen_key else {
        return Err(bad(0, "no `key` line"));
    };
    if seen_key != key {
        return Ok(None);
    }
    match pick {
        Some(p) if candidates.contains(&p) => Ok(Some(Choice {
            precision: p,
            timed,
            cached: Some(path.to_path_buf()),
        })),
        Some(p) => Err(bad(0, &format!("pick: {p} is not one of the files timed"))),
        None => Err(bad(0, "no `pick` line")),
    }
}

/// `fp32 4.0312 ms 60 runs`.
fn parse_time(value: &str) -> Option<Timed> {
    let words: Vec<&str> = value.split_whitespace().collect();
    let [precision, ms, "ms", runs, "runs"] = words[..] else {
        return None;
    };
    let p50_ms: f64 = ms.parse().ok()?;
    Some(Timed {
        precision: precision.parse().ok()?,
        p50_ms: p50_ms.is_finite().then_some(p50_ms)?,
        runs: runs.parse().ok()?,
    })
}

/// Writes the cache file atomically; a cache that cannot be written only costs the next start
/// a timing (logged at debug level).
fn write_cache(path: &Path, text: &str) {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|_| std::fs::write(&tmp, text))
        .and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        log::debug!("not caching the timed precision in {}: {e}", path.display());
    }
}

/// The precision to run on the CPU when none is asked for, chosen by timing (see the module's
/// documentation), or `None` where the flag-based choice stands (fewer than two candidates, or
/// every candidate failed to load). `cache`: the folder for the choice (`None`: not cached);
/// `retime`: time even when a cached choice exists (`edgeclip warmup`); `measure` loads one
/// precision and times it for a budget ([`time_runs`]).
pub fn choose(
    bundle: &Bundle,
    cache: Option<&Path>,
    threads: usize,
    retime: bool,
    mut measure: impl FnMut(Precision, Duration) -> Result<Timed, ModelError>,
) -> Option<Choice> {
    let candidates = candidates(&bundle.image_precisions(), cpu_has_int8_dot());
    if candidates.len() < 2 {
        return None;
    }
    let key = cache_key(bundle, &candidates, &cpu_model(), threads);
    let file = cache.map(|dir| cache_file(dir, &key));
    if let Some(file) = file.as_deref().filter(|_| !retime) {
        match read_cache(file, &key, &candidates) {
            Ok(Some(choice)) => return Some(choice),
            Ok(None) => {}
            Err(warning) => log::warn!("{warning}"),
        }
    }
    let share = BUDGET / candidates.len() as u32;
    let timed: Vec<Timed> = candidates
        .iter()
        .filter_map(|&p| match measure(p, share) {
            Ok(t) => Some(t),
            Err(e) => {
                log::warn!("timing the {p} image tower: {e}; leaving it out");
                None
            }
        })
        .collect();
    let choice = Choice {
        precision: fastest(&timed)?,
        timed,
        cached: None,
    };
    if let Some(file) = &file {
        write_cache(file, &render(&key, &choice));
    }
    Some(choice)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Precision::*;

    fn timed(precision: Precision, p50_ms: f64) -> Timed {
        Timed {
            precision,
            p50_ms,
            runs: 10,
        }
    }

    #[test]
    fn known_slow_files_are_not_timed() {
        let demo = [Int8Static, Fp32, Fp16];
        assert_eq!(candidates(&demo, true), [Int8Static, Fp32]);
        assert_eq!(candidates(&demo, false), [Fp32]);
        assert_eq!(candidates(&[Int8Qdq, Fp32], false), [Int8Qdq, Fp32]);
    }

    #[test]
    fn the_fastest_wins_and_a_tie_keeps_the_bundles_order() {
        assert_eq!(
            fastest(&[timed(Int8Static, 5.0), timed(Fp32, 4.03)]),
            Some(Fp32)
        );
        assert_eq!(
            fastest(&[timed(Int8Static, 4.0), timed(Fp32, 4.0)]),
            Some(Int8Static)
        );
        assert_eq!(fastest(&[]), None);
    }

    #[test]
    fn runs_are_counted_within_the_budget() {
        let mut calls = 0;
        let t = time_runs(Fp32, Duration::from_millis(20), || {
            calls += 1;
            std::thread::sleep(Duration::from_millis(2));
            Ok(())
        })
        .unwrap();
        // The first run is not counted.
        assert_eq!(t.runs, calls - 1);
        assert!(t.runs >= 1 && t.runs < MAX_RUNS, "{t:?}");
        assert!(t.p50_ms >= 2.0, "{t:?}");
        // A first run over the budget is the figure, and the only run.
        let mut calls = 0;
        let t = time_runs(Fp32, Duration::from_millis(1), || {
            calls += 1;
            std::thread::sleep(Duration::from_millis(3));
            Ok(())
        })
        .unwrap();
        assert_eq!((t.runs, calls), (1, 1), "{t:?}");
        assert!(t.p50_ms >= 3.0, "{t:?}");
    }

    #[test]
    fn a_cache_file_reads_back_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let choice = Choice {
            precision: Fp32,
            timed: vec![timed(Int8Static, 5.0), timed(Fp32, 4.03)],
            cached: None,
        };
        let file = cache_file(dir.path(), "k1");
        std::fs::write(&file, render("k1", &choice)).unwrap();
        let read = read_cache(&file, "k1", &[Int8Static, Fp32])
            .unwrap()
            .unwrap();
        assert_eq!(read.precision, Fp32);
        assert_eq!(read.timed, choice.timed);
        assert_eq!(read.cached.as_deref(), Some(file.as_path()));
        // Another key (other CPU, threads, build or files): not this choice.
        assert_eq!(read_cache(&file, "k2", &[Int8Static, Fp32]), Ok(None));
        // No file: nothing cached, no warning.
        assert_eq!(
            read_cache(&dir.path().join("none.txt"), "k1", &[Fp32]),
            Ok(None)
        );
        assert!(
            read.summary().contains("fp32 4.03 ms"),
            "{}",
            read.summary()
        );
    }

    #[test]
    fn a_corrupt_cache_file_is_a_warning_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.txt");
        let cases = [
            ("key = k\npick = fp33\n", "pick: unknown precision"),
            ("key = k\npick = fp32\ntime = fp32 x ms 3 runs\n", "time:"),
            ("\u{0}\u{1}garbage", "expected `name = value`"),
            ("pick = fp32\n", "no `key` line"),
            ("key = k\n", "no `pick` line"),
            ("key = k\npick = fp16\n", "not one of the files timed"),
        ];
        for (text, what) in cases {
            std::fs::write(&file, text).unwrap();
            let warning = read_cache(&file, "k", &[Int8Static, Fp32]).unwrap_err();
            assert!(warning.contains(&file.display().to_string()), "{warning}");
            assert!(warning.contains(what), "{text:?}: {warning}");
        }
    }
}
