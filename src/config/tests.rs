use std::path::{Path, PathBuf};
use std::time::Duration;

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
    assert_eq!(c.camera().name, "cam0");
    assert_eq!(
        c.camera().source,
        SourceSpec::V4l2 {
            device: "/dev/video0".into()
        }
    );
    assert_eq!((c.camera().width, c.camera().height), (640, 480));
    assert_eq!(c.camera().fps, 15.0);
    assert_eq!(c.camera().format, CaptureFormat::Auto);
    assert!(!c.camera().looping);
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
        &cam("offline_after_s = 0"),
        "camera.offline_after_s",
        "must be in [0.1, 86400], got 0",
    );
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
    assert_eq!(m.max_event_age_s, 3600);
    assert_eq!(m.device, None, "the host name, found by the sink");
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
    assert_one(&m("device = \"pi/4\""), "mqtt.device", "A-Z");
    assert_one(&m("device = \"\""), "mqtt.device", "must not be empty");
    assert_one(
        &m("device = \"cam0\""),
        "mqtt.device",
        "must differ from camera.name",
    );
    assert_one(&m("max_event_age_s = -1"), "mqtt.max_event_age_s", "");
    assert!(parse(&m("device = \"pi-4\"\nmax_event_age_s = 0")).is_ok());
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
    let mqtt = c.mqtt.unwrap();
    assert_eq!(mqtt.tls_ca, Some(PathBuf::from("/etc/edgeclip/ca.pem")));
    // `tls_ca` implies TLS, and TLS the port 8883 unless one is given.
    assert!(mqtt.tls);
    assert_eq!(mqtt.port, 8883);
}

/// `[mqtt]` with `host` and `extra`, in a config file `edgeclip.toml` written to `dir`.
fn mqtt_file(dir: &Path, extra: &str) -> Result<Config, ConfigError> {
    let file = dir.join("edgeclip.toml");
    std::fs::write(&file, with(&format!("[mqtt]\nhost = \"broker\"\n{extra}"))).unwrap();
    Config::from_file(&file)
}

#[test]
fn mqtt_password_file_is_read_relative_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mqtt-password"), "s3cret-pw\n").unwrap();
    let c = mqtt_file(
        dir.path(),
        "username = \"u\"\npassword_file = \"mqtt-password\"",
    )
    .unwrap();
    let p = c.mqtt.unwrap().password.unwrap();
    assert_eq!(p.expose(), "s3cret-pw");
    assert_eq!(
        p.origin(),
        &PasswordOrigin::File(dir.path().join("mqtt-password"))
    );
    // An absolute path (systemd's credentials folder, say) is taken as it is.
    let abs = dir.path().join("abs");
    std::fs::write(&abs, "other\n").unwrap();
    let c = parse(&with(&format!(
        "[mqtt]\nhost = \"b\"\nusername = \"u\"\npassword_file = \"{}\"",
        abs.display()
    )))
    .unwrap();
    assert_eq!(c.mqtt.unwrap().password.unwrap().expose(), "other");
}

#[test]
fn mqtt_password_file_problems_name_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let p = match mqtt_file(dir.path(), "username = \"u\"\npassword_file = \"nope\"") {
        Err(e) => e.problems,
        Ok(_) => panic!("a missing password file was accepted"),
    };
    assert_eq!(p.len(), 1, "{p:#?}");
    assert_eq!(p[0].key, "mqtt.password_file");
    assert!(p[0].message.contains(&*missing.to_string_lossy()), "{p:?}");
    assert!(
        p[0].message.contains("cannot read the password file"),
        "{p:?}"
    );
    std::fs::write(dir.path().join("empty"), "\n").unwrap();
    let e = mqtt_file(dir.path(), "username = \"u\"\npassword_file = \"empty\"").unwrap_err();
    assert_eq!(e.problems.len(), 1, "{e}");
    assert_eq!(e.problems[0].key, "mqtt.password_file");
    assert!(e.problems[0].message.contains("is empty"), "{e}");
    // Both, or without a user name.
    std::fs::write(dir.path().join("pw"), "x").unwrap();
    let e = mqtt_file(
        dir.path(),
        "username = \"u\"\npassword = \"y\"\npassword_file = \"pw\"",
    )
    .unwrap_err();
    assert_eq!(e.problems.len(), 1, "{e}");
    assert_eq!(e.problems[0].key, "mqtt.password_file");
    assert!(e.problems[0].message.contains("not both"), "{e}");
    let e = mqtt_file(dir.path(), "password_file = \"pw\"").unwrap_err();
    assert_eq!(e.problems.len(), 1, "{e}");
    assert_eq!(e.problems[0].key, "mqtt.password_file");
    assert!(e.problems[0].message.contains("needs mqtt.username"), "{e}");
}

#[test]
fn mqtt_tls_keys() {
    let m = |extra: &str| with(&format!("[mqtt]\nhost = \"broker\"\n{extra}"));
    let c = parse(&m("tls = true")).unwrap().mqtt.unwrap();
    assert!(c.tls && c.tls_ca.is_none());
    assert_eq!(c.port, 8883);
    let c = parse(&m("tls = true\nport = 1884")).unwrap().mqtt.unwrap();
    assert_eq!(c.port, 1884);
    let c = parse(&m("")).unwrap().mqtt.unwrap();
    assert!(!c.tls);
    assert_eq!(c.port, 1883);
    let c = parse(&m(
        "tls_cert = \"client.pem\"\ntls_key = \"/keys/client.key\"",
    ))
    .unwrap()
    .mqtt
    .unwrap();
    assert!(c.tls, "a client certificate implies TLS");
    assert_eq!(c.tls_cert, Some(PathBuf::from("/etc/edgeclip/client.pem")));
    assert_eq!(c.tls_key, Some(PathBuf::from("/keys/client.key")));
    assert_one(
        &m("tls_cert = \"client.pem\""),
        "mqtt.tls_key",
        "needs its private key",
    );
    assert_one(
        &m("tls_key = \"client.key\""),
        "mqtt.tls_cert",
        "needs its certificate",
    );
    assert_one(
        &m("tls = false\ntls_ca = \"ca.pem\""),
        "mqtt.tls",
        "mqtt.tls_ca is set",
    );
    assert_one(&m("tls_ca = \"\""), "mqtt.tls_ca", "must not be empty");
    assert_one(&m("tls = \"yes\""), "mqtt.tls", "bool");
}

#[test]
fn a_password_of_the_wrong_type_is_not_echoed() {
    let p = problems(&with(
        "[mqtt]\nhost = \"b\"\nusername = \"u\"\npassword = 73915462",
    ));
    assert_eq!(p.len(), 1, "{p:#?}");
    assert_eq!(p[0].key, "mqtt.password");
    assert!(p[0].message.contains("quote the password"), "{p:?}");
    assert!(!p[0].message.contains("73915462"), "{p:?}");
}

#[test]
fn the_debug_of_a_config_never_shows_the_password() {
    let c = parse(&with(
        "[mqtt]\nhost = \"b\"\nusername = \"u\"\npassword = \"hunter2-Zq9\"",
    ))
    .unwrap();
    assert_eq!(
        c.mqtt.as_ref().unwrap().password.as_ref().unwrap().expose(),
        "hunter2-Zq9"
    );
    for shown in [format!("{c:?}"), format!("{c:#?}"), format!("{:?}", c.mqtt)] {
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}

#[cfg(unix)]
#[test]
fn an_inline_password_in_a_file_others_may_read_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("edgeclip.toml");
    let chmod = |mode| std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode));
    let c = mqtt_file(dir.path(), "username = \"u\"\npassword = \"pw-Zq9\"").unwrap();
    chmod(0o644).unwrap();
    let w = c.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains(&*file.to_string_lossy()), "{w:?}");
    assert!(w[0].contains("chmod 640"), "{w:?}");
    assert!(!w[0].contains("pw-Zq9"), "{w:?}");
    chmod(0o640).unwrap();
    assert_eq!(c.warnings(), Vec::<String>::new());
    // A password in a file of its own: nothing to warn about in the config.
    std::fs::write(dir.path().join("pw"), "x").unwrap();
    let c = mqtt_file(dir.path(), "username = \"u\"\npassword_file = \"pw\"").unwrap();
    chmod(0o644).unwrap();
    assert_eq!(c.warnings(), Vec::<String>::new());
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
        &with("[gpio]\nbackend = \"rppal\"\n[[gpio.lines]]\nlabel = \"person\"\nline = \"LED\""),
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
    assert!(
        shown.contains(
            "/etc/edgeclip/edgeclip.toml: prompts[0].threshold: must be in [0, 1], got 2"
        )
    );
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
        tls: false,
        tls_ca: None,
        tls_cert: None,
        tls_key: None,
        qos: 1,
        keep_alive_s: 1,
        homeassistant_discovery: false,
        discovery_prefix: "homeassistant".into(),
        queue: 10,
        max_event_age_s: 3600,
        device: None,
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
    let mut c = parse(MINIMAL).unwrap().cameras.remove(0);
    assert_eq!(c.timeout(), Duration::from_secs(5));
    c.timeout_s = f32::NAN;
    assert_eq!(c.timeout(), Duration::from_secs(1));
}

#[test]
fn camera_offline_after_defaults_to_ten_seconds() {
    let mut c = parse(MINIMAL).unwrap().cameras.remove(0);
    assert_eq!(c.offline_after(), Duration::from_secs(10));
    let cam = parse(&MINIMAL.replace("[model]", "offline_after_s = 2.5\n[model]"))
        .unwrap()
        .cameras
        .remove(0);
    assert_eq!(cam.offline_after(), Duration::from_millis(2500));
    c.offline_after_s = f32::NAN;
    assert_eq!(c.offline_after(), Duration::from_secs(10));
}

// The reference, generated from the reader.

#[test]
fn the_reference_lists_every_key_once_with_its_default() {
    let keys = reference::keys();
    let find = |section: &str, key: &str| {
        let found: Vec<&KeyDoc> = keys
            .iter()
            .filter(|k| k.section == section && k.key == key)
            .collect();
        assert_eq!(found.len(), 1, "{section}.{key}: {found:#?}");
        found[0].clone()
    };
    assert_eq!(
        find("camera", "fps").presence,
        Presence::Default("15.0".into())
    );
    assert_eq!(find("camera", "source").presence, Presence::Required);
    assert_eq!(find("model", "threads").presence, Presence::Optional);
    assert_eq!(find("model", "runtime").kind, r#""auto" | "cpu" | "cuda""#);
    assert_eq!(find("prompts[]", "label").presence, Presence::Required);
    assert_eq!(
        find("matcher", "background").presence,
        Presence::Default(r#"["an empty scene"]"#.into())
    );
    assert_eq!(
        find("mqtt", "queue").presence,
        Presence::Default("256".into())
    );
    assert_eq!(
        find("gpio.lines[]", "pulse_ms").presence,
        Presence::Default("200".into())
    );
    assert_eq!(find("", "prompts").table, Some(TableKind::Array));
    assert_eq!(find("gpio", "lines").table, Some(TableKind::Array));
    // Every key has a meaning, every required or unset key an example.
    for k in &keys {
        assert!(!k.doc.is_empty(), "{k:#?}");
        if k.table.is_none() && matches!(k.presence, Presence::Required | Presence::Optional) {
            assert!(
                k.example.is_some(),
                "{}.{} has no example",
                k.section,
                k.key
            );
        }
    }
}

#[test]
fn defaults_in_the_reference_are_what_a_minimal_config_reads() {
    // The reference's defaults come from the same reader calls; check a few against the
    // Config a minimal file gives, so a default cannot be documented one way and read another.
    let c = parse(MINIMAL).unwrap();
    let keys = reference::keys();
    let default = |section: &str, key: &str| match &keys
        .iter()
        .find(|k| k.section == section && k.key == key)
        .unwrap()
        .presence
    {
        Presence::Default(v) => v.clone(),
        other => panic!("{section}.{key}: {other:?}"),
    };
    assert_eq!(default("camera", "name"), format!("{:?}", c.camera().name));
    assert_eq!(default("camera", "width"), c.camera().width.to_string());
    assert_eq!(
        default("trigger", "exit_frames"),
        c.trigger.exit_frames.to_string()
    );
    assert_eq!(
        default("matcher", "threshold"),
        format!("{:?}", c.matcher.threshold)
    );
    assert_eq!(
        default("stats", "interval_s"),
        format!("{:?}", c.stats.interval_s)
    );
}

#[test]
fn the_annotated_reference_is_a_valid_config_with_every_key() {
    let text = reference::annotated_toml();
    let c = Config::from_toml_str(&text, None).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(c.prompts[0].label, "person");
    assert!(c.mqtt.is_some() && c.gpio.is_some());
    // Uncommenting the optional keys gives a valid config too: their examples are valid.
    let all: String = text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            // `# key = value`, not a sentence of a comment.
            Some(rest)
                if rest
                    .split_once(" = ")
                    .is_some_and(|(k, _)| !k.contains(' ')) =>
            {
                rest
            }
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    // The calibration file the example names, with no thresholds (the example prompt sets its
    // own).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("calib.toml"),
        "score = \"prob\"\n[thresholds]\n",
    )
    .unwrap();
    // The password file it names; `password` and `password_file` exclude each other, so the
    // inline one is left commented out.
    std::fs::write(dir.path().join("mqtt-password"), "secret\n").unwrap();
    // The same for `[http]`'s token and token file.
    std::fs::write(dir.path().join("http-token"), "a-long-random-string\n").unwrap();
    let uncommented = all.clone();
    let all: String = all
        .lines()
        .map(
            |l| match l.starts_with("password = ") || l.starts_with("token = ") {
                true => format!("# {l}\n"),
                false => format!("{l}\n"),
            },
        )
        .collect();
    let full = Config::from_toml_str(&all, Some(&dir.path().join("edgeclip.toml")))
        .unwrap_or_else(|e| panic!("{e}\n{all}"));
    assert_eq!(full.model.threads, Some(1));
    assert_eq!(full.mqtt.unwrap().password.unwrap().expose(), "secret");
    // Every key is there: set, or (in an optional list of tables, shown commented out) indented.
    for k in reference::keys().iter().filter(|k| k.table.is_none()) {
        assert!(
            uncommented
                .lines()
                .any(|l| l.starts_with(&format!("{} = ", k.key))
                    || l.starts_with(&format!("#   {} = ", k.key))),
            "{}.{} is missing from the annotated reference",
            k.section,
            k.key
        );
    }
}

#[test]
fn every_enum_value_the_reference_lists_is_accepted() {
    for k in reference::keys() {
        if !k.kind.starts_with('"') {
            continue;
        }
        for name in k.kind.split(" | ") {
            let section = k.section.trim_end_matches("[]");
            let text = match section {
                "camera" => MINIMAL.replace("[model]", &format!("{} = {name}\n[model]", k.key)),
                "model" => MINIMAL.replace("[model]\n", &format!("[model]\n{} = {name}\n", k.key)),
                "gpio" => with(&format!(
                    "[gpio]\nchip = \"gpiochip0\"\n{} = {name}\n[[gpio.lines]]\nlabel = \"person\"\nline = 17",
                    k.key
                )),
                "gpio.lines" => with(&format!(
                    "[gpio]\n[[gpio.lines]]\nlabel = \"person\"\nline = \"GPIO17\"\n{} = {name}",
                    k.key
                )),
                other => with(&format!("[{other}]\n{} = {name}", k.key)),
            };
            // A value may be refused by the semantic checks for this made-up config, never by
            // the reader as an unknown variant.
            if let Err(e) = parse(&text) {
                assert!(
                    e.problems
                        .iter()
                        .all(|p| !p.message.contains("unknown variant")),
                    "{section}.{} = {name}: {e}",
                    k.key
                );
            }
        }
    }
}

#[test]
fn docs_config_md_is_the_generated_reference() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/CONFIG.md");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == reference::markdown(),
        "{} is not what the config reader generates: run \
         `cargo run -- config-reference --markdown > docs/CONFIG.md`",
        path.display()
    );
}

#[test]
fn snapshots_defaults_and_rules() {
    let c = parse(MINIMAL).unwrap();
    let s = &c.snapshots;
    assert!(s.enabled);
    assert_eq!(s.dir, None);
    assert_eq!((s.max_count, s.max_mb, s.jpeg_quality), (1000, 200, 85));
    assert_eq!(s.window(), Duration::from_secs(1));
    assert_eq!(s.max_bytes(), 200_000_000);
    let c = parse(&with(
        "[snapshots]\nenabled = false\ndir = \"snaps\"\nmax_count = 2\nmax_mb = 5\n\
         window_s = 0.0\njpeg_quality = 60",
    ))
    .unwrap();
    let s = &c.snapshots;
    assert!(!s.enabled);
    assert_eq!(s.dir.as_deref(), Some(Path::new("/etc/edgeclip/snaps")));
    assert_eq!((s.max_count, s.max_mb, s.jpeg_quality), (2, 5, 60));
    assert_eq!(s.window(), Duration::ZERO);
    let abs = parse(&with("[snapshots]\ndir = \"/data/snaps\"")).unwrap();
    assert_eq!(abs.snapshots.dir.as_deref(), Some(Path::new("/data/snaps")));
    assert_one(
        &with("[snapshots]\nmax_count = 0"),
        "snapshots.max_count",
        "must be in [1,",
    );
    assert_one(
        &with("[snapshots]\nmax_mb = 0"),
        "snapshots.max_mb",
        "must be in [1,",
    );
    assert_one(
        &with("[snapshots]\nwindow_s = -1.0"),
        "snapshots.window_s",
        "must be in [0, 60]",
    );
    assert_one(
        &with("[snapshots]\njpeg_quality = 101"),
        "snapshots.jpeg_quality",
        "must be in [1, 100]",
    );
    assert_one(&with("[snapshots]\ndir = \"\""), "snapshots.dir", "empty");
    assert_one(
        &with("[snapshots]\nfolder = \"x\""),
        "snapshots.folder",
        "unknown key",
    );
    // Checked even when off, so turning them on cannot surface an old mistake.
    assert_one(
        &with("[snapshots]\nenabled = false\nmax_count = 0"),
        "snapshots.max_count",
        "must be in",
    );
    let mut built = parse(MINIMAL).unwrap();
    built.snapshots.window_s = f32::NAN;
    assert!(built.validate().unwrap_err().has_problem_at("snapshots"));
}

#[test]
fn http_defaults_to_the_loopback_and_off() {
    let c = parse(MINIMAL).unwrap();
    assert!(!c.http.enabled);
    assert_eq!(c.http.addr(), Some("127.0.0.1:8080".parse().unwrap()));
    assert!(c.http.token.is_none());
}

#[test]
fn http_off_the_loopback_needs_a_token() {
    assert_one(
        &with("[http]\nenabled = true\nlisten = \"0.0.0.0:8080\""),
        "http.listen",
        "http.token_file",
    );
    let c = parse(&with(
        "[http]\nlisten = \"0.0.0.0:8080\"\ntoken = \"0123456789abcdef\"",
    ))
    .unwrap();
    assert_eq!(c.http.token.unwrap().expose(), "0123456789abcdef");
}

#[test]
fn http_bad_values_are_named() {
    assert_one(
        &with("[http]\nlisten = \"localhost\""),
        "http.listen",
        "IP:PORT",
    );
    assert_one(
        &with("[http]\ntoken = \"short\""),
        "http.token",
        "8 characters",
    );
    assert_one(
        &with("[http]\nmax_connections = 0"),
        "http.max_connections",
        "[1, 4096]",
    );
    assert_one(
        &with("[http]\ntoken_file = \"/nonexistent/edgeclip-token\""),
        "http.token_file",
        "/nonexistent/edgeclip-token",
    );
    assert_one(
        &with("[http]\ntoken = \"0123456789\"\ntoken_file = \"t\""),
        "http.token_file",
        "not both",
    );
}

#[test]
fn http_token_file_is_read_and_hidden_from_debug() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tok"), "0123456789abcdef\n").unwrap();
    let text = with("[http]\nlisten = \"[::]:0\"\ntoken_file = \"tok\"");
    let c = Config::from_toml_str(&text, Some(&dir.path().join("edgeclip.toml"))).unwrap();
    assert_eq!(c.http.token.as_ref().unwrap().expose(), "0123456789abcdef");
    assert!(!format!("{:?}", c.http).contains("0123456789abcdef"));
}
