use super::*;
use std::time::Duration;

fn frame(format: PixelFormat, width: u32, height: u32, data: Vec<u8>) -> Frame {
    Frame {
        data,
        width,
        height,
        format,
        seq: 7,
        captured_at: Instant::now(),
        captured_wall: SystemTime::UNIX_EPOCH,
    }
}

/// A 32x16 RGB frame, left half red, right half blue.
fn rgb_frame() -> Frame {
    let mut data = Vec::new();
    for _y in 0..16 {
        for x in 0..32 {
            data.extend(if x < 16 { [220, 20, 20] } else { [20, 20, 220] });
        }
    }
    frame(PixelFormat::Rgb24, 32, 16, data)
}

fn decode(jpeg: &[u8]) -> image::RgbImage {
    image::load_from_memory_with_format(jpeg, image::ImageFormat::Jpeg)
        .expect("a JPEG")
        .into_rgb8()
}

fn close(a: [u8; 3], b: [u8; 3]) -> bool {
    a.iter().zip(b).all(|(&x, y)| x.abs_diff(y) <= 24)
}

#[test]
fn file_names_are_safe_sortable_timestamps() {
    let ts = humantime::parse_rfc3339("2026-12-05T11:22:33.123Z").unwrap();
    assert_eq!(file_stem(ts), "2026-12-05T11-22-33.123Z");
    assert_eq!(stem_time("2026-12-05T11-22-33.123Z"), Some(ts));
    assert_eq!(stem_time("holiday"), None);
    assert_eq!(stem_time("2026-12-05"), None);
    assert_eq!(
        path_for(Path::new("/s/cam0"), "person", ts),
        PathBuf::from("/s/cam0/person/2026-12-05T11-22-33.123Z.jpg")
    );
    let later = file_stem(ts + Duration::from_millis(877));
    assert!(later > file_stem(ts), "{later}");
}

#[test]
fn file_names_of_clocks_outside_1970_to_9999_are_clamped() {
    let before = std::time::UNIX_EPOCH - Duration::from_secs(1);
    assert_eq!(file_stem(before), "1970-01-01T00-00-00.000Z");
    if let Some(far) = std::time::UNIX_EPOCH.checked_add(Duration::from_secs(300_000 * 31_556_952))
    {
        assert_eq!(file_stem(far), "9999-12-31T23-59-59.999Z");
    }
}

#[test]
fn the_folder_defaults_to_the_state_folder() {
    let mut c = SnapshotsConfig {
        enabled: true,
        dir: Some("/data/snaps".into()),
        max_count: 1,
        max_mb: 1,
        window_s: 1.0,
        jpeg_quality: 80,
    };
    assert_eq!(folder(&c).unwrap(), PathBuf::from("/data/snaps"));
    c.dir = None;
    if let Some(state) = crate::paths::state_dir() {
        assert_eq!(folder(&c).unwrap(), state.join("snapshots"));
    }
}

/// Two daemons in one process (the test suite's, and later one per camera) check the same
/// folder at once: neither may delete the other's probe file (CI failed on this once).
#[test]
fn concurrent_checks_of_one_folder_all_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("snapshots/demo");
    std::thread::scope(|s| {
        let checks: Vec<_> = (0..8)
            .map(|_| s.spawn(|| (0..50).try_for_each(|_| check_folder(&dir))))
            .collect();
        for c in checks {
            c.join().unwrap().unwrap();
        }
    });
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "no probe file left"
    );
}

#[test]
fn an_unwritable_folder_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-folder");
    std::fs::write(&file, b"x").unwrap();
    let dir = file.join("snapshots/cam0");
    let err = check_folder(&dir).unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("snapshots.dir: "), "{text}");
    assert!(text.contains(&dir.display().to_string()), "{text}");
    let err = probe_folder(&dir).unwrap_err().to_string();
    assert!(err.contains(&dir.display().to_string()), "{err}");
    assert!(err.contains("is not a folder"), "{err}");
    let ok = tmp.path().join("a/b");
    probe_folder(&ok).unwrap();
    assert!(!tmp.path().join("a").exists(), "the probe creates nothing");
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        1,
        "nor leaves a file"
    );
    check_folder(&ok).unwrap();
    assert!(ok.is_dir());
    assert_eq!(
        std::fs::read_dir(&ok).unwrap().count(),
        0,
        "no probe file left"
    );
    let err = Writer::start(WriterSettings {
        root: dir.clone(),
        limits: Limits {
            max_count: 1,
            max_bytes: 1,
        },
        quality: 80,
    })
    .err()
    .expect("refused");
    assert!(err.to_string().contains(&dir.display().to_string()));
}

#[test]
fn huffman_tables_are_found_before_the_scan() {
    let jpeg = encode(&rgb_frame(), 90).unwrap();
    assert!(has_huffman_tables(&jpeg));
    // The same JPEG without its DHT segments (as many UVC cameras send MJPEG).
    let mut stripped = jpeg[..2].to_vec();
    let mut i = 2;
    loop {
        let marker = jpeg[i + 1];
        let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
        if marker != 0xC4 {
            stripped.extend_from_slice(&jpeg[i..i + 2 + len]);
        }
        i += 2 + len;
        if marker == 0xDA {
            stripped.extend_from_slice(&jpeg[i..]);
            break;
        }
    }
    assert!(!has_huffman_tables(&stripped));
    assert!(!has_huffman_tables(b""));
    assert!(!has_huffman_tables(b"\xFF\xD8"));
    assert!(!has_huffman_tables(b"\xFF\xD8\xFF\xE0\x00"));
    assert!(!has_huffman_tables(b"\xFF\xD8\xFF\xE0\x00\x00"));
    assert!(!has_huffman_tables(b"PNG..."));
}

#[test]
fn frames_of_every_format_become_jpegs_of_the_same_picture() {
    // RGB.
    let img = decode(&encode(&rgb_frame(), 90).unwrap());
    assert_eq!(img.dimensions(), (32, 16));
    assert!(close(img.get_pixel(4, 8).0, [220, 20, 20]));
    assert!(close(img.get_pixel(28, 8).0, [20, 20, 220]));
    // Grey.
    let grey = frame(PixelFormat::Grey, 16, 16, vec![200; 256]);
    let img = decode(&encode(&grey, 90).unwrap());
    assert!(close(img.get_pixel(8, 8).0, [200, 200, 200]));
    // YUYV: Y=81 U=90 V=240 is BT.601 red.
    let yuyv = frame(PixelFormat::Yuyv, 16, 16, [81, 90, 81, 240].repeat(128));
    let img = decode(&encode(&yuyv, 90).unwrap());
    assert!(
        close(img.get_pixel(8, 8).0, [255, 0, 0]),
        "{:?}",
        img.get_pixel(8, 8)
    );
    // A camera JPEG with its tables is kept byte for byte.
    let jpeg = encode(&rgb_frame(), 90).unwrap();
    let mjpeg = frame(PixelFormat::Mjpeg, 32, 16, jpeg.clone());
    assert_eq!(encode(&mjpeg, 10).unwrap(), jpeg);
    // Bad frames are errors, not panics.
    let short = frame(PixelFormat::Rgb24, 32, 16, vec![0; 10]);
    assert!(encode(&short, 90).unwrap_err().contains("expected 1536"));
    let odd = frame(PixelFormat::Yuyv, 15, 2, vec![0; 60]);
    assert!(encode(&odd, 90).unwrap_err().contains("odd width"));
    let garbage = frame(PixelFormat::Mjpeg, 32, 16, b"\xFF\xD8garbage".to_vec());
    assert!(encode(&garbage, 90).is_err());
}

#[test]
fn writes_are_atomic_and_retention_trims_the_oldest() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cam0");
    let t0 = humantime::parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
    for (i, label) in ["a", "b", "a", "b", "a"].iter().enumerate() {
        let path = path_for(&root, label, t0 + Duration::from_secs(i as u64));
        write_atomic(&path, &[i as u8; 100]).unwrap();
    }
    // Not ours: ignored by the listing.
    std::fs::write(root.join("a/notes.txt"), b"keep").unwrap();
    std::fs::write(root.join("stray.jpg"), b"not in a label folder").unwrap();
    assert_eq!(list(&root).unwrap().len(), 5);
    let leftovers: Vec<_> = walk(&root)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // 3 files or 250 bytes: the two oldest go.
    let limits = Limits {
        max_count: 3,
        max_bytes: 10_000,
    };
    assert_eq!(enforce(&root, limits).unwrap(), 2);
    let mut left: Vec<String> = list(&root)
        .unwrap()
        .iter()
        .map(|f| f.id.strip_prefix(&root).unwrap().display().to_string())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "a/2026-01-01T00-00-02.000Z.jpg",
            "a/2026-01-01T00-00-04.000Z.jpg",
            "b/2026-01-01T00-00-03.000Z.jpg"
        ]
    );
    let limits = Limits {
        max_count: 100,
        max_bytes: 150,
    };
    assert_eq!(enforce(&root, limits).unwrap(), 2);
    assert!(root.join("a/notes.txt").exists());
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn the_writer_writes_trims_and_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cam0");
    std::fs::create_dir_all(root.join("person")).unwrap();
    std::fs::write(root.join("person/.2020-01-01T00-00-00.000Z.jpg.tmp"), b"x").unwrap();
    let mut writer = Writer::start(WriterSettings {
        root: root.clone(),
        limits: Limits {
            max_count: 2,
            max_bytes: 10_000_000,
        },
        quality: 80,
    })
    .unwrap();
    assert!(
        !root
            .join("person/.2020-01-01T00-00-00.000Z.jpg.tmp")
            .exists(),
        "a crash's leftovers are removed"
    );
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let frame = Arc::new(rgb_frame());
    let mut paths = Vec::new();
    for i in 0..3 {
        let path = path_for(&root, "person", t0 + Duration::from_secs(i));
        paths.push(path.clone());
        writer
            .submit(Job {
                label: "person".into(),
                path,
                frame: frame.clone(),
            })
            .unwrap();
    }
    let outcomes = writer.finish();
    // Everything not taken with `ready` comes with `finish`.
    assert_eq!(outcomes.len(), 3);
    for (o, path) in outcomes.iter().zip(&paths) {
        match o {
            Outcome::Written {
                label,
                path: p,
                jpeg,
                trimmed,
                ..
            } => {
                assert_eq!((label.as_str(), p), ("person", path));
                assert_eq!(&jpeg[..2], b"\xFF\xD8");
                assert!(trimmed.is_ok());
            }
            Outcome::Failed { error, .. } => panic!("{error}"),
        }
    }
    assert!(!paths[0].exists(), "the oldest was trimmed");
    assert_eq!(
        decode(&std::fs::read(&paths[2]).unwrap()).dimensions(),
        (32, 16)
    );
}

#[test]
fn a_failed_write_is_an_outcome_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cam0");
    let mut writer = Writer::start(WriterSettings {
        root: root.clone(),
        limits: Limits {
            max_count: 2,
            max_bytes: 10_000_000,
        },
        quality: 80,
    })
    .unwrap();
    // The label's folder is a file: the write fails.
    std::fs::write(root.join("person"), b"in the way").unwrap();
    let path = path_for(&root, "person", SystemTime::UNIX_EPOCH);
    writer
        .submit(Job {
            label: "person".into(),
            path: path.clone(),
            frame: Arc::new(rgb_frame()),
        })
        .unwrap();
    let garbage = frame(PixelFormat::Mjpeg, 32, 16, b"\xFF\xD8garbage".to_vec());
    writer
        .submit(Job {
            label: "cat".into(),
            path: path_for(&root, "cat", SystemTime::UNIX_EPOCH),
            frame: Arc::new(garbage),
        })
        .unwrap();
    let outcomes = writer.finish();
    let errors: Vec<String> = outcomes
        .iter()
        .map(|o| match o {
            Outcome::Failed { error, .. } => error.to_string(),
            Outcome::Written { path, .. } => panic!("{} written", path.display()),
        })
        .collect();
    assert!(errors[0].contains("cannot write"), "{errors:?}");
    assert!(
        errors[0].contains(&path.display().to_string()),
        "{errors:?}"
    );
    assert!(errors[1].contains("cannot encode frame 7"), "{errors:?}");
}

#[test]
fn a_full_queue_drops_instead_of_waiting() {
    let tmp = tempfile::tempdir().unwrap();
    let mut writer = Writer::start(WriterSettings {
        root: tmp.path().join("cam0"),
        limits: Limits {
            max_count: 100,
            max_bytes: u64::MAX,
        },
        quality: 95,
    })
    .unwrap();
    // Frames that take the thread a while to encode (4000x3000 grey).
    let big = Arc::new(frame(PixelFormat::Grey, 4000, 3000, vec![128; 12_000_000]));
    let t0 = SystemTime::UNIX_EPOCH;
    let mut busy = 0;
    let n = QUEUE as u64 + 2;
    for i in 0..n {
        let job = Job {
            label: "a".into(),
            path: path_for(&tmp.path().join("cam0"), "a", t0 + Duration::from_secs(i)),
            frame: big.clone(),
        };
        match writer.submit(job) {
            Ok(()) => {}
            Err(SnapshotError::Busy { path }) => {
                assert!(path.to_string_lossy().ends_with(".jpg"));
                busy += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(busy >= 1, "the queue holds {QUEUE}");
    let written = writer.finish().len();
    assert_eq!(written as u64 + busy, n);
}
