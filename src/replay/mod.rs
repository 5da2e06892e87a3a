//! `edgeclip replay`: a recording through the daemon's own [`Pipeline`], frame by frame, with
//! what every label scored, the events, a summary and a chart; and (`calibrate.rs`) `edgeclip
//! calibrate`, which proposes thresholds from such runs.
//!
//! A recording (`files:`) is read as fast as the model goes and none of its frames is dropped;
//! frame times come from `camera.fps` (frame `i` is at `i / fps` seconds), so cooldowns behave
//! as they would on the camera. A live source (`v4l2:`, `pipe:`) is only taken when asked for
//! with `--source`, and runs until stopped (Ctrl-C), the frames it delivers while one is being
//! scored dropped by the camera as in the daemon.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use log::{info, warn};

use crate::config::{Config, ScoreKind, SourceSpec};
use crate::daemon::{DaemonError, Pipeline};
use crate::event::{Event, EventKind};
use crate::frame::Frame;
use crate::matcher::{Label, Scores};
use crate::plot::{PlotError, TracePanel};
use crate::source::{FilesSource, FrameSource, SourceError};
use crate::trigger::FrameStamp;

pub mod calibrate;

/// Why a replay or a calibration stopped. Each names what the user gave: the source, the
/// file, the folder, the label.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// `--source` is not a source.
    #[error("--source: {0}")]
    SourceSpec(String),
    /// The config's source is a live camera and none was asked for.
    #[error(
        "camera.source is a live camera ({0}): give a recording with --source files:GLOB, or \
         name the camera with --source {0} to score it live until stopped"
    )]
    Live(SourceSpec),
    /// The source failed for good.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The model, the prompts or the matcher did not load.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// The source delivered no usable frame.
    #[error("no frames from {0}")]
    NoFrames(String),
    /// A chart could not be drawn.
    #[error(transparent)]
    Plot(#[from] PlotError),
    /// A file could not be written.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The report could not be written (stdout closed).
    #[error("writing the report: {0}")]
    Output(#[from] std::io::Error),
    /// The positive examples' folder could not be read.
    #[error("--positives: {}: {source}", path.display())]
    Positives {
        /// The folder.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A subfolder of the positive examples names no label.
    #[error("--positives: {} names no label of the config (labels: {labels})", path.display())]
    UnknownLabel {
        /// The subfolder.
        path: PathBuf,
        /// The config's labels.
        labels: String,
    },
    /// Some labels got no threshold (the calibration file was written for the others).
    #[error("no threshold proposed for {0}")]
    Refused(String),
}

/// Where frames come from: `--source`, or the config's camera.
///
/// `files:` recordings are replayed once, unpaced. A live source in the config is refused
/// unless `live` (the command was given it with `--source`, or bounds it with a duration).
pub fn open(
    config: &Config,
    source: Option<&str>,
    live: bool,
) -> Result<Box<dyn FrameSource>, ReplayError> {
    let spec = match source {
        Some(text) => SourceSpec::parse(text, None).map_err(ReplayError::SourceSpec)?,
        None => config.camera().source.clone(),
    };
    match &spec {
        SourceSpec::Files { pattern } => Ok(Box::new(
            FilesSource::open(pattern, config.camera().fps, false)?.unpaced(),
        )),
        live_spec if source.is_some() || live => {
            let mut camera = config.camera().clone();
            camera.source = live_spec.clone();
            Ok(crate::source::open_source(&camera)?)
        }
        live_spec => Err(ReplayError::Live(live_spec.clone())),
    }
}

/// Takes frames from `source` until it finishes, `stop` is set or `limit` frames were taken,
/// calling `each` with every frame and its index. Recoverable source errors are logged and
/// counted; returns the number of frames and of errors.
pub fn drain(
    source: &mut dyn FrameSource,
    stop: &AtomicBool,
    limit: Option<u64>,
    mut each: impl FnMut(u64, Frame) -> Result<(), ReplayError>,
) -> Result<(u64, u64), ReplayError> {
    let (mut frames, mut errors) = (0, 0);
    while !stop.load(Ordering::Relaxed) && limit.is_none_or(|l| frames < l) {
        match source.next_frame() {
            Ok(Some(frame)) => {
                each(frames, frame)?;
                frames += 1;
            }
            Ok(None) => break,
            Err(e) if e.is_fatal() => return Err(e.into()),
            Err(e) => {
                errors += 1;
                warn!("{}: {e}", source.describe());
            }
        }
    }
    Ok((frames, errors))
}

/// The value label `i`'s trigger compares with its threshold.
pub fn metric_of(score: ScoreKind, scores: &Scores, i: usize) -> f32 {
    match score {
        ScoreKind::Prob => scores.prob[i],
        ScoreKind::Cosine => scores.cos[i],
    }
}

/// The metric's name in tables and charts.
pub fn metric_name(score: ScoreKind) -> &'static str {
    match score {
        ScoreKind::Prob => "probability",
        ScoreKind::Cosine => "cosine",
    }
}

/// Label `i`'s runner-up (its strongest competitor, [`Scores::runner_up`]): its row and its
/// value on the metric's scale. For `prob` that is the runner-up's share of the label's
/// open-set softmax, `prob * exp(logit_scale * (its score - the label's))` (they share the
/// denominator); NaN where the label's probability underflowed to 0.
pub fn competitor(
    score: ScoreKind,
    scores: &Scores,
    i: usize,
    logit_scale: f32,
) -> Option<(usize, f64)> {
    let r = scores.runner_up.get(i).copied().flatten()?;
    let value = match score {
        ScoreKind::Cosine => f64::from(r.score),
        ScoreKind::Prob => {
            let p = f64::from(scores.prob[i]);
            let share = p * (f64::from(logit_scale) * f64::from(r.score - scores.cos[i])).exp();
            if p > 0.0 { share.min(1.0) } else { f64::NAN }
        }
    };
    Some((r.row, value))
}

/// What `edgeclip replay` writes, and where.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// `--source`: the recording (or camera) instead of the config's.
    pub source: Option<String>,
    /// `--json`: one line per frame besides the events.
    pub json: bool,
    /// `--plot`: the chart's file and size.
    pub plot: Option<(PathBuf, (u32, u32))>,
}

/// One label's trace over the run.
#[derive(Debug, Clone, Default)]
struct Trace {
    metric: Vec<f64>,
    competitor: Vec<f64>,
    /// Which row was the competitor, per frame.
    competitor_row: Vec<usize>,
    /// Events as `[start, end)` frame indices.
    spans: Vec<(u64, u64)>,
    open: Option<u64>,
    starts: u64,
    max_prob: f32,
    max_cos: f32,
    above: u64,
}

/// Runs `edgeclip replay`: prints the events as the daemon does (and with `json` a line per
/// frame before its events) to `out`, then a per-label summary (to `out`, or to `err` with
/// `json`), and writes the chart.
pub fn replay(
    config: &Config,
    options: &ReplayOptions,
    stop: &AtomicBool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), ReplayError> {
    let mut source = open(config, options.source.as_deref(), false)?;
    let mut pipeline = Pipeline::new(config)?;
    let labels: Vec<Label> = pipeline.labels().to_vec();
    let rows: Vec<String> = pipeline.rows().iter().map(|r| r.name.clone()).collect();
    let logit_scale = pipeline.bundle().manifest.logit_scale;
    let prompts = config.prompts.len();
    let fps = f64::from(config.camera().fps).max(1e-3);
    let score = config.matcher.score;
    let mut traces = vec![Trace::default(); prompts];
    let thresholds = thresholds(&pipeline, prompts);
    let started = SystemTime::now();
    let mut last: Option<FrameStamp> = None;
    let mut bad = 0;
    info!("replaying {} through the pipeline", source.describe());
    let (frames, errors) = drain(source.as_mut(), stop, None, |index, frame| {
        let t = Duration::from_secs_f64(index as f64 / fps);
        let step = pipeline.step(&frame, || FrameStamp {
            seq: frame.seq,
            wall: started + t,
            now: t,
            latency_ms: frame.captured_at.elapsed().as_secs_f32() * 1e3,
        });
        let step = match step {
            Ok(s) => s,
            Err(e) => {
                bad += 1;
                warn!("{e}");
                return Ok(());
            }
        };
        last = Some(step.stamp);
        for (i, tr) in traces.iter_mut().enumerate() {
            let value = metric_of(score, step.scores, i);
            let (row, value_r) = competitor(score, step.scores, i, logit_scale)
                .map_or((None, f64::NAN), |(r, v)| (Some(r), v));
            tr.metric.push(value.into());
            tr.competitor.push(value_r);
            tr.competitor_row.extend(row);
            tr.max_prob = tr.max_prob.max(step.scores.prob[i]);
            tr.max_cos = tr.max_cos.max(step.scores.cos[i]);
            tr.above += u64::from(value >= thresholds[i]);
        }
        for e in &step.events {
            note_event(&mut traces, config, e, index);
        }
        if options.json {
            let line = frame_json(index, t, step.scores, (&labels, &rows), prompts, &traces);
            writeln!(out, "{line}")?;
        }
        for e in &step.events {
            writeln!(out, "{}", e.to_json())?;
        }
        Ok(())
    })?;
    if frames == 0 {
        return Err(ReplayError::NoFrames(source.describe()));
    }
    if let Some(stamp) = last {
        for e in pipeline.finish(stamp) {
            note_event(&mut traces, config, &e, frames);
            writeln!(out, "{}", e.to_json())?;
        }
    }
    let summary = summary_table(config, &traces, &thresholds, (frames, bad, errors), fps);
    if options.json {
        err.write_all(summary.as_bytes())?;
    } else {
        out.write_all(summary.as_bytes())?;
    }
    if let Some((path, size)) = &options.plot {
        let panels = trace_panels(config, &pipeline, (&labels, &rows), &traces);
        let png = crate::plot::trace_png(&panels, &format!("frame ({fps} fps)"), *size)?;
        write_file(path, &png)?;
        info!("chart written to {}", path.display());
    }
    Ok(())
}

/// Every label's threshold, as its trigger applies it.
pub fn thresholds(pipeline: &Pipeline, prompts: usize) -> Vec<f32> {
    (0..prompts)
        .map(|i| pipeline.trigger_params(i).map_or(f32::NAN, |p| p.threshold))
        .collect()
}

fn note_event(traces: &mut [Trace], config: &Config, e: &Event, index: u64) {
    let Some(i) = config.prompt_index(&e.label) else {
        return;
    };
    let tr = &mut traces[i];
    match e.kind {
        EventKind::Start => {
            tr.starts += 1;
            tr.open = Some(index);
        }
        EventKind::End => {
            if let Some(s) = tr.open.take() {
                tr.spans.push((s, index));
            }
        }
    }
}

/// `{"frame", "t_s", "labels": {label: {"score", "prob", "state"}}, "runner_up": {label:
/// {"label", "score"}}}` (a runner-up as events carry it).
fn frame_json(
    index: u64,
    t: Duration,
    scores: &Scores,
    (labels, rows): (&[Label], &[String]),
    prompts: usize,
    traces: &[Trace],
) -> serde_json::Value {
    let mut per_label = serde_json::Map::new();
    let mut runners = serde_json::Map::new();
    for i in 0..prompts {
        let state = if traces[i].open.is_some() {
            "on"
        } else {
            "off"
        };
        per_label.insert(
            labels[i].name.clone(),
            serde_json::json!({"score": scores.cos[i], "prob": scores.prob[i], "state": state}),
        );
        if let Some(r) = scores.runner_up.get(i).copied().flatten() {
            runners.insert(
                labels[i].name.clone(),
                serde_json::json!({"label": rows[r.row], "score": r.score}),
            );
        }
    }
    serde_json::json!({
        "frame": index,
        "t_s": t.as_secs_f64(),
        "labels": per_label,
        "runner_up": runners,
    })
}

fn summary_table(
    config: &Config,
    traces: &[Trace],
    thresholds: &[f32],
    (frames, bad, errors): (u64, u64, u64),
    fps: f64,
) -> String {
    let mut s = format!(
        "{frames} frames ({:.1} s at {fps} fps), {bad} unusable, {errors} source errors; \
         thresholds on {}\n",
        frames as f64 / fps,
        metric_name(config.matcher.score)
    );
    s.push_str(&format!(
        "{:<20} {:>9} {:>11} {:>7} {:>14} {:>9} {:>8}\n",
        "label", "threshold", "enter/exit", "events", "frames >= thr", "max prob", "max cos"
    ));
    for (i, tr) in traces.iter().enumerate() {
        let p = &config.prompts[i];
        let enter = p.enter_frames.unwrap_or(config.trigger.enter_frames);
        let exit = p.exit_frames.unwrap_or(config.trigger.exit_frames);
        s.push_str(&format!(
            "{:<20} {:>9} {:>11} {:>7} {:>14} {:>9.4} {:>8.4}\n",
            p.label,
            thresholds[i],
            format!("{enter}/{exit}"),
            tr.starts,
            tr.above,
            tr.max_prob,
            tr.max_cos
        ));
    }
    s
}

fn trace_panels(
    config: &Config,
    pipeline: &Pipeline,
    (labels, rows): (&[Label], &[String]),
    traces: &[Trace],
) -> Vec<TracePanel> {
    let score = config.matcher.score;
    let thresholds = thresholds(pipeline, traces.len());
    let values = traces
        .iter()
        .flat_map(|t| t.metric.iter().chain(&t.competitor))
        .copied()
        .filter(|v| v.is_finite());
    let y_range = match score {
        ScoreKind::Prob => (0.0, 1.05),
        ScoreKind::Cosine => {
            let (lo, hi) = values
                .chain(thresholds.iter().map(|&t| f64::from(t)))
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                    (a.min(v), b.max(v))
                });
            let pad = ((hi - lo) * 0.08).max(0.01);
            (lo - pad, hi + pad * 2.5)
        }
    };
    traces
        .iter()
        .enumerate()
        .map(|(i, tr)| {
            let params = pipeline.trigger_params(i);
            let (enter, exit) = params.map_or((0, 0), |p| (p.enter_frames, p.exit_frames));
            let threshold = thresholds[i];
            TracePanel {
                title: format!(
                    "{} (threshold {threshold}, enter {enter} / exit {exit} frames)",
                    labels[i].name
                ),
                metric_name: metric_name(score).to_owned(),
                metric: tr.metric.clone(),
                competitor: Some((
                    format!(
                        "runner-up (mostly \"{}\")",
                        most_common(&tr.competitor_row).map_or("-", |j| rows[j].as_str())
                    ),
                    tr.competitor.clone(),
                )),
                threshold: threshold.into(),
                y_range,
                events: tr
                    .spans
                    .iter()
                    .map(|&(a, b)| (a as f64, b as f64))
                    .collect(),
            }
        })
        .collect()
}

/// The value seen most often (the smallest on a tie).
fn most_common(rows: &[usize]) -> Option<usize> {
    let mut counts = std::collections::BTreeMap::new();
    for &r in rows {
        *counts.entry(r).or_insert(0usize) += 1;
    }
    counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
        .map(|(r, _)| r)
}

/// Writes `bytes` to `path`, naming it in the error.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ReplayError> {
    std::fs::write(path, bytes).map_err(|source| ReplayError::Write {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matcher::RunnerUp;

    #[test]
    fn the_competitor_is_the_runner_up_on_the_metric_scale() {
        let mut scores = Scores::default();
        scores.cos = vec![0.3, 0.5];
        scores.prob = vec![0.2, 0.7];
        scores.runner_up = vec![Some(RunnerUp { row: 1, score: 0.5 }), None];
        assert_eq!(
            competitor(ScoreKind::Cosine, &scores, 0, 100.0),
            Some((1, 0.5f32 as f64))
        );
        // The runner-up's share of label 0's softmax: 0.2 * exp(10 * 0.2).
        let (_, share) = competitor(ScoreKind::Prob, &scores, 0, 10.0).unwrap();
        assert!(
            (share - (0.2f32 as f64 * (10.0 * (0.5f32 - 0.3f32) as f64).exp()).min(1.0)).abs()
                < 1e-9
        );
        assert_eq!(competitor(ScoreKind::Prob, &scores, 1, 10.0), None);
        scores.prob[0] = 0.0;
        assert!(
            competitor(ScoreKind::Prob, &scores, 0, 10.0)
                .unwrap()
                .1
                .is_nan()
        );
        assert_eq!(metric_of(ScoreKind::Prob, &scores, 1), 0.7);
        assert_eq!(metric_of(ScoreKind::Cosine, &scores, 1), 0.5);
    }

    #[test]
    fn most_common_prefers_the_first_on_a_tie() {
        assert_eq!(most_common(&[2, 1, 2, 1]), Some(1));
        assert_eq!(most_common(&[3, 3, 1]), Some(3));
        assert_eq!(most_common(&[]), None);
    }
}
