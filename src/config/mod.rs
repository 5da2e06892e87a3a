//! The daemon's TOML configuration: its schema (this file, plain data), the reader that fills it
//! ([`read`]), the semantic checks ([`validate`]) and the generated reference ([`reference`]).
//!
//! Loading is two passes, and both collect every problem instead of stopping at the first one,
//! so an operator fixes a config in one round trip:
//!
//! 1. the structure ([`read`]): TOML syntax, unknown keys (the equivalent of serde's
//!    `deny_unknown_fields`, but all of them reported), missing required keys and wrong types;
//!    leaf values are read with serde, each on its own so one bad value does not hide the next.
//!    Each key, its type, default and meaning are written once, in the reader;
//! 2. the semantics ([`Config::validate`], pure): ranges, cross references (a GPIO line must name
//!    a prompt label), uniqueness, and every option value `rumqttc` would assert on.
//!
//! Every problem carries its key path (`prompts[2].threshold`) and the error names the file.
//! The config imports nothing but plain data (`model::options`): checks that touch the
//! environment (opening the camera, connecting to the broker, finding GPIO lines) live above the
//! components, in [`crate::doctor`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::model::options::{Precision, Runtime};

mod calibration;
mod cameras;
mod checker;
mod read;
mod read_cameras;
mod read_http;
mod read_mqtt;
mod read_prompts;
mod read_snapshots;
mod read_store;
mod reader;
pub mod reference;
mod secrets;
#[cfg(test)]
mod tests;
mod validate;
mod validate_cameras;

pub use cameras::{ALL_ZONE, CameraConfig, Rect, ZoneConfig, ZoneView};
pub use read_http::HttpConfig;
pub use read_store::StoreConfig;
pub use reader::{KeyDoc, Presence, TableKind};
pub use secrets::{PASSWORD_ENV, Password, PasswordOrigin};
pub use validate::bcm_from_name;

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

/// The whole configuration. Every key's type, default and meaning are in the reader
/// (`config/read.rs`) and, generated from it, in `docs/CONFIG.md`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `[[cameras]]` (or `[camera]`, read as a list of one): at least one, names unique.
    pub cameras: Vec<CameraConfig>,
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
    /// `[snapshots]`.
    pub snapshots: SnapshotsConfig,
    /// `[store]`.
    pub store: StoreConfig,
    /// `[http]`.
    pub http: HttpConfig,
    /// The file this config was read from, if any (for messages).
    pub file: Option<PathBuf>,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureFormat {
    /// V4L2: MJPEG if offered, else YUYV. Pipe: MJPEG. Files: decided by each file.
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
    /// Where the encoder runs.
    pub runtime: Runtime,
    /// Image tower threads (tract's intra-op threads); `None`: chosen with the workers.
    pub threads: Option<usize>,
    /// `workers`: inference workers a round's images are split over; `None`: one per image of a
    /// round (cameras x zones), up to the cores.
    pub workers: Option<usize>,
    /// `precision`: which of the image tower's files to run. `None`: chosen for
    /// the device among the shipped files (see [`crate::model::Device::pick_precision`]: on the
    /// CPU, dynamic int8 where it has int8 dot-product instructions, else fp32; on a GPU, fp16
    /// or fp32).
    pub precision: Option<Precision>,
    /// `precision_timing`: with no `precision`, time the shipped image files on the CPU and run
    /// the fastest (cached); off: the flag-based choice.
    pub precision_timing: bool,
    /// `prepare_ahead`: preprocess the next round on a second thread while the tower encodes
    /// this one, when a core is free.
    pub prepare_ahead: bool,
    /// `kernel_cache`: where compiled GPU kernels are kept between runs, resolved against the
    /// config file's folder. `None`: the daemon's cache folder
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
    /// Texts that must not fire this label.
    pub negatives: Vec<String>,
    /// Example images (paths or glob patterns, resolved against the config's folder).
    pub images: Vec<PathBuf>,
    /// Images of things that must not fire this label (paths or glob patterns).
    pub negative_images: Vec<PathBuf>,
    /// `zones`: the zones this label is watched in. `None`: every zone.
    pub zones: Option<Vec<String>>,
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
    /// Background prompts that compete in the softmax but never fire.
    pub background: Vec<String>,
    /// Default threshold for every prompt.
    pub threshold: f32,
    /// Which value the thresholds apply to.
    pub score: ScoreKind,
    /// What else the labels compete with.
    pub vocabulary: Vocabulary,
    /// Vocabulary entries at least this close to a label's text are its synonyms.
    pub synonym_cosine: f32,
    /// The weight of the exemplar term, in cosine units.
    pub exemplar_weight: f32,
    /// The sharpness of the exemplar term.
    pub exemplar_sharpness: f32,
    /// The config's exemplar folder: `LABEL/` and `LABEL/negative/` inside.
    pub exemplars_dir: PathBuf,
    /// `calibration`: the calibration file whose thresholds were read into the prompts'
    /// `threshold` (resolved against the config file's folder).
    pub calibration: Option<PathBuf>,
}

/// `matcher.vocabulary`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vocabulary {
    /// The model bundle's vocabulary (none when it carries none).
    Bundle,
    /// No vocabulary: the labels compete with each other and the background only.
    None,
    /// An embeddings file made with the bundle's weights.
    File(PathBuf),
}

/// `matcher.score`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoreKind {
    /// Softmax probability over prompts and background (thresholds in `[0, 1]`).
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
    /// Consecutive frames at or above the threshold before `start`.
    pub enter_frames: u32,
    /// Consecutive frames below the threshold before `end`.
    pub exit_frames: u32,
    /// Seconds after an `end` during which no new `start` fires.
    pub cooldown_s: f32,
}

/// `[mqtt]`.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttConfig {
    /// Broker host name or address.
    pub host: String,
    /// Broker port (read as 1883, or 8883 with TLS, when the file does not set it).
    pub port: u16,
    /// Topic prefix.
    pub prefix: String,
    /// MQTT client id; `None`: `edgeclip-<hostname>-<camera>`.
    pub client_id: Option<String>,
    /// User name.
    pub username: Option<String>,
    /// Password (needs `username`): from `password_file`, the environment variable
    /// [`PASSWORD_ENV`] or `password`, in that order. Its `Debug` does not show it.
    pub password: Option<Password>,
    /// Connect with TLS. A file sets it with `tls = true`, or implies it with `tls_ca` or
    /// `tls_cert`.
    pub tls: bool,
    /// CA certificate(s) (PEM) the broker's certificate must chain to; `None` with `tls`: the
    /// system's roots. Resolved against the config file's folder.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate chain (PEM) for brokers that ask for one (mutual TLS); with `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1); with `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// QoS of events and state messages: 0, 1 or 2.
    pub qos: u8,
    /// Keep-alive interval, at least 5 s.
    pub keep_alive_s: u64,
    /// Publish Home Assistant discovery configs.
    pub homeassistant_discovery: bool,
    /// Home Assistant's discovery prefix.
    pub discovery_prefix: String,
    /// Most events held while the broker is away; beyond it the oldest episode is dropped.
    pub queue: usize,
    /// Events older than this when (re)sent are dropped; 0: no limit.
    pub max_event_age_s: u64,
    /// The device (this process) in `PREFIX/DEVICE/availability`; `None`: the host name.
    pub device: Option<String>,
}

/// `[gpio]`.
#[derive(Debug, Clone, PartialEq)]
pub struct GpioConfig {
    /// The chip: a path (`/dev/gpiochip0`) or a name (`gpiochip0`). Needed for lines given by
    /// offset; lines given by name are searched on it, or on every chip when it is absent.
    pub chip: Option<String>,
    /// Which driver to use.
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GpioBackend {
    /// The GPIO character device (`gpiocdev`), any Linux board.
    Cdev,
    /// The Raspberry Pi driver (`rppal`); lines by BCM number or `GPIO<n>` name.
    Rppal,
}

/// One `[[gpio.lines]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct GpioLineConfig {
    /// The prompt label that drives this line.
    pub label: String,
    /// `camera`: only this camera's events drive it. `None`: any camera's.
    pub camera: Option<String>,
    /// `zone`: only events of this zone drive it. `None`: any zone's.
    pub zone: Option<String>,
    /// The line, by name or offset.
    pub line: LineRef,
    /// Level or pulse.
    pub mode: LineMode,
    /// Pulse length in milliseconds (pulse mode).
    pub pulse_ms: u64,
    /// Drive the line low when active.
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LineMode {
    /// Active while the label is active.
    Level,
    /// Active for `pulse_ms` after each start.
    Pulse,
}

/// `[events]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventsConfig {
    /// Write events as JSON lines to stdout.
    pub stdout: bool,
}

/// `[stats]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatsConfig {
    /// Seconds between statistics lines; 0 turns them off.
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

/// `[snapshots]`: a JPEG of the best frame of every start event's first moments, kept under
/// `dir/CAMERA/LABEL/` with a count and size limit.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotsConfig {
    /// Write a snapshot for every start event.
    pub enabled: bool,
    /// The snapshot folder, resolved against the config file's folder. `None`: `snapshots/` in
    /// the daemon's state folder ([`crate::paths::state_dir`], `/var/lib/edgeclip` under
    /// systemd).
    pub dir: Option<PathBuf>,
    /// Most snapshot files kept per camera (all its labels together); the oldest go first.
    pub max_count: u32,
    /// Most megabytes (10^6 bytes) of snapshot files kept per camera.
    pub max_mb: u32,
    /// Seconds after a start during which the best-scoring frame is sought.
    pub window_s: f32,
    /// JPEG quality (1 to 100) of frames that must be encoded (camera JPEGs are kept as they
    /// came).
    pub jpeg_quality: u8,
}

impl SnapshotsConfig {
    /// The selection window as a [`Duration`] (zero if the configured value is unusable).
    pub fn window(&self) -> Duration {
        Duration::try_from_secs_f32(self.window_s).unwrap_or(Duration::ZERO)
    }

    /// `max_mb` in bytes.
    pub fn max_bytes(&self) -> u64 {
        u64::from(self.max_mb) * 1_000_000
    }
}

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
                    problems: vec![read::syntax_problem(text, &e)],
                });
            }
        };
        let mut reader = reader::Reader::default();
        let mut config = read::read_config(&mut reader, table, base.as_deref());
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

    /// What is risky in a config that loads: an inline `mqtt.password` in a file that anyone
    /// on the machine may read (the file's permissions are the one thing looked at). The daemon
    /// logs these at start; `check-config` prints them.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        #[cfg(unix)]
        if let (Some(file), Some(m)) = (&self.file, &self.mqtt)
            && m.password
                .as_ref()
                .is_some_and(|p| *p.origin() == PasswordOrigin::Inline)
            && let Ok(meta) = std::fs::metadata(file)
        {
            use std::os::unix::fs::PermissionsExt;
            out.extend(secrets::world_readable_warning(
                file,
                meta.permissions().mode(),
            ));
        }
        out
    }

    /// The index of a prompt label.
    pub fn prompt_index(&self, label: &str) -> Option<usize> {
        self.prompts.iter().position(|p| p.label == label)
    }
}
