//! The second pass: what the structure cannot say. Ranges, cross references (a GPIO line must
//! name a prompt label), uniqueness, names that end up in MQTT topics, and every option value
//! `rumqttc` would assert on. Pure: nothing here touches the environment.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use super::{
    CaptureFormat, Config, ConfigError, GpioBackend, GpioConfig, LineMode, LineRef, MqttConfig,
    PASSWORD_ENV, PasswordOrigin, Problem, SnapshotsConfig, SourceSpec,
};

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
        c.range_f32(
            "matcher.synonym_cosine",
            self.matcher.synonym_cosine,
            0.0,
            1.0,
        );
        c.range_f32(
            "matcher.exemplar_weight",
            self.matcher.exemplar_weight,
            0.0,
            1.0,
        );
        c.range_f32(
            "matcher.exemplar_sharpness",
            self.matcher.exemplar_sharpness,
            0.0,
            100.0,
        );
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
            if m.device.as_deref() == Some(self.camera.name.as_str()) {
                c.push(
                    "mqtt.device",
                    format!(
                        "must differ from camera.name ({:?}): both would publish \
                         PREFIX/{}/availability",
                        self.camera.name, self.camera.name
                    ),
                );
            }
        }
        if let Some(g) = &self.gpio {
            self.check_gpio(&mut c, g);
        }
        c.range_f32("stats.interval_s", self.stats.interval_s, 0.0, 86_400.0);
        check_snapshots(&mut c, &self.snapshots);
        super::read_store::check(&self.store, |k, m| c.push(k, m));
        super::read_http::check(&self.http, |k, m| c.push(k, m));
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
        c.range_f32("camera.offline_after_s", cam.offline_after_s, 0.1, 86400.0);
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
            for (j, n) in p.negatives.iter().enumerate() {
                let k = format!("prompts[{i}].negatives[{j}]");
                if n.trim().is_empty() {
                    c.push(k, "must not be empty");
                } else if p.texts.contains(n) {
                    c.push(
                        k,
                        format!(
                            "{n:?} is this label's own text: a label cannot be its own negative"
                        ),
                    );
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

/// `[snapshots]`: checked whether or not it is enabled, so turning it on later cannot surface
/// an old mistake.
fn check_snapshots(c: &mut Checker, s: &SnapshotsConfig) {
    if let Some(d) = &s.dir
        && d.as_os_str().is_empty()
    {
        c.push("snapshots.dir", "must not be empty");
    }
    c.range_u64("snapshots.max_count", s.max_count.into(), 1, 10_000_000);
    c.range_u64("snapshots.max_mb", s.max_mb.into(), 1, 10_000_000);
    c.range_f32("snapshots.window_s", s.window_s, 0.0, 60.0);
    c.range_u64("snapshots.jpeg_quality", s.jpeg_quality.into(), 1, 100);
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
    if let Some(p) = &m.password
        && m.username.is_none()
    {
        match p.origin() {
            PasswordOrigin::Inline => c.push("mqtt.password", "a password needs mqtt.username"),
            PasswordOrigin::File(_) => {
                c.push("mqtt.password_file", "a password needs mqtt.username")
            }
            PasswordOrigin::Env => c.push(
                "mqtt.username",
                format!("{PASSWORD_ENV} is set: a password needs mqtt.username"),
            ),
        }
    }
    check_mqtt_tls(c, m);
    if m.qos > 2 {
        c.push("mqtt.qos", format!("must be 0, 1 or 2, got {}", m.qos));
    }
    // rumqttc asserts on sub-second keep-alives; MQTT carries it in 16 bits.
    c.range_u64("mqtt.keep_alive_s", m.keep_alive_s, 5, u64::from(u16::MAX));
    c.range_u64("mqtt.queue", m.queue as u64, 1, 100_000);
    c.range_u64(
        "mqtt.max_event_age_s",
        m.max_event_age_s,
        0,
        10 * 365 * 86_400,
    );
    if let Some(device) = &m.device {
        check_name(&mut c.problems, "mqtt.device".into(), device);
    }
}

/// The TLS keys: files named, a client certificate with its key, and no `tls = false` beside
/// them. What the files hold is checked where they are read (the sink's options), once.
fn check_mqtt_tls(c: &mut Checker, m: &MqttConfig) {
    for (key, file) in [
        ("mqtt.tls_ca", &m.tls_ca),
        ("mqtt.tls_cert", &m.tls_cert),
        ("mqtt.tls_key", &m.tls_key),
    ] {
        if file.as_ref().is_some_and(|f| f.as_os_str().is_empty()) {
            c.push(key, "must not be empty");
        }
    }
    match (&m.tls_cert, &m.tls_key) {
        (Some(_), None) => c.push(
            "mqtt.tls_key",
            "mqtt.tls_cert needs its private key: set mqtt.tls_key",
        ),
        (None, Some(_)) => c.push(
            "mqtt.tls_cert",
            "mqtt.tls_key needs its certificate: set mqtt.tls_cert",
        ),
        _ => {}
    }
    let tls_file = [("mqtt.tls_ca", &m.tls_ca), ("mqtt.tls_cert", &m.tls_cert)]
        .into_iter()
        .find(|(_, f)| f.is_some());
    if !m.tls
        && let Some((key, _)) = tls_file
    {
        c.push(
            "mqtt.tls",
            format!("is false, but {key} is set: remove one of them"),
        );
    }
}
