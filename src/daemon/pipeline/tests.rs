use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::frame::PixelFormat;

/// Two cameras on the demo bundle, the second with a zone and only two of the labels, and
/// triggers that fire on one frame, so that the clip's frames cause events.
fn config() -> Config {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = format!(
        "[model]\nbundle = \"{}\"\nthreads = 1\nprecision_timing = false\n\
         [[cameras]]\nname = \"a\"\nsource = \"files:x/*.jpg\"\n\
         [[cameras]]\nname = \"b\"\nsource = \"files:y/*.jpg\"\nlabels = [\"red_circle\", \"blue_square\"]\n\
         [[cameras.zones]]\nname = \"left\"\nrect = [0.0, 0.0, 0.5, 1.0]\n\
         [[prompts]]\nlabel = \"red_circle\"\ntext = \"a photo of a red circle\"\n\
         [[prompts]]\nlabel = \"blue_square\"\ntext = \"a photo of a blue square\"\n\
         [[prompts]]\nlabel = \"yellow_star\"\ntext = \"a photo of a yellow star\"\n\
         [matcher]\nbackground = [\"an empty scene\"]\nthreshold = 0.5\nscore = \"prob\"\n\
         [trigger]\nenter_frames = 1\nexit_frames = 1\ncooldown_s = 0\n",
        root.join("models/demo").display()
    );
    Config::from_toml_str(&text, None).unwrap()
}

fn clip_frame(i: usize, seq: u64) -> Frame {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join(format!("tests/data/clip/frame_{i:04}.jpg"));
    Frame {
        data: std::fs::read(&path).unwrap(),
        width: 640,
        height: 480,
        format: PixelFormat::Mjpeg,
        seq,
        captured_at: Instant::now(),
        captured_wall: SystemTime::UNIX_EPOCH,
    }
}

/// Rounds of both cameras over the clip, one of them with a corrupt frame, and rounds where
/// only one camera has a frame.
fn rounds() -> Vec<Vec<(usize, Frame)>> {
    let mut rounds = Vec::new();
    for r in 0..24 {
        let mut round = vec![(0, clip_frame(r * 7 % 170, 2 * r as u64))];
        if r % 3 != 2 {
            let mut b = clip_frame((r * 11 + 40) % 170, 2 * r as u64 + 1);
            if r == 4 {
                b.data = vec![0x55; 1000];
            }
            round.push((1, b));
        }
        rounds.push(round);
    }
    rounds
}

/// One frame's outcome, in values that can be compared.
fn outcome(r: Result<CameraStep, FrameError>) -> Result<(usize, u64, Vec<String>), String> {
    r.map(|s| {
        let events = s.events.iter().map(|e| format!("{e:?}")).collect();
        (s.camera, s.stamp.seq, events)
    })
    .map_err(|e| e.to_string())
}

/// A round's outcomes, and both cameras' first-zone embeddings after it.
type Record = (
    Vec<Result<(usize, u64, Vec<String>), String>>,
    [Vec<f32>; 2],
);

fn record(p: &Pipeline, out: Vec<Result<CameraStep, FrameError>>) -> Record {
    let embeddings = [
        p.camera_embedding(0).to_vec(),
        p.camera_embedding(1).to_vec(),
    ];
    (out.into_iter().map(outcome).collect(), embeddings)
}

fn refs(round: &[(usize, Frame)]) -> Vec<(usize, &Frame)> {
    round.iter().map(|(c, f)| (*c, f)).collect()
}

fn stamp(frame: &Frame) -> FrameStamp {
    FrameStamp {
        seq: frame.seq,
        wall: frame.captured_wall,
        now: Duration::from_millis(100 * frame.seq),
        latency_ms: 0.0,
    }
}

#[test]
fn rounds_prepared_ahead_give_the_events_and_embeddings_of_rounds_in_turn() {
    let rounds = rounds();
    let mut in_turn = Pipeline::new(&config()).unwrap();
    let mut want = Vec::new();
    for round in &rounds {
        let out = in_turn.step_round(&refs(round), stamp);
        want.push(record(&in_turn, out));
    }

    let mut ahead = Pipeline::new(&config()).unwrap();
    ahead.prepare_ahead(&refs(&rounds[0]));
    let mut got = Vec::new();
    for (i, round) in rounds.iter().enumerate() {
        let next = rounds.get(i + 1).map(|r| refs(r)).unwrap_or_default();
        let out = ahead.step_ahead(&refs(round), &next, stamp);
        got.push(record(&ahead, out));
    }

    let events: usize = want
        .iter()
        .flat_map(|(o, _)| o)
        .filter_map(|o| o.as_ref().ok())
        .map(|o| o.2.len())
        .sum();
    let errors = want
        .iter()
        .flat_map(|(o, _)| o)
        .filter(|o| o.is_err())
        .count();
    assert!(events >= 4, "the clip caused {events} events");
    assert_eq!(errors, 1, "the corrupt frame is an error");
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        assert_eq!(g, w, "round {i}");
    }
}

#[test]
#[should_panic(expected = "the round prepared ahead is not the one stepped")]
fn stepping_a_round_that_was_not_prepared_ahead_is_a_bug() {
    let mut p = Pipeline::new(&config()).unwrap();
    let round = rounds().remove(0);
    let frames: Vec<(usize, &Frame)> = round.iter().map(|(c, f)| (*c, f)).collect();
    p.step_ahead(&frames, &[], stamp);
}
