//! The recorded clip replayed through the daemon with the demo model and the shipped demo config:
//! the start and end events must be exactly the ground truth's transitions, each within the
//! trigger's frame lag (plus a small slack for objects sliding in and out of view).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use edgeclip::config::Config;
use edgeclip::daemon::{Control, Daemon, Delivery};
use edgeclip::event::{Event, EventKind};
use edgeclip::frame::Frame;
use edgeclip::sink::{CameraStatus, EventSink, SinkError};
use edgeclip::source::{FrameSource, SourceError};

/// Frames an object needs to be unambiguous while it slides in or out.
const SLACK: i64 = 4;

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Event>>>);

impl EventSink for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    fn publish(&mut self, event: &Event) -> Result<(), SinkError> {
        self.0.lock().unwrap().push(event.clone());
        Ok(())
    }
}

/// Replays `daemon`'s configured source losslessly into a recording sink; returns the run's
/// summary and every event published.
fn replay(daemon: Daemon, control: &Control) -> (edgeclip::daemon::Summary, Vec<Event>) {
    let source = edgeclip::source::open_source(daemon.config().camera()).unwrap();
    let recorder = Recorder::default();
    let summary = daemon
        .run(
            vec![source],
            vec![Box::new(recorder.clone())],
            control,
            Delivery::Lossless,
        )
        .unwrap();
    let events = recorder.0.lock().unwrap().clone();
    (summary, events)
}

#[derive(serde::Deserialize)]
struct Truth {
    frames: Vec<TruthFrame>,
}

#[derive(serde::Deserialize)]
struct TruthFrame {
    frame: i64,
    labels: Vec<String>,
}

/// (start, end) frame of every interval in which `prompt` is visible; end = first frame without it.
fn intervals(truth: &Truth, prompt: &str) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut start = None;
    for f in &truth.frames {
        let on = f.labels.iter().any(|l| l == prompt);
        match (on, start) {
            (true, None) => start = Some(f.frame),
            (false, Some(s)) => {
                out.push((s, f.frame));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, truth.frames.len() as i64));
    }
    out
}

#[test]
fn clip_events_match_the_ground_truth() {
    let config = Config::from_file(common::root().join("firmware-config/demo.toml")).unwrap();
    let enter = config.trigger.enter_frames as i64;
    let exit = config.trigger.exit_frames as i64;
    let prompts: BTreeMap<String, String> = config
        .prompts
        .iter()
        .map(|p| (p.label.clone(), p.display_text().to_string()))
        .collect();
    let truth: Truth = serde_json::from_str(
        &std::fs::read_to_string(common::data("clip/ground_truth.json")).unwrap(),
    )
    .unwrap();

    let daemon = Daemon::new(common::without_snapshots(config)).unwrap();
    let (summary, events) = replay(daemon, &Control::default());
    assert_eq!(
        summary.processed as usize,
        truth.frames.len(),
        "every frame of the clip processed"
    );
    assert_eq!(summary.dropped, 0);

    for e in &events {
        eprintln!(
            "{:?} {} frame {} prob {:.2}",
            e.kind, e.label, e.frame, e.prob
        );
    }
    let mut problems = Vec::new();
    for (label, prompt) in &prompts {
        let expected = intervals(&truth, prompt);
        let got: Vec<&Event> = events.iter().filter(|e| &e.label == label).collect();
        if got.len() != expected.len() * 2 {
            problems.push(format!(
                "{label}: {} events, ground truth has {} intervals {expected:?}",
                got.len(),
                expected.len()
            ));
            continue;
        }
        for (pair, (s, e)) in got.chunks(2).zip(&expected) {
            let (start, end) = (pair[0], pair[1]);
            assert_eq!(start.kind, EventKind::Start);
            assert_eq!(end.kind, EventKind::End);
            let start_lag = start.frame as i64 - (s + enter - 1);
            let end_lag = end.frame as i64 - (e + exit - 1);
            if start_lag.abs() > SLACK || end_lag.abs() > SLACK {
                problems.push(format!(
                    "{label}: start at {} (truth {s}, +{enter} frames), end at {} (truth {e}, +{exit} frames)",
                    start.frame, end.frame
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Preprocessing each round while the tower encodes the round before changes when frames are
/// decoded, not what comes out: the clip gives the same events, in the same order, with
/// `model.prepare_ahead` on and off.
#[test]
fn preparing_rounds_ahead_publishes_the_events_of_rounds_in_turn() {
    let run = |ahead: bool| {
        let mut config =
            Config::from_file(common::root().join("firmware-config/demo.toml")).unwrap();
        config.model.prepare_ahead = ahead;
        let daemon = Daemon::new(common::without_snapshots(config)).unwrap();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // demo.toml runs one thread: with two cores a second one is free.
        assert_eq!(daemon.prepares_ahead(), ahead && cores > 1, "{cores} cores");
        let (summary, events) = replay(daemon, &Control::default());
        let events: Vec<String> = events
            .iter()
            .map(|e| {
                format!(
                    "{:?} {} frame {} prob {:.6}",
                    e.kind, e.label, e.frame, e.prob
                )
            })
            .collect();
        (summary.processed, summary.bad_frames, events)
    };
    let (ahead, in_turn) = (run(true), run(false));
    assert!(in_turn.2.len() >= 8, "{} events", in_turn.2.len());
    assert_eq!(ahead, in_turn);
}

/// A corrupt JPEG in a replayed clip is skipped and counted (once); every other frame is processed and
/// the daemon finishes normally.
#[test]
fn corrupt_frames_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..6 {
        let src = common::data(&format!("clip/frame_{:04}.jpg", 20 + i));
        std::fs::copy(src, dir.path().join(format!("f{i}.jpg"))).unwrap();
    }
    // A corrupt JPEG: the start-of-image marker, then noise. (A merely truncated JPEG decodes,
    // with its missing part grey, as libjpeg does too.)
    let mut corrupt = vec![0xFF, 0xD8];
    corrupt.extend((0..4000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
    std::fs::write(dir.path().join("f3.jpg"), corrupt).unwrap();
    let text = format!(
        "[camera]\nsource = \"files:{}/*.jpg\"\nfps = 100\n[model]\nbundle = \"{}\"\n\
         [[prompts]]\nlabel = \"red_circle\"\ntext = \"a photo of a red circle\"\n",
        dir.path().display(),
        common::root().join("models/demo").display()
    );
    let config = Config::from_toml_str(&text, None).unwrap();
    let daemon = Daemon::new(common::without_snapshots(config)).unwrap();
    let (summary, _) = replay(daemon, &Control::default());
    // The files source reads each JPEG's header and reports this one as a source error; a frame
    // whose header parses but whose data does not decode is counted in `bad_frames` instead.
    assert_eq!(summary.source_errors + summary.bad_frames, 1, "{summary:?}");
    assert_eq!(summary.processed, 5, "{summary:?}");
    assert_eq!(summary.dropped, 0);
}

/// SIGHUP's path: the reload flag makes the daemon re-read the prompts from its config file. Set
/// before the run, the reload happens before the first frame, so only the new label can fire; its
/// ensemble has a text the bundle's precomputed prompts lack, which the text tower embeds.
#[test]
fn reload_takes_the_prompts_from_the_rewritten_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edgeclip.toml");
    let config_text = |prompts: &str| {
        format!(
            "[camera]\nsource = \"files:{}\"\nfps = 100\n[model]\nbundle = \"{}\"\n\
             {prompts}[trigger]\nenter_frames = 3\nexit_frames = 3\n",
            common::data("clip/*.jpg").display(),
            common::root().join("models/demo").display()
        )
    };
    let old = "[[prompts]]\nlabel = \"red_circle\"\ntext = \"a photo of a red circle\"\n";
    std::fs::write(&path, config_text(old)).unwrap();
    let daemon = Daemon::new(common::without_snapshots(Config::from_file(&path).unwrap())).unwrap();
    let new = "[[prompts]]\nlabel = \"red\"\ntext = \"a photo of a red circle\"\n\
               [[prompts]]\nlabel = \"blue_square\"\ntext = [\"a photo of a blue square\", \"a blue square\"]\n";
    std::fs::write(&path, config_text(new)).unwrap();
    let control = Control::default();
    control
        .reload
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let (_, events) = replay(daemon, &control);
    let labels: Vec<(&str, EventKind)> =
        events.iter().map(|e| (e.label.as_str(), e.kind)).collect();
    // The old label is gone; both new ones fire, each once, in the clip's order.
    assert_eq!(
        labels,
        [
            ("red", EventKind::Start),
            ("red", EventKind::End),
            ("blue_square", EventKind::Start),
            ("blue_square", EventKind::End)
        ],
        "{events:?}"
    );
    assert!(
        !control.reload.load(std::sync::atomic::Ordering::Relaxed),
        "the flag is cleared"
    );
}

/// A source that sets the shutdown flag at its first capture timeout: a pipe that wrote its
/// frames and then stays silent ends the run once everything it wrote was delivered.
struct StopWhenSilent {
    inner: Box<dyn FrameSource>,
    shutdown: Arc<AtomicBool>,
}

impl FrameSource for StopWhenSilent {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        let next = self.inner.next_frame();
        if matches!(next, Err(SourceError::Timeout { .. })) {
            self.shutdown.store(true, Ordering::Relaxed);
        }
        next
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn dropped(&self) -> u64 {
        self.inner.dropped()
    }
}

/// A burst of MJPEG frames through a pipe into the slower daemon: frames the pipe source's own
/// mailbox replaced are counted in the summary's `dropped`, next to the daemon's. Delivery is
/// lossless, so the daemon's mailbox drops nothing and every dropped frame is the source's.
#[test]
fn frames_dropped_inside_the_pipe_source_are_counted() {
    const N: u64 = 40;
    let dir = tempfile::tempdir().unwrap();
    let mut stream = Vec::new();
    for i in 0..N {
        let img = image::RgbImage::from_pixel(16, 16, image::Rgb([(i * 6) as u8, 0, 128]));
        let mut jpeg = std::io::Cursor::new(Vec::new());
        img.write_to(&mut jpeg, image::ImageFormat::Jpeg).unwrap();
        stream.extend(jpeg.into_inner());
    }
    let burst = dir.path().join("burst.mjpeg");
    std::fs::write(&burst, stream).unwrap();
    let text = format!(
        "[camera]\nsource = \"pipe:cat '{}'; exec sleep 60\"\ntimeout_s = 1\n\
         [model]\nbundle = \"{}\"\n\
         [[prompts]]\nlabel = \"red_circle\"\ntext = \"a photo of a red circle\"\n",
        burst.display(),
        common::root().join("models/demo").display()
    );
    let config = Config::from_toml_str(&text, None).unwrap();
    let daemon = Daemon::new(common::without_snapshots(config)).unwrap();
    let control = Control::default();
    let source = StopWhenSilent {
        inner: edgeclip::source::open_source(daemon.config().camera()).unwrap(),
        shutdown: control.shutdown.clone(),
    };
    let summary = daemon
        .run(vec![Box::new(source)], vec![], &control, Delivery::Lossless)
        .unwrap();
    assert_eq!(summary.bad_frames, 0, "{summary:?}");
    assert_eq!(summary.processed, summary.captured, "{summary:?}");
    assert!(summary.dropped > 0, "the pipe dropped frames: {summary:?}");
    assert_eq!(
        summary.processed + summary.dropped,
        N,
        "every frame the command wrote processed or counted as dropped: {summary:?}"
    );
}

/// What a [`StatusRecorder`] saw, in order.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Event(String, EventKind),
    Online,
    Offline(String),
}

#[derive(Clone, Default)]
struct StatusRecorder(Arc<Mutex<Vec<Seen>>>);

impl EventSink for StatusRecorder {
    fn name(&self) -> &str {
        "status recorder"
    }
    fn publish(&mut self, event: &Event) -> Result<(), SinkError> {
        let seen = Seen::Event(event.label.clone(), event.kind);
        self.0.lock().unwrap().push(seen);
        Ok(())
    }
    fn camera_status(&mut self, _camera: &str, status: &CameraStatus) -> Result<(), SinkError> {
        self.0.lock().unwrap().push(match status {
            CameraStatus::Online => Seen::Online,
            CameraStatus::Offline { reason } => Seen::Offline(reason.clone()),
        });
        Ok(())
    }
}

/// A camera as a script: frames (the clip's JPEGs, captured when taken) and failures (the
/// error a pipe source returns when its command died), then the end.
struct Script(std::collections::VecDeque<Option<std::path::PathBuf>>, u64);

impl FrameSource for Script {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        let Some(step) = self.0.pop_front() else {
            return Ok(None);
        };
        let Some(path) = step else {
            return Err(SourceError::PipeExited {
                command: "camera".into(),
                status: "exit status: 3".into(),
                restart_in: std::time::Duration::from_millis(500),
            });
        };
        self.1 += 1;
        Ok(Some(Frame {
            data: std::fs::read(path).unwrap(),
            width: 640,
            height: 480,
            format: edgeclip::frame::PixelFormat::Mjpeg,
            seq: self.1,
            captured_at: std::time::Instant::now(),
            captured_wall: std::time::SystemTime::now(),
        }))
    }
    fn describe(&self) -> String {
        "script".into()
    }
}

/// The camera dies (its command exits, three times) while a label is active: the label ends,
/// then the sinks learn `Offline` with the error, once; the next frame brings `Online` and
/// detection starts again. `Online` also comes once with the first frame.
#[test]
fn a_dead_camera_ends_the_labels_and_the_sinks_learn_it_once() {
    let red: Vec<_> = (20..=40)
        .map(|i| Some(common::data(&format!("clip/frame_{i:04}.jpg"))))
        .collect();
    let mut script: std::collections::VecDeque<_> = red.iter().cloned().collect();
    script.extend([None, None, None]);
    script.extend(red.iter().cloned());
    let text = std::fs::read_to_string(common::root().join("firmware-config/demo.toml"))
        .unwrap()
        .replace("../", &format!("{}/", common::root().display()));
    let config = Config::from_toml_str(&text, None).unwrap();
    let daemon = Daemon::new(common::without_snapshots(config)).unwrap();
    let recorder = StatusRecorder::default();
    daemon
        .run(
            vec![Box::new(Script(script, 0))],
            vec![Box::new(recorder.clone())],
            &Control::default(),
            Delivery::Lossless,
        )
        .unwrap();
    let seen = recorder.0.lock().unwrap().clone();
    let red = |kind| Seen::Event("red_circle".into(), kind);
    assert_eq!(
        seen,
        vec![
            Seen::Online,
            red(EventKind::Start),
            red(EventKind::End),
            Seen::Offline("pipe `camera`: exited (exit status: 3); restarting in 500ms".into()),
            Seen::Online,
            red(EventKind::Start),
            red(EventKind::End),
        ]
    );
}
