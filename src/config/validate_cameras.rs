//! The checks of `[[cameras]]`, their zones and prompt lists, and of where a GPIO line listens:
//! names unique, zones inside the frame, every label and zone named where it exists.

use std::collections::HashMap;

use super::checker::{Checker, check_name};
use super::{
    ALL_ZONE, CameraConfig, CaptureFormat, Config, GpioLineConfig, PromptConfig, SourceSpec,
};

/// Rounding slack for a zone's edge (`0.1 + 0.9` may land just past 1).
const EDGE: f32 = 1e-4;

impl Config {
    /// Every camera on its own, then what crosses them: names unique, labels and zones known.
    pub(super) fn check_cameras(&self, c: &mut Checker) {
        let mut names: HashMap<&str, &str> = HashMap::new();
        for cam in &self.cameras {
            check_camera(c, cam);
            if !cam.name.is_empty() {
                if let Some(first) = names.get(cam.name.as_str()) {
                    c.push(
                        format!("{}.name", cam.key),
                        format!("duplicate camera name {:?} (also {first}.name)", cam.name),
                    );
                } else {
                    names.insert(&cam.name, &cam.key);
                }
            }
            self.check_camera_labels(c, cam);
            check_zones(c, cam, self);
        }
        self.check_prompt_zones(c);
    }

    /// A camera's `labels` name global labels; its own prompts are checked like the global ones
    /// and do not repeat a label it watches.
    fn check_camera_labels(&self, c: &mut Checker, cam: &CameraConfig) {
        let global: Vec<&str> = self.prompts.iter().map(|p| p.label.as_str()).collect();
        if let Some(labels) = &cam.labels {
            for (j, l) in labels.iter().enumerate() {
                if !global.contains(&l.as_str()) {
                    c.push(
                        format!("{}.labels[{j}]", cam.key),
                        format!(
                            "{l:?} is not a [[prompts]] label (labels: {})",
                            global.join(", ")
                        ),
                    );
                }
            }
        }
        let prefix = format!("{}.prompts", cam.key);
        check_prompt_list(c, self, &cam.prompts, &prefix);
        let watched = |l: &str| {
            global.contains(&l)
                && cam
                    .labels
                    .as_ref()
                    .is_none_or(|ls| ls.iter().any(|x| x == l))
        };
        for (j, p) in cam.prompts.iter().enumerate() {
            if watched(&p.label) {
                c.push(
                    format!("{prefix}[{j}].label"),
                    format!(
                        "{:?} is already a [[prompts]] label this camera watches (leave it out \
                         with {}.labels, or name this one differently)",
                        p.label, cam.key
                    ),
                );
            }
        }
        // With no prompt anywhere, `prompts` says so once for every camera.
        let some_prompt =
            !self.prompts.is_empty() || self.cameras.iter().any(|c| !c.prompts.is_empty());
        if some_prompt && self.for_camera_labels(cam).is_empty() {
            c.push(
                format!("{}.labels", cam.key),
                "this camera watches no label: name at least one [[prompts]] label or add \
                 [[cameras.prompts]]",
            );
        }
    }

    /// The labels `cam` watches: the global ones it keeps, then its own.
    fn for_camera_labels<'a>(&'a self, cam: &'a CameraConfig) -> Vec<&'a str> {
        self.prompts
            .iter()
            .filter(|p| cam.labels.as_ref().is_none_or(|ls| ls.contains(&p.label)))
            .chain(cam.prompts.iter())
            .map(|p| p.label.as_str())
            .collect()
    }

    /// Every label of every camera (global first), each once.
    pub(super) fn all_labels(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for p in self
            .prompts
            .iter()
            .chain(self.cameras.iter().flat_map(|c| &c.prompts))
        {
            if !out.contains(&p.label.as_str()) {
                out.push(&p.label);
            }
        }
        out
    }

    /// A prompt's `zones` name zones that exist on a camera watching it.
    fn check_prompt_zones(&self, c: &mut Checker) {
        let lists = self
            .prompts
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("prompts[{i}]"), p));
        let own = self.cameras.iter().flat_map(|cam| {
            cam.prompts
                .iter()
                .enumerate()
                .map(move |(i, p)| (format!("{}.prompts[{i}]", cam.key), p))
        });
        for (key, p) in lists.chain(own) {
            let Some(zones) = &p.zones else { continue };
            if zones.is_empty() {
                c.push(
                    format!("{key}.zones"),
                    "must name at least one zone (or be left out)",
                );
            }
            let known = self.zones_watching(&p.label);
            for (j, z) in zones.iter().enumerate() {
                if !known.contains(&z.as_str()) {
                    c.push(
                        format!("{key}.zones[{j}]"),
                        format!(
                            "no camera watching {:?} has a zone {z:?} (zones: {})",
                            p.label,
                            known.join(", ")
                        ),
                    );
                }
            }
        }
    }

    /// The zone names of the cameras that watch `label` (`all` where the whole frame is on).
    fn zones_watching(&self, label: &str) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for cam in &self.cameras {
            if !self.for_camera_labels(cam).contains(&label) {
                continue;
            }
            let names = cam
                .whole_frame
                .then_some(ALL_ZONE)
                .into_iter()
                .chain(cam.zones.iter().map(|z| z.name.as_str()));
            for n in names {
                if !out.contains(&n) {
                    out.push(n);
                }
            }
        }
        out
    }

    /// A GPIO line's `camera` and `zone` exist (the zone on that camera, or on any).
    pub(super) fn check_line_place(&self, c: &mut Checker, i: usize, l: &GpioLineConfig) {
        let cams: Vec<&CameraConfig> = match &l.camera {
            Some(name) => match self.cameras.iter().find(|cam| cam.name == *name) {
                Some(cam) => vec![cam],
                None => {
                    let names: Vec<&str> = self.cameras.iter().map(|c| c.name.as_str()).collect();
                    c.push(
                        format!("gpio.lines[{i}].camera"),
                        format!(
                            "no camera is named {name:?} (cameras: {})",
                            names.join(", ")
                        ),
                    );
                    return;
                }
            },
            None => self.cameras.iter().collect(),
        };
        if let Some(zone) = &l.zone {
            let has = |cam: &&CameraConfig| {
                (zone == ALL_ZONE && cam.whole_frame) || cam.zones.iter().any(|z| z.name == *zone)
            };
            if !cams.iter().any(has) {
                c.push(
                    format!("gpio.lines[{i}].zone"),
                    format!(
                        "no {} has a zone {zone:?}",
                        match &l.camera {
                            Some(name) => format!("camera {name:?}"),
                            None => "camera".to_owned(),
                        }
                    ),
                );
            }
        }
    }
}

/// A camera's zones: named, unique, not `all`, inside the frame, their labels the camera's.
fn check_zones(c: &mut Checker, cam: &CameraConfig, config: &Config) {
    if !cam.whole_frame && cam.zones.is_empty() {
        c.push(
            format!("{}.whole_frame", cam.key),
            "false with no [[cameras.zones]]: this camera would watch nothing",
        );
    }
    let labels = config.for_camera_labels(cam);
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, z) in cam.zones.iter().enumerate() {
        let key = |k: &str| format!("{}.zones[{i}].{k}", cam.key);
        check_name(&mut c.problems, key("name"), &z.name);
        if z.name == ALL_ZONE {
            c.push(
                key("name"),
                "\"all\" is the whole frame (whole_frame); name this zone differently",
            );
        } else if !z.name.is_empty() {
            if let Some(first) = seen.get(z.name.as_str()) {
                c.push(
                    key("name"),
                    format!(
                        "duplicate zone {:?} (also {}.zones[{first}].name)",
                        z.name, cam.key
                    ),
                );
            } else {
                seen.insert(&z.name, i);
            }
        }
        let r = z.rect;
        let finite = [r.x, r.y, r.w, r.h].iter().all(|v| v.is_finite());
        if !finite || r.x < 0.0 || r.y < 0.0 || r.x > 1.0 || r.y > 1.0 {
            c.push(
                key("rect"),
                format!(
                    "x and y must lie in 0..1, got [{}, {}, {}, {}]",
                    r.x, r.y, r.w, r.h
                ),
            );
        } else if r.w <= 0.0 || r.h <= 0.0 {
            c.push(
                key("rect"),
                format!(
                    "w and h must be above 0 (an empty zone), got [{}, {}, {}, {}]",
                    r.x, r.y, r.w, r.h
                ),
            );
        } else if r.x + r.w > 1.0 + EDGE || r.y + r.h > 1.0 + EDGE {
            c.push(
                key("rect"),
                format!(
                    "reaches outside the frame: x + w = {} and y + h = {} must be at most 1",
                    r.x + r.w,
                    r.y + r.h
                ),
            );
        }
        if let Some(zl) = &z.labels {
            for (j, l) in zl.iter().enumerate() {
                if !labels.contains(&l.as_str()) {
                    c.push(
                        format!("{}.zones[{i}].labels[{j}]", cam.key),
                        format!(
                            "{l:?} is not a label of camera {:?} (labels: {})",
                            cam.name,
                            labels.join(", ")
                        ),
                    );
                }
            }
        }
    }
    if let Some(m) = cam.max_fps {
        c.range_f32(format!("{}.max_fps", cam.key), m, 0.01, 1000.0);
    }
}

fn check_camera(c: &mut Checker, cam: &CameraConfig) {
    let k = |name: &str| format!("{}.{name}", cam.key);
    check_name(&mut c.problems, k("name"), &cam.name);
    match &cam.source {
        SourceSpec::V4l2 { device } => {
            if device.as_os_str().is_empty() {
                c.push(
                    k("source"),
                    "v4l2: needs a device path, e.g. v4l2:/dev/video0",
                );
            }
        }
        SourceSpec::Pipe { command } => {
            if command.trim().is_empty() {
                c.push(
                    k("source"),
                    "pipe: needs a command, e.g. pipe:rpicam-vid ...",
                );
            }
        }
        SourceSpec::Files { pattern } => {
            if pattern.is_empty() {
                c.push(k("source"), "files: needs a glob, e.g. files:clip/*.jpg");
            } else if let Err(e) = glob::Pattern::new(pattern) {
                c.push(k("source"), format!("invalid glob {pattern:?}: {}", e.msg));
            }
        }
    }
    c.range_u64(k("width"), cam.width.into(), 16, 8192);
    c.range_u64(k("height"), cam.height.into(), 16, 8192);
    if cam.format == CaptureFormat::Yuyv && !cam.width.is_multiple_of(2) {
        c.push(
            k("width"),
            format!("must be even for yuyv, got {}", cam.width),
        );
    }
    c.range_f32(k("fps"), cam.fps, 0.1, 1000.0);
    c.range_f32(k("timeout_s"), cam.timeout_s, 0.01, 3600.0);
    c.range_f32(k("offline_after_s"), cam.offline_after_s, 0.1, 86400.0);
    let is_files = matches!(cam.source, SourceSpec::Files { .. });
    if is_files && cam.format != CaptureFormat::Auto {
        c.push(
            k("format"),
            "files: sources take the format of each file; use \"auto\" or leave it out",
        );
    }
    if cam.looping && !is_files {
        c.push(k("loop"), "only applies to files: sources");
    }
}

/// The checks of one prompt list (`prompts`, or a camera's `cameras[N].prompts`).
pub(super) fn check_prompt_list(
    c: &mut Checker,
    config: &Config,
    prompts: &[PromptConfig],
    prefix: &str,
) {
    let (lo, hi) = config.matcher.score.threshold_range();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, p) in prompts.iter().enumerate() {
        let key = |k: &str| format!("{prefix}[{i}].{k}");
        check_name(&mut c.problems, key("label"), &p.label);
        if !p.label.is_empty() {
            if let Some(first) = seen.get(p.label.as_str()) {
                c.push(
                    key("label"),
                    format!(
                        "duplicate label {:?} (also {prefix}[{first}].label)",
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
                    format!("{prefix}[{i}].text[{j}]")
                };
                c.push(k, "must not be empty");
            }
        }
        for (j, n) in p.negatives.iter().enumerate() {
            let k = format!("{prefix}[{i}].negatives[{j}]");
            if n.trim().is_empty() {
                c.push(k, "must not be empty");
            } else if p.texts.contains(n) {
                c.push(
                    k,
                    format!("{n:?} is this label's own text: a label cannot be its own negative"),
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
