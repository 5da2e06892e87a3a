//! The daemon's TOML configuration: its shape, its defaults and its validation.
//!
//! Loading is two passes, and both collect every problem instead of stopping at the first one,
//! so an operator fixes a config in one round trip:
//!
//! 1. the structure: TOML syntax, unknown keys (the equivalent of serde's
//!    `deny_unknown_fields`, but all of them reported), missing required keys and wrong types;
//!    leaf values are read with serde, each on its own so one bad value does not hide the next;
//! 2. the semantics ([`Config::validate`], pure): ranges, cross references (a GPIO line must name
//!    a prompt label), uniqueness, and every option value `rumqttc` would assert on.
//!
//! Every problem carries its key path (`prompts[2].threshold`) and the error names the file.
//! Checks that touch the environment (opening the camera, connecting to the broker, finding GPIO
//! lines) are in [`probe`], used by `check-config --probe`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::model::options::{Precision, Runtime};

/// One problem found in a config, with the key path it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, with array indices: `prompts[2].threshold`. Empty for problems with the
    /// whole file (unreadable, TOML syntax).
    pub key: String,
    /// What is wrong, and what would be right.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// Everything wrong with a config file. `Display` writes one problem per line, each as
/// `FILE: KEY: MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(file, problems))]
pub struct ConfigError {
    /// The config file (or `<memory>` for a config that came from no file).
    pub file: PathBuf,
    /// The problems, in the order of the file (structure) and then of the checks (semantics).
    pub problems: Vec<Problem>,
}

fn render(file: &Path, problems: &[Problem]) -> String {
    let mut out = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("{}: {p}", file.display()));
    }
    out
}

impl ConfigError {
    /// Whether some problem concerns exactly `key` or a key below it.
    pub fn has_problem_at(&self, key: &str) -> bool {
        self.problems.iter().any(|p| key_is_under(&p.key, key))
    }
}

/// `key` equals `prefix` or is below it (`a.b` and `a[1]` are below `a`).
fn key_is_under(key: &str, prefix: &str) -> bool {
    key == prefix
        || (key.starts_with(prefix)
            && matches!(key.as_bytes().get(prefix.len()), Some(b'.') | Some(b'[')))
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `[camera]`.
    pub camera: CameraConfig,
    /// `[model]`.
    pub model: ModelConfig,
    /// `[[prompts]]`, in file order (the label index used everywhere is the position here).
    pub prompts: Vec<PromptConfig>,
    /// `[matcher]`.
    pub matcher: MatcherConfig,
    /// `[trigger]`: defaults for every prompt.
    pub trigger: TriggerConfig,
    /// `[mqtt]`, when events go to a broker.
    pub mqtt: Option<MqttConfig>,
    /// `[gpio]`, when labels drive GPIO lines.
    pub gpio: Option<GpioConfig>,
    /// `[events]`.
    pub events: EventsConfig,
    /// `[stats]`.
    pub stats: StatsConfig,
    /// The file this config was read from, if any (for messages).
    pub file: Option<PathBuf>,
}

/// `[camera]`: where frames come from.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraConfig {
    /// Camera name used in events and MQTT topics (`[A-Za-z0-9_-]`). Default `cam0`.
    pub name: String,
    /// `source = "v4l2:/dev/video0" | "pipe:COMMAND" | "files:GLOB"`.
    pub source: SourceSpec,
    /// Requested (V4L2) or actual (raw pipe) frame width. Default 640.
    pub width: u32,
    /// Requested (V4L2) or actual (raw pipe) frame height. Default 480.
    pub height: u32,
    /// Frames per second: requested from V4L2, replay rate of `files:`. Default 15.
    pub fps: f32,
    /// Pixel format: for V4L2 the format to request (`auto` prefers MJPEG); for `pipe:` the
    /// format of the command's stdout (`auto` means MJPEG); for `files:` only `auto`.
    pub format: CaptureFormat,
    /// `loop`: replay `files:` forever. Default false: the daemon finishes when they run out.
    pub looping: bool,
    /// `timeout_s`: a source that delivers no frame for this long reports an error instead of
    /// hanging. Default 5.
    pub timeout_s: f32,
}

impl CameraConfig {
    /// The capture timeout as a [`Duration`] (1 s if the configured value is unusable).
    pub fn timeout(&self) -> Duration {
        Duration::try_from_secs_f32(self.timeout_s)
            .ok()
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(1))
    }
}

/// Where frames come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// A V4L2 capture device (`v4l2:/dev/video0`).
    V4l2 {
        /// The device node.
        device: PathBuf,
    },
    /// A command whose stdout carries frames (`pipe:rpicam-vid ... -o -`), run with `sh -c`.
    Pipe {
        /// The shell command.
        command: String,
    },
    /// Image files replayed in sorted order (`files:clip/*.jpg`), relative to the config file.
    Files {
        /// The glob pattern, already resolved against the config file's folder.
        pattern: String,
    },
}

impl SourceSpec {
    /// Parses `v4l2:PATH`, `pipe:COMMAND` or `files:GLOB`; a relative `files:` pattern is
    /// resolved against `base`.
    pub fn parse(text: &str, base: Option<&Path>) -> Result<SourceSpec, String> {
        let (scheme, rest) = text.split_once(':').ok_or_else(|| {
            format!(
                "expected \"v4l2:/dev/videoN\", \"pipe:COMMAND\" or \"files:GLOB\", got {text:?}"
            )
        })?;
        match scheme {
            "v4l2" => Ok(SourceSpec::V4l2 {
                device: PathBuf::from(rest),
            }),
            "pipe" => Ok(SourceSpec::Pipe {
                command: rest.to_owned(),
            }),
            "files" => Ok(SourceSpec::Files {
                pattern: match base {
                    Some(base) if !rest.is_empty() && Path::new(rest).is_relative() => {
                        base.join(rest).to_string_lossy().into_owned()
                    }
                    _ => rest.to_owned(),
                },
            }),
            other => Err(format!(
                "unknown source kind {other:?}: expected \"v4l2:/dev/videoN\", \"pipe:COMMAND\" \
                 or \"files:GLOB\""
            )),
        }
    }
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceSpec::V4l2 { device } => write!(f, "v4l2:{}", device.display()),
            SourceSpec::Pipe { command } => write!(f, "pipe:{command}"),
            SourceSpec::Files { pattern } => write!(f, "files:{pattern}"),
        }
    }
}

/// `camera.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureFormat {
    /// V4L2: MJPEG if offered, else YUYV. Pipe: MJPEG. Files: decided by each file.
    #[default]
    Auto,
    /// Motion JPEG.
    Mjpeg,
    /// Packed YUV 4:2:2.
    Yuyv,
    /// Packed 8-bit RGB.
    Rgb24,
    /// 8-bit luma.
    Grey,
}

/// `[model]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// The model bundle folder, resolved against the config file's folder.
    pub bundle: PathBuf,
    /// Where the encoder runs. Default `auto`.
    pub runtime: Runtime,
    /// Encoder threads; `None` (the default) lets the engine use every core.
    pub threads: Option<usize>,
    /// `precision`: which of the image tower's files to run. `None` (the default): chosen for
    /// the device among the shipped files (see [`crate::model::Device::pick_precision`]: on the
    /// CPU, dynamic int8 where it has int8 dot-product instructions, else fp32; on a GPU, fp16
    /// or fp32).
    pub precision: Option<Precision>,
    /// `kernel_cache`: where compiled GPU kernels are kept between runs, resolved against the
    /// config file's folder. `None` (the default): the daemon's cache folder
    /// ([`crate::paths::cache_dir`], `/var/cache/edgeclip` under systemd).
    pub kernel_cache: Option<PathBuf>,
}

/// One `[[prompts]]` entry: a label and the text(s) that describe it.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptConfig {
    /// Label used in events, MQTT topics and GPIO lines (`[A-Za-z0-9_-]`, unique).
    pub label: String,
    /// `text`: one string, or several (an ensemble) whose embeddings are combined.
    pub texts: Vec<String>,
    /// Overrides `matcher.threshold` for this label.
    pub threshold: Option<f32>,
    /// Overrides `trigger.enter_frames`.
    pub enter_frames: Option<u32>,
    /// Overrides `trigger.exit_frames`.
    pub exit_frames: Option<u32>,
    /// Overrides `trigger.cooldown_s`.
    pub cooldown_s: Option<f32>,
}

impl PromptConfig {
    /// The text shown in events: the first text of the ensemble.
    pub fn display_text(&self) -> &str {
        self.texts
            .first()
            .map(String::as_str)
            .unwrap_or(&self.label)
    }
}

/// `[matcher]`.
#[derive(Debug, Clone, PartialEq)]
pub struct MatcherConfig {
    /// Background prompts that compete in the softmax but never fire. Default
    /// `["an empty scene"]`.
    pub background: Vec<String>,
    /// Default threshold for every prompt. Default 0.5.
    pub threshold: f32,
    /// Which value the thresholds apply to. Default `prob`.
    pub score: ScoreKind,
}

/// `matcher.score`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoreKind {
    /// Softmax probability over prompts and background (thresholds in `[0, 1]`).
    #[default]
    Prob,
    /// Raw cosine similarity (thresholds in `[-1, 1]`).
    Cosine,
}

impl ScoreKind {
    /// The range a threshold must lie in.
    pub fn threshold_range(self) -> (f32, f32) {
        match self {
            ScoreKind::Prob => (0.0, 1.0),
            ScoreKind::Cosine => (-1.0, 1.0),
        }
    }
}

/// `[trigger]`: defaults for every prompt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TriggerConfig {
    /// Consecutive frames at or above the threshold before `start`. Default 3.
    pub enter_frames: u32,
    /// Consecutive frames below the threshold before `end`. Default 5.
    pub exit_frames: u32,
    /// Seconds after an `end` during which no new `start` fires. Default 0.
    pub cooldown_s: f32,
}

/// `[mqtt]`.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttConfig {
    /// Broker host name or address.
    pub host: String,
    /// Broker port. Default 1883.
    pub port: u16,
    /// Topic prefix. Default `edgeclip`.
    pub prefix: String,
    /// MQTT client id; default `edgeclip-<hostname>-<camera>`.
    pub client_id: Option<String>,
    /// User name.
    pub username: Option<String>,
    /// Password (needs `username`).
    pub password: Option<String>,
    /// CA certificate (PEM) to connect with TLS; resolved against the config file's folder.
    pub tls_ca: Option<PathBuf>,
    /// QoS of events and state messages: 0, 1 or 2. Default 1.
    pub qos: u8,
    /// Keep-alive interval, at least 5 s. Default 30.
    pub keep_alive_s: u64,
    /// Publish Home Assistant discovery configs. Default false.
    pub homeassistant_discovery: bool,
    /// Home Assistant's discovery prefix. Default `homeassistant`.
    pub discovery_prefix: String,
    /// Most events held while the broker is away; beyond it events are dropped. Default 256.
    pub queue: usize,
}

/// `[gpio]`.
#[derive(Debug, Clone, PartialEq)]
pub struct GpioConfig {
    /// The chip: a path (`/dev/gpiochip0`) or a name (`gpiochip0`). Needed for lines given by
    /// offset; lines given by name are searched on it, or on every chip when it is absent.
    pub chip: Option<String>,
    /// Which driver to use. Default `cdev`.
    pub backend: GpioBackend,
    /// `[[gpio.lines]]`.
    pub lines: Vec<GpioLineConfig>,
}

impl GpioConfig {
    /// The chip as a device path: a bare name is taken to live in `/dev`.
    pub fn chip_path(&self) -> Option<PathBuf> {
        self.chip.as_deref().map(|c| {
            if c.contains('/') {
                PathBuf::from(c)
            } else {
                Path::new("/dev").join(c)
            }
        })
    }
}

/// `gpio.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GpioBackend {
    /// The GPIO character device (`gpiocdev`), any Linux board.
    #[default]
    Cdev,
    /// The Raspberry Pi driver (`rppal`); lines by BCM number or `GPIO<n>` name.
    Rppal,
}

/// One `[[gpio.lines]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct GpioLineConfig {
    /// The prompt label that drives this line.
    pub label: String,
    /// The line, by name or offset.
    pub line: LineRef,
    /// Level or pulse. Default `level`.
    pub mode: LineMode,
    /// Pulse length in milliseconds (pulse mode). Default 200.
    pub pulse_ms: u64,
    /// Drive the line low when active. Default false.
    pub active_low: bool,
}

/// A GPIO line, by name or by offset on the chip.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LineRef {
    /// The line name from the device tree (`GPIO17`).
    Name(String),
    /// The offset on the configured chip.
    Offset(u32),
}

impl fmt::Display for LineRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineRef::Name(n) => write!(f, "{n:?}"),
            LineRef::Offset(o) => write!(f, "offset {o}"),
        }
    }
}

/// `gpio.lines[].mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LineMode {
    /// Active while the label is active.
    #[default]
    Level,
    /// Active for `pulse_ms` after each start.
    Pulse,
}

/// `[events]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventsConfig {
    /// Write events as JSON lines to stdout. Default true.
    pub stdout: bool,
}

/// `[stats]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatsConfig {
    /// Seconds between statistics lines; 0 turns them off. Default 10.
    pub interval_s: f32,
}

impl StatsConfig {
    /// The interval, or `None` when statistics are off.
    pub fn interval(&self) -> Option<Duration> {
        Duration::try_from_secs_f32(self.interval_s)
            .ok()
            .filter(|d| !d.is_zero())
    }
}

// ------------------------------------------------------------------------------------------
// Loading.

impl Config {
    /// Reads, parses and validates a config file. Relative paths in it (`model.bundle`,
    /// `mqtt.tls_ca`, a `files:` pattern) are resolved against the file's folder.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            problems: vec![Problem {
                key: String::new(),
                message: format!("cannot read the config file: {e}"),
            }],
        })?;
        Config::from_toml_str(&text, Some(path))
    }

    /// Parses and validates config text. `file` names the origin in messages and is the base of
    /// relative paths (its folder); without it, relative paths stay relative to the working
    /// directory.
    pub fn from_toml_str(text: &str, file: Option<&Path>) -> Result<Config, ConfigError> {
        let file_name = file.map_or_else(|| PathBuf::from("<memory>"), Path::to_path_buf);
        let base = file.map(|f| match f.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        });
        let table: toml::Table = match toml::from_str(text) {
            Ok(t) => t,
            Err(e) => {
                return Err(ConfigError {
                    file: file_name,
                    problems: vec![syntax_problem(text, &e)],
                });
            }
        };
        let mut reader = Reader::default();
        let mut config = read_config(&mut reader, table, base.as_deref());
        config.file = file.map(Path::to_path_buf);
        let mut problems = reader.problems;
        let structural: Vec<String> = problems.iter().map(|p| p.key.clone()).collect();
        if let Err(e) = config.validate() {
            // A value that could not be read was replaced by a placeholder: do not report the
            // placeholder again.
            problems.extend(
                e.problems
                    .into_iter()
                    .filter(|p| !structural.iter().any(|k| key_is_under(&p.key, k))),
            );
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError {
                file: file_name,
                problems,
            })
        }
    }

    /// The index of a prompt label.
    pub fn prompt_index(&self, label: &str) -> Option<usize> {
        self.prompts.iter().position(|p| p.label == label)
    }
}

fn syntax_problem(text: &str, e: &toml::de::Error) -> Problem {
    let location = e.span().map(|span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!(" (line {line}, column {column})")
    });
    Problem {
        key: String::new(),
        message: format!(
            "TOML syntax error{}: {}",
            location.unwrap_or_default(),
            e.message()
        ),
    }
}

/// Collects structural problems while reading a [`toml::Table`] field by field.
#[derive(Default)]
struct Reader {
    problems: Vec<Problem>,
}

/// A table being read: the keys still in `map` at the end are unknown.
struct Section {
    path: String,
    map: toml::Table,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(v: &toml::Value) -> &'static str {
    v.type_str()
}

impl Reader {
    fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    /// An optional leaf value.
    fn opt<T: DeserializeOwned>(&mut self, s: &mut Section, key: &str) -> Option<T> {
        let v = s.map.remove(key)?;
        match v.try_into::<T>() {
            Ok(x) => Some(x),
            Err(e) => {
                self.problem(join(&s.path, key), e.message().to_owned());
                None
            }
        }
    }

    /// A required leaf value (a problem when absent).
    fn req<T: DeserializeOwned>(&mut self, s: &mut Section, key: &str) -> Option<T> {
        if !s.map.contains_key(key) {
            self.problem(join(&s.path, key), "missing (required)");
            return None;
        }
        self.opt(s, key)
    }

    /// An optional sub-table.
    fn table(&mut self, s: &mut Section, key: &str) -> Option<Section> {
        let path = join(&s.path, key);
        match s.map.remove(key)? {
            toml::Value::Table(map) => Some(Section { path, map }),
            other => {
                self.problem(
                    path,
                    format!("expected a table ([{key}]), got {}", type_name(&other)),
                );
                None
            }
        }
    }

    /// An optional array of tables (`[[key]]`).
    fn tables(&mut self, s: &mut Section, key: &str) -> Vec<Section> {
        let path = join(&s.path, key);
        let Some(value) = s.map.remove(key) else {
            return Vec::new();
        };
        let toml::Value::Array(items) = value else {
            self.problem(
                path,
                format!(
                    "expected an array of tables ([[{key}]]), got {}",
                    type_name(&value)
                ),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            match item {
                toml::Value::Table(map) => out.push(Section {
                    path: item_path,
                    map,
                }),
                other => self.problem(
                    item_path,
                    format!("expected a table, got {}", type_name(&other)),
                ),
            }
        }
        out
    }

    /// Reports the keys nobody read.
    fn finish(&mut self, s: Section, known: &[&str]) {
        for key in s.map.keys() {
            self.problem(
                join(&s.path, key),
                format!("unknown key (expected one of: {})", known.join(", ")),
            );
        }
    }
}

fn resolve(base: Option<&Path>, p: PathBuf) -> PathBuf {
    match base {
        Some(base) if p.is_relative() && !p.as_os_str().is_empty() => base.join(p),
        _ => p,
    }
}

fn read_config(r: &mut Reader, map: toml::Table, base: Option<&Path>) -> Config {
    let mut root = Section {
        path: String::new(),
        map,
    };
    let camera = match r.table(&mut root, "camera") {
        Some(mut s) => {
            let c = read_camera(r, &mut s, base);
            r.finish(
                s,
                &[
                    "name",
                    "source",
                    "width",
                    "height",
                    "fps",
                    "format",
                    "loop",
                    "timeout_s",
                ],
            );
            c
        }
        None => {
            r.problem(
                "camera",
                "missing (required): add a [camera] table with a source",
            );
            placeholder_camera()
        }
    };
    let model = match r.table(&mut root, "model") {
        Some(mut s) => {
            let bundle = r
                .req::<PathBuf>(&mut s, "bundle")
                .map(|p| resolve(base, p))
                .unwrap_or_default();
            let m = ModelConfig {
                bundle,
                runtime: r.opt(&mut s, "runtime").unwrap_or_default(),
                threads: r.opt(&mut s, "threads"),
                precision: r.opt(&mut s, "precision"),
                kernel_cache: r
                    .opt::<PathBuf>(&mut s, "kernel_cache")
                    .map(|p| resolve(base, p)),
            };
            r.finish(
                s,
                &["bundle", "runtime", "threads", "precision", "kernel_cache"],
            );
            m
        }
        None => {
            r.problem(
                "model",
                "missing (required): add a [model] table with a bundle",
            );
            ModelConfig {
                bundle: PathBuf::new(),
                runtime: Runtime::Auto,
                threads: None,
                precision: None,
                kernel_cache: None,
            }
        }
    };
    let prompts = if root.map.contains_key("prompts") {
        r.tables(&mut root, "prompts")
            .into_iter()
            .map(|mut s| {
                let p = read_prompt(r, &mut s);
                r.finish(
                    s,
                    &[
                        "label",
                        "text",
                        "threshold",
                        "enter_frames",
                        "exit_frames",
                        "cooldown_s",
                    ],
                );
                p
            })
            .collect()
    } else {
        Vec::new()
    };
    let matcher = match r.table(&mut root, "matcher") {
        Some(mut s) => {
            let background = match s.map.remove("background") {
                Some(v) => read_texts(r, &join(&s.path, "background"), v, true),
                None => default_background(),
            };
            let m = MatcherConfig {
                background,
                threshold: r.opt(&mut s, "threshold").unwrap_or(0.5),
                score: r.opt(&mut s, "score").unwrap_or_default(),
            };
            r.finish(s, &["background", "threshold", "score"]);
            m
        }
        None => MatcherConfig {
            background: default_background(),
            threshold: 0.5,
            score: ScoreKind::Prob,
        },
    };
    let trigger = match r.table(&mut root, "trigger") {
        Some(mut s) => {
            let t = TriggerConfig {
                enter_frames: r.opt(&mut s, "enter_frames").unwrap_or(3),
                exit_frames: r.opt(&mut s, "exit_frames").unwrap_or(5),
                cooldown_s: r.opt(&mut s, "cooldown_s").unwrap_or(0.0),
            };
            r.finish(s, &["enter_frames", "exit_frames", "cooldown_s"]);
            t
        }
        None => TriggerConfig {
            enter_frames: 3,
            exit_frames: 5,
            cooldown_s: 0.0,
        },
    };
    let mqtt = r.table(&mut root, "mqtt").map(|mut s| {
        let m = MqttConfig {
            host: r.req(&mut s, "host").unwrap_or_default(),
            port: r.opt(&mut s, "port").unwrap_or(1883),
            prefix: r.opt(&mut s, "prefix").unwrap_or_else(|| "edgeclip".into()),
            client_id: r.opt(&mut s, "client_id"),
            username: r.opt(&mut s, "username"),
            password: r.opt(&mut s, "password"),
            tls_ca: r.opt::<PathBuf>(&mut s, "tls_ca").map(|p| resolve(base, p)),
            qos: r.opt(&mut s, "qos").unwrap_or(1),
            keep_alive_s: r.opt(&mut s, "keep_alive_s").unwrap_or(30),
            homeassistant_discovery: r.opt(&mut s, "homeassistant_discovery").unwrap_or(false),
            discovery_prefix: r
                .opt(&mut s, "discovery_prefix")
                .unwrap_or_else(|| "homeassistant".into()),
            queue: r.opt(&mut s, "queue").unwrap_or(256),
        };
        r.finish(
            s,
            &[
                "host",
                "port",
                "prefix",
                "client_id",
                "username",
                "password",
                "tls_ca",
                "qos",
                "keep_alive_s",
                "homeassistant_discovery",
                "discovery_prefix",
                "queue",
            ],
        );
        m
    });
    let gpio = r.table(&mut root, "gpio").map(|mut s| {
        let chip = r.opt(&mut s, "chip");
        let backend = r.opt(&mut s, "backend").unwrap_or_default();
        let lines = r
            .tables(&mut s, "lines")
            .into_iter()
            .map(|mut l| {
                let line = read_line_ref(r, &mut l);
                let g = GpioLineConfig {
                    label: r.req(&mut l, "label").unwrap_or_default(),
                    line,
                    mode: r.opt(&mut l, "mode").unwrap_or_default(),
                    pulse_ms: r.opt(&mut l, "pulse_ms").unwrap_or(200),
                    active_low: r.opt(&mut l, "active_low").unwrap_or(false),
                };
                r.finish(l, &["label", "line", "mode", "pulse_ms", "active_low"]);
                g
            })
            .collect();
        r.finish(s, &["chip", "backend", "lines"]);
        GpioConfig {
            chip,
            backend,
            lines,
        }
    });
    let events = match r.table(&mut root, "events") {
        Some(mut s) => {
            let e = EventsConfig {
                stdout: r.opt(&mut s, "stdout").unwrap_or(true),
            };
            r.finish(s, &["stdout"]);
            e
        }
        None => EventsConfig { stdout: true },
    };
    let stats = match r.table(&mut root, "stats") {
        Some(mut s) => {
            let st = StatsConfig {
                interval_s: r.opt(&mut s, "interval_s").unwrap_or(10.0),
            };
            r.finish(s, &["interval_s"]);
            st
        }
        None => StatsConfig { interval_s: 10.0 },
    };
    r.finish(
        root,
        &[
            "camera", "model", "prompts", "matcher", "trigger", "mqtt", "gpio", "events", "stats",
        ],
    );
    Config {
        camera,
        model,
        prompts,
        matcher,
        trigger,
        mqtt,
        gpio,
        events,
        stats,
        file: None,
    }
}

fn default_background() -> Vec<String> {
    vec!["an empty scene".to_owned()]
}

fn placeholder_camera() -> CameraConfig {
    CameraConfig {
        name: "cam0".into(),
        source: SourceSpec::Files {
            pattern: String::new(),
        },
        width: 640,
        height: 480,
        fps: 15.0,
        format: CaptureFormat::Auto,
        looping: false,
        timeout_s: 5.0,
    }
}

fn read_camera(r: &mut Reader, s: &mut Section, base: Option<&Path>) -> CameraConfig {
    let mut c = placeholder_camera();
    let path = s.path.clone();
    if let Some(name) = r.opt(s, "name") {
        c.name = name;
    }
    if let Some(text) = r.req::<String>(s, "source") {
        match SourceSpec::parse(&text, base) {
            Ok(spec) => c.source = spec,
            Err(msg) => r.problem(join(&path, "source"), msg),
        }
    }
    c.width = r.opt(s, "width").unwrap_or(c.width);
    c.height = r.opt(s, "height").unwrap_or(c.height);
    c.fps = r.opt(s, "fps").unwrap_or(c.fps);
    c.format = r.opt(s, "format").unwrap_or(c.format);
    c.looping = r.opt(s, "loop").unwrap_or(c.looping);
    c.timeout_s = r.opt(s, "timeout_s").unwrap_or(c.timeout_s);
    c
}

fn read_prompt(r: &mut Reader, s: &mut Section) -> PromptConfig {
    let label = r.req(s, "label").unwrap_or_default();
    let texts = match s.map.remove("text") {
        Some(v) => read_texts(r, &join(&s.path, "text"), v, false),
        None => {
            r.problem(join(&s.path, "text"), "missing (required)");
            Vec::new()
        }
    };
    PromptConfig {
        label,
        texts,
        threshold: r.opt(s, "threshold"),
        enter_frames: r.opt(s, "enter_frames"),
        exit_frames: r.opt(s, "exit_frames"),
        cooldown_s: r.opt(s, "cooldown_s"),
    }
}

/// A string or an array of strings.
fn read_texts(r: &mut Reader, path: &str, v: toml::Value, list_only: bool) -> Vec<String> {
    match v {
        toml::Value::String(s) if !list_only => vec![s],
        toml::Value::Array(items) => {
            let mut out = Vec::new();
            for (i, item) in items.into_iter().enumerate() {
                match item {
                    toml::Value::String(s) => out.push(s),
                    other => r.problem(
                        format!("{path}[{i}]"),
                        format!("expected a string, got {}", type_name(&other)),
                    ),
                }
            }
            out
        }
        other => {
            let expected = if list_only {
                "an array of strings"
            } else {
                "a string or an array of strings"
            };
            r.problem(
                path,
                format!("expected {expected}, got {}", type_name(&other)),
            );
            Vec::new()
        }
    }
}

fn read_line_ref(r: &mut Reader, s: &mut Section) -> LineRef {
    let path = join(&s.path, "line");
    match s.map.remove("line") {
        Some(toml::Value::String(name)) => LineRef::Name(name),
        Some(toml::Value::Integer(i)) => match u32::try_from(i) {
            Ok(o) => LineRef::Offset(o),
            Err(_) => {
                r.problem(path, format!("a line offset must be >= 0, got {i}"));
                LineRef::Offset(0)
            }
        },
        Some(other) => {
            r.problem(
                path,
                format!(
                    "expected a line name (string) or offset (integer), got {}",
                    type_name(&other)
                ),
            );
            LineRef::Offset(0)
        }
        None => {
            r.problem(path, "missing (required)");
            LineRef::Offset(0)
        }
    }
}

// ------------------------------------------------------------------------------------------
// Validation.

/// Labels and camera names end up in MQTT topics, Home Assistant ids and file names.
fn check_name(problems: &mut Vec<Problem>, key: String, name: &str) {
    if name.is_empty() {
        problems.push(Problem {
            key,
            message: "must not be empty".into(),
        });
    } else if name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        problems.push(Problem {
            key,
            message: format!(
                "must be 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-' (it is used in MQTT \
                 topics), got {name:?}"
            ),
        });
    }
}

/// An MQTT topic prefix: levels separated by '/', no wildcards, no empty level.
fn check_topic_prefix(problems: &mut Vec<Problem>, key: String, prefix: &str) {
    if prefix.is_empty() {
        problems.push(Problem {
            key,
            message: "must not be empty".into(),
        });
    } else if prefix.contains(['+', '#', '\0']) {
        problems.push(Problem {
            key,
            message: format!("must not contain the MQTT wildcards '+' or '#', got {prefix:?}"),
        });
    } else if prefix.split('/').any(str::is_empty) {
        problems.push(Problem {
            key,
            message: format!("must not start or end with '/' or contain \"//\", got {prefix:?}"),
        });
    }
}

struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    fn range_f32(&mut self, key: impl Into<String>, v: f32, lo: f32, hi: f32) {
        if !(v >= lo && v <= hi) {
            self.push(key, format!("must be in [{lo}, {hi}], got {v}"));
        }
    }

    fn range_u64(&mut self, key: impl Into<String>, v: u64, lo: u64, hi: u64) {
        if v < lo || v > hi {
            self.push(key, format!("must be in [{lo}, {hi}], got {v}"));
        }
    }
}

impl Config {
    /// Checks everything that can be checked without touching the environment, and reports
    /// every problem found. [`Config::from_file`] runs it; call it again after building or
    /// changing a `Config` in code.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut c = Checker {
            problems: Vec::new(),
        };
        self.check_camera(&mut c);
        if self.model.bundle.as_os_str().is_empty() {
            c.push("model.bundle", "must not be empty");
        }
        if let Some(t) = self.model.threads {
            c.range_u64("model.threads", t as u64, 1, 256);
        }
        if let Some(k) = &self.model.kernel_cache
            && k.as_os_str().is_empty()
        {
            c.push("model.kernel_cache", "must not be empty");
        }
        self.check_prompts(&mut c);
        let (lo, hi) = self.matcher.score.threshold_range();
        c.range_f32("matcher.threshold", self.matcher.threshold, lo, hi);
        for (i, t) in self.matcher.background.iter().enumerate() {
            if t.trim().is_empty() {
                c.push(format!("matcher.background[{i}]"), "must not be empty");
            }
        }
        c.range_u64(
            "trigger.enter_frames",
            self.trigger.enter_frames.into(),
            1,
            10_000,
        );
        c.range_u64(
            "trigger.exit_frames",
            self.trigger.exit_frames.into(),
            1,
            10_000,
        );
        c.range_f32("trigger.cooldown_s", self.trigger.cooldown_s, 0.0, 86_400.0);
        if let Some(m) = &self.mqtt {
            check_mqtt(&mut c, m);
        }
        if let Some(g) = &self.gpio {
            self.check_gpio(&mut c, g);
        }
        c.range_f32("stats.interval_s", self.stats.interval_s, 0.0, 86_400.0);
        if c.problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                file: self
                    .file
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("<memory>")),
                problems: c.problems,
            })
        }
    }

    fn check_camera(&self, c: &mut Checker) {
        let cam = &self.camera;
        check_name(&mut c.problems, "camera.name".into(), &cam.name);
        match &cam.source {
            SourceSpec::V4l2 { device } => {
                if device.as_os_str().is_empty() {
                    c.push(
                        "camera.source",
                        "v4l2: needs a device path, e.g. v4l2:/dev/video0",
                    );
                }
            }
            SourceSpec::Pipe { command } => {
                if command.trim().is_empty() {
                    c.push(
                        "camera.source",
                        "pipe: needs a command, e.g. pipe:rpicam-vid ...",
                    );
                }
            }
            SourceSpec::Files { pattern } => {
                if pattern.is_empty() {
                    c.push(
                        "camera.source",
                        "files: needs a glob, e.g. files:clip/*.jpg",
                    );
                } else if let Err(e) = glob::Pattern::new(pattern) {
                    c.push(
                        "camera.source",
                        format!("invalid glob {pattern:?}: {}", e.msg),
                    );
                }
            }
        }
        c.range_u64("camera.width", cam.width.into(), 16, 8192);
        c.range_u64("camera.height", cam.height.into(), 16, 8192);
        if cam.format == CaptureFormat::Yuyv && !cam.width.is_multiple_of(2) {
            c.push(
                "camera.width",
                format!("must be even for yuyv, got {}", cam.width),
            );
        }
        c.range_f32("camera.fps", cam.fps, 0.1, 1000.0);
        c.range_f32("camera.timeout_s", cam.timeout_s, 0.01, 3600.0);
        let is_files = matches!(cam.source, SourceSpec::Files { .. });
        if is_files && cam.format != CaptureFormat::Auto {
            c.push(
                "camera.format",
                "files: sources take the format of each file; use \"auto\" or leave it out",
            );
        }
        if cam.looping && !is_files {
            c.push("camera.loop", "only applies to files: sources");
        }
    }

    fn check_prompts(&self, c: &mut Checker) {
        if self.prompts.is_empty() {
            c.push("prompts", "at least one [[prompts]] entry is required");
        }
        let (lo, hi) = self.matcher.score.threshold_range();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, p) in self.prompts.iter().enumerate() {
            let key = |k: &str| format!("prompts[{i}].{k}");
            check_name(&mut c.problems, key("label"), &p.label);
            if !p.label.is_empty() {
                if let Some(first) = seen.get(p.label.as_str()) {
                    c.push(
                        key("label"),
                        format!(
                            "duplicate label {:?} (also prompts[{first}].label)",
                            p.label
                        ),
                    );
                } else {
                    seen.insert(&p.label, i);
                }
            }
            if p.texts.is_empty() {
                c.push(key("text"), "needs at least one text");
            }
            for (j, t) in p.texts.iter().enumerate() {
                if t.trim().is_empty() {
                    let k = if p.texts.len() == 1 {
                        key("text")
                    } else {
                        format!("prompts[{i}].text[{j}]")
                    };
                    c.push(k, "must not be empty");
                }
            }
            if let Some(t) = p.threshold {
                c.range_f32(key("threshold"), t, lo, hi);
            }
            if let Some(n) = p.enter_frames {
                c.range_u64(key("enter_frames"), n.into(), 1, 10_000);
            }
            if let Some(n) = p.exit_frames {
                c.range_u64(key("exit_frames"), n.into(), 1, 10_000);
            }
            if let Some(s) = p.cooldown_s {
                c.range_f32(key("cooldown_s"), s, 0.0, 86_400.0);
            }
        }
    }

    fn check_gpio(&self, c: &mut Checker, g: &GpioConfig) {
        if let Some(chip) = &g.chip
            && chip.trim().is_empty()
        {
            c.push("gpio.chip", "must not be empty (e.g. \"gpiochip0\")");
        }
        if g.lines.is_empty() {
            c.push(
                "gpio.lines",
                "no [[gpio.lines]] configured; remove [gpio] or add lines",
            );
        }
        let mut seen: BTreeMap<&LineRef, usize> = BTreeMap::new();
        for (i, l) in g.lines.iter().enumerate() {
            let key = |k: &str| format!("gpio.lines[{i}].{k}");
            if l.label.is_empty() {
                c.push(key("label"), "must not be empty");
            } else if self.prompt_index(&l.label).is_none() {
                let labels: Vec<&str> = self.prompts.iter().map(|p| p.label.as_str()).collect();
                c.push(
                    key("label"),
                    format!(
                        "{:?} is not a prompt label (labels: {})",
                        l.label,
                        labels.join(", ")
                    ),
                );
            }
            match (&l.line, g.backend) {
                (LineRef::Name(n), _) if n.trim().is_empty() => {
                    c.push(key("line"), "a line name must not be empty");
                }
                (LineRef::Offset(_), GpioBackend::Cdev) if g.chip.is_none() => c.push(
                    key("line"),
                    "a line offset needs gpio.chip (or give the line name, e.g. \"GPIO17\")",
                ),
                (LineRef::Name(n), GpioBackend::Rppal) if bcm_from_name(n).is_none() => c.push(
                    key("line"),
                    format!(
                        "the rppal backend takes BCM numbers or names like \"GPIO17\", got {n:?}"
                    ),
                ),
                (LineRef::Offset(o), GpioBackend::Rppal) if *o > 53 => c.push(
                    key("line"),
                    format!("BCM GPIO numbers go from 0 to 53, got {o}"),
                ),
                _ => {}
            }
            if let Some(first) = seen.get(&l.line) {
                c.push(
                    key("line"),
                    format!("line {} is already used by gpio.lines[{first}]", l.line),
                );
            } else {
                seen.insert(&l.line, i);
            }
            if l.mode == LineMode::Pulse {
                c.range_u64(key("pulse_ms"), l.pulse_ms, 1, 60_000);
            }
        }
    }
}

/// `GPIO17` (any case) -> 17, for the rppal backend.
pub fn bcm_from_name(name: &str) -> Option<u8> {
    let digits = name
        .strip_prefix("GPIO")
        .or_else(|| name.strip_prefix("gpio"))?;
    let n: u8 = digits.parse().ok()?;
    (n <= 53).then_some(n)
}

impl MqttConfig {
    /// Checks the `[mqtt]` table alone (every value rumqttc would assert on among them): what
    /// [`Config::validate`] reports for it, for a sink given a table built in code.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut c = Checker {
            problems: Vec::new(),
        };
        check_mqtt(&mut c, self);
        if c.problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                file: PathBuf::from("<memory>"),
                problems: c.problems,
            })
        }
    }
}

fn check_mqtt(c: &mut Checker, m: &MqttConfig) {
    if m.host.trim().is_empty() {
        c.push("mqtt.host", "must not be empty");
    } else if m.host.contains("://") {
        c.push(
            "mqtt.host",
            format!("give a host name or address, not a URL (got {:?})", m.host),
        );
    } else if m.host.contains(char::is_whitespace) {
        c.push(
            "mqtt.host",
            format!("must not contain whitespace, got {:?}", m.host),
        );
    }
    if m.port == 0 {
        c.push("mqtt.port", "must be in [1, 65535], got 0");
    }
    check_topic_prefix(&mut c.problems, "mqtt.prefix".into(), &m.prefix);
    check_topic_prefix(
        &mut c.problems,
        "mqtt.discovery_prefix".into(),
        &m.discovery_prefix,
    );
    if let Some(id) = &m.client_id {
        // rumqttc asserts when clean_session is off and the id is empty; keep ids sane anyway.
        if id.is_empty() || id.len() > 128 || id.contains(char::is_whitespace) {
            c.push(
                "mqtt.client_id",
                format!("must be 1 to 128 characters without whitespace, got {id:?}"),
            );
        }
    }
    if m.password.is_some() && m.username.is_none() {
        c.push("mqtt.password", "a password needs mqtt.username");
    }
    if let Some(ca) = &m.tls_ca
        && ca.as_os_str().is_empty()
    {
        c.push("mqtt.tls_ca", "must not be empty");
    }
    if m.qos > 2 {
        c.push("mqtt.qos", format!("must be 0, 1 or 2, got {}", m.qos));
    }
    // rumqttc asserts on sub-second keep-alives; MQTT carries it in 16 bits.
    c.range_u64("mqtt.keep_alive_s", m.keep_alive_s, 5, u64::from(u16::MAX));
    c.range_u64("mqtt.queue", m.queue as u64, 1, 100_000);
}

// ------------------------------------------------------------------------------------------
// Probing.

/// One check of [`probe`] that failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeFailure {
    /// The camera source could not be opened or delivered no frame.
    #[error("camera: {0}")]
    Camera(#[from] crate::source::SourceError),
    /// The broker could not be reached.
    #[error("mqtt: {0}")]
    Mqtt(#[from] crate::sink::mqtt::MqttError),
    /// A GPIO line could not be found.
    #[error("gpio: {0}")]
    Gpio(#[from] crate::sink::gpio::GpioError),
    /// `model.runtime = "cuda"`, and CUDA is not usable here.
    #[error("model.runtime: {0}")]
    Runtime(crate::model::ModelError),
    /// The model bundle folder is missing.
    #[error("model: bundle folder {path} is missing or unreadable: {source}")]
    Bundle {
        /// The bundle folder.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// The failed checks of [`probe`], one per line.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.failures.iter().map(|f| f.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct ProbeError {
    /// Every check that failed.
    pub failures: Vec<ProbeFailure>,
}

/// Checks the parts of a config that need the environment, all of them: the model bundle folder
/// exists, `model.runtime` is usable (CUDA loads, for `"cuda"`), the camera opens and delivers
/// one frame within `timeout`, the broker accepts a connection, the GPIO lines exist (they are
/// looked up, not requested, so nothing is driven).
/// Returns one line per successful check.
pub fn probe(config: &Config, timeout: Duration) -> Result<Vec<String>, ProbeError> {
    let mut ok = Vec::new();
    let mut failures = Vec::new();
    match std::fs::read_dir(&config.model.bundle) {
        Ok(_) => ok.push(format!("model: bundle {}", config.model.bundle.display())),
        Err(source) => failures.push(ProbeFailure::Bundle {
            path: config.model.bundle.clone(),
            source,
        }),
    }
    // Where the image tower would run (loads the CUDA driver and libraries, creates nothing).
    match crate::model::device::select(config.model.runtime) {
        Ok(s) => ok.push(format!(
            "model.runtime: {} -> {} ({})",
            config.model.runtime, s.device, s.reason
        )),
        Err(e) => failures.push(ProbeFailure::Runtime(e)),
    }
    match crate::source::probe(&config.camera, timeout) {
        Ok(line) => ok.push(format!("camera: {line}")),
        Err(e) => failures.push(e.into()),
    }
    if let Some(m) = &config.mqtt {
        match crate::sink::mqtt::probe(m, &config.camera.name, timeout) {
            Ok(line) => ok.push(format!("mqtt: {line}")),
            Err(e) => failures.push(e.into()),
        }
    }
    if let Some(g) = &config.gpio {
        match crate::sink::gpio::probe(g) {
            Ok(lines) => ok.extend(lines.into_iter().map(|l| format!("gpio: {l}"))),
            Err(e) => failures.push(e.into()),
        }
    }
    if failures.is_empty() {
        Ok(ok)
    } else {
        Err(ProbeError { failures })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[camera]
source = "v4l2:/dev/video0"
[model]
bundle = "models/demo"
[[prompts]]
label = "person"
text = "a photo of a person"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, Some(Path::new("/etc/edgeclip/edgeclip.toml")))
    }

    fn problems(text: &str) -> Vec<Problem> {
        match parse(text) {
            Ok(_) => panic!("expected problems in:\n{text}"),
            Err(e) => e.problems,
        }
    }

    /// The config text with `extra` appended.
    fn with(extra: &str) -> String {
        format!("{MINIMAL}\n{extra}")
    }

    /// Asserts that exactly one problem is reported, at `key`, mentioning `needle`.
    fn assert_one(text: &str, key: &str, needle: &str) {
        let p = problems(text);
        assert_eq!(p.len(), 1, "expected one problem, got {p:#?}");
        assert_eq!(p[0].key, key, "{p:#?}");
        assert!(
            p[0].message.contains(needle),
            "{:?} does not contain {needle:?}",
            p[0].message
        );
    }

    #[test]
    fn minimal_config_gets_the_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.camera.name, "cam0");
        assert_eq!(
            c.camera.source,
            SourceSpec::V4l2 {
                device: "/dev/video0".into()
            }
        );
        assert_eq!((c.camera.width, c.camera.height), (640, 480));
        assert_eq!(c.camera.fps, 15.0);
        assert_eq!(c.camera.format, CaptureFormat::Auto);
        assert!(!c.camera.looping);
        assert_eq!(c.model.bundle, PathBuf::from("/etc/edgeclip/models/demo"));
        assert_eq!(c.model.runtime, Runtime::Auto);
        assert_eq!(c.model.threads, None);
        assert_eq!(c.prompts[0].texts, vec!["a photo of a person"]);
        assert_eq!(c.matcher.background, vec!["an empty scene"]);
        assert_eq!(c.matcher.threshold, 0.5);
        assert_eq!(c.matcher.score, ScoreKind::Prob);
        assert_eq!(c.trigger.enter_frames, 3);
        assert_eq!(c.trigger.exit_frames, 5);
        assert!(c.mqtt.is_none() && c.gpio.is_none());
        assert!(c.events.stdout);
        assert_eq!(c.stats.interval(), Some(Duration::from_secs(10)));
        assert_eq!(
            c.file.as_deref(),
            Some(Path::new("/etc/edgeclip/edgeclip.toml"))
        );
    }

    #[test]
    fn source_kinds_parse() {
        let base = Path::new("/cfg");
        assert_eq!(
            SourceSpec::parse("pipe:rpicam-vid -o -", Some(base)).unwrap(),
            SourceSpec::Pipe {
                command: "rpicam-vid -o -".into()
            }
        );
        assert_eq!(
            SourceSpec::parse("files:clip/*.jpg", Some(base)).unwrap(),
            SourceSpec::Files {
                pattern: "/cfg/clip/*.jpg".into()
            }
        );
        assert_eq!(
            SourceSpec::parse("files:/abs/*.png", Some(base)).unwrap(),
            SourceSpec::Files {
                pattern: "/abs/*.png".into()
            }
        );
        assert!(SourceSpec::parse("rtsp://x", None).is_err());
        assert!(SourceSpec::parse("/dev/video0", None).is_err());
        assert_eq!(
            SourceSpec::parse("files:a/*.jpg", None)
                .unwrap()
                .to_string(),
            "files:a/*.jpg"
        );
    }

    #[test]
    fn bad_source_is_reported_at_its_key() {
        assert_one(
            &MINIMAL.replace("v4l2:/dev/video0", "rtsp://cam"),
            "camera.source",
            "unknown source kind",
        );
        assert_one(
            &MINIMAL.replace("v4l2:/dev/video0", "v4l2:"),
            "camera.source",
            "needs a device path",
        );
        assert_one(
            &MINIMAL.replace("v4l2:/dev/video0", "pipe:  "),
            "camera.source",
            "needs a command",
        );
        assert_one(
            &MINIMAL.replace("v4l2:/dev/video0", "files:clip/[*.jpg"),
            "camera.source",
            "invalid glob",
        );
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let p = problems("[camera\nsource = 1");
        assert_eq!(p.len(), 1);
        assert!(p[0].message.contains("line 1"), "{}", p[0].message);
        let p = problems(&with("[stats]\ninterval_s = 1\ninterval_s = 2"));
        assert_eq!(p.len(), 1);
        assert!(p[0].message.contains("TOML syntax error"));
    }

    #[test]
    fn unknown_keys_are_all_reported() {
        let p = problems(&with(
            "[events]\nstdout = true\njsonl = true\n[stats]\nintervall_s = 3\n[extra]\na = 1",
        ));
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, vec!["events.jsonl", "stats.intervall_s", "extra"]);
        assert!(p[1].message.contains("expected one of: interval_s"));
    }

    #[test]
    fn wrong_types_are_all_reported() {
        let text = MINIMAL.replace(
            "[model]",
            "width = \"wide\"\nfps = true\nloop = 1\n[model]\nthreads = -2",
        );
        let p = problems(&text);
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            vec!["camera.width", "camera.fps", "camera.loop", "model.threads"]
        );
        assert!(p[0].message.contains("invalid type"), "{}", p[0].message);
    }

    #[test]
    fn missing_required_keys() {
        let p = problems("[camera]\n[model]\n");
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, vec!["camera.source", "model.bundle", "prompts"]);
        let p = problems("");
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, vec!["camera", "model", "prompts"]);
        assert_one(
            &with("[[prompts]]\nlabel = \"x\""),
            "prompts[1].text",
            "missing",
        );
    }

    #[test]
    fn enums_reject_unknown_variants() {
        assert_one(
            &MINIMAL.replace("[model]", "format = \"h264\"\n[model]"),
            "camera.format",
            "unknown variant",
        );
        assert_one(
            &MINIMAL.replace("[model]\n", "[model]\nruntime = \"tpu\"\n"),
            "model.runtime",
            "unknown variant",
        );
        assert_one(
            &with("[matcher]\nscore = \"logit\""),
            "matcher.score",
            "unknown variant",
        );
    }

    #[test]
    fn camera_ranges() {
        let cam = |extra: &str| MINIMAL.replace("[model]", &format!("{extra}\n[model]"));
        assert_one(
            &cam("width = 0"),
            "camera.width",
            "must be in [16, 8192], got 0",
        );
        assert_one(&cam("height = 9000"), "camera.height", "got 9000");
        assert_one(&cam("fps = 0"), "camera.fps", "must be in");
        assert_one(&cam("fps = nan"), "camera.fps", "got NaN");
        assert_one(&cam("timeout_s = -1"), "camera.timeout_s", "must be in");
        assert_one(
            &cam("format = \"yuyv\"\nwidth = 641"),
            "camera.width",
            "must be even",
        );
        assert_one(&cam("name = \"front door\""), "camera.name", "A-Z");
        assert_one(&cam("name = \"\""), "camera.name", "must not be empty");
        assert_one(&cam("loop = true"), "camera.loop", "only applies to files");
        let files = MINIMAL.replace("v4l2:/dev/video0", "files:x/*.jpg");
        assert!(parse(&files.replace("[model]", "loop = true\n[model]")).is_ok());
        assert_one(
            &files.replace("[model]", "format = \"mjpeg\"\n[model]"),
            "camera.format",
            "files: sources",
        );
    }

    #[test]
    fn model_rules() {
        assert_one(
            &MINIMAL.replace("bundle = \"models/demo\"", "bundle = \"\""),
            "model.bundle",
            "must not be empty",
        );
        assert_one(
            &MINIMAL.replace("[model]\n", "[model]\nthreads = 0\n"),
            "model.threads",
            "must be in [1, 256]",
        );
        let c = parse(&MINIMAL.replace("bundle = \"models/demo\"", "bundle = \"/opt/m\"")).unwrap();
        assert_eq!(c.model.bundle, PathBuf::from("/opt/m"));
        assert_eq!((c.model.precision, &c.model.kernel_cache), (None, &None));
        let c = parse(&MINIMAL.replace(
            "[model]\n",
            "[model]\nruntime = \"cuda\"\nprecision = \"fp16\"\nkernel_cache = \"/var/cache/x\"\n",
        ))
        .unwrap();
        assert_eq!(c.model.runtime, Runtime::Cuda);
        assert_eq!(c.model.precision, Some(Precision::Fp16));
        assert_eq!(c.model.kernel_cache, Some(PathBuf::from("/var/cache/x")));
        assert_one(
            &MINIMAL.replace("[model]\n", "[model]\nprecision = \"int4\"\n"),
            "model.precision",
            "unknown variant",
        );
        assert_one(
            &MINIMAL.replace("[model]\n", "[model]\nkernel_cache = \"\"\n"),
            "model.kernel_cache",
            "must not be empty",
        );
        assert_eq!("cuda".parse::<Runtime>(), Ok(Runtime::Cuda));
        assert!(
            "tpu"
                .parse::<Runtime>()
                .unwrap_err()
                .contains("auto, cpu or cuda")
        );
    }

    #[test]
    fn prompt_rules() {
        assert_one(
            &with("[[prompts]]\nlabel = \"cat\"\ntext = \"a cat\"\nthreshold = 1.5"),
            "prompts[1].threshold",
            "must be in [0, 1], got 1.5",
        );
        assert_one(
            &with("[[prompts]]\nlabel = \"person\"\ntext = \"someone\""),
            "prompts[1].label",
            "duplicate label \"person\" (also prompts[0].label)",
        );
        assert_one(
            &with("[[prompts]]\nlabel = \"\"\ntext = \"x\""),
            "prompts[1].label",
            "must not be empty",
        );
        assert_one(
            &with("[[prompts]]\nlabel = \"a/b\"\ntext = \"x\""),
            "prompts[1].label",
            "MQTT",
        );
        assert_one(
            &with("[[prompts]]\nlabel = \"x\"\ntext = []"),
            "prompts[1].text",
            "at least one",
        );
        assert_one(
            &with("[[prompts]]\nlabel = \"x\"\ntext = [\"a\", \" \"]"),
            "prompts[1].text[1]",
            "must not be empty",
        );
        assert_one(
            &with("[[prompts]]\nlabel = \"x\"\ntext = [\"a\", 3]"),
            "prompts[1].text[1]",
            "expected a string",
        );
        assert_one(
            &with("[[prompts]]\nlabel = \"x\"\ntext = 3"),
            "prompts[1].text",
            "a string or an array",
        );
        assert_one(
            &with("[[prompts]]\nlabel = \"x\"\ntext = \"y\"\nenter_frames = 0"),
            "prompts[1].enter_frames",
            "must be in [1, 10000]",
        );
        assert_one(
            &with("[[prompts]]\nlabel = \"x\"\ntext = \"y\"\nexit_frames = 0"),
            "prompts[1].exit_frames",
            "must be in",
        );
        assert_one(
            &with("[[prompts]]\nlabel = \"x\"\ntext = \"y\"\ncooldown_s = -3"),
            "prompts[1].cooldown_s",
            "must be in",
        );
        assert_one(
            &MINIMAL
                .replace(
                    "[[prompts]]\nlabel = \"person\"\ntext = \"a photo of a person\"",
                    "",
                )
                .replace("[camera]", "prompts = 3\n[camera]"),
            "prompts",
            "array of tables",
        );
    }

    #[test]
    fn ensembles_and_overrides() {
        let c = parse(&with(
            "[[prompts]]\nlabel = \"dog\"\ntext = [\"a dog\", \"a puppy\"]\nthreshold = 0.7\n\
             enter_frames = 1\ncooldown_s = 2.5\n[trigger]\nexit_frames = 9",
        ))
        .unwrap();
        assert_eq!(c.prompts[1].texts, vec!["a dog", "a puppy"]);
        assert_eq!(c.prompts[1].display_text(), "a dog");
        assert_eq!(c.prompts[1].threshold, Some(0.7));
        assert_eq!(c.prompts[1].enter_frames, Some(1));
        assert_eq!(c.prompts[1].exit_frames, None);
        assert_eq!(c.prompts[1].cooldown_s, Some(2.5));
        assert_eq!(c.trigger.exit_frames, 9);
        assert_eq!(c.prompt_index("dog"), Some(1));
    }

    #[test]
    fn matcher_and_trigger_rules() {
        assert_one(
            &with("[matcher]\nthreshold = -0.1"),
            "matcher.threshold",
            "[0, 1]",
        );
        assert!(parse(&with("[matcher]\nscore = \"cosine\"\nthreshold = -0.1")).is_ok());
        assert_one(
            &with("[matcher]\nscore = \"cosine\"\nthreshold = 1.1"),
            "matcher.threshold",
            "[-1, 1]",
        );
        assert_one(
            &with("[matcher]\nbackground = [\"\"]"),
            "matcher.background[0]",
            "must not be empty",
        );
        assert_one(
            &with("[matcher]\nbackground = \"a wall\""),
            "matcher.background",
            "an array of strings",
        );
        assert!(parse(&with("[matcher]\nbackground = []")).is_ok());
        assert_one(
            &with("[trigger]\nenter_frames = 0"),
            "trigger.enter_frames",
            "[1, 10000]",
        );
        assert_one(
            &with("[trigger]\nexit_frames = 0"),
            "trigger.exit_frames",
            "[1, 10000]",
        );
        assert_one(
            &with("[trigger]\ncooldown_s = -1"),
            "trigger.cooldown_s",
            "must be in",
        );
    }

    #[test]
    fn mqtt_defaults() {
        let c = parse(&with("[mqtt]\nhost = \"localhost\"")).unwrap();
        let m = c.mqtt.unwrap();
        assert_eq!(m.port, 1883);
        assert_eq!(m.prefix, "edgeclip");
        assert_eq!(m.qos, 1);
        assert_eq!(m.keep_alive_s, 30);
        assert_eq!(m.queue, 256);
        assert!(!m.homeassistant_discovery);
        assert_eq!(m.discovery_prefix, "homeassistant");
    }

    #[test]
    fn mqtt_rules() {
        let m = |extra: &str| with(&format!("[mqtt]\nhost = \"broker\"\n{extra}"));
        assert_one(&with("[mqtt]\nport = 1"), "mqtt.host", "missing");
        assert_one(
            &with("[mqtt]\nhost = \"mqtt://broker\""),
            "mqtt.host",
            "not a URL",
        );
        assert_one(&m("port = 0"), "mqtt.port", "[1, 65535]");
        assert_one(&m("port = 70000"), "mqtt.port", "u16");
        assert_one(&m("qos = 3"), "mqtt.qos", "must be 0, 1 or 2, got 3");
        assert_one(
            &m("keep_alive_s = 2"),
            "mqtt.keep_alive_s",
            "must be in [5, 65535], got 2",
        );
        assert_one(&m("keep_alive_s = 70000"), "mqtt.keep_alive_s", "got 70000");
        assert_one(&m("queue = 0"), "mqtt.queue", "must be in [1, 100000]");
        assert_one(&m("prefix = \"home/#\""), "mqtt.prefix", "wildcards");
        assert_one(
            &m("prefix = \"/home\""),
            "mqtt.prefix",
            "must not start or end",
        );
        assert_one(&m("prefix = \"\""), "mqtt.prefix", "must not be empty");
        assert_one(
            &m("discovery_prefix = \"ha/\""),
            "mqtt.discovery_prefix",
            "end with",
        );
        assert_one(&m("client_id = \"\""), "mqtt.client_id", "1 to 128");
        assert_one(&m("client_id = \"a b\""), "mqtt.client_id", "whitespace");
        assert_one(
            &m("password = \"x\""),
            "mqtt.password",
            "needs mqtt.username",
        );
        assert!(
            parse(&m(
                "username = \"u\"\npassword = \"p\"\nprefix = \"home/cams\""
            ))
            .is_ok()
        );
        let c = parse(&m("tls_ca = \"ca.pem\"")).unwrap();
        assert_eq!(
            c.mqtt.unwrap().tls_ca,
            Some(PathBuf::from("/etc/edgeclip/ca.pem"))
        );
    }

    #[test]
    fn gpio_rules() {
        let g = |body: &str| with(&format!("[gpio]\nchip = \"gpiochip0\"\n{body}"));
        let c = parse(&g(
            "[[gpio.lines]]\nlabel = \"person\"\nline = \"GPIO17\"\n\
             [[gpio.lines]]\nlabel = \"person\"\nline = 27\nmode = \"pulse\"\npulse_ms = 50\n\
             active_low = true",
        ))
        .unwrap();
        let gpio = c.gpio.unwrap();
        assert_eq!(gpio.chip_path(), Some(PathBuf::from("/dev/gpiochip0")));
        assert_eq!(gpio.backend, GpioBackend::Cdev);
        assert_eq!(gpio.lines[0].line, LineRef::Name("GPIO17".into()));
        assert_eq!(gpio.lines[0].mode, LineMode::Level);
        assert_eq!(gpio.lines[1].line, LineRef::Offset(27));
        assert_eq!(gpio.lines[1].mode, LineMode::Pulse);
        assert_eq!(gpio.lines[1].pulse_ms, 50);
        assert!(gpio.lines[1].active_low);

        assert_one(
            &g("[[gpio.lines]]\nlabel = \"dog\"\nline = 3"),
            "gpio.lines[0].label",
            "\"dog\" is not a prompt label (labels: person)",
        );
        assert_one(
            &with("[gpio]\n[[gpio.lines]]\nlabel = \"person\"\nline = 3"),
            "gpio.lines[0].line",
            "needs gpio.chip",
        );
        assert_one(
            &g("[[gpio.lines]]\nlabel = \"person\"\nline = -3"),
            "gpio.lines[0].line",
            ">= 0",
        );
        assert_one(
            &g("[[gpio.lines]]\nlabel = \"person\"\nline = 1.5"),
            "gpio.lines[0].line",
            "name (string) or offset",
        );
        assert_one(
            &g("[[gpio.lines]]\nlabel = \"person\""),
            "gpio.lines[0].line",
            "missing",
        );
        assert_one(
            &g("[[gpio.lines]]\nlabel = \"person\"\nline = 3\n\
                [[gpio.lines]]\nlabel = \"person\"\nline = 3"),
            "gpio.lines[1].line",
            "already used by gpio.lines[0]",
        );
        assert_one(
            &g("[[gpio.lines]]\nlabel = \"person\"\nline = 3\nmode = \"pulse\"\npulse_ms = 0"),
            "gpio.lines[0].pulse_ms",
            "[1, 60000]",
        );
        assert_one(
            &g("[[gpio.lines]]\nlabel = \"person\"\nline = 3\nmode = \"blink\""),
            "gpio.lines[0].mode",
            "unknown variant",
        );
        assert_one(&g(""), "gpio.lines", "no [[gpio.lines]]");
        assert_one(
            &with(
                "[gpio]\nbackend = \"rppal\"\n[[gpio.lines]]\nlabel = \"person\"\nline = \"LED\"",
            ),
            "gpio.lines[0].line",
            "BCM numbers",
        );
        assert_one(
            &with("[gpio]\nbackend = \"rppal\"\n[[gpio.lines]]\nlabel = \"person\"\nline = 60"),
            "gpio.lines[0].line",
            "0 to 53",
        );
        assert!(
            parse(&with(
                "[gpio]\nbackend = \"rppal\"\n[[gpio.lines]]\nlabel = \"person\"\nline = \"GPIO5\""
            ))
            .is_ok()
        );
        assert_one(
            &g("[[gpio.lines]]\nlabel = \"person\"\nline = 3\nlevel = true"),
            "gpio.lines[0].level",
            "unknown key",
        );
    }

    #[test]
    fn bcm_names() {
        assert_eq!(bcm_from_name("GPIO17"), Some(17));
        assert_eq!(bcm_from_name("gpio4"), Some(4));
        assert_eq!(bcm_from_name("GPIO54"), None);
        assert_eq!(bcm_from_name("LED"), None);
    }

    #[test]
    fn stats_and_events() {
        let c = parse(&with("[stats]\ninterval_s = 0\n[events]\nstdout = false")).unwrap();
        assert_eq!(c.stats.interval(), None);
        assert!(!c.events.stdout);
        assert_one(
            &with("[stats]\ninterval_s = -5"),
            "stats.interval_s",
            "must be in",
        );
        assert_one(
            &format!("stats = 5\n{MINIMAL}"),
            "stats",
            "expected a table",
        );
    }

    #[test]
    fn placeholders_are_not_reported_twice() {
        // `width` fails to parse; the placeholder value must not trigger a range problem too,
        // and a bad source must not also be reported as an empty glob.
        let p = problems(
            &MINIMAL
                .replace("v4l2:/dev/video0", "bogus")
                .replace("[model]", "width = \"x\"\n[model]"),
        );
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, vec!["camera.source", "camera.width"]);
    }

    #[test]
    fn many_problems_at_once_and_display() {
        let text = r#"
[camera]
source = "v4l2:/dev/video0"
fps = -1
colour = "red"
[model]
bundle = "m"
[[prompts]]
label = "a"
text = "x"
threshold = 2
[[prompts]]
label = "a"
text = "y"
[mqtt]
host = "h"
qos = 5
"#;
        let e = parse(text).unwrap_err();
        let keys: Vec<&str> = e.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "camera.colour",
                "camera.fps",
                "prompts[0].threshold",
                "prompts[1].label",
                "mqtt.qos"
            ]
        );
        let shown = e.to_string();
        assert_eq!(shown.lines().count(), 5);
        assert!(
            shown
                .lines()
                .all(|l| l.starts_with("/etc/edgeclip/edgeclip.toml: ")),
            "{shown}"
        );
        assert!(shown.contains(
            "/etc/edgeclip/edgeclip.toml: prompts[0].threshold: must be in [0, 1], got 2"
        ));
        assert!(e.has_problem_at("prompts"));
        assert!(e.has_problem_at("camera.fps"));
        assert!(!e.has_problem_at("camera.f"));
    }

    #[test]
    fn validate_checks_configs_built_in_code() {
        let mut c = parse(MINIMAL).unwrap();
        assert!(c.validate().is_ok());
        c.prompts[0].threshold = Some(1.5);
        c.mqtt = Some(MqttConfig {
            host: "h".into(),
            port: 1883,
            prefix: "p".into(),
            client_id: None,
            username: None,
            password: None,
            tls_ca: None,
            qos: 1,
            keep_alive_s: 1,
            homeassistant_discovery: false,
            discovery_prefix: "homeassistant".into(),
            queue: 10,
        });
        let e = c.validate().unwrap_err();
        let keys: Vec<&str> = e.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, vec!["prompts[0].threshold", "mqtt.keep_alive_s"]);
    }

    #[test]
    fn unreadable_file_is_a_config_error_naming_it() {
        let e = Config::from_file("/nonexistent/edgeclip.toml").unwrap_err();
        assert_eq!(e.file, PathBuf::from("/nonexistent/edgeclip.toml"));
        assert!(
            e.to_string()
                .starts_with("/nonexistent/edgeclip.toml: cannot read")
        );
    }

    #[test]
    fn camera_timeout_falls_back_when_unusable() {
        let mut c = placeholder_camera();
        assert_eq!(c.timeout(), Duration::from_secs(5));
        c.timeout_s = f32::NAN;
        assert_eq!(c.timeout(), Duration::from_secs(1));
    }
}
