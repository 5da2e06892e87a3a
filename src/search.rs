//! `edgeclip search`: the stored history searched by text.
//!
//! The text is embedded as the daemon embeds its prompts (the bundle's precomputed embeddings,
//! else its text tower; a bundle without a text tower can only search its precomputed texts,
//! and says so). Every frame stored in the window is scored against it (its int8 embedding
//! against the unit text embedding: the cosine), and the frames that stand out are merged into
//! moments ([`crate::store::moments`]): hits of one camera at most three sample intervals apart
//! (at least one second). Moments print best first.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};

use crate::config::Config;
use crate::event::format_timestamp;
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
    /// moment's `start`, `end` and `frames`).
    #[arg(long)]
    pub json: bool,
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
    for m in &found {
        print_moment(m, args.json);
    }
    Ok(())
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
    // Scored compactly first (the camera as an index into `cameras`); only the hits become
    // [`Hit`]s.
    let mut cameras: Vec<String> = Vec::new();
    let mut scored: Vec<(i64, u64, f32, usize)> = Vec::new();
    let mut wrong_width = 0usize;
    store.for_each_frame(since_ms, until_ms, camera, |f| {
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
        let score = sample::score_bytes(f.embedding, f.scale, query);
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

fn time(ms: i64) -> String {
    format_timestamp(SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
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
        let line = serde_json::json!({
            "ts": time(m.best.ts_ms),
            "camera": m.best.camera,
            "frame": m.best.frame,
            "score": m.best.score,
            "thumbnail": m.best.thumbnail,
            "start": time(m.start_ms),
            "end": time(m.end_ms),
            "frames": [m.frames.0, m.frames.1],
        });
        println!("{line}");
    } else {
        println!(
            "{}  {}  score {:.3}  frame {}  ({} to {}, frames {}-{}, {} hits)",
            time(m.best.ts_ms),
            m.best.camera,
            m.best.score,
            m.best.frame,
            time(m.start_ms),
            time(m.end_ms),
            m.frames.0,
            m.frames.1,
            m.hits
        );
    }
}
