//! Frame sources against real files and real commands: replay order, loop vs finish, MJPEG
//! splitting through a pipe, restart of a command that dies, corrupt frames, stalls.
//!
//! No assertion depends on speed: waits are bounded loops that fail with a message, and the
//! only time check is a lower bound that sleeping guarantees.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use edgeclip::config::{CameraConfig, CaptureFormat, SourceSpec};
use edgeclip::frame::{Frame, PixelFormat};
use edgeclip::source::{
    FilesSource, FrameSource, PipeFormat, PipeOptions, PipeSource, SourceError, open_source,
};

/// Writes a `w`x`h` JPEG whose pixels encode `shade`; returns its bytes.
fn write_jpeg(path: &Path, w: u32, h: u32, shade: u8) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(w, h, image::Rgb([shade, 255 - shade, 128]));
    img.save_with_format(path, image::ImageFormat::Jpeg)
        .expect("write jpeg");
    std::fs::read(path).expect("read back")
}

fn camera(source: SourceSpec) -> CameraConfig {
    CameraConfig {
        key: "camera".into(),
        name: "cam0".into(),
        source,
        width: 640,
        height: 480,
        fps: 1000.0,
        max_fps: None,
        format: CaptureFormat::Auto,
        looping: false,
        timeout_s: 5.0,
        offline_after_s: 10.0,
        labels: None,
        prompts: Vec::new(),
        whole_frame: true,
        zones: Vec::new(),
    }
}

fn sh_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

/// Calls `next_frame` until `done` says so, collecting frames and errors; fails after `limit`.
fn collect(
    source: &mut dyn FrameSource,
    limit: Duration,
    mut done: impl FnMut(&[Frame], &[SourceError]) -> bool,
) -> (Vec<Frame>, Vec<SourceError>) {
    let deadline = Instant::now() + limit;
    let mut frames = Vec::new();
    let mut errors = Vec::new();
    while !done(&frames, &errors) {
        assert!(
            Instant::now() < deadline,
            "gave up after {limit:?}: {} frames, errors: {:?}",
            frames.len(),
            errors.iter().map(|e| e.to_string()).collect::<Vec<_>>()
        );
        match source.next_frame() {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => panic!("{} finished unexpectedly", source.describe()),
            Err(e) => {
                assert!(!e.is_fatal(), "fatal error: {e}");
                errors.push(e);
            }
        }
    }
    (frames, errors)
}

#[test]
fn files_replay_in_sorted_order_then_finish() {
    let dir = tempfile::tempdir().unwrap();
    // Written out of order; widths tell them apart.
    let b = write_jpeg(&dir.path().join("02.jpg"), 24, 16, 20);
    let c = write_jpeg(&dir.path().join("10.jpg"), 32, 16, 30);
    let a = write_jpeg(&dir.path().join("01.jpg"), 16, 16, 10);
    std::fs::write(dir.path().join("notes.txt"), "not matched").unwrap();
    let pattern = dir.path().join("*.jpg").to_string_lossy().into_owned();
    let mut src = FilesSource::open(&pattern, 1000.0, false).unwrap();
    assert_eq!(src.files().len(), 3);
    let mut got = Vec::new();
    while let Some(f) = src.next_frame().unwrap() {
        got.push(f);
    }
    assert_eq!(got.len(), 3);
    assert_eq!(
        got.iter().map(|f| f.width).collect::<Vec<_>>(),
        vec![16, 24, 32]
    );
    assert!(
        got.iter()
            .all(|f| f.format == PixelFormat::Mjpeg && f.height == 16)
    );
    assert_eq!(got[0].data, a, "JPEG frames carry the file bytes");
    assert_eq!(got[1].data, b);
    assert_eq!(got[2].data, c);
    assert_eq!(got.iter().map(|f| f.seq).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert!(src.next_frame().unwrap().is_none(), "stays finished");
}

#[test]
fn files_loop_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    write_jpeg(&dir.path().join("a.jpg"), 16, 16, 1);
    write_jpeg(&dir.path().join("b.jpg"), 24, 16, 2);
    let pattern = dir.path().join("*.jpg").to_string_lossy().into_owned();
    let mut cam = camera(SourceSpec::Files { pattern });
    cam.looping = true;
    let mut src = open_source(&cam).unwrap();
    let widths: Vec<u32> = (0..7)
        .map(|_| {
            src.next_frame()
                .unwrap()
                .expect("a looping source never finishes")
                .width
        })
        .collect();
    assert_eq!(widths, vec![16, 24, 16, 24, 16, 24, 16]);
    assert!(src.describe().starts_with("files:"));
}

#[test]
fn files_are_paced_at_the_frame_rate() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..5 {
        write_jpeg(&dir.path().join(format!("{i}.jpg")), 16, 16, i);
    }
    let pattern = dir.path().join("*.jpg").to_string_lossy().into_owned();
    let mut src = FilesSource::open(&pattern, 50.0, false).unwrap();
    let start = Instant::now();
    let mut n = 0;
    while src.next_frame().unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 5);
    // Five frames at 50 fps span at least four 20 ms intervals (a lower bound only: sleeping
    // guarantees it, a slow machine cannot break it).
    assert!(
        start.elapsed() >= Duration::from_millis(80),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn png_files_are_decoded_to_rgb() {
    let dir = tempfile::tempdir().unwrap();
    let img = image::RgbImage::from_pixel(5, 3, image::Rgb([10, 20, 30]));
    img.save(dir.path().join("x.png")).unwrap();
    let pattern = dir.path().join("*.png").to_string_lossy().into_owned();
    let mut src = FilesSource::open(&pattern, 1000.0, false)
        .unwrap()
        .unpaced();
    let f = src.next_frame().unwrap().unwrap();
    assert_eq!((f.width, f.height, f.format), (5, 3, PixelFormat::Rgb24));
    assert_eq!(f.data.len(), 5 * 3 * 3);
    assert_eq!(&f.data[..3], &[10, 20, 30]);
}

#[test]
fn a_bad_file_is_a_recoverable_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    write_jpeg(&dir.path().join("1.jpg"), 16, 16, 1);
    std::fs::write(
        dir.path().join("2.jpg"),
        b"\xFF\xD8 this is not really a jpeg",
    )
    .unwrap();
    write_jpeg(&dir.path().join("3.jpg"), 24, 16, 3);
    let pattern = dir.path().join("*.jpg").to_string_lossy().into_owned();
    let mut src = FilesSource::open(&pattern, 1000.0, false).unwrap();
    assert_eq!(src.next_frame().unwrap().unwrap().width, 16);
    let err = src.next_frame().unwrap_err();
    assert!(!err.is_fatal());
    assert!(err.to_string().contains("2.jpg"), "{err}");
    assert_eq!(src.next_frame().unwrap().unwrap().width, 24);
    assert!(src.next_frame().unwrap().is_none());
}

#[test]
fn an_empty_glob_is_fatal_and_names_the_pattern() {
    let dir = tempfile::tempdir().unwrap();
    let pattern = dir.path().join("*.jpg").to_string_lossy().into_owned();
    let err = FilesSource::open(&pattern, 15.0, false)
        .err()
        .expect("no files");
    assert!(err.is_fatal());
    assert!(err.to_string().contains(&pattern), "{err}");
}

fn quick_restart(format: PipeFormat, timeout: Duration) -> PipeOptions {
    PipeOptions {
        format,
        timeout,
        restart_min: Duration::from_millis(50),
        restart_max: Duration::from_millis(200),
        ..PipeOptions::default()
    }
}

#[test]
fn pipe_splits_mjpeg_and_restarts_the_command_when_it_dies() {
    let dir = tempfile::tempdir().unwrap();
    let a_path = dir.path().join("a.jpg");
    let b_path = dir.path().join("b.jpg");
    let a = write_jpeg(&a_path, 16, 16, 1);
    let b = write_jpeg(&b_path, 24, 16, 2);
    // Two frames, a pause so the consumer takes each, then the command dies.
    let cmd = format!(
        "cat {}; sleep 0.2; cat {}; sleep 0.2; exit 3",
        sh_quote(&a_path),
        sh_quote(&b_path)
    );
    let mut src = PipeSource::spawn(
        &cmd,
        quick_restart(PipeFormat::Mjpeg, Duration::from_secs(5)),
    )
    .unwrap();
    let exited = |e: &SourceError| matches!(e, SourceError::PipeExited { .. });
    let (frames, errors) = collect(&mut src, Duration::from_secs(30), |frames, errors| {
        // At least one exit, and frames of both kinds after it.
        let restarted = errors.iter().any(exited);
        let later = frames.iter().filter(|f| f.seq >= 2).count();
        restarted
            && later >= 2
            && frames.iter().any(|f| f.width == 16)
            && frames.iter().any(|f| f.width == 24)
    });
    for f in &frames {
        assert_eq!(f.format, PixelFormat::Mjpeg);
        assert!(
            f.data == a || f.data == b,
            "frame {} is not one of the two JPEGs ({} bytes)",
            f.seq,
            f.data.len()
        );
        assert_eq!(f.width, if f.data == a { 16 } else { 24 });
    }
    assert!(
        frames.windows(2).all(|w| w[0].seq < w[1].seq),
        "sequence numbers increase"
    );
    let exit = errors.iter().find(|e| exited(e)).unwrap().to_string();
    assert!(exit.contains("exit status: 3"), "{exit}");
    assert!(exit.contains("cat "), "the error names the command: {exit}");
    assert!(
        errors.iter().all(exited),
        "no other errors: {:?}",
        errors.iter().map(|e| e.to_string()).collect::<Vec<_>>()
    );
}

#[test]
fn a_corrupt_frame_does_not_kill_the_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let a_path = dir.path().join("a.jpg");
    let bad_path = dir.path().join("bad.bin");
    let a = write_jpeg(&a_path, 16, 16, 1);
    // Garbage between a start and an end marker, and plain garbage between frames.
    std::fs::write(&bad_path, b"\xFF\xD8garbage garbage\xFF\xD9 more junk").unwrap();
    let cmd = format!(
        "cat {a}; sleep 0.2; cat {bad}; cat {a}; sleep 0.2; exit 0",
        a = sh_quote(&a_path),
        bad = sh_quote(&bad_path)
    );
    let mut src = PipeSource::spawn(
        &cmd,
        quick_restart(PipeFormat::Mjpeg, Duration::from_secs(5)),
    )
    .unwrap();
    let corrupt = |e: &SourceError| matches!(e, SourceError::CorruptFrame { .. });
    let (frames, errors) = collect(&mut src, Duration::from_secs(30), |frames, errors| {
        match errors.iter().position(corrupt) {
            // Frames keep coming after the corrupt one.
            Some(_) => frames.iter().filter(|f| f.seq >= 2).count() >= 2,
            None => false,
        }
    });
    assert!(
        frames.iter().all(|f| f.data == a),
        "only intact frames come out"
    );
    let msg = errors.iter().find(|e| corrupt(e)).unwrap().to_string();
    assert!(msg.contains("pipe `cat"), "{msg}");
}

#[test]
fn raw_frames_of_fixed_size() {
    // Two 4x2 grey frames, back to back, then the command idles.
    let cmd = "printf AAAAAAAA; sleep 0.2; printf BBBBBBBB; sleep 30";
    let mut src = PipeSource::spawn(
        cmd,
        quick_restart(
            PipeFormat::Raw {
                format: PixelFormat::Grey,
                width: 4,
                height: 2,
            },
            Duration::from_secs(5),
        ),
    )
    .unwrap();
    let (frames, _) = collect(&mut src, Duration::from_secs(20), |frames, _| {
        frames.iter().any(|f| f.data == b"BBBBBBBB")
    });
    for f in &frames {
        assert_eq!((f.width, f.height, f.format), (4, 2, PixelFormat::Grey));
        assert!(
            f.data == b"AAAAAAAA" || f.data == b"BBBBBBBB",
            "{:?}",
            f.data
        );
    }
}

/// Writes `n` small JPEGs back to back into one file (a burst the reader splits from one read);
/// returns the file.
fn write_burst(dir: &Path, n: u8) -> PathBuf {
    let mut stream = Vec::new();
    for i in 0..n {
        stream.extend(write_jpeg(&dir.join(format!("{i}.jpg")), 16, 16, i));
    }
    let path = dir.join("burst.mjpeg");
    std::fs::write(&path, stream).unwrap();
    path
}

/// A burst of frames into a consumer that takes one and then pauses: the pipe's mailbox keeps
/// the freshest, and every frame it replaced is reported by `FrameSource::dropped`.
#[test]
fn a_pipe_reports_the_frames_its_mailbox_dropped() {
    const N: u8 = 40;
    let dir = tempfile::tempdir().unwrap();
    let burst = write_burst(dir.path(), N);
    let cmd = format!("cat {}; exec sleep 60", sh_quote(&burst));
    let mut src = PipeSource::spawn(
        &cmd,
        quick_restart(PipeFormat::Mjpeg, Duration::from_millis(300)),
    )
    .unwrap();
    assert_eq!(src.dropped(), 0);
    // Take frames, pausing after each, until the command has nothing more (a timeout).
    let mut frames = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "{} frames", frames.len());
        match src.next_frame() {
            Ok(Some(f)) => {
                frames.push(f.seq);
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(SourceError::Timeout { .. }) if !frames.is_empty() => break,
            Err(SourceError::Timeout { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(src.dropped() > 0, "frames {frames:?}");
    assert_eq!(
        frames.len() as u64 + src.dropped(),
        u64::from(N),
        "every frame taken or counted as dropped: frames {frames:?}, dropped {}",
        src.dropped()
    );
    // The freshest frame is never replaced.
    assert_eq!(frames.last(), Some(&(u64::from(N) - 1)));
}

#[test]
fn a_stalled_command_times_out_and_is_restarted() {
    let mut src = PipeSource::spawn(
        "sleep 60",
        quick_restart(PipeFormat::Mjpeg, Duration::from_millis(100)),
    )
    .unwrap();
    let (frames, errors) = collect(&mut src, Duration::from_secs(20), |_, errors| {
        errors
            .iter()
            .any(|e| matches!(e, SourceError::PipeExited { .. }))
    });
    assert!(frames.is_empty());
    let timeouts = errors
        .iter()
        .filter(|e| matches!(e, SourceError::Timeout { .. }))
        .count();
    assert!(timeouts >= 3, "killed only after three timeouts in a row");
    assert!(
        errors[0].to_string().contains("pipe `sleep 60`"),
        "{}",
        errors[0]
    );
}

#[test]
fn a_missing_program_is_reported_with_its_exit_status() {
    let mut src = PipeSource::spawn(
        "/nonexistent/camera-tool --go",
        quick_restart(PipeFormat::Mjpeg, Duration::from_secs(5)),
    )
    .unwrap();
    let (_, errors) = collect(&mut src, Duration::from_secs(20), |_, errors| {
        !errors.is_empty()
    });
    let msg = errors[0].to_string();
    assert!(msg.contains("/nonexistent/camera-tool"), "{msg}");
    assert!(msg.contains("127"), "{msg}");
}

/// Whether a process is gone (or a zombie nobody reaps).
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[cfg(target_os = "linux")]
#[test]
fn dropping_the_source_kills_the_whole_command() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file: PathBuf = dir.path().join("pid");
    // A grandchild that would keep the pipe (and a real camera) busy if only `sh` were killed.
    let cmd = format!("sleep 300 & echo $! > {}; wait", sh_quote(&pid_file));
    let src = PipeSource::spawn(
        &cmd,
        quick_restart(PipeFormat::Mjpeg, Duration::from_secs(5)),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid: u32 = loop {
        if let Ok(text) = std::fs::read_to_string(&pid_file)
            && let Ok(pid) = text.trim().parse()
        {
            break pid;
        }
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(!process_gone(pid));
    drop(src);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !process_gone(pid) {
        assert!(
            Instant::now() < deadline,
            "sleep (pid {pid}) survived the drop"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(not(all(target_os = "linux", feature = "v4l2")))]
#[test]
fn v4l2_without_the_feature_is_a_clear_error() {
    let err = open_source(&camera(SourceSpec::V4l2 {
        device: "/dev/video0".into(),
    }))
    .err()
    .expect("unsupported");
    assert!(err.is_fatal());
    assert!(err.to_string().contains("v4l2"), "{err}");
}

#[cfg(all(target_os = "linux", feature = "v4l2"))]
#[test]
fn a_missing_video_device_is_named_in_the_error() {
    let err = open_source(&camera(SourceSpec::V4l2 {
        device: "/dev/video-does-not-exist".into(),
    }))
    .err()
    .expect("no such device");
    assert!(
        err.to_string().contains("/dev/video-does-not-exist"),
        "{err}"
    );
}

#[test]
fn probe_reads_one_frame() {
    let dir = tempfile::tempdir().unwrap();
    write_jpeg(&dir.path().join("a.jpg"), 16, 16, 1);
    let pattern = dir.path().join("*.jpg").to_string_lossy().into_owned();
    let line = edgeclip::source::probe(
        &camera(SourceSpec::Files { pattern }),
        Duration::from_secs(5),
    )
    .unwrap();
    assert!(line.contains("16x16"), "{line}");
    let err = edgeclip::source::probe(
        &camera(SourceSpec::Pipe {
            command: "sleep 30".into(),
        }),
        Duration::from_millis(200),
    )
    .unwrap_err();
    assert!(err.to_string().contains("sleep 30"), "{err}");
}
