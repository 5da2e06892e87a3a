//! `edgeclip search`: the stored history searched by text.
//!
//! The text is embedded as the daemon embeds its prompts (the bundle's precomputed embeddings,
//! else its text tower; a bundle without a text tower can only search its precomputed texts,
//! and says so). Every frame stored in the window is scored against it (its int8 embedding
//! against the unit text embedding: the cosine), and the frames that stand out are merged into
//! moments ([`crate::store::moments`]): hits of one camera at most three sample intervals apart
//! (at least one second). Moments print best first.
//!
//! The scoring uses the matcher's int8 lanes ([`Int8Query`]): the stored rows are int8 already,
//! so the text embedding goes to i16 once and each row, read in place, is integer multiply-adds
//! (`benches/README.md`, Issue 26: a day of frames, int8 against the f32 lanes).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};

use crate::config::Config;
use crate::event::format_millis;
use crate::matcher::Int8Query;
use crate::model::Bundle;
use crate::prompts::PromptEmbedder;
use crate::store::moments::{Hit, Moment, hit_threshold, merge};
use crate::store::{Store, millis, sample};

/// `edgeclip search`'s arguments.
#[derive(Debug, clap::Args)]
pub struct SearchArgs {
    /// The config file (its `[store]` and `[model]` tables are used).
    #[arg(long)]
    pub config: PathBuf,
    /// Only the last DURATION (`90s`, `2h`, `3days`); default: the whole history.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub since: Option<Duration>,
    /// Only before TIME: an RFC 3339 time (`2026-05-01T18:00:00Z`) or a DURATION ago.
    #[arg(long)]
    pub until: Option<String>,
    /// Only this camera.
    #[arg(long)]
    pub camera: Option<String>,
    /// The most moments printed.
    #[arg(long, default_value_t = 10)]
    pub limit: usize,
    /// One JSON object per line: `{"ts", "camera", "frame", "score", "thumbnail"}` (plus the
    /// moment's `start`, `end` and `frames`); `thumbnail` is the file `--thumbnails` wrote, or
    /// null.
    #[arg(long)]
    pub json: bool,
    /// Writes each moment's thumbnail (the nearest of its camera at or before its best frame)
    /// to DIR as `CAMERA-TIME-FRAME.jpg`, and prints its path.
    #[arg(long, value_name = "DIR")]
    pub thumbnails: Option<PathBuf>,
    /// What to look for ("a red car").
    pub text: String,
}

/// Runs `edgeclip search`.
pub fn run(args: &SearchArgs) -> Result<()> {
    let text = args.text.trim();
    if text.is_empty() {
        bail!(
            "search: the text is empty; say what to look for, e.g. `edgeclip search --config C \"a red car\"`"
        );
    }
    let config = Config::from_file(&args.config)?;
    let path = config.store.file().context(
        "search: no store path: set `[store] path`, or $STATE_DIRECTORY, $XDG_DATA_HOME or $HOME",
    )?;
    let now = SystemTime::now();
    let until = match &args.until {
        Some(u) => parse_until(u, now)?,
        None => now,
    };
    let since = args.since.map_or(0, |d| {
        millis(now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH))
    });
    let query = embed_text(&config, text)?;
    let Some(store) = Store::open_read(&path)? else {
        report_empty(args.json, &path);
        return Ok(());
    };
    let gap_ms = (config.store.sample_s.max(0.0) * 3000.0).max(1000.0) as i64;
    let found = search(
        &store,
        &query,
        since,
        millis(until),
        args.camera.as_deref(),
        gap_ms,
        args.limit,
    )?;
    if found.is_empty() {
        report_empty(args.json, &path);
        return Ok(());
    }
    let mut found = found;
    if let Some(dir) = &args.thumbnails {
        write_thumbnails(&store, &mut found, dir)?;
    }
    for m in &found {
        print_moment(m, args.json);
    }
    Ok(())
}

/// How [`search_using`] scores the stored frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// The matcher's int8 lanes ([`Int8Query`]): the query in i16 once, each row's bytes in
    /// place, integer multiply-adds (the default).
    Int8,
    /// Each row in place against the f32 query ([`sample::score_bytes`]), for comparison.
    F32,
}

/// Scores every frame of `store` between `since_ms` and `until_ms` (of `camera`) against the
/// unit vector `query` and merges them into moments, best first.
pub fn search(
    store: &Store,
    query: &[f32],
    since_ms: i64,
    until_ms: i64,
    camera: Option<&str>,
    gap_ms: i64,
    limit: usize,
) -> Result<Vec<Moment>> {
    search_using(
        Kernel::Int8,
        store,
        query,
        (since_ms, until_ms),
        camera,
        gap_ms,
        limit,
    )
}

/// [`search`] with the scoring `kernel` (the window: `(since_ms, until_ms)`).
pub fn search_using(
    kernel: Kernel,
    store: &Store,
    query: &[f32],
    (since_ms, until_ms): (i64, i64),
    camera: Option<&str>,
    gap_ms: i64,
    limit: usize,
) -> Result<Vec<Moment>> {
    // Scored compactly first (the camera as an index into `cameras`); only the hits become
    // [`Hit`]s.
    let mut cameras: Vec<String> = Vec::new();
    let mut scored: Vec<(i64, u64, f32, usize)> = Vec::new();
    let mut wrong_width = 0usize;
    let int8 = Int8Query::new(query);
    store.for_each_frame_any_order(since_ms, until_ms, camera, |f| {
        if f.embedding.len() != query.len() {
            wrong_width += 1;
            return;
        }
        let cam = match cameras.iter().position(|c| c == f.camera) {
            Some(i) => i,
            None => {
                cameras.push(f.camera.to_owned());
                cameras.len() - 1
            }
        };
        let score = match kernel {
            Kernel::Int8 => int8.score_bytes(f.embedding, f.scale),
            Kernel::F32 => sample::score_bytes(f.embedding, f.scale, query),
        };
        scored.push((f.ts_ms, f.frame, score, cam));
    })?;
    if wrong_width > 0 {
        log::warn!(
            "search: {wrong_width} stored frames have another embedding width than the bundle's \
             ({}): stored with another model, skipped",
            query.len()
        );
    }
    let scores: Vec<f32> = scored.iter().map(|s| s.2).collect();
    let Some(threshold) = hit_threshold(&scores) else {
        return Ok(Vec::new());
    };
    let hits = scored
        .into_iter()
        .filter(|s| s.2 >= threshold)
        .map(|(ts_ms, frame, score, cam)| Hit {
            ts_ms,
            camera: cameras[cam].clone(),
            frame,
            score,
            thumbnail: None,
        })
        .collect();
    Ok(merge(hits, gap_ms, limit))
}

/// Writes the thumbnail of each moment's best frame (its camera's nearest at or before it) to
/// `dir` and sets the moment's `thumbnail` to its path; a moment with none keeps `None`.
pub fn write_thumbnails(store: &Store, found: &mut [Moment], dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("search: --thumbnails {}", dir.display()))?;
    for m in found {
        let Some(t) = store.thumbnail(&m.best.camera, m.best.ts_ms)? else {
            continue;
        };
        let safe: String = m
            .best
            .camera
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let file = dir.join(format!("{safe}-{}-{}.jpg", t.ts_ms, t.frame));
        std::fs::write(&file, &t.jpeg)
            .with_context(|| format!("search: writing {}", file.display()))?;
        m.best.thumbnail = Some(file.display().to_string());
    }
    Ok(())
}

/// The unit embedding of `text` with the config's bundle; a clear refusal when the bundle has
/// no text tower and the text is not among its precomputed prompts.
fn embed_text(config: &Config, text: &str) -> Result<Vec<f32>> {
    let bundle = Bundle::load(&config.model.bundle)?;
    let mut embedder = PromptEmbedder::new(&bundle, &[])?;
    if bundle.manifest.text.is_none() && embedder.known().get(text).is_none() {
        bail!(
            "search: the bundle {} has no text tower, so it can only search the texts it ships \
             precomputed embeddings for, and {text:?} is not one of them",
            bundle.dir().display()
        );
    }
    Ok(embedder.embed(text)?)
}

/// `--until`: an RFC 3339 time, or a duration before `now`.
fn parse_until(value: &str, now: SystemTime) -> Result<SystemTime> {
    if let Ok(t) = humantime::parse_rfc3339_weak(value) {
        return Ok(t);
    }
    match humantime::parse_duration(value) {
        Ok(d) => Ok(now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH)),
        Err(_) => bail!(
            "search: --until {value:?} is neither an RFC 3339 time (2026-05-01T18:00:00Z) nor a \
             duration ago (2h)"
        ),
    }
}

fn report_empty(json: bool, path: &Path) {
    if !json {
        println!(
            "no moments: nothing stored in {} for this window",
            path.display()
        );
    } else {
        eprintln!(
            "no moments: nothing stored in {} for this window",
            path.display()
        );
    }
}

fn print_moment(m: &Moment, json: bool) {
    if json {
        println!("{}", m.to_json());
    } else {
        println!(
            "{}  {}  score {:.3}  frame {}  ({} to {}, frames {}-{}, {} hits)",
            format_millis(m.best.ts_ms),
            m.best.camera,
            m.best.score,
            m.best.frame,
            format_millis(m.start_ms),
            format_millis(m.end_ms),
            m.frames.0,
            m.frames.1,
            m.hits
        );
        if let Some(t) = &m.best.thumbnail {
            println!("    thumbnail {t}");
        }
    }
}
