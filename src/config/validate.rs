//! The second pass: what the structure cannot say. Ranges, cross references (a GPIO line must
//! name a prompt label), uniqueness, names that end up in MQTT topics, and every option value
//! `rumqttc` would assert on. Pure: nothing here touches the environment.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::checker::{Checker, check_name};
use super::{
    Config, ConfigError, GpioBackend, GpioConfig, LineMode, LineRef, MqttConfig, PASSWORD_ENV,
    PasswordOrigin, Problem, SnapshotsConfig,
};

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

impl Config {
    /// Checks everything that can be checked without touching the environment, and reports
    /// every problem found. [`Config::from_file`] runs it; call it again after building or
    /// changing a `Config` in code.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut c = Checker {
            problems: Vec::new(),
        };
        self.check_cameras(&mut c);
        if self.model.bundle.as_os_str().is_empty() {
            c.push("model.bundle", "must not be empty");
        }
        if let Some(t) = self.model.threads {
            c.range_u64("model.threads", t as u64, 1, 256);
        }
        if let Some(w) = self.model.workers {
            c.range_u64("model.workers", w as u64, 1, 64);
        }
        if let Some(k) = &self.model.kernel_cache
            && k.as_os_str().is_empty()
        {
            c.push("model.kernel_cache", "must not be empty");
        }
        if self.prompts.is_empty() && self.cameras.iter().all(|cam| cam.prompts.is_empty()) {
            c.push("prompts", "at least one [[prompts]] entry is required");
        }
        super::validate_cameras::check_prompt_list(&mut c, self, &self.prompts, "prompts");
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
            for cam in &self.cameras {
                if m.device.as_deref() == Some(cam.name.as_str()) {
                    c.push(
                        "mqtt.device",
                        format!(
                            "must differ from {}.name ({:?}): both would publish \
                             PREFIX/{}/availability",
                            cam.key, cam.name, cam.name
                        ),
                    );
                }
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
            } else if !self.all_labels().contains(&l.label.as_str()) {
                let labels = self.all_labels();
                c.push(
                    key("label"),
                    format!(
                        "{:?} is not a prompt label (labels: {})",
                        l.label,
                        labels.join(", ")
                    ),
                );
            }
            self.check_line_place(c, i, l);
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
