//! The store's cost: writes FRAMES pseudo-random unit embeddings of width DIM (default one day at
//! one frame per second, D=512) into a fresh store in a temporary folder, one second apart, and
//! prints the write time, the database's size per frame and per day, and the time of a search
//! over all of them (the scoring and the merging into moments; the text embedding not included),
//! the median of RUNS. It prints numbers; it asserts nothing (issue 26's targets are in
//! `benches/README.md`).
//!
//!   cargo run --release --example store_search [FRAMES [DIM [RUNS]]]

use std::time::Instant;

use edgeclip::store::sample::quantize;
use edgeclip::store::{FrameRecord, Record, Store};

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
        if batch.len() == 256 {
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
    println!(
        "size: {:.1} MB, {:.0} bytes a frame, {:.1} MB a camera-day at 1 frame/s (no thumbnails)",
        bytes as f64 / 1e6,
        bytes as f64 / frames as f64,
        bytes as f64 / frames as f64 * 86_400.0 / 1e6
    );
    drop(store);
    let store = Store::open_read(&path).expect("readable").expect("stored");
    let query = rng.unit(dim);
    let mut times = Vec::new();
    let mut found = 0;
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let m = edgeclip::search::search(&store, &query, 0, i64::MAX, None, 3000, 10)
            .expect("searched");
        times.push(t.elapsed().as_secs_f64() * 1e3);
        found = m.len();
    }
    times.sort_by(f64::total_cmp);
    println!(
        "search: {frames} frames in {:.1} ms (median of {}; min {:.1} ms), {found} moments",
        times[times.len() / 2],
        times.len(),
        times[0]
    );
}
