//! Fuzzing on stable Rust: proptest feeds arbitrary input to the parsers that read what the
//! outside world sends, and each must return (an error is fine) without panicking:
//!
//! - the MJPEG splitter (`source::mjpeg`: the bytes of a pipe command's stdout),
//! - frame decoding (`Preprocessor::frame_to_tensor`: a camera's bytes, sizes and format),
//! - `Event::from_json` (what an MQTT or stdout consumer reads back),
//! - the config reader (`Config::from_toml_str`: what a user writes),
//! - a bundle's manifest (`Bundle::load`: `bundle.toml`, beside the bundle's real files),
//! - embeddings files (`PromptEmbeddings::read`: safetensors, the prompt cache and vocabularies).
//!
//! Inputs are random bytes and strings, and real data damaged at random (a camera JPEG, an
//! event), so that the parsers get past their first checks. `cargo test` runs 256 cases each; a
//! longer run sets the count (the other model-loading fuzz, `model::plan`'s
//! `damaged_onnx_files_do_not_panic`, reads the same variable):
//!
//! ```text
//! EDGECLIP_FUZZ_CASES=200000 cargo test --test fuzz -- --nocapture
//! ```
//!
//! Each run draws a new seed (`PROPTEST_RNG_SEED=N` repeats one). A failure prints the shrunk
//! input; no regression file is written (`failure_persistence` is off): a found case becomes a
//! unit test next to the code it breaks, as `frame.rs`'s overflow test did.

mod common;

use std::time::{Duration, Instant, SystemTime};

use edgeclip::event::Event;
use edgeclip::frame::{Frame, PixelFormat};
use edgeclip::preprocess::{ChannelOrder, Interpolation, Preprocessor, ResizeMode, Spec};
use edgeclip::source::mjpeg::MjpegSplitter;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Cases per target: `EDGECLIP_FUZZ_CASES`, 256 by default.
fn cases() -> u32 {
    std::env::var("EDGECLIP_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// Runs `test` on `cases()` inputs from `strategy`, then says how many ran, how many of them
/// the parser accepted (`test` returns whether it did) and for how long.
fn fuzz<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> bool) {
    let accepted = std::cell::Cell::new(0u64);
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        // A new random seed each run, so that every CI run tries new cases;
        // PROPTEST_RNG_SEED=N repeats a run.
        failure_persistence: None,
        ..Config::default()
    });
    let started = Instant::now();
    runner
        .run(&strategy, |value| {
            accepted.set(accepted.get() + u64::from(test(value)));
            Ok(())
        })
        .unwrap();
    eprintln!(
        "fuzz {name}: {} cases in {:.1} s, {} accepted, the rest errors; no panic",
        cases(),
        started.elapsed().as_secs_f64(),
        accepted.get()
    );
}

/// A real camera frame (JPEG) from the test clip.
fn camera_jpeg() -> Vec<u8> {
    std::fs::read(common::data("clip/frame_0030.jpg")).unwrap()
}

/// Damage to a byte string: overwrite, insert, remove or truncate at random places.
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Truncate(usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Set(at, b)),
        1 => (any::<usize>(), prop::collection::vec(marker_byte(), 1..8))
            .prop_map(|(at, b)| Edit::Insert(at, b)),
        1 => (any::<usize>(), 1..64usize).prop_map(|(at, n)| Edit::Remove(at, n)),
        1 => any::<usize>().prop_map(Edit::Truncate),
    ];
    prop::collection::vec(edit, 0..8)
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        let len = bytes.len();
        match edit {
            Edit::Set(at, b) if len > 0 => bytes[at % len] = *b,
            Edit::Insert(at, b) => {
                let at = at % (len + 1);
                bytes.splice(at..at, b.iter().copied());
            }
            Edit::Remove(at, n) if len > 0 => {
                let at = at % len;
                bytes.drain(at..(at + n).min(len));
            }
            Edit::Truncate(at) => bytes.truncate(at % (len + 1)),
            _ => {}
        }
    }
    bytes
}

/// Bytes that mean something in a JPEG stream (markers and their second bytes) more often than
/// chance would give them.
fn marker_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => Just(0xFF),
        1 => prop::sample::select(vec![0xD8, 0xD9, 0xDA, 0xDB, 0xC0, 0xC4, 0xE0, 0xE1, 0xDD, 0x00]),
        1 => 0xD0..=0xD7u8,
        2 => any::<u8>(),
    ]
}

/// A stream for the splitter: random marker-rich bytes, or real JPEGs (two, back to back)
/// damaged at random.
fn mjpeg_stream() -> impl Strategy<Value = Vec<u8>> {
    let jpeg = camera_jpeg();
    prop_oneof![
        prop::collection::vec(marker_byte(), 0..4096),
        edits().prop_map(move |e| {
            let mut two = jpeg.clone();
            two.extend_from_slice(&jpeg);
            apply(two, &e)
        }),
    ]
}

#[test]
fn the_mjpeg_splitter_never_panics_nor_loops() {
    // Accepted: the stream gave at least one frame.
    let strategy = (
        mjpeg_stream(),
        prop::collection::vec(1..2048usize, 1..16),
        0..70_000usize,
    );
    fuzz("mjpeg splitter", strategy, |(stream, chunks, max_frame)| {
        let mut splitter = MjpegSplitter::new(max_frame);
        let mut rest = &stream[..];
        let mut results = 0usize;
        let mut frames = 0usize;
        for size in chunks.iter().cycle() {
            let (chunk, tail) = rest.split_at((*size).min(rest.len()));
            rest = tail;
            splitter.push(chunk);
            while let Some(result) = splitter.next_frame() {
                results += 1;
                // Every result consumes input: more results than bytes means a loop.
                assert!(results <= stream.len() + 1, "the splitter loops");
                if let Ok(frame) = result {
                    assert!(frame.starts_with(&[0xFF, 0xD8]), "{:02x?}", &frame[..2]);
                    assert!(frame.ends_with(&[0xFF, 0xD9]));
                    assert!(frame.len() <= max_frame.max(4));
                    frames += 1;
                }
            }
            if rest.is_empty() {
                break;
            }
        }
        assert!(splitter.skipped() <= stream.len() as u64);
        frames > 0
    });
}

/// A frame as a camera might deliver it: any format, a size that matches the data or not, the
/// bytes random or a damaged real JPEG.
fn frames() -> impl Strategy<Value = Frame> {
    let jpeg = camera_jpeg();
    let format = prop::sample::select(vec![
        PixelFormat::Rgb24,
        PixelFormat::Yuyv,
        PixelFormat::Grey,
        PixelFormat::Mjpeg,
    ]);
    let side = prop_oneof![4 => 0..80u32, 1 => any::<u32>(), 1 => Just(u32::MAX)];
    let data = prop_oneof![
        // Exactly the size the format wants (small sides only): conversion runs.
        2 => Just(None),
        1 => prop::collection::vec(any::<u8>(), 0..2048).prop_map(Some),
        2 => edits().prop_map(move |e| Some(apply(jpeg.clone(), &e))),
    ];
    (format, side.clone(), side, data, any::<u8>()).prop_map(|(format, w, h, data, fill)| {
        let data = data.unwrap_or_else(|| match format.expected_len(w, h) {
            Some(n) if n <= 80 * 80 * 3 => vec![fill; n],
            _ => vec![fill; 64],
        });
        Frame {
            data,
            width: w,
            height: h,
            format,
            seq: 7,
            captured_at: Instant::now(),
            captured_wall: SystemTime::now(),
        }
    })
}

#[test]
fn frame_decoding_never_panics() {
    let specs = (
        1..48u32,
        1..48u32,
        prop::sample::select(vec![ResizeMode::Shortest, ResizeMode::Stretch]),
        prop::sample::select(vec![Interpolation::Bicubic, Interpolation::Bilinear]),
        prop::sample::select(vec![ChannelOrder::Rgb, ChannelOrder::Bgr]),
    )
        .prop_map(
            |(height, width, resize, interpolation, channel_order)| Spec {
                height,
                width,
                resize,
                interpolation,
                mean: [0.48, 0.46, 0.41],
                std: [0.27, 0.26, 0.28],
                channel_order,
            },
        );
    fuzz("frame decoding", (specs, frames()), |(spec, frame)| {
        let mut pre = Preprocessor::new(spec);
        let mut out = vec![0f32; pre.output_len()];
        let ok = pre.frame_to_tensor(&frame, &mut out).is_ok();
        if ok {
            assert!(out.iter().all(|v| v.is_finite()));
        }
        ok
    });
}

/// Text for `Event::from_json`: any string, or a real event damaged at random (as bytes, kept
/// if still UTF-8), or one with extreme values in its fields.
fn event_texts() -> impl Strategy<Value = String> {
    let example = Event {
        kind: edgeclip::event::EventKind::Start,
        camera: "cam0".into(),
        zone: "all".into(),
        label: "person".into(),
        prompt: "a photo of a person".into(),
        score: 0.31,
        prob: 0.87,
        frame: 1234,
        ts: SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000),
        latency_ms: 41.2,
        runner_up: None,
        snapshot: Some("/s/cam0/person/x.jpg".into()),
    }
    .to_json();
    let damaged = example.clone();
    let odd_values = prop::sample::select(vec![
        "0000-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999999Z",
        "1969-12-31T23:59:59Z",
        "2026-02-30T00:00:00Z",
        "2026-11-26T24:00:00Z",
        "2026-11-26T23:59:60Z",
        "+10000-01-01T00:00:00Z",
        "",
        "2026-11-26T23:59:00.123456789123Z",
        "1e400",
        "-0",
        "\\ud800",
    ]);
    let field = prop::sample::select(vec!["ts", "score", "frame", "latency_ms", "type"]);
    prop_oneof![
        any::<String>(),
        "[\\[\\]{}\":,0-9a-z.eE+\\- ]{0,200}",
        edits().prop_map(move |e| String::from_utf8_lossy(&apply(
            damaged.clone().into_bytes(),
            &e
        ))
        .into_owned()),
        (field, odd_values).prop_map(move |(field, value)| {
            let v: serde_json::Value = serde_json::from_str(&example).unwrap();
            let mut v = v.as_object().unwrap().clone();
            let quoted = serde_json::from_str::<serde_json::Value>(value)
                .unwrap_or_else(|_| serde_json::Value::String(value.into()));
            v.insert(field.into(), quoted);
            serde_json::to_string(&v).unwrap()
        }),
    ]
}

#[test]
fn event_parsing_never_panics() {
    fuzz("Event::from_json", event_texts(), |text| {
        if let Ok(event) = Event::from_json(&text) {
            // What was read writes back and reads again (the timestamp as written).
            let again = Event::from_json(&event.to_json()).unwrap();
            assert_eq!(again.to_json(), event.to_json());
            return true;
        }
        false
    });
}

/// Text damaged at random (its lossy UTF-8 form: the parsers take `&str`).
fn damaged_text(text: String) -> impl Strategy<Value = String> {
    edits().prop_map(move |e| {
        String::from_utf8_lossy(&apply(text.clone().into_bytes(), &e)).into_owned()
    })
}

/// TOML for the config reader: the shipped configs damaged at random, and short random strings
/// made of TOML's own punctuation and the schema's names.
fn config_texts() -> impl Strategy<Value = String> {
    let read = |name: &str| {
        std::fs::read_to_string(common::root().join("firmware-config").join(name)).unwrap()
    };
    let token = prop::sample::select(vec![
        "[camera]",
        "[model]",
        "[[prompts]]",
        "[matcher]",
        "[mqtt]",
        "[[gpio.lines]]",
        "[snapshots]",
        "label",
        "text",
        "negatives",
        "images",
        "source",
        "fps",
        "threshold",
        "=",
        "\"",
        "'''",
        "[",
        "]",
        "{",
        "}",
        ",",
        "\n",
        "1e999",
        "-1",
        "0",
        "nan",
        "true",
        "\"files:*.jpg\"",
        "\"pipe:cat\"",
        "\\u0000",
        "#",
    ]);
    prop_oneof![
        damaged_text(read("demo.toml")),
        damaged_text(read("edgeclip.toml")),
        prop::collection::vec(token, 0..40).prop_map(|t| t.join(" ")),
    ]
}

#[test]
fn config_reading_never_panics() {
    let base = common::root().join("firmware-config");
    fuzz("Config::from_toml_str", config_texts(), |text| {
        edgeclip::config::Config::from_toml_str(&text, Some(&base)).is_ok()
    });
}

/// A folder in which every file of the demo bundle but `bundle.toml` is a link to the real one,
/// so that a damaged manifest that still parses is checked against real files.
fn bundle_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(common::root().join("models/demo")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap();
        if name != "bundle.toml" {
            std::os::unix::fs::symlink(&path, dir.path().join(name)).unwrap();
        }
    }
    dir
}

#[test]
fn bundle_manifests_never_panic() {
    let dir = bundle_folder();
    let manifest = std::fs::read_to_string(common::root().join("models/demo/bundle.toml")).unwrap();
    let path = dir.path().join("bundle.toml");
    fuzz("Bundle::load", damaged_text(manifest), |text| {
        std::fs::write(&path, text).unwrap();
        edgeclip::model::Bundle::load(dir.path()).is_ok()
    });
}

#[test]
fn embeddings_files_never_panic() {
    let real = std::fs::read(common::root().join("models/demo/prompts.safetensors")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prompts.safetensors");
    let bytes = prop_oneof![
        4 => edits().prop_map(move |e| apply(real.clone(), &e)),
        1 => prop::collection::vec(any::<u8>(), 0..512),
    ];
    fuzz("PromptEmbeddings::read", bytes, |bytes| {
        std::fs::write(&path, bytes).unwrap();
        edgeclip::prompts::PromptEmbeddings::read(&path).is_ok()
    });
}
