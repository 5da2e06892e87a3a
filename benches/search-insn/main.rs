//! The scoring of `edgeclip search` on its own, for the Arm instruction counter: ROWS stored
//! int8 embeddings of width DIM (pseudo-random bytes with plausible scales) scored against one
//! query as `src/search.rs` does, each row's bytes in place (`Int8Query::score_bytes`), or with
//! the f32 lanes (`score_bytes`, as before) when the third argument is `f32`. It compiles the crate's own
//! `src/matcher/kernels.rs` (not a copy) with rustc alone, so that no aarch64 build of tract is
//! needed. `benches/search-insn.sh` runs it with 0 and N rows; the difference is the scoring.
//!
//!   search_insn ROWS DIM [int8|f32]

#![allow(dead_code, missing_docs)]

#[path = "../../src/matcher/kernels.rs"]
mod kernels;

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
}

/// `src/store/sample.rs`'s `score_bytes`, as it is there (the f32 lanes).
fn score_bytes(values: &[u8], scale: f32, query: &[f32]) -> f32 {
    let mut sums = [0f32; 8];
    let chunks = values.chunks_exact(8).zip(query.chunks_exact(8));
    let body = chunks.len() * 8;
    for (v, q) in chunks {
        for i in 0..8 {
            sums[i] += f32::from(v[i] as i8) * q[i];
        }
    }
    let rest: f32 = values[body..]
        .iter()
        .zip(query.get(body..).unwrap_or(&[]))
        .map(|(&v, q)| f32::from(v as i8) * q)
        .sum();
    (sums.iter().sum::<f32>() + rest) * scale
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rows: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(86_400);
    let dim: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(512);
    let f32_lanes = args.get(2).is_some_and(|a| a == "f32");
    let mut rng = Rng(26);
    // The "database": a day of rows of int8 bytes with their scales, made whatever ROWS is (the
    // run with 0 rows counts this setup), ROWS of them scored.
    let made = rows.max(86_400);
    let mut blobs = vec![0u8; made * dim];
    let scales: Vec<f32> = (0..made)
        .map(|_| 1.0 / 127.0 * (0.5 + rng.next().abs()))
        .collect();
    for b in blobs.iter_mut() {
        *b = (rng.next() * 250.0) as i8 as u8;
    }
    let query: Vec<f32> = (0..dim).map(|_| rng.next() / (dim as f32).sqrt()).collect();
    let mut best = f32::MIN;
    if f32_lanes {
        for r in 0..rows {
            best = best.max(score_bytes(&blobs[r * dim..][..dim], scales[r], &query));
        }
    } else {
        let q = kernels::Int8Query::new(&query);
        for r in 0..rows {
            best = best.max(q.score_bytes(&blobs[r * dim..][..dim], scales[r]));
        }
    }
    println!(
        "{rows} rows, D={dim}, {}: best {best:.4}",
        if f32_lanes {
            "f32 lanes"
        } else {
            "int8 kernels"
        }
    );
}
