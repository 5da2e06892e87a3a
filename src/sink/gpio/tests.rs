use super::*;
use crate::config::LineMode;
use crate::event::EventKind;
use std::time::SystemTime;

/// A fake line that records every level it is driven to.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<bool>>>);

impl Recorder {
    fn levels(&self) -> Vec<bool> {
        self.0.lock().unwrap().clone()
    }
}

impl OutputLine for Recorder {
    fn set(&mut self, high: bool) -> Result<(), GpioError> {
        self.0.lock().unwrap().push(high);
        Ok(())
    }
    fn describe(&self) -> String {
        "fake".into()
    }
}

struct Failing;
impl OutputLine for Failing {
    fn set(&mut self, high: bool) -> Result<(), GpioError> {
        if high {
            Err(GpioError::Set {
                chip: "/dev/gpiochip9".into(),
                line: "\"GPIO17\"".into(),
                level: "high",
                source: "EIO".into(),
            })
        } else {
            Ok(())
        }
    }
    fn describe(&self) -> String {
        "failing".into()
    }
}

/// The whole frame of `cam0`.
const CAM0: (&str, &str) = ("cam0", "all");

fn event(kind: EventKind, label: &str) -> Event {
    in_zone(kind, "cam0", "all", label)
}

fn in_zone(kind: EventKind, camera: &str, zone: &str, label: &str) -> Event {
    Event {
        kind,
        camera: camera.into(),
        zone: zone.into(),
        label: label.into(),
        prompt: "p".into(),
        score: 0.0,
        prob: 1.0,
        frame: 0,
        ts: SystemTime::UNIX_EPOCH,
        latency_ms: 0.0,
        runner_up: None,
        snapshot: None,
    }
}

#[test]
fn level_mode_follows_start_and_end() {
    let t0 = Instant::now();
    let mut l = LineLogic::new(LineMode::Level, false, Duration::ZERO);
    assert!(!l.idle_level());
    assert_eq!(l.on_event(EventKind::Start, CAM0, t0), Some(true));
    assert_eq!(l.on_event(EventKind::Start, CAM0, t0), None, "already on");
    assert_eq!(
        l.on_tick(t0 + Duration::from_secs(100)),
        None,
        "no pulse in level mode"
    );
    assert_eq!(l.on_event(EventKind::End, CAM0, t0), Some(false));
    assert_eq!(l.on_event(EventKind::End, CAM0, t0), None, "already off");
}

#[test]
fn active_low_inverts_levels() {
    let t0 = Instant::now();
    let mut l = LineLogic::new(LineMode::Level, true, Duration::ZERO);
    assert!(l.idle_level());
    assert_eq!(l.on_event(EventKind::Start, CAM0, t0), Some(false));
    assert_eq!(l.on_event(EventKind::End, CAM0, t0), Some(true));
    let mut p = LineLogic::new(LineMode::Pulse, true, Duration::from_millis(10));
    assert_eq!(p.on_event(EventKind::Start, CAM0, t0), Some(false));
    assert_eq!(p.on_tick(t0 + Duration::from_millis(10)), Some(true));
}

#[test]
fn pulse_mode_ends_at_the_deadline_and_retriggers() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut p = LineLogic::new(LineMode::Pulse, false, ms(100));
    assert_eq!(p.deadline(), None);
    assert_eq!(p.on_event(EventKind::Start, CAM0, t0), Some(true));
    assert_eq!(p.deadline(), Some(t0 + ms(100)));
    assert_eq!(
        p.on_event(EventKind::End, CAM0, t0 + ms(10)),
        None,
        "ends are ignored"
    );
    assert_eq!(p.on_tick(t0 + ms(50)), None);
    // A new start during the pulse extends it without a new edge.
    assert_eq!(p.on_event(EventKind::Start, CAM0, t0 + ms(60)), None);
    assert_eq!(p.on_tick(t0 + ms(100)), None);
    assert_eq!(p.on_tick(t0 + ms(160)), Some(false));
    assert_eq!(p.deadline(), None);
    assert!(!p.is_on());
}

#[test]
fn turn_off_clears_pulses() {
    let t0 = Instant::now();
    let mut p = LineLogic::new(LineMode::Pulse, false, Duration::from_secs(60));
    p.on_event(EventKind::Start, CAM0, t0);
    assert_eq!(p.turn_off(), Some(false));
    assert_eq!(p.deadline(), None);
    assert_eq!(p.turn_off(), None);
}

/// Waits (bounded) until the recorder holds `want`; fails with what it saw.
fn wait_for(rec: &Recorder, want: &[bool]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while rec.levels() != want {
        assert!(
            Instant::now() < deadline,
            "line levels {:?}, expected {want:?}",
            rec.levels()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn sink_drives_lines_of_the_event_label_only() {
    let person = Recorder::default();
    let cat = Recorder::default();
    let mut sink = GpioSink::with_lines(vec![
        (
            Follows::label("person"),
            LineLogic::new(LineMode::Level, false, Duration::ZERO),
            Box::new(person.clone()),
        ),
        (
            Follows::label("cat"),
            LineLogic::new(LineMode::Level, true, Duration::ZERO),
            Box::new(cat.clone()),
        ),
    ])
    .unwrap();
    assert_eq!(person.levels(), vec![false], "driven idle at open");
    assert_eq!(cat.levels(), vec![true], "active-low idles high");
    sink.publish(&event(EventKind::Start, "person")).unwrap();
    sink.publish(&event(EventKind::Start, "dog")).unwrap();
    assert_eq!(person.levels(), vec![false, true]);
    assert_eq!(cat.levels(), vec![true]);
    sink.publish(&event(EventKind::Start, "cat")).unwrap();
    assert_eq!(cat.levels(), vec![true, false]);
    sink.close().unwrap();
    assert_eq!(
        person.levels(),
        vec![false, true, false],
        "close drives idle"
    );
    assert_eq!(cat.levels(), vec![true, false, true]);
}

#[test]
fn pulses_end_without_further_events() {
    let rec = Recorder::default();
    let mut sink = GpioSink::with_lines(vec![(
        Follows::label("person"),
        LineLogic::new(LineMode::Pulse, false, Duration::from_millis(20)),
        Box::new(rec.clone()),
    )])
    .unwrap();
    sink.publish(&event(EventKind::Start, "person")).unwrap();
    wait_for(&rec, &[false, true, false]);
    sink.publish(&event(EventKind::Start, "person")).unwrap();
    wait_for(&rec, &[false, true, false, true, false]);
    sink.close().unwrap();
    assert_eq!(rec.levels(), vec![false, true, false, true, false]);
}

#[test]
fn driver_errors_are_returned_with_chip_and_line() {
    let mut sink = GpioSink::with_lines(vec![(
        Follows::label("person"),
        LineLogic::new(LineMode::Level, false, Duration::ZERO),
        Box::new(Failing),
    )])
    .unwrap();
    let err = sink
        .publish(&event(EventKind::Start, "person"))
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("/dev/gpiochip9") && text.contains("GPIO17"),
        "{text}"
    );
}

#[cfg(not(all(target_os = "linux", feature = "rpi")))]
#[test]
fn missing_backend_is_a_clear_error() {
    let config = GpioConfig {
        chip: None,
        backend: GpioBackend::Rppal,
        lines: vec![crate::config::GpioLineConfig {
            camera: None,
            zone: None,
            label: "person".into(),
            line: LineRef::Offset(17),
            mode: LineMode::Level,
            pulse_ms: 100,
            active_low: false,
        }],
    };
    let err = GpioSink::open(&config)
        .err()
        .expect("rppal is not compiled in");
    assert!(err.to_string().contains("\"rpi\""), "{err}");
}

#[cfg(all(target_os = "linux", feature = "gpio"))]
#[test]
fn a_missing_chip_is_named_in_the_error() {
    let config = GpioConfig {
        chip: Some("/nonexistent/gpiochip7".into()),
        backend: GpioBackend::Cdev,
        lines: vec![crate::config::GpioLineConfig {
            camera: None,
            zone: None,
            label: "person".into(),
            line: LineRef::Name("GPIO17".into()),
            mode: LineMode::Level,
            pulse_ms: 100,
            active_low: false,
        }],
    };
    let err = GpioSink::open(&config).err().expect("no such chip");
    assert!(err.to_string().contains("/nonexistent/gpiochip7"), "{err}");
    let err = probe(&config).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/gpiochip7"), "{err}");
}

#[test]
fn a_level_line_stays_on_while_any_of_its_zones_is_active() {
    let t0 = Instant::now();
    let mut l = LineLogic::new(LineMode::Level, false, Duration::ZERO);
    let (a, b) = (("cam0", "driveway"), ("cam0", "porch"));
    assert_eq!(l.on_event(EventKind::Start, a, t0), Some(true));
    assert_eq!(l.on_event(EventKind::Start, b, t0), None, "already on");
    assert_eq!(
        l.on_event(EventKind::End, a, t0),
        None,
        "the porch still sees one"
    );
    assert!(l.is_on());
    assert_eq!(l.on_event(EventKind::End, b, t0), Some(false));
    // The same zone on two cameras is two pairs.
    assert_eq!(
        l.on_event(EventKind::Start, ("cam1", "porch"), t0),
        Some(true)
    );
    assert_eq!(l.on_event(EventKind::Start, b, t0), None);
    assert_eq!(l.on_event(EventKind::End, b, t0), None);
    assert_eq!(
        l.on_event(EventKind::End, ("cam1", "porch"), t0),
        Some(false)
    );
    // turn_off forgets every pair: the next start is an edge again, one end ends it.
    l.on_event(EventKind::Start, a, t0);
    l.on_event(EventKind::Start, b, t0);
    assert_eq!(l.turn_off(), Some(false));
    assert_eq!(l.on_event(EventKind::Start, a, t0), Some(true));
    assert_eq!(l.on_event(EventKind::End, a, t0), Some(false));
}

#[test]
fn what_a_line_follows() {
    let any = Follows::label("person");
    let camera = Follows {
        camera: Some("cam1".into()),
        ..Follows::label("person")
    };
    let zone = Follows {
        zone: Some("driveway".into()),
        ..Follows::label("person")
    };
    let both = Follows {
        camera: Some("cam1".into()),
        zone: Some("driveway".into()),
        ..Follows::label("person")
    };
    let whole = Follows {
        zone: Some("all".into()),
        ..Follows::label("person")
    };
    let cases = [
        (
            in_zone(EventKind::Start, "cam0", "all", "person"),
            [true, false, false, false, true],
        ),
        (
            in_zone(EventKind::Start, "cam1", "all", "person"),
            [true, true, false, false, true],
        ),
        (
            in_zone(EventKind::Start, "cam0", "driveway", "person"),
            [true, false, true, false, false],
        ),
        (
            in_zone(EventKind::Start, "cam1", "driveway", "person"),
            [true, true, true, true, false],
        ),
        (
            in_zone(EventKind::Start, "cam1", "driveway", "cat"),
            [false; 5],
        ),
    ];
    for (e, want) in cases {
        let got = [&any, &camera, &zone, &both, &whole].map(|f| f.matches(&e));
        assert_eq!(got, want, "{} {} {}", e.camera, e.zone, e.label);
    }
    assert_eq!(
        both.to_string(),
        "label \"person\" of camera \"cam1\" in zone \"driveway\""
    );
    assert_eq!(
        any.to_string(),
        "label \"person\" of every camera in every zone"
    );
}

#[test]
fn the_sink_drives_a_line_from_its_camera_and_zones_only() {
    let porch = Recorder::default();
    let anywhere = Recorder::default();
    let mut sink = GpioSink::with_lines(vec![
        (
            Follows {
                camera: Some("cam1".into()),
                ..Follows::label("person")
            },
            LineLogic::new(LineMode::Level, false, Duration::ZERO),
            Box::new(porch.clone()),
        ),
        (
            Follows::label("person"),
            LineLogic::new(LineMode::Level, false, Duration::ZERO),
            Box::new(anywhere.clone()),
        ),
    ])
    .unwrap();
    // A person on cam0: only the line of every camera.
    sink.publish(&in_zone(EventKind::Start, "cam0", "all", "person"))
        .unwrap();
    assert_eq!(porch.levels(), vec![false]);
    assert_eq!(anywhere.levels(), vec![false, true]);
    // A person in two zones of cam1; one ends, the other goes on.
    sink.publish(&in_zone(EventKind::Start, "cam1", "porch", "person"))
        .unwrap();
    sink.publish(&in_zone(EventKind::Start, "cam1", "gate", "person"))
        .unwrap();
    sink.publish(&in_zone(EventKind::End, "cam1", "porch", "person"))
        .unwrap();
    assert_eq!(porch.levels(), vec![false, true]);
    sink.publish(&in_zone(EventKind::End, "cam0", "all", "person"))
        .unwrap();
    assert_eq!(
        anywhere.levels(),
        vec![false, true],
        "cam1's gate still sees one"
    );
    sink.publish(&in_zone(EventKind::End, "cam1", "gate", "person"))
        .unwrap();
    assert_eq!(porch.levels(), vec![false, true, false]);
    assert_eq!(anywhere.levels(), vec![false, true, false]);
    sink.close().unwrap();
}
