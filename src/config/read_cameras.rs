//! `[camera]` or `[[cameras]]`: where frames come from, what each camera watches and its zones.

use std::path::Path;

use super::read_prompts::{opt_list, read_prompt};
use super::reader::{Presence, Reader, Section, key};
use super::{CameraConfig, CaptureFormat, Rect, SourceSpec, ZoneConfig};

/// Reads `[camera]` (one camera) or `[[cameras]]` (several); both, or neither, is a problem.
pub(super) fn read(r: &mut Reader, root: &mut Section, base: Option<&Path>) -> Vec<CameraConfig> {
    let single = r.table(
        root,
        key(
            "camera",
            "One camera: the keys of a `[[cameras]]` entry. Use `[camera]` or `[[cameras]]`, \
             not both.",
        ),
    );
    let many = r.tables(
        root,
        key(
            "cameras",
            "Several cameras in one daemon, each entry with the keys of `[camera]` (and its \
             `[[cameras.prompts]]`, `[[cameras.zones]]`): one copy of the model scores the \
             freshest frame of each in turn. Prompts are global; a camera may watch a subset \
             (`labels`) and add its own.",
        ),
        Presence::Optional,
    );
    if r.is_describing() {
        // The reference lists the keys once, under `camera`; `[[cameras]]` entries take the
        // same keys.
        return single
            .into_iter()
            .map(|mut s| {
                let c = read_camera(r, &mut s, base);
                r.finish(s);
                c
            })
            .collect();
    }
    let sections: Vec<Section> = match (single, many.is_empty()) {
        (Some(s), true) => vec![s],
        (None, false) => many,
        (Some(s), false) => {
            r.problem(
                root,
                "camera",
                "use [camera] for one camera or [[cameras]] for several, not both",
            );
            std::iter::once(s).chain(many).collect()
        }
        (None, true) => {
            r.problem(
                root,
                "camera",
                "missing (required): add a [camera] table with a source (or [[cameras]] entries)",
            );
            return vec![placeholder()];
        }
    };
    sections
        .into_iter()
        .map(|mut s| {
            let c = read_camera(r, &mut s, base);
            r.finish(s);
            c
        })
        .collect()
}

/// The camera of a config that has none (reported): its defaults, so the other checks run.
fn placeholder() -> CameraConfig {
    let mut r = Reader::default();
    let mut s = Section::root(toml::Table::new());
    let mut c = read_camera(&mut r, &mut s, None);
    c.key = "camera".to_owned();
    c
}

fn read_camera(r: &mut Reader, s: &mut Section, base: Option<&Path>) -> CameraConfig {
    let key_path = s.path().to_owned();
    let name = r.or(
        s,
        key(
            "name",
            "Camera name used in events and MQTT topics: 1 to 64 of A-Z, a-z, 0-9, `_`, `-`.",
        ),
        "cam0".to_owned(),
    );
    let source = r
        .req::<String>(
            s,
            key(
                "source",
                "Where frames come from: `v4l2:/dev/videoN` (a V4L2 camera), `pipe:COMMAND` (a \
                 command writing MJPEG or raw frames to stdout, run with `sh -c`: rpicam-vid, \
                 gst-launch-1.0, ffmpeg) or `files:GLOB` (image files replayed in sorted \
                 order; relative to the config file's folder).",
            )
            .example("\"v4l2:/dev/video0\""),
        )
        .and_then(|text| match SourceSpec::parse(&text, base) {
            Ok(spec) => Some(spec),
            Err(msg) => {
                r.problem(s, "source", msg);
                None
            }
        });
    CameraConfig {
        key: key_path,
        name,
        // A missing or unreadable source was reported; this placeholder is not reported again.
        source: source.unwrap_or(SourceSpec::Files {
            pattern: String::new(),
        }),
        width: r.or(
            s,
            key(
                "width",
                "Frame width: requested from V4L2, or the actual width of raw frames on a pipe. \
                 A `v4l2:` or `pipe:` frame more than twice as wide, and larger than 4K UHD \
                 (3840 x 2160, either way up), is refused from its header (a bad frame).",
            ),
            640,
        ),
        height: r.or(
            s,
            key(
                "height",
                "Frame height: requested from V4L2, or the actual height of raw frames on a pipe. \
                 A `v4l2:` or `pipe:` frame more than twice as high, and larger than 4K UHD, is \
                 refused from its header (a bad frame).",
            ),
            480,
        ),
        fps: r.or(
            s,
            key(
                "fps",
                "Frames per second: requested from V4L2, the replay rate of `files:`.",
            ),
            15.0,
        ),
        max_fps: r.opt(
            s,
            key(
                "max_fps",
                "At most this many of this camera's frames go through the model each second; \
                 the others are dropped for fresher ones (counted). Not set: as many as the \
                 model keeps up with, shared fairly between the cameras.",
            )
            .example("5.0"),
        ),
        format: r.or(
            s,
            key(
                "format",
                "Pixel format. V4L2: the format to request (`auto` prefers MJPEG, else YUYV). \
                 `pipe:`: the format of the command's stdout (`auto` means MJPEG). `files:`: \
                 only `auto` (each file's own format).",
            ),
            CaptureFormat::Auto,
        ),
        looping: r.or(
            s,
            key(
                "loop",
                "Replay `files:` forever. When false the daemon finishes when they run out.",
            ),
            false,
        ),
        timeout_s: r.or(
            s,
            key(
                "timeout_s",
                "A source that delivers no frame for this many seconds reports an error \
                 instead of hanging.",
            ),
            5.0,
        ),
        offline_after_s: r.or(
            s,
            key(
                "offline_after_s",
                "The camera counts as offline when no frame arrives for this many seconds (a \
                 source that fails, such as a pipe command that exits, makes it offline at \
                 once): active labels end, MQTT's `PREFIX/CAMERA/availability` says `offline`, \
                 and the first frame after it makes the camera online again.",
            ),
            10.0,
        ),
        labels: opt_list(
            r,
            s,
            key(
                "labels",
                "The `[[prompts]]` labels this camera watches. Not set: all of them.",
            )
            .example("[\"person\"]"),
        ),
        prompts: r
            .tables(
                s,
                key(
                    "prompts",
                    "Labels only this camera watches, with the keys of `[[prompts]]`; their \
                     labels must differ from the global ones this camera watches.",
                ),
                Presence::Optional,
            )
            .into_iter()
            .map(|mut p| {
                let prompt = read_prompt(r, &mut p, base);
                r.finish(p);
                prompt
            })
            .collect(),
        whole_frame: r.or(
            s,
            key(
                "whole_frame",
                "Score the whole frame as the zone `all` (events and topics without a zone \
                 name). Turn it off to watch only the `zones`.",
            ),
            true,
        ),
        zones: r
            .tables(
                s,
                key(
                    "zones",
                    "Named parts of the frame, each cropped and scored on its own: events carry \
                     the zone, topics become `PREFIX/CAMERA/ZONE/LABEL/...`.",
                ),
                Presence::Optional,
            )
            .into_iter()
            .map(|mut z| {
                let zone = read_zone(r, &mut z);
                r.finish(z);
                zone
            })
            .collect(),
    }
}

fn read_zone(r: &mut Reader, s: &mut Section) -> ZoneConfig {
    let name = r
        .req(
            s,
            key(
                "name",
                "The zone's name: 1 to 64 of A-Z, a-z, 0-9, `_`, `-`; unique per camera; not \
                 `all` (the whole frame).",
            )
            .example("\"driveway\""),
        )
        .unwrap_or_default();
    let rect = match r.raw(
        s,
        key(
            "rect",
            "The zone as `[x, y, w, h]`: its top-left corner and size as fractions (0 to 1) \
             of the frame's width and height. It must lie inside the frame.",
        )
        .example("[0.5, 0.4, 0.5, 0.6]"),
        "array of 4 numbers",
        Presence::Required,
    ) {
        Some(v) => read_rect(r, s, v),
        None => {
            r.problem(s, "rect", "missing (required): [x, y, w, h] in 0..1");
            None
        }
    };
    ZoneConfig {
        name,
        // An unreadable rect was reported; the placeholder is not checked again.
        rect: rect.unwrap_or(Rect::WHOLE),
        labels: opt_list(
            r,
            s,
            key(
                "labels",
                "The labels watched in this zone. Not set: every label of the camera.",
            )
            .example("[\"car\"]"),
        ),
    }
}

fn read_rect(r: &mut Reader, s: &Section, v: toml::Value) -> Option<Rect> {
    let numbers: Option<Vec<f32>> = match &v {
        toml::Value::Array(items) if items.len() == 4 => items
            .iter()
            .map(|i| match i {
                toml::Value::Float(f) => Some(*f as f32),
                toml::Value::Integer(n) => Some(*n as f32),
                _ => None,
            })
            .collect(),
        _ => None,
    };
    match numbers.as_deref() {
        Some(&[x, y, w, h]) => Some(Rect { x, y, w, h }),
        _ => {
            r.problem(
                s,
                "rect",
                format!("expected [x, y, w, h] (4 numbers in 0..1), got {v}"),
            );
            None
        }
    }
}
