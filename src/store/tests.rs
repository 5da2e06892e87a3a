use std::time::Duration;

use super::moments::{Hit, hit_threshold, moments};
use super::retention::{cutoff_ms, excess_rows};
use super::sample::{self, Sampler, cosine_distance, dequantize, quantize, score};
use super::*;

fn unit(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

#[test]
fn sampler_keeps_the_first_frame_then_one_per_interval() {
    let mut s = Sampler::new(Duration::from_secs(1), 0.5);
    let e = [1.0, 0.0, 0.0];
    let kept: Vec<bool> = (0..25)
        .map(|i| s.offer(Duration::from_millis(i * 100), &e))
        .collect();
    let at: Vec<usize> = kept
        .iter()
        .enumerate()
        .filter(|k| *k.1)
        .map(|k| k.0)
        .collect();
    assert_eq!(at, vec![0, 10, 20]);
}

#[test]
fn sampler_keeps_a_frame_that_moved_past_the_distance_at_once() {
    let mut s = Sampler::new(Duration::from_secs(10), 0.1);
    assert!(s.offer(Duration::ZERO, &[1.0, 0.0]));
    // cos 0.995: distance 0.005, under 0.1.
    assert!(!s.offer(Duration::from_millis(100), &unit(&[1.0, 0.1])));
    // Orthogonal: distance 1.
    assert!(s.offer(Duration::from_millis(200), &[0.0, 1.0]));
    // Compared with the last stored one, not the first.
    assert!(!s.offer(Duration::from_millis(300), &[0.0, 1.0]));
}

#[test]
fn cosine_distance_of_same_orthogonal_and_opposite() {
    assert!(cosine_distance(&[1.0, 2.0], &[2.0, 4.0]).abs() < 1e-6);
    assert!((cosine_distance(&[1.0, 0.0], &[0.0, 3.0]) - 1.0).abs() < 1e-6);
    assert!((cosine_distance(&[1.0, 0.0], &[-1.0, 0.0]) - 2.0).abs() < 1e-6);
    assert_eq!(cosine_distance(&[0.0, 0.0], &[1.0, 0.0]), 1.0);
}

#[test]
fn quantization_round_trips_within_half_a_step_and_keeps_the_cosine() {
    let v: Vec<f32> = (0..512)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
        .collect();
    let u = unit(&v);
    let (q, scale) = quantize(&v);
    assert_eq!(q.len(), 512);
    let back = dequantize(&q, scale);
    for (a, b) in u.iter().zip(&back) {
        assert!((a - b).abs() <= scale / 2.0 + 1e-7, "{a} vs {b}");
    }
    // Scored against itself: its cosine 1, within the quantization error.
    assert!((score(&q, scale, &u) - 1.0).abs() < 1e-3);
    let other = unit(&(0..512).map(|i| (i % 7) as f32).collect::<Vec<_>>());
    let exact: f32 = u.iter().zip(&other).map(|(a, b)| a * b).sum();
    assert!((score(&q, scale, &other) - exact).abs() < 1e-3);
    // As the database holds it (bytes), the same score.
    let bytes: Vec<u8> = q.iter().map(|&v| v as u8).collect();
    assert_eq!(
        sample::score_bytes(&bytes, scale, &other),
        score(&q, scale, &other)
    );
    // The largest value maps to 127; a zero vector stays zero.
    assert_eq!(q.iter().map(|x| x.unsigned_abs()).max(), Some(127));
    let (z, _) = quantize(&[0.0; 4]);
    assert_eq!(z, vec![0; 4]);
}

fn hit(ts_ms: i64, camera: &str, frame: u64, score: f32) -> Hit {
    Hit {
        ts_ms,
        camera: camera.into(),
        frame,
        score,
        thumbnail: None,
    }
}

#[test]
fn hits_are_halfway_from_the_median_to_the_best() {
    assert_eq!(hit_threshold(&[]), None);
    assert_eq!(hit_threshold(&[0.1, 0.1, 0.1, 0.5]), Some(0.3));
    assert_eq!(hit_threshold(&[0.4]), Some(0.4));
}

#[test]
fn neighbouring_hits_merge_into_moments_best_first() {
    let mut frames: Vec<Hit> = (0..20).map(|i| hit(i * 1000, "a", i as u64, 0.1)).collect();
    // Two runs of hits on camera a (3-5, 14-15), one on camera b at the same time as the first.
    for (i, s) in [(3, 0.30), (4, 0.31), (5, 0.29), (14, 0.35), (15, 0.34)] {
        frames[i].score = s;
    }
    frames.push(hit(4000, "b", 7, 0.33));
    frames.reverse();
    let m = moments(frames, 2000, 10);
    assert_eq!(m.len(), 3);
    assert_eq!(
        (m[0].start_ms, m[0].end_ms, m[0].frames),
        (14_000, 15_000, (14, 15))
    );
    assert_eq!(m[0].best.frame, 14);
    assert_eq!((m[1].best.camera.as_str(), m[1].hits), ("b", 1));
    assert_eq!((m[2].start_ms, m[2].end_ms, m[2].hits), (3000, 5000, 3));
    assert_eq!(m[2].best.frame, 4);
}

#[test]
fn hits_further_apart_than_the_gap_are_separate_moments_and_the_limit_holds() {
    let frames = vec![
        hit(0, "a", 0, 0.0),
        hit(1000, "a", 1, 0.0),
        hit(10_000, "a", 10, 0.9),
        hit(13_001, "a", 13, 0.8),
    ];
    let m = moments(frames.clone(), 3000, 10);
    assert_eq!(m.len(), 2);
    assert_eq!(moments(frames, 3000, 1).len(), 1);
    assert!(moments(Vec::new(), 3000, 10).is_empty());
}

#[test]
fn retention_cutoff_and_excess_rows() {
    assert_eq!(cutoff_ms(10 * 86_400_000, 3), 7 * 86_400_000);
    assert_eq!(excess_rows(900, 1000, 100), 0);
    assert_eq!(excess_rows(1000, 1000, 100), 0);
    // 1200 bytes for 100 rows, limit 1000: down to 900 bytes, a quarter of the rows.
    assert_eq!(excess_rows(1200, 1000, 100), 25);
    // Just over: at least one row.
    assert_eq!(excess_rows(1001, 1000, 1), 1);
    assert_eq!(excess_rows(5000, 1000, 0), 0);
}

fn frame(ts_ms: i64, camera: &str, n: u64, v: &[f32]) -> Record {
    let (embedding, scale) = quantize(v);
    Record::Frame(FrameRecord {
        ts_ms,
        camera: camera.into(),
        frame: n,
        embedding,
        scale,
    })
}

#[test]
fn frames_and_events_round_trip_through_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/store.sqlite");
    let (mut store, aside) = Store::open(&path).unwrap();
    assert_eq!(aside, None);
    store
        .write(&[
            frame(1000, "a", 1, &[1.0, 0.0]),
            frame(2000, "b", 2, &[0.0, 1.0]),
            Record::Event(EventRecord {
                ts_ms: 1500,
                camera: "a".into(),
                label: "red".into(),
                kind: "start".into(),
                snapshot: Some("/x/y.jpg".into()),
                json: "{}".into(),
            }),
        ])
        .unwrap();
    drop(store);
    let store = Store::open_read(&path).unwrap().unwrap();
    let mut seen = Vec::new();
    store
        .for_each_frame(0, 5000, Some("b"), |f| seen.push(f.to_record()))
        .unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!((seen[0].ts_ms, seen[0].frame), (2000, 2));
    assert!((score(&seen[0].embedding, seen[0].scale, &[0.0, 1.0]) - 1.0).abs() < 1e-3);
    let events = store.events(0, 5000).unwrap();
    assert_eq!(events[0].snapshot.as_deref(), Some("/x/y.jpg"));
    let mut all = 0;
    store.for_each_frame(0, 1500, None, |_| all += 1).unwrap();
    assert_eq!(all, 1);
}

#[test]
fn trim_deletes_what_is_older_than_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(&dir.path().join("s.sqlite")).unwrap();
    let day = 86_400_000;
    let records: Vec<Record> = (0..10)
        .map(|d| frame(d * day, "a", d as u64, &[1.0]))
        .collect();
    store.write(&records).unwrap();
    assert_eq!(store.trim(10 * day, 3, u64::MAX).unwrap(), 7);
    assert_eq!(store.frame_count().unwrap(), 3);
}

#[test]
fn trim_keeps_the_database_under_max_bytes_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(&dir.path().join("s.sqlite")).unwrap();
    let v: Vec<f32> = (0..512).map(|i| i as f32).collect();
    let records: Vec<Record> = (0..2000)
        .map(|i| frame(1000 + i, "a", i as u64, &v))
        .collect();
    store.write(&records).unwrap();
    let max = store.used_bytes().unwrap() / 2;
    let deleted = store.trim(5000, 30, max).unwrap();
    assert!(deleted >= 1000, "{deleted}");
    assert!(store.used_bytes().unwrap() <= max);
    let mut first = None;
    store
        .for_each_frame(0, i64::MAX, None, |f| {
            first.get_or_insert(f.frame);
        })
        .unwrap();
    assert_eq!(first, Some(deleted));
}

#[test]
fn a_file_that_is_not_a_store_is_renamed_aside_and_a_new_one_started() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.sqlite");
    std::fs::write(
        &path,
        b"this is not a database, just some text ".repeat(200),
    )
    .unwrap();
    let (mut store, aside) = Store::open(&path).unwrap();
    let aside = aside.expect("renamed aside");
    assert!(
        aside.to_string_lossy().contains("store.sqlite.corrupt-"),
        "{}",
        aside.display()
    );
    assert!(std::fs::read(&aside).unwrap().starts_with(b"this is not"));
    store.write(&[frame(1, "a", 1, &[1.0])]).unwrap();
    assert_eq!(store.frame_count().unwrap(), 1);
}

#[test]
fn another_programs_database_is_renamed_aside_and_refused_by_readers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.sqlite");
    let other = Connection::open(&path).unwrap();
    other.execute_batch("CREATE TABLE notes (t TEXT)").unwrap();
    drop(other);
    let err = Store::open_read(&path).unwrap_err().to_string();
    assert!(err.contains("not an edgeclip store"), "{err}");
    let (_, aside) = Store::open(&path).unwrap();
    assert!(aside.is_some());
}

#[test]
fn a_missing_file_reads_as_nothing_stored() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        Store::open_read(&dir.path().join("none.sqlite"))
            .unwrap()
            .is_none()
    );
}

#[test]
fn the_writer_never_waits_and_counts_what_a_full_queue_drops() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sqlite");
    let (store, _) = Store::open(&path).unwrap();
    let limits = Limits {
        retention_days: 30,
        max_bytes: u64::MAX,
    };
    let writer = Writer::start(store, 1, limits).unwrap();
    let now = millis(SystemTime::now());
    let sent = 500;
    for i in 0..sent {
        writer.submit(frame(now + i, "a", i as u64, &[1.0, 2.0]));
    }
    let c = writer.finish();
    assert_eq!(c.written + c.dropped, sent as u64);
    assert_eq!(c.failed, 0);
    let store = Store::open_read(&path).unwrap().unwrap();
    assert_eq!(store.frame_count().unwrap(), c.written);
}

#[test]
fn sampler_says_why_it_kept_a_frame() {
    use super::sample::Kept;
    let mut s = Sampler::new(Duration::from_secs(10), 0.1);
    assert_eq!(
        s.offer_why(Duration::ZERO, &[1.0, 0.0]),
        Some(Kept::Interval)
    );
    assert_eq!(s.offer_why(Duration::from_secs(1), &[1.0, 0.0]), None);
    assert_eq!(
        s.offer_why(Duration::from_secs(2), &[0.0, 1.0]),
        Some(Kept::Change)
    );
    assert_eq!(
        s.offer_why(Duration::from_secs(12), &[0.0, 1.0]),
        Some(Kept::Interval)
    );
}

#[test]
fn thumbnails_come_first_at_starts_on_changes_spaced_and_every_interval() {
    use super::sample::{Kept, MIN_GAP, ThumbnailPolicy};
    let s = Duration::from_secs;
    let mut p = ThumbnailPolicy::new(Some(s(60)));
    // The first stored frame.
    assert!(p.due(s(0), Some(Kept::Interval), false));
    // Not stored, no start: never.
    assert!(!p.due(s(100), None, false));
    // Stored for its interval before `every`: no.
    assert!(!p.due(s(30), Some(Kept::Interval), false));
    // A change sooner than MIN_GAP after the last: no; after it: yes.
    assert!(!p.due(s(0) + MIN_GAP / 2, Some(Kept::Change), false));
    assert!(p.due(s(0) + MIN_GAP, Some(Kept::Change), false));
    // An event start: at once, even right after another.
    assert!(p.due(s(6), None, true));
    assert!(p.due(s(6), None, true));
    // Interval frames: one every 60 s.
    let due: Vec<u64> = (7..200)
        .filter(|&t| p.due(s(t), Some(Kept::Interval), false))
        .collect();
    assert_eq!(due, vec![66, 126, 186]);
    // Off.
    let mut off = ThumbnailPolicy::new(None);
    assert!(!off.due(s(0), Some(Kept::Interval), true));
}

#[test]
fn a_burst_of_starts_is_kept_then_the_bucket_limits_them() {
    use super::sample::{BURST, ThumbnailPolicy};
    let mut p = ThumbnailPolicy::new(Some(Duration::from_secs(60)));
    // 100 starts within a second: the bucket's worth.
    let kept = (0..100)
        .filter(|&i| p.due(Duration::from_millis(i * 10), None, true))
        .count();
    assert_eq!(kept, BURST as usize);
    // Two minutes later, one token more.
    assert!(p.due(Duration::from_secs(121), None, true));
    assert!(!p.due(Duration::from_secs(121), None, true));
}

#[test]
fn a_scene_that_never_settles_stays_within_the_days_budget() {
    use super::sample::{BURST, Kept, ThumbnailPolicy};
    let every = 60u64;
    let mut p = ThumbnailPolicy::new(Some(Duration::from_secs(every)));
    // A day at one stored frame a second, every one a change, an event start every 10 s.
    let day = 86_400u64;
    let kept: Vec<u64> = (0..day)
        .filter(|&t| p.due(Duration::from_secs(t), Some(Kept::Change), t % 10 == 0))
        .collect();
    let most = day / every + day / (2 * every) + BURST as u64 + 1;
    assert!(kept.len() as u64 <= most, "{} > {most}", kept.len());
    // And never a minute without one.
    let gap = kept.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(gap <= every, "{gap}");
}

fn rgb_frame(w: u32, h: u32) -> crate::frame::Frame {
    let data = (0..w * h * 3).map(|i| (i % 251) as u8).collect();
    crate::frame::Frame {
        data,
        width: w,
        height: h,
        format: crate::frame::PixelFormat::Rgb24,
        seq: 7,
        captured_at: std::time::Instant::now(),
        captured_wall: SystemTime::now(),
    }
}

#[test]
fn a_thumbnail_is_a_160_px_jpeg_with_the_frames_aspect() {
    let jpeg = super::thumbnail::make_thumbnail(&rgb_frame(640, 480)).unwrap();
    let img = crate::preprocess::decode_image(&jpeg, "thumbnail").unwrap();
    assert_eq!((img.width, img.height), (160, 120));
    // A frame whose bytes do not match its size is an error, not a panic.
    let mut bad = rgb_frame(64, 48);
    bad.data.truncate(10);
    let err = super::thumbnail::make_thumbnail(&bad).unwrap_err();
    assert!(err.contains("expected"), "{err}");
}

fn thumb(ts_ms: i64, camera: &str, n: u64) -> Record {
    Record::Thumbnail(ThumbnailRecord {
        ts_ms,
        camera: camera.into(),
        frame: n,
        jpeg: vec![0xFF, 0xD8, n as u8],
    })
}

#[test]
fn the_nearest_thumbnail_of_the_camera_at_or_before_a_time_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sqlite");
    let (mut store, _) = Store::open(&path).unwrap();
    store
        .write(&[
            thumb(1000, "a", 1),
            thumb(5000, "a", 5),
            thumb(3000, "b", 3),
            frame(6000, "a", 6, &[1.0]),
        ])
        .unwrap();
    drop(store);
    let store = Store::open_read(&path).unwrap().unwrap();
    assert_eq!(store.thumbnail("a", 999).unwrap(), None);
    assert_eq!(store.thumbnail("a", 4999).unwrap().unwrap().frame, 1);
    let t = store.thumbnail("a", 6000).unwrap().unwrap();
    assert_eq!(
        (t.ts_ms, t.frame, t.jpeg.clone()),
        (5000, 5, vec![0xFF, 0xD8, 5])
    );
    assert_eq!(store.thumbnail_by_id(t.id).unwrap(), Some(t));
    assert_eq!(store.thumbnail("b", 6000).unwrap().unwrap().frame, 3);
    assert_eq!(store.thumbnail("c", 6000).unwrap(), None);
    assert_eq!(store.thumbnail_count().unwrap(), 3);
}

#[test]
fn trimming_deletes_the_thumbnails_with_their_time() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(&dir.path().join("s.sqlite")).unwrap();
    let day = 86_400_000;
    let mut records: Vec<Record> = (0..10)
        .map(|d| frame(d * day, "a", d as u64, &[1.0]))
        .collect();
    records.extend((0..10).map(|d| thumb(d * day, "a", d as u64)));
    store.write(&records).unwrap();
    store.trim(10 * day, 3, u64::MAX).unwrap();
    assert_eq!(store.thumbnail_count().unwrap(), 3);
}

#[test]
fn a_format_1_store_is_upgraded_in_place_and_readers_refuse_it_clearly_before() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sqlite");
    let old = Connection::open(&path).unwrap();
    old.execute_batch(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         INSERT INTO meta VALUES ('format', 'edgeclip-store'), ('version', '1');
         CREATE TABLE frames (id INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL,
             camera TEXT NOT NULL, frame INTEGER NOT NULL, scale REAL NOT NULL,
             embedding BLOB NOT NULL, thumbnail BLOB);
         CREATE INDEX frames_ts ON frames (ts_ms);
         CREATE TABLE events (id INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL,
             camera TEXT NOT NULL, label TEXT NOT NULL, kind TEXT NOT NULL, snapshot TEXT,
             json TEXT NOT NULL);
         INSERT INTO frames (ts_ms, camera, frame, scale, embedding)
             VALUES (1000, 'porch', 1, 0.5, x'7f00'), (2000, 'yard', 2, 0.5, x'007f');",
    )
    .unwrap();
    drop(old);
    let err = Store::open_read(&path).unwrap_err().to_string();
    assert!(err.contains("format version 1"), "{err}");
    let (store, aside) = Store::open(&path).unwrap();
    assert_eq!(aside, None);
    drop(store);
    let store = Store::open_read(&path).unwrap().unwrap();
    let mut seen = Vec::new();
    store
        .for_each_frame(0, i64::MAX, Some("yard"), |f| seen.push(f.to_record()))
        .unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!((seen[0].camera.as_str(), seen[0].frame), ("yard", 2));
    assert_eq!(seen[0].embedding, vec![0, 127]);
}

#[test]
fn the_writer_makes_thumbnails_of_queued_frames_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sqlite");
    let (store, _) = Store::open(&path).unwrap();
    let limits = Limits {
        retention_days: 30,
        max_bytes: u64::MAX,
    };
    let writer = Writer::start(store, 16, limits).unwrap();
    assert_eq!(writer.state(), StoreState::Ok);
    let now = millis(SystemTime::now());
    assert!(writer.thumbnail(now, "a", std::sync::Arc::new(rgb_frame(320, 240))));
    let c = writer.finish();
    assert_eq!((c.written, c.thumbnails, c.failed), (1, 1, 0));
    assert!(c.bytes > 0);
    let store = Store::open_read(&path).unwrap().unwrap();
    let t = store.thumbnail("a", now).unwrap().unwrap();
    assert_eq!(t.frame, 7);
    assert!(t.jpeg.starts_with(&[0xFF, 0xD8]));
}

/// A small seeded generator of unit vectors (splitmix64).
fn units(seed: u64, n: usize, dim: usize) -> Vec<Vec<f32>> {
    let mut s = seed;
    let mut next = || {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    (0..n)
        .map(|_| unit(&(0..dim).map(|_| next()).collect::<Vec<f32>>()))
        .collect()
}

#[test]
fn the_int8_kernels_score_stored_rows_as_the_f32_lanes_do() {
    let dim = 512;
    let rows = units(1, 300, dim);
    let query = &units(2, 1, dim)[0];
    let mut matrix = Vec::new();
    let mut scales = Vec::new();
    for r in &rows {
        let (q, s) = quantize(r);
        matrix.extend(q);
        scales.push(s);
    }
    let q = crate::matcher::Int8Query::new(query);
    let bytes: Vec<u8> = matrix.iter().map(|&v| v as u8).collect();
    let out: Vec<f32> = (0..rows.len())
        .map(|i| q.score_bytes(&bytes[i * dim..][..dim], scales[i]))
        .collect();
    for (i, r) in rows.iter().enumerate() {
        let exact: f32 = r.iter().zip(query).map(|(a, b)| a * b).sum();
        let lanes = score(&matrix[i * dim..][..dim], scales[i], query);
        assert!((out[i] - exact).abs() < 2e-3, "{i}: {} vs {exact}", out[i]);
        assert!((out[i] - lanes).abs() < 1e-3, "{i}: {} vs {lanes}", out[i]);
    }
}

#[test]
fn a_search_finds_the_same_moments_with_either_kernel() {
    use crate::search::{Kernel, search_using};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sqlite");
    let (mut store, _) = Store::open(&path).unwrap();
    let dim = 64;
    let query = units(3, 1, dim).remove(0);
    // Two cameras; a run of rows near the query in the middle.
    let n = 1500;
    let noise = units(4, n, dim);
    let records: Vec<Record> = (0..n)
        .map(|i| {
            let v: Vec<f32> = if (700..720).contains(&i) {
                query
                    .iter()
                    .zip(&noise[i])
                    .map(|(q, x)| q + 0.2 * x)
                    .collect()
            } else {
                noise[i].clone()
            };
            frame(i as i64 * 1000, ["a", "b"][i % 2], i as u64, &v)
        })
        .collect();
    store.write(&records).unwrap();
    drop(store);
    let store = Store::open_read(&path).unwrap().unwrap();
    let run = |k| search_using(k, &store, &query, (0, i64::MAX), None, 3000, 5).unwrap();
    let (int8, f32) = (run(Kernel::Int8), run(Kernel::F32));
    assert!(!int8.is_empty());
    let key = |m: &moments::Moment| (m.best.camera.clone(), m.start_ms, m.end_ms, m.best.frame);
    assert_eq!(
        int8.iter().map(key).collect::<Vec<_>>(),
        f32.iter().map(key).collect::<Vec<_>>()
    );
    assert!((700..720).contains(&int8[0].best.frame), "{:?}", int8[0]);
}

#[test]
fn frames_in_any_order_are_the_same_frames_for_narrow_and_wide_windows() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(&dir.path().join("s.sqlite")).unwrap();
    let records: Vec<Record> = (0..100)
        .map(|i| frame(i * 1000, ["a", "b"][i as usize % 2], i as u64, &[1.0, 0.5]))
        .collect();
    store.write(&records).unwrap();
    for (since, until, camera) in [
        (0, i64::MAX, None),
        (10_000, 95_000, Some("a")),
        (20_000, 30_000, None),
        (40_000, 40_000, Some("b")),
        (500_000, 600_000, None),
    ] {
        let (mut ordered, mut any) = (Vec::new(), Vec::new());
        store
            .for_each_frame(since, until, camera, |f| ordered.push(f.to_record()))
            .unwrap();
        store
            .for_each_frame_any_order(since, until, camera, |f| any.push(f.to_record()))
            .unwrap();
        any.sort_by_key(|f| f.ts_ms);
        assert_eq!(ordered, any, "{since}..{until} {camera:?}");
    }
}
