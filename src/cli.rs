//! The `edgeclip` command line: argument definitions and the one-shot commands.
//!
//! `main.rs` parses, sets up logging and calls [`run`]; the daemon itself lives in
//! [`crate::daemon`].

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::matcher::{Label, Matcher, Scores};
use crate::model::{Bundle, ImageEncoder, Precision, Runtime, set_threads};
use crate::preprocess::{Preprocessor, Spec, load_image};
use crate::prompts::{PromptEmbedder, PromptEmbeddings};

/// Zero-shot camera events from a CLIP image encoder.
#[derive(Debug, Parser)]
#[command(name = "edgeclip", version, about)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Describe a model bundle.
    Info {
        /// The bundle folder.
        #[arg(long)]
        model: PathBuf,
    },
    /// Embed prompts (one per line) with the bundle's text tower into a safetensors file.
    Embed {
        /// The bundle folder.
        #[arg(long)]
        model: PathBuf,
        /// A text file with one prompt per line (blank lines and lines starting with # skipped).
        #[arg(long)]
        prompts_file: PathBuf,
        /// Where to write the embeddings.
        #[arg(long)]
        out: PathBuf,
    },
    /// Score images against prompts.
    Classify {
        /// The bundle folder.
        #[arg(long)]
        model: PathBuf,
        /// A prompt (repeatable).
        #[arg(long = "prompt")]
        prompts: Vec<String>,
        /// A text file with one prompt per line.
        #[arg(long)]
        prompts_file: Option<PathBuf>,
        /// A precomputed embeddings file; its prompts are used when no other prompt is given.
        #[arg(long)]
        embeddings: Option<PathBuf>,
        /// Image tower precision (default: the bundle's default file on the CPU, its fp16 or
        /// fp32 variant on a GPU).
        #[arg(long)]
        precision: Option<Precision>,
        /// Where the image tower runs: auto (the GPU when CUDA loads, else the CPU), cpu or
        /// cuda.
        #[arg(long, default_value_t = Runtime::Auto)]
        runtime: Runtime,
        /// Where compiled GPU kernels are kept (default: the daemon's cache folder).
        #[arg(long)]
        kernel_cache: Option<PathBuf>,
        /// Threads for tract's matrix products.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// One JSON object per image and line.
        #[arg(long)]
        json: bool,
        /// The images (JPEG or PNG).
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Run the daemon: capture, match, publish events until stopped (SIGTERM/SIGINT) or until a
    /// replayed clip ends. SIGHUP reloads the prompts.
    Run {
        /// The config file.
        #[arg(long)]
        config: PathBuf,
        /// Never drop frames: the source waits for inference (for replaying recordings).
        #[arg(long)]
        lossless: bool,
    },
    /// Search the stored history (`[store]`) by text: moments best first.
    Search(crate::search::SearchArgs),
    /// Replay a recording through the daemon's pipeline, frame by frame and none dropped: print
    /// the events as `run` does and a per-label summary; chart each label's score against its
    /// threshold.
    Replay {
        /// The config file.
        #[arg(long)]
        config: PathBuf,
        /// The recording (`files:GLOB`, relative to the working folder) instead of
        /// `camera.source`; a live camera (`v4l2:`, `pipe:`) runs until stopped (Ctrl-C).
        #[arg(long)]
        source: Option<String>,
        /// Which camera of `[[cameras]]` (its labels, zones and source); default: the first.
        #[arg(long)]
        camera: Option<String>,
        /// Also one JSON line per frame: `{"frame","t_s","labels":{LABEL:{"score","prob",
        /// "state"}},"runner_up":{LABEL:{"label","score","prob"}}}`; the summary goes to stderr.
        #[arg(long)]
        json: bool,
        /// Write a PNG chart: per label, its trigger metric over the frames, the threshold,
        /// the frames at or above it, the events and the strongest competitor.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// The chart's size in pixels (default: 1200 wide, 260 high per label).
        #[arg(long, value_parser = parse_size)]
        plot_size: Option<(u32, u32)>,
    },
    /// Propose per-label thresholds from quiet footage (no label's object in view) and
    /// positive examples, aimed at a false-alarm rate; write them as a calibration file for
    /// `matcher.calibration`. Refuses a label whose quiet and positive scores overlap.
    Calibrate {
        /// The config file.
        #[arg(long)]
        config: PathBuf,
        /// The quiet footage (`files:GLOB`, or a camera) instead of `camera.source`.
        #[arg(long)]
        source: Option<String>,
        /// Which camera of `[[cameras]]` (its labels, zones and source); default: the first.
        #[arg(long)]
        camera: Option<String>,
        /// At most this much footage (`10m`, `1h`); needed to calibrate on a live camera.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<std::time::Duration>,
        /// A folder with one subfolder of example images (JPEG, PNG) per label:
        /// `DIR/<label>/*.jpg`.
        #[arg(long)]
        positives: Option<PathBuf>,
        /// The calibration file to write.
        #[arg(long)]
        out: PathBuf,
        /// Write a PNG of each label's quiet and positive score histograms and its threshold.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// The chart's size in pixels (default: 1000 wide, 240 high per label).
        #[arg(long, value_parser = parse_size)]
        plot_size: Option<(u32, u32)>,
        /// The false alarms a day each label may raise on quiet footage.
        #[arg(long, default_value_t = 1.0)]
        false_alarms_per_day: f64,
    },
    /// Prepare a bundle at install time, as the daemon's user with the daemon's cache folder. On
    /// a GPU: compile tract-cuda's kernels into the kernel cache and run the image tower once, so
    /// that the daemon's start takes seconds instead of minutes. On the CPU: time the image
    /// files the bundle ships (about 0.5 s) and cache the fastest for this CPU and thread count,
    /// which the daemon then runs when `model.precision` is not set.
    Warmup {
        /// The bundle folder.
        #[arg(long)]
        model: PathBuf,
        /// Image tower precision (default: the fp16 variant, else the fp32 one, else the
        /// default file, as the daemon picks on a GPU).
        #[arg(long)]
        precision: Option<Precision>,
        /// Where compiled kernels are kept: the daemon's `model.kernel_cache` (default: the
        /// daemon's cache folder: $CACHE_DIRECTORY, $XDG_CACHE_HOME/edgeclip or
        /// ~/.cache/edgeclip; /var/cache/edgeclip for the systemd unit).
        #[arg(long)]
        kernel_cache: Option<PathBuf>,
        /// Threads for tract's matrix products on the CPU: the daemon's `threads` (the timed
        /// choice is cached per thread count).
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// Measure the image tower: load time, first run, p50/p95 latency, frames per second, peak
    /// memory (input: a fixed synthetic tensor; preprocessing not included).
    Bench {
        /// The bundle folder.
        #[arg(long)]
        model: PathBuf,
        /// Where the image tower runs: auto, cpu or cuda.
        #[arg(long, default_value_t = Runtime::Auto)]
        runtime: Runtime,
        /// Image tower precision (default: as `classify`).
        #[arg(long)]
        precision: Option<Precision>,
        /// Where compiled GPU kernels are kept (default: the daemon's cache folder).
        #[arg(long)]
        kernel_cache: Option<PathBuf>,
        /// Threads for tract's matrix products (CPU).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Timed runs after the first; 0 only loads the model.
        #[arg(long, default_value_t = 50)]
        iters: usize,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print every config key with its type, default and meaning: an annotated config that is
    /// itself valid, or (`--markdown`) the table in `docs/CONFIG.md`.
    ConfigReference {
        /// Markdown instead of an annotated config.
        #[arg(long)]
        markdown: bool,
    },
    /// Example images of a label: `add` copies them into the config's exemplar folder.
    Exemplar {
        /// What to do.
        #[command(subcommand)]
        action: ExemplarAction,
    },
    /// Validate a config file without touching any device; report every problem.
    CheckConfig {
        /// The config file.
        config: PathBuf,
        /// Also open the camera and connect to the MQTT broker.
        #[arg(long)]
        probe: bool,
    },
}

/// `edgeclip exemplar` actions.
#[derive(Debug, Subcommand)]
pub enum ExemplarAction {
    /// Copy images into `matcher.exemplars_dir/LABEL/` (the daemon reads them at start) and
    /// print the label's score on each, before and after.
    Add {
        /// The config file.
        #[arg(long)]
        config: PathBuf,
        /// The label (`prompts[].label`).
        #[arg(long)]
        label: String,
        /// Add them as negative examples (`LABEL/negative/`): things that must not fire it.
        #[arg(long)]
        negative: bool,
        /// The images (JPEG or PNG).
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Info { model } => info(&model),
        Command::Embed {
            model,
            prompts_file,
            out,
        } => embed(&model, &prompts_file, &out),
        Command::Classify {
            model,
            prompts,
            prompts_file,
            embeddings,
            precision,
            runtime,
            kernel_cache: _,
            threads,
            json,
            images,
        } => {
            set_threads(threads);
            classify(
                &model,
                prompts,
                prompts_file.as_deref(),
                embeddings.as_deref(),
                (precision, runtime),
                json,
                &images,
            )
        }
        Command::Warmup {
            model,
            precision,
            kernel_cache: _,
            threads,
        } => {
            set_threads(threads);
            crate::bench::warmup(&model, precision)
        }
        Command::Bench {
            model,
            runtime,
            precision,
            kernel_cache: _,
            threads,
            iters,
            json,
        } => {
            let report =
                crate::bench::bench_image_tower(&model, runtime, precision, threads, iters)
                    .map_err(runtime_error)?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{report}");
            }
            Ok(())
        }
        Command::Run { config, lossless } => run_daemon(&config, lossless),
        Command::Search(args) => crate::search::run(&args),
        Command::Replay {
            config,
            source,
            camera,
            json,
            plot,
            plot_size,
        } => {
            let config = one_camera(Config::from_file(&config)?, camera.as_deref())?;
            let size = plot_size.unwrap_or((1200, 60 + 260 * config.prompts.len() as u32));
            let options = crate::replay::ReplayOptions {
                source,
                json,
                plot: plot.map(|p| (p, size)),
            };
            crate::replay::replay(
                &config,
                &options,
                &*stop_on_signals()?,
                &mut std::io::stdout().lock(),
                &mut std::io::stderr(),
            )?;
            Ok(())
        }
        Command::Calibrate {
            config,
            source,
            camera,
            duration,
            positives,
            out,
            plot,
            plot_size,
            false_alarms_per_day,
        } => {
            if !(false_alarms_per_day.is_finite() && false_alarms_per_day > 0.0) {
                bail!("--false-alarms-per-day: must be above 0, got {false_alarms_per_day}");
            }
            let config = one_camera(Config::from_file(&config)?, camera.as_deref())?;
            let size = plot_size.unwrap_or((1000, 40 + 240 * config.prompts.len() as u32));
            let options = crate::replay::calibrate::CalibrateOptions {
                source,
                duration,
                positives,
                out,
                plot: plot.map(|p| (p, size)),
                false_alarms_per_day,
            };
            crate::replay::calibrate::calibrate(
                &config,
                &options,
                &*stop_on_signals()?,
                &mut std::io::stdout().lock(),
            )?;
            Ok(())
        }
        Command::CheckConfig { config, probe } => check_config(&config, probe),
        Command::Exemplar {
            action:
                ExemplarAction::Add {
                    config,
                    label,
                    negative,
                    images,
                },
        } => {
            let report = crate::exemplar::add(&config, &label, negative, &images)?;
            print!("{report}");
            Ok(())
        }
        Command::ConfigReference { markdown } => {
            let text = if markdown {
                crate::config::reference::markdown()
            } else {
                crate::config::reference::annotated_toml()
            };
            std::io::stdout()
                .write_all(text.as_bytes())
                .context("writing the reference")?;
            Ok(())
        }
    }
}

/// The folder to point tract-cuda's kernel cache at for this command line (see
/// [`crate::model::device`]), or `None` when the command runs nothing on a GPU. For `run`, the
/// config file's `model.kernel_cache` (a config that does not load gives `None`: `run` reports
/// it).
pub fn kernel_cache_for(cli: &Cli) -> Option<PathBuf> {
    use crate::model::device::kernel_cache_base;
    let (runtime, configured) = match &cli.command {
        Command::Run { config, .. }
        | Command::Replay { config, .. }
        | Command::Calibrate { config, .. } => {
            let c = Config::from_file(config).ok()?;
            (c.model.runtime, c.model.kernel_cache)
        }
        Command::Warmup { kernel_cache, .. } => (Runtime::Cuda, kernel_cache.clone()),
        Command::Classify {
            runtime,
            kernel_cache,
            ..
        }
        | Command::Bench {
            runtime,
            kernel_cache,
            ..
        } => (*runtime, kernel_cache.clone()),
        Command::Info { .. }
        | Command::Search(_)
        | Command::Embed { .. }
        | Command::CheckConfig { .. }
        | Command::Exemplar { .. }
        | Command::ConfigReference { .. } => return None,
    };
    if runtime == Runtime::Cpu || !crate::model::device::CUDA_BUILT {
        return None;
    }
    kernel_cache_base(configured.as_deref())
}

/// A model error, with `--runtime` named when the runtime is what failed.
fn runtime_error(e: crate::model::ModelError) -> anyhow::Error {
    match e {
        crate::model::ModelError::Runtime { .. } => anyhow::Error::new(e).context("--runtime"),
        e => e.into(),
    }
}

/// `WIDTHxHEIGHT` in pixels.
fn parse_size(text: &str) -> Result<(u32, u32), String> {
    text.split_once(['x', 'X'])
        .and_then(|(w, h)| Some((w.trim().parse().ok()?, h.trim().parse().ok()?)))
        .ok_or_else(|| format!("expected WIDTHxHEIGHT in pixels (1200x800), got {text:?}"))
}

/// A flag that SIGINT and SIGTERM set: a replay or calibration stops taking frames and
/// finishes its report.
fn stop_on_signals() -> Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone())
            .with_context(|| format!("installing the handler for signal {signal}"))?;
    }
    Ok(stop)
}

/// The config of one camera (`--camera NAME`, else the first), for `replay` and `calibrate`.
fn one_camera(config: Config, camera: Option<&str>) -> Result<Config> {
    (config.for_camera_named(camera)).map_err(|e| anyhow::anyhow!("--camera: {e}"))
}

fn run_daemon(path: &Path, lossless: bool) -> Result<()> {
    use crate::daemon::{Control, Daemon, Delivery};
    let config = Config::from_file(path)?;
    for warning in config.warnings() {
        log::warn!("{warning}");
    }
    let control = Control::default();
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, control.shutdown.clone())
            .with_context(|| format!("installing the handler for signal {signal}"))?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, control.reload.clone())
        .context("installing the SIGHUP handler")?;
    let daemon = Daemon::new(config)?;
    let mut sources = Vec::new();
    for camera in &daemon.config().cameras {
        sources.push(
            crate::source::open_source(camera)
                .with_context(|| format!("{} ({:?})", camera.key, camera.name))?,
        );
    }
    let sinks = crate::sink::open_sinks(daemon.config())?;
    let delivery = if lossless {
        Delivery::Lossless
    } else {
        Delivery::Freshest
    };
    daemon.run(sources, sinks, &control, delivery)?;
    Ok(())
}

fn check_config(path: &Path, probe: bool) -> Result<()> {
    let config = Config::from_file(path)?;
    for warning in config.warnings() {
        eprintln!("warning: {warning}");
    }
    // The model is part of the config: check the bundle and that every prompt can be embedded.
    crate::doctor::check_model(&config)?;
    if probe {
        for line in crate::doctor::probe(&config, std::time::Duration::from_secs(5))? {
            println!("{line}");
        }
    }
    println!("{}: ok", path.display());
    Ok(())
}

fn info(dir: &Path) -> Result<()> {
    let b = Bundle::load(dir)?;
    let m = &b.manifest;
    let img = &m.image;
    println!("name:         {}", m.name);
    println!("folder:       {}", dir.display());
    println!("fingerprint:  {}", m.fingerprint);
    println!("embed dim:    {}", m.embed_dim);
    println!("logit scale:  {}", m.logit_scale);
    println!(
        "image tower:  {} ({}), input {:?} {}x{} (HxW), output {:?}",
        img.onnx.display(),
        img.precision,
        img.input,
        img.height,
        img.width,
        img.output
    );
    for v in &img.variants {
        println!(
            "              variant {} ({})",
            v.onnx.display(),
            v.precision
        );
    }
    println!(
        "preprocess:   resize {:?}, crop {:?}, {:?}, mean {:?}, std {:?}, {:?}",
        img.resize, img.crop, img.interpolation, img.mean, img.std, img.channel_order
    );
    match &m.text {
        Some(t) => {
            println!(
                "text tower:   {} ({}), {:?} tokenizer, context {}",
                t.onnx.display(),
                t.precision,
                t.tokenizer,
                t.context_length
            );
            for v in &t.variants {
                println!(
                    "              variant {} ({})",
                    v.onnx.display(),
                    v.precision
                );
            }
        }
        None => println!("text tower:   none"),
    }
    match b.prompts_file() {
        Some(p) => {
            let e = PromptEmbeddings::load_for(&p, &b)?;
            println!("prompts:      {} ({} prompts)", p.display(), e.texts.len());
        }
        None => println!("prompts:      none"),
    }
    match b.vocabulary_file() {
        Some(p) => {
            let e = PromptEmbeddings::load_for(&p, &b)?;
            println!("vocabulary:   {} ({} entries)", p.display(), e.texts.len());
        }
        None => println!("vocabulary:   none (labels compete only with each other)"),
    }
    Ok(())
}

/// Reads a prompts file: one prompt per line, blank lines and `#` comments skipped.
pub fn read_prompts_file(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let prompts: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    if prompts.is_empty() {
        bail!("{}: no prompts in the file", path.display());
    }
    Ok(prompts)
}

fn embed(dir: &Path, prompts_file: &Path, out: &Path) -> Result<()> {
    let bundle = Bundle::load(dir)?;
    if bundle.manifest.text.is_none() {
        bail!(
            "{}: the bundle has no text tower to embed prompts with",
            bundle.manifest_path().display()
        );
    }
    let prompts = read_prompts_file(prompts_file)?;
    let mut embedder = PromptEmbedder::new(&bundle, &[])?;
    let mut set = PromptEmbeddings::empty(bundle.fingerprint(), bundle.embed_dim());
    for p in &prompts {
        set.insert(p, embedder.embed(p)?);
    }
    set.save(out)?;
    eprintln!(
        "wrote {} embeddings of width {} to {}",
        prompts.len(),
        set.dim,
        out.display()
    );
    Ok(())
}

/// One scored prompt in `classify --json` output.
#[derive(Debug, serde::Serialize)]
struct Scored<'a> {
    prompt: &'a str,
    score: f32,
    prob: f32,
}

fn classify(
    dir: &Path,
    mut prompts: Vec<String>,
    prompts_file: Option<&Path>,
    embeddings: Option<&Path>,
    (precision, runtime): (Option<Precision>, Runtime),
    json: bool,
    images: &[PathBuf],
) -> Result<()> {
    let bundle = Bundle::load(dir)?;
    if let Some(f) = prompts_file {
        prompts.extend(read_prompts_file(f)?);
    }
    let extra: Vec<PathBuf> = embeddings.map(Path::to_path_buf).into_iter().collect();
    let mut embedder = PromptEmbedder::new(&bundle, &extra)?;
    if prompts.is_empty() {
        // No prompts given: the embeddings file's, else the bundle's shipped ones.
        let source = match embeddings {
            Some(e) => PromptEmbeddings::load_for(e, &bundle)?,
            None => match bundle.prompts_file() {
                Some(p) => PromptEmbeddings::load_for(&p, &bundle)?,
                None => bail!("no prompts: give --prompt, --prompts-file or --embeddings"),
            },
        };
        prompts = source.texts;
    }
    let mut entries = Vec::with_capacity(prompts.len());
    for p in &prompts {
        let label = Label {
            name: p.clone(),
            prompt: p.clone(),
            background: false,
        };
        entries.push((label, vec![embedder.embed(p)?]));
    }
    let matcher = Matcher::new(entries, bundle.embed_dim(), bundle.manifest.logit_scale)?;
    let encoder = ImageEncoder::load_for(&bundle, precision, runtime).map_err(runtime_error)?;
    let mut pre = Preprocessor::new(Spec::from(&bundle.manifest.image));
    let mut pixels = vec![0f32; pre.output_len()];
    let mut embedding = vec![0f32; encoder.dim()];
    let mut scores = Scores::default();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for path in images {
        let img = load_image(path)?;
        pre.image_to_tensor(&img, &mut pixels)?;
        encoder.encode_into(&pixels, &mut embedding)?;
        matcher.score(&embedding, &mut scores);
        let mut order: Vec<usize> = (0..prompts.len()).collect();
        order.sort_by(|&a, &b| scores.cos[b].total_cmp(&scores.cos[a]));
        if json {
            let scored: Vec<Scored> = (0..prompts.len())
                .map(|i| Scored {
                    prompt: &prompts[i],
                    score: scores.cos[i],
                    prob: scores.prob[i],
                })
                .collect();
            let top = &scored[order[0]];
            let line = serde_json::json!({
                "image": path.display().to_string(),
                "top": top,
                "scores": scored,
            });
            writeln!(out, "{line}")?;
        } else {
            writeln!(out, "{}", path.display())?;
            for &i in order.iter().take(10) {
                writeln!(
                    out,
                    "  {:>6.4}  {:>6.2}%  {}",
                    scores.cos[i],
                    100.0 * scores.prob[i],
                    prompts[i]
                )?;
            }
        }
    }
    Ok(())
}
