//! The first pass over a config file: every table and key the schema of [`super`] has, read
//! with the [`Reader`] (its type, default and meaning written once, here), and TOML syntax
//! errors located by line and column.

use std::path::{Path, PathBuf};

use super::read_prompts::{read_matcher, read_prompt};
use super::reader::{Presence, Reader, Section, key, resolve};
use super::{
    Config, EventsConfig, GpioBackend, GpioConfig, GpioLineConfig, LineMode, LineRef, ModelConfig,
    Problem, StatsConfig, TriggerConfig,
};
use crate::model::options::Runtime;

/// Reads a whole config (its `file` is left unset). `base` is the config file's folder.
pub(super) fn read_config(r: &mut Reader, map: toml::Table, base: Option<&Path>) -> Config {
    let mut root = Section::root(map);
    let cameras = super::read_cameras::read(r, &mut root, base);
    let mut s = r.required_table(
        &mut root,
        key("model", "The model bundle and where it runs."),
        "add a [model] table with a bundle",
    );
    let model = read_model(r, &mut s, base);
    r.finish(s);
    let mut prompts: Vec<super::PromptConfig> = r
        .tables(
            &mut root,
            key(
                "prompts",
                "What to detect: one entry per label (at least one). The label index used \
                 everywhere is the position here.",
            ),
            Presence::Required,
        )
        .into_iter()
        .map(|mut s| {
            let p = read_prompt(r, &mut s, base);
            r.finish(s);
            p
        })
        .collect();
    let mut s = r.defaults_table(
        &mut root,
        key("matcher", "How frames are scored against the prompts."),
    );
    let matcher = read_matcher(r, &mut s, base);
    if let Some(file) = &matcher.calibration {
        super::calibration::apply(r, &s, file, matcher.score, &mut prompts);
    }
    r.finish(s);
    let mut s = r.defaults_table(
        &mut root,
        key(
            "trigger",
            "When a label starts and ends: the defaults for every prompt.",
        ),
    );
    let trigger = read_trigger(r, &mut s);
    r.finish(s);
    let mqtt = r
        .table(
            &mut root,
            key(
                "mqtt",
                "Events to an MQTT broker. Leave the table out for no MQTT.",
            ),
        )
        .map(|mut s| {
            let m = super::read_mqtt::read(r, &mut s, base);
            r.finish(s);
            m
        });
    let gpio = r
        .table(
            &mut root,
            key(
                "gpio",
                "GPIO lines driven by labels. Leave the table out for no GPIO.",
            ),
        )
        .map(|mut s| {
            let g = read_gpio(r, &mut s);
            r.finish(s);
            g
        });
    let mut s = r.defaults_table(
        &mut root,
        key("events", "Where events go besides MQTT and GPIO."),
    );
    let events = EventsConfig {
        stdout: r.or(
            &mut s,
            key("stdout", "Write events as JSON lines to stdout."),
            true,
        ),
    };
    r.finish(s);
    let mut s = r.defaults_table(&mut root, key("stats", "The periodic statistics line."));
    let stats = StatsConfig {
        interval_s: r.or(
            &mut s,
            key(
                "interval_s",
                "Seconds between statistics lines (log, MQTT `stats` topic); 0 turns them off.",
            ),
            10.0,
        ),
    };
    r.finish(s);
    let mut snapshots = super::read_snapshots::read(r, &mut root);
    snapshots.dir = snapshots.dir.map(|p| resolve(base, p));
    let mut store = super::read_store::read(r, &mut root);
    store.path = store.path.map(|p| resolve(base, p));
    let http = super::read_http::read(r, &mut root, base);
    r.finish(root);
    Config {
        cameras,
        model,
        prompts,
        matcher,
        trigger,
        mqtt,
        gpio,
        events,
        stats,
        snapshots,
        store,
        http,
        file: None,
    }
}

fn read_model(r: &mut Reader, s: &mut Section, base: Option<&Path>) -> ModelConfig {
    ModelConfig {
        bundle: r
            .req::<PathBuf>(
                s,
                key(
                    "bundle",
                    "The model bundle folder (`bundle.toml` and the ONNX files it names).",
                )
                .example("\"/usr/share/edgeclip/models/demo\""),
            )
            .map(|p| resolve(base, p))
            .unwrap_or_default(),
        runtime: r.or(
            s,
            key(
                "runtime",
                "Where the image tower runs: `auto` takes the GPU when CUDA's driver and \
                 libraries load, else the CPU (the choice and its reason are logged); `cpu`; \
                 `cuda` (an error at start-up when unavailable).",
            ),
            Runtime::Auto,
        ),
        threads: r.opt(
            s,
            key(
                "threads",
                "Threads for the image tower's matrix products (shared by the workers). Not \
                 set: one, or the cores the workers leave when the tower is a float one slower \
                 than 20 ms an image (their matrix products are then worth splitting).",
            )
            .example("1"),
        ),
        workers: r.opt(
            s,
            key(
                "workers",
                "Inference workers: a round's images (every zone of every camera's frame) are \
                 split over them, each running whole images on the one copy of the model. Not \
                 set: one per image of a round, up to the cores.",
            )
            .example("2"),
        ),
        precision: r.opt(
            s,
            key(
                "precision",
                "Which of the image tower's files to run. Not set: chosen for the device among \
                 the bundle's files (on the CPU the fastest when timed, see `precision_timing`; \
                 a GPU runs fp16, else fp32); the log says which and why.",
            )
            .example("\"int8-static\""),
        ),
        precision_timing: r.or(
            s,
            key(
                "precision_timing",
                "With no `precision`, on the CPU: time each image file the bundle ships (0.5 s \
                 in all, at the first start; the choice is cached per bundle, CPU and thread \
                 count) and run the fastest. Off: int8 where the CPU has int8 dot-product \
                 instructions, else fp32.",
            ),
            true,
        ),
        prepare_ahead: r.or(
            s,
            key(
                "prepare_ahead",
                "Preprocess each round of frames (JPEG decoding, resizing) on a second thread \
                 while the image tower encodes the round before, when the tower leaves a CPU \
                 core free (one thread and one worker on two or more cores, or a GPU). Raises \
                 the top frame rate; a frame taken while the tower is busy waits for it. Off: \
                 one thread does both, in turn.",
            ),
            true,
        ),
        kernel_cache: r
            .opt::<PathBuf>(
                s,
                key(
                    "kernel_cache",
                    "Where compiled GPU kernels are kept between runs. Not set: the daemon's \
                     cache folder (`/var/cache/edgeclip` under systemd, else \
                     `$XDG_CACHE_HOME/edgeclip` or `~/.cache/edgeclip`).",
                )
                .example("\"/var/cache/edgeclip\""),
            )
            .map(|p| resolve(base, p)),
    }
}

fn read_trigger(r: &mut Reader, s: &mut Section) -> TriggerConfig {
    TriggerConfig {
        enter_frames: r.or(
            s,
            key(
                "enter_frames",
                "Consecutive frames at or above the threshold before a `start` event.",
            ),
            3,
        ),
        exit_frames: r.or(
            s,
            key(
                "exit_frames",
                "Consecutive frames below the threshold before an `end` event.",
            ),
            5,
        ),
        cooldown_s: r.or(
            s,
            key(
                "cooldown_s",
                "Seconds after an `end` during which no new `start` fires.",
            ),
            0.0,
        ),
    }
}

fn read_gpio(r: &mut Reader, s: &mut Section) -> GpioConfig {
    let chip = r.opt(
        s,
        key(
            "chip",
            "The GPIO chip: a path (`/dev/gpiochip0`) or a name (`gpiochip0`). Needed for lines \
             given by offset; lines given by name are searched on it, or on every chip when \
             not set.",
        )
        .example("\"gpiochip0\""),
    );
    let backend = r.or(
        s,
        key(
            "backend",
            "The driver: `cdev`, the GPIO character device (any Linux board); `rppal`, the \
             Raspberry Pi driver (lines by BCM number or `GPIO<n>` name).",
        ),
        GpioBackend::Cdev,
    );
    let lines = r
        .tables(
            s,
            key(
                "lines",
                "One entry per GPIO line a label drives (at least one).",
            ),
            Presence::Required,
        )
        .into_iter()
        .map(|mut l| {
            let g = read_gpio_line(r, &mut l);
            r.finish(l);
            g
        })
        .collect();
    GpioConfig {
        chip,
        backend,
        lines,
    }
}

fn read_gpio_line(r: &mut Reader, s: &mut Section) -> GpioLineConfig {
    let label = r
        .req(
            s,
            key("label", "The prompt label that drives this line.").example("\"person\""),
        )
        .unwrap_or_default();
    let line = match r.raw(
        s,
        key(
            "line",
            "The line: its name from the device tree (`\"GPIO17\"`) or its offset on the chip.",
        )
        .example("\"GPIO17\""),
        "string or integer",
        Presence::Required,
    ) {
        Some(v) => read_line_ref(r, s, v),
        None => {
            r.problem(s, "line", "missing (required)");
            LineRef::Offset(0)
        }
    };
    GpioLineConfig {
        label,
        camera: r.opt(
            s,
            key(
                "camera",
                "Only this camera's events drive the line. Not set: any camera's.",
            )
            .example("\"cam0\""),
        ),
        zone: r.opt(
            s,
            key(
                "zone",
                "Only events of this zone drive the line (`all`: the whole frame). Not set: \
                 any zone's.",
            )
            .example("\"all\""),
        ),
        line,
        mode: r.or(
            s,
            key(
                "mode",
                "`level`: active while the label is active; `pulse`: active for `pulse_ms` \
                 after each start.",
            ),
            LineMode::Level,
        ),
        pulse_ms: r.or(
            s,
            key("pulse_ms", "Pulse length in milliseconds (pulse mode)."),
            200,
        ),
        active_low: r.or(
            s,
            key("active_low", "Drive the line low when active."),
            false,
        ),
    }
}

/// A string or an array of strings (`list_only`: the array only).
fn read_line_ref(r: &mut Reader, s: &Section, v: toml::Value) -> LineRef {
    match v {
        toml::Value::String(name) => LineRef::Name(name),
        toml::Value::Integer(i) => match u32::try_from(i) {
            Ok(o) => LineRef::Offset(o),
            Err(_) => {
                r.problem(s, "line", format!("a line offset must be >= 0, got {i}"));
                LineRef::Offset(0)
            }
        },
        other => {
            r.problem(
                s,
                "line",
                format!(
                    "expected a line name (string) or offset (integer), got {}",
                    other.type_str()
                ),
            );
            LineRef::Offset(0)
        }
    }
}

/// The `TOML syntax error (line L, column C): ...` problem of unparsable text.
pub(super) fn syntax_problem(text: &str, e: &toml::de::Error) -> Problem {
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
