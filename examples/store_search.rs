//! The store's cost: writes FRAMES pseudo-random unit embeddings of width DIM (default one day at
//! one frame per second, D=512) into a fresh store in a temporary folder, one second apart, with
//! a thumbnail every THUMB_EVERY frames (default 39: 2,215 a day, more than the 2,190 a day that
//! `ThumbnailPolicy` allows at the default `thumbnail_s = 60` however busy the scene), and
//! prints the write time, the database's size per frame and per camera-day, and the time of a
//! search over all of them (the scoring and the merging into moments; the text embedding not
//! included), the median of RUNS, with the matcher's int8 kernels (what `edgeclip search` uses)
//! and with the f32 lanes, in turn. The thumbnails are made by the daemon's own code
//! ([`make_thumbnail`], 160 px wide) from real photos (`tests/data/backgrounds/*.jpg`, 4:3
//! crops of their centre as 640x480 frames) and the demo clip. It prints numbers; it asserts
//! nothing (issue 26's targets are in `benches/README.md`).
//!
//!   cargo run --release --example store_search [FRAMES [DIM [RUNS [THUMB_EVERY]]]]
//!   (on the shared build machine: `cargo test --no-run`, then target/debug/examples/store_search)

use std::time::{Duration, Instant};

use edgeclip::frame::{Frame, PixelFormat};
use edgeclip::search::{Kernel, search_using};
use edgeclip::store::sample::{Sampler, quantize};
use edgeclip::store::thumbnail::make_thumbnail;
use edgeclip::store::{FrameRecord, Record, Store, ThumbnailRecord};

/// splitmix64: a small seeded generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }

    fn unit(&mut self, dim: usize) -> Vec<f32> {
        let v: Vec<f32> = (0..dim).map(|_| self.next()).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    }
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("FRAMES DIM RUNS: numbers"))
        .collect();
    let frames = args.first().copied().unwrap_or(86_400);
    let dim = args.get(1).copied().unwrap_or(512);
    let runs = args.get(2).copied().unwrap_or(5);
    let thumb_every = args.get(3).copied().unwrap_or(39).max(1);
    let jpegs = thumbnails();
    let mean = jpegs.iter().map(Vec::len).sum::<usize>() as f64 / jpegs.len() as f64;
    println!(
        "thumbnails: {} made from photos and the demo clip, {:.0} bytes on average",
        jpegs.len(),
        mean
    );
    frame_loop_share(dim);
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join("store.sqlite");
    let (mut store, _) = Store::open(&path).expect("a new store");
    let mut rng = Rng(26);
    let start_ms = 1_800_000_000_000i64;
    let t = Instant::now();
    let mut batch = Vec::with_capacity(256);
    for i in 0..frames {
        let (embedding, scale) = quantize(&rng.unit(dim));
        batch.push(Record::Frame(FrameRecord {
            ts_ms: start_ms + i as i64 * 1000,
            camera: "bench".into(),
            frame: i as u64,
            embedding,
            scale,
        }));
        if i % thumb_every == 0 {
            batch.push(Record::Thumbnail(ThumbnailRecord {
                ts_ms: start_ms + i as i64 * 1000,
                camera: "bench".into(),
                frame: i as u64,
                jpeg: jpegs[(i / thumb_every) % jpegs.len()].clone(),
            }));
        }
        if batch.len() >= 256 {
            store.write(&batch).expect("written");
            batch.clear();
        }
    }
    store.write(&batch).expect("written");
    let write_s = t.elapsed().as_secs_f64();
    let bytes = store.used_bytes().expect("size");
    println!(
        "write: {frames} frames (D={dim}) in {write_s:.2} s ({:.1} us a frame, batches of 256)",
        write_s * 1e6 / frames as f64
    );
    let thumbs = store.thumbnail_count().expect("thumbnails");
    println!(
        "size: {:.1} MB, {:.0} bytes a frame, {:.1} MB a camera-day at 1 frame/s with {} \
         thumbnails a day (one every {thumb_every} frames)",
        bytes as f64 / 1e6,
        bytes as f64 / frames as f64,
        bytes as f64 / frames as f64 * 86_400.0 / 1e6,
        thumbs as usize * 86_400 / frames.max(1)
    );
    drop(store);
    let store = Store::open_read(&path).expect("readable").expect("stored");
    let query = rng.unit(dim);
    // The two scorings in turn, so that a machine's load falls on both alike.
    let mut times = [Vec::new(), Vec::new()];
    let mut found = [0, 0];
    for _ in 0..runs.max(1) {
        for (k, kernel) in [Kernel::Int8, Kernel::F32].into_iter().enumerate() {
            let t = Instant::now();
            let m = search_using(kernel, &store, &query, (0, i64::MAX), None, 3000, 10)
                .expect("searched");
            times[k].push(t.elapsed().as_secs_f64() * 1e3);
            found[k] = m.len();
        }
    }
    for (k, name) in ["int8 kernels", "f32 lanes"].into_iter().enumerate() {
        let t = &mut times[k];
        t.sort_by(f64::total_cmp);
        println!(
            "search ({name}): {frames} frames in {:.1} ms (median of {}; min {:.1} ms), {} moments",
            t[t.len() / 2],
            t.len(),
            t[0],
            found[k]
        );
    }
}

/// The frame loop's part of storing at 15 fps: every frame offered to the sampler (a cosine
/// distance), one a second quantized; a minute of frames (900), timed over 100 minutes. (The
/// copy of a frame for a thumbnail, at most one a minute on average, is left out: a memcpy.)
fn frame_loop_share(dim: usize) {
    let mut rng = Rng(15);
    let embeddings: Vec<Vec<f32>> = (0..900).map(|_| rng.unit(dim)).collect();
    let mut sampler = Sampler::new(Duration::from_secs(1), 2.0);
    let minutes = 100u64;
    let t = Instant::now();
    let mut kept = 0u64;
    for m in 0..minutes {
        for (i, e) in embeddings.iter().enumerate() {
            let now = Duration::from_millis(m * 60_000 + i as u64 * 1000 / 15);
            if sampler.offer_why(now, e).is_some() {
                kept += quantize(e).0.len() as u64 / dim as u64;
            }
        }
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "frame loop: {} frames sampled ({kept} kept and quantized) in {:.1} ms: {:.4}% of one core \
         at 15 fps",
        minutes * 900,
        s * 1e3,
        100.0 * s / (minutes as f64 * 60.0)
    );
}

/// Thumbnails of real pictures: the test photos (their 4:3 centre at 640x480) and every tenth
/// frame of the demo clip.
fn thumbnails() -> Vec<Vec<u8>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut paths: Vec<std::path::PathBuf> = std::fs::read_dir(root.join("backgrounds"))
        .expect("tests/data/backgrounds")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    paths.extend(
        (0..170)
            .step_by(10)
            .map(|i| root.join(format!("clip/frame_{i:04}.jpg"))),
    );
    paths
        .iter()
        .map(|p| {
            let img = edgeclip::preprocess::load_image(p).expect("an image");
            let img = image::RgbImage::from_raw(img.width, img.height, img.data).expect("rgb");
            let (w, h) = (img.width(), img.height());
            let (cw, ch) = if w * 3 > h * 4 {
                (h * 4 / 3, h)
            } else {
                (w, w * 3 / 4)
            };
            let crop = image::imageops::crop_imm(&img, (w - cw) / 2, (h - ch) / 2, cw, ch);
            let frame =
                image::imageops::resize(&*crop, 640, 480, image::imageops::FilterType::Triangle);
            make_thumbnail(&Frame {
                data: frame.into_raw(),
                width: 640,
                height: 480,
                format: PixelFormat::Rgb24,
                seq: 0,
                captured_at: Instant::now(),
                captured_wall: std::time::SystemTime::now(),
            })
            .expect("a thumbnail")
        })
        .collect()
}
