//! `edgeclip calibrate`: quiet footage (and positive examples) through the daemon's pipeline,
//! and per-label thresholds from [`crate::calibration`], written as a calibration file that the
//! config names with `matcher.calibration`.
//!
//! Quiet footage is a recording or the camera (bounded by `--duration`) in which no label's
//! object appears; other things may. Positive examples are images of each label's object, in
//! `DIR/<label>/` (JPEG or PNG), each scored as one frame through the same preprocessing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use log::{info, warn};

use super::{ReplayError, drain, metric_name, metric_of, open, write_file};
use crate::calibration::{Estimate, Proposal, Scale, Target, propose};
use crate::config::{Config, ScoreKind};
use crate::daemon::Pipeline;
use crate::plot::HistogramPanel;

/// What `edgeclip calibrate` is asked.
#[derive(Debug, Clone)]
pub struct CalibrateOptions {
    /// `--source`: the quiet footage instead of the config's camera.
    pub source: Option<String>,
    /// `--duration`: at most this much footage (frame time at `camera.fps`).
    pub duration: Option<Duration>,
    /// `--positives`: a folder with a subfolder of example images per label.
    pub positives: Option<PathBuf>,
    /// `--out`: the calibration file to write.
    pub out: PathBuf,
    /// `--plot`: the histograms' file and size.
    pub plot: Option<(PathBuf, (u32, u32))>,
    /// `--false-alarms-per-day`.
    pub false_alarms_per_day: f64,
}

/// The image files of `dir`, sorted: `*.jpg`, `*.jpeg`, `*.png` in any case.
fn images_in(dir: &Path) -> Result<Vec<PathBuf>, ReplayError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| positives(dir, source))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension().is_some_and(|x| {
                    ["jpg", "jpeg", "png"].contains(&x.to_string_lossy().to_lowercase().as_str())
                })
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Scores every label's examples in `dir/<label>/`; a subfolder that names no label is an error
/// (a typo would silently calibrate without examples).
fn positives(dir: &Path, source: std::io::Error) -> ReplayError {
    ReplayError::Positives {
        path: dir.to_owned(),
        source,
    }
}

fn score_positives(
    config: &Config,
    pipeline: &mut Pipeline,
    dir: &Path,
) -> Result<Vec<Vec<f64>>, ReplayError> {
    let mut out = vec![Vec::new(); config.prompts.len()];
    let entries = std::fs::read_dir(dir).map_err(|source| positives(dir, source))?;
    for entry in entries {
        let path = entry.map_err(|source| positives(dir, source))?.path();
        if !path.is_dir() {
            continue;
        }
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let Some(i) = name.as_deref().and_then(|n| config.prompt_index(n)) else {
            return Err(ReplayError::UnknownLabel {
                path,
                labels: config
                    .prompts
                    .iter()
                    .map(|p| p.label.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        for (seq, file) in images_in(&path)?.iter().enumerate() {
            let frame = crate::source::files::load_image(file, seq as u64)?;
            match pipeline.score(&frame) {
                Ok(scores) => out[i].push(metric_of(config.matcher.score, scores, i).into()),
                Err(e) => warn!("{}: {e}", file.display()),
            }
        }
    }
    Ok(out)
}

/// The metric's value written for a table: probabilities below 0.001 in scientific notation.
fn show(score: ScoreKind, x: f64) -> String {
    match score {
        ScoreKind::Prob if x.abs() < 1e-3 && x != 0.0 => format!("{x:.1e}"),
        ScoreKind::Prob if x > 0.9999 && x < 1.0 => format!("{x:.6}"),
        _ => format!("{x:.4}"),
    }
}

/// Runs `edgeclip calibrate`: prints the table to `out`, writes the calibration file (and the
/// chart). Fails, after writing what it could, when some label got no threshold.
pub fn calibrate(
    config: &Config,
    options: &CalibrateOptions,
    stop: &AtomicBool,
    out: &mut dyn Write,
) -> Result<(), ReplayError> {
    let mut source = open(
        config,
        options.source.as_deref(),
        options.duration.is_some(),
    )?;
    let described = source.describe();
    let mut pipeline = Pipeline::new(config)?;
    let score = config.matcher.score;
    let fps = f64::from(config.camera().fps);
    let limit = options
        .duration
        .map(|d| (d.as_secs_f64() * fps).ceil() as u64);
    let prompts = config.prompts.len();
    let mut quiet = vec![Vec::new(); prompts];
    info!("calibrating on quiet footage from {described}");
    let (frames, _) = drain(source.as_mut(), stop, limit, |_, frame| {
        match pipeline.score(&frame) {
            Ok(scores) => {
                for (i, q) in quiet.iter_mut().enumerate() {
                    q.push(metric_of(score, scores, i).into());
                }
            }
            Err(e) => warn!("{e}"),
        }
        Ok(())
    })?;
    if quiet.first().is_none_or(Vec::is_empty) {
        return Err(ReplayError::NoFrames(format!(
            "{described} to calibrate on ({frames} read, none usable)"
        )));
    }
    let positives = match &options.positives {
        Some(dir) => score_positives(config, &mut pipeline, dir)?,
        None => vec![Vec::new(); prompts],
    };
    let target = Target {
        false_alarms_per_day: options.false_alarms_per_day,
        fps,
    };
    let scale = match score {
        ScoreKind::Prob => Scale::Prob,
        ScoreKind::Cosine => Scale::Cosine,
    };
    let proposals: Vec<Proposal> = (0..prompts)
        .map(|i| {
            let enter = pipeline.trigger_params(i).map_or(1, |p| p.enter_frames);
            propose(scale, &quiet[i], &positives[i], enter, &target)
        })
        .collect();
    let n = quiet[0].len();
    writeln!(
        out,
        "quiet: {described}, {n} frames ({:.1} s at {fps} fps); target {} false alarm(s) a day \
         per label; {} on the {} scale",
        n as f64 / fps,
        options.false_alarms_per_day,
        metric_name(score),
        match scale {
            Scale::Prob => "logit",
            Scale::Cosine => "cosine",
        }
    )?;
    writeln!(
        out,
        "{}",
        table(config, &pipeline, &proposals, &target, scale)
    )?;
    let fragment = calibration_file(config, &described, n, options, &proposals);
    write_file(&options.out, fragment.as_bytes())?;
    writeln!(out, "wrote {}", options.out.display())?;
    if let Some((path, size)) = &options.plot {
        let panels = histogram_panels(config, &quiet, &positives, &proposals, scale);
        write_file(path, &crate::plot::histogram_png(&panels, *size)?)?;
        writeln!(out, "wrote {}", path.display())?;
    }
    let refused: Vec<String> = proposals
        .iter()
        .zip(&config.prompts)
        .filter_map(|(p, c)| p.outcome.err().map(|r| format!("{}: {r}", c.label)))
        .collect();
    if !refused.is_empty() {
        return Err(ReplayError::Refused(refused.join("; ")));
    }
    Ok(())
}

fn table(
    config: &Config,
    pipeline: &Pipeline,
    proposals: &[Proposal],
    target: &Target,
    scale: Scale,
) -> String {
    let score = config.matcher.score;
    let mut s = format!(
        "{:<18} {:>5} {:>9} {:>9} {:>9} | {:>4} {:>9} {:>9} | {:>9} {:>14} {:>9} | {:>9} {:>8}\n",
        "label",
        "enter",
        "quiet p50",
        "p99",
        "max",
        "pos",
        "min",
        "p5",
        "bound",
        "(how)",
        "margin",
        "threshold",
        "alarms/d"
    );
    let na = || "-".to_string();
    for (i, p) in proposals.iter().enumerate() {
        let enter = pipeline.trigger_params(i).map_or(1, |t| t.enter_frames);
        let (p50, p99, max) = p.quiet.map_or((na(), na(), na()), |q| {
            (show(score, q.p50), show(score, q.p99), show(score, q.max))
        });
        let (pn, pmin, p5) = p.positives.map_or(("0".into(), na(), na()), |q| {
            (q.n.to_string(), show(score, q.min), show(score, q.p5))
        });
        let (bound, how) = p.bound.as_ref().map_or((na(), na()), |b| {
            let how = match b.estimate {
                Estimate::Empirical => format!("empirical/{}", b.windows()),
                Estimate::Tail(t) => format!("tail {}/{}", t.points, b.windows()),
            };
            (show(score, b.value), how)
        });
        let margin = p.margin().map_or_else(na, |m| format!("{m:+.4}"));
        let (threshold, alarms) = match p.outcome {
            Ok(t) => (
                t.to_string(),
                p.false_alarms_per_day(scale, target, t)
                    .map_or_else(na, |a| format!("{a:.2}")),
            ),
            Err(_) => ("REFUSED".into(), na()),
        };
        s.push_str(&format!(
            "{:<18} {enter:>5} {p50:>9} {p99:>9} {max:>9} | {pn:>4} {pmin:>9} {p5:>9} | \
             {bound:>9} {how:>14} {margin:>9} | {threshold:>9} {alarms:>8}\n",
            config.prompts[i].label
        ));
    }
    for (p, c) in proposals.iter().zip(&config.prompts) {
        if let Err(r) = p.outcome {
            s.push_str(&format!("{}: refused: {r}\n", c.label));
        }
    }
    s
}

/// The calibration file: the metric it was made for and a threshold per label; refused labels
/// as comments saying why.
fn calibration_file(
    config: &Config,
    described: &str,
    frames: usize,
    options: &CalibrateOptions,
    proposals: &[Proposal],
) -> String {
    let score = match config.matcher.score {
        ScoreKind::Prob => "prob",
        ScoreKind::Cosine => "cosine",
    };
    let mut s = String::new();
    s.push_str("# Per-label thresholds from `edgeclip calibrate`. Use them from the config with\n");
    s.push_str(&format!(
        "#   [matcher]\n#   calibration = \"{}\"\n",
        relative_to_config(config, &options.out).display()
    ));
    s.push_str(
        "# (a label's own `threshold` in [[prompts]] and this file must not both set one).\n",
    );
    s.push_str(&format!(
        "# Config: {}; model: {}.\n# Quiet footage: {described}, {frames} frames at {} fps.\n",
        config
            .file
            .as_ref()
            .map_or("<memory>".into(), |f| f.display().to_string()),
        config.model.bundle.display(),
        config.camera().fps
    ));
    if let Some(dir) = &options.positives {
        s.push_str(&format!("# Positive examples: {}.\n", dir.display()));
    }
    s.push_str(&format!(
        "# Target: {} false alarm(s) a day per label. Calibrate again after changing the \
         model, the prompts, the background texts or the camera's view.\n",
        options.false_alarms_per_day
    ));
    s.push_str(&format!("score = \"{score}\"\n\n[thresholds]\n"));
    for (p, c) in proposals.iter().zip(&config.prompts) {
        match p.outcome {
            Ok(t) => s.push_str(&format!("{} = {t}\n", c.label)),
            Err(r) => s.push_str(&format!("# {}: refused: {r}\n", c.label)),
        }
    }
    s
}

/// `path` as the config names it: relative to the config file's folder when it lies below it,
/// else absolute.
fn relative_to_config(config: &Config, path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let dir = config
        .file
        .as_deref()
        .and_then(|f| std::path::absolute(f).ok())
        .and_then(|f| f.parent().map(Path::to_path_buf));
    match dir.as_deref().map(|d| absolute.strip_prefix(d)) {
        Some(Ok(rel)) => rel.to_path_buf(),
        _ => absolute,
    }
}

/// The probability of a logit, written for an axis.
fn prob_label(z: f64) -> String {
    let p = Scale::Prob.from_fit(z);
    if p < 0.01 {
        format!("{p:.0e}")
    } else if p > 0.99 {
        format!("1-{:.0e}", 1.0 - p)
    } else {
        format!("{p:.2}")
    }
}

fn histogram_panels(
    config: &Config,
    quiet: &[Vec<f64>],
    positives: &[Vec<f64>],
    proposals: &[Proposal],
    scale: Scale,
) -> Vec<HistogramPanel> {
    let score = config.matcher.score;
    let fit = |v: &[f64]| v.iter().map(|&x| scale.to_fit(x)).collect::<Vec<_>>();
    proposals
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut marks = Vec::new();
            if let Some(b) = &p.bound {
                marks.push((format!("quiet bound {}", show(score, b.value)), b.z, true));
            }
            let verdict = match p.outcome {
                Ok(t) => {
                    marks.push((format!("threshold {t}"), scale.to_fit(t), false));
                    format!("threshold {t}")
                }
                Err(_) => "refused".to_owned(),
            };
            HistogramPanel {
                title: format!("{}: {verdict}", config.prompts[i].label),
                x_name: match scale {
                    Scale::Prob => "probability (logit scale)".to_owned(),
                    Scale::Cosine => "cosine".to_owned(),
                },
                quiet: fit(&quiet[i]),
                positives: fit(&positives[i]),
                marks,
                x_format: match scale {
                    Scale::Prob => prob_label,
                    Scale::Cosine => |x| format!("{x:.2}"),
                },
            }
        })
        .collect()
}
