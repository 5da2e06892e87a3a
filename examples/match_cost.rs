//! Scores one frame embedding `iters` times against a closed or an open-set matcher: the
//! program `benches/match-insn.sh` runs under the Arm instruction counter (issue 24: what open-set
//! scoring adds per frame). Embeddings are seeded pseudo-random unit vectors.
//!
//!   match_cost DIM LABELS VOCABULARY NEGATIVES_PER_LABEL IMAGES_PER_LABEL ITERS

use edgeclip::matcher::{Label, LabelExtras, Matcher, OpenSet, Scores};

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

    fn vec(&mut self, dim: usize) -> Vec<f32> {
        (0..dim).map(|_| self.next()).collect()
    }
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers"))
        .collect();
    let [dim, labels, vocab, negatives, images, iters] = args[..] else {
        eprintln!("usage: match_cost DIM LABELS VOCABULARY NEGATIVES IMAGES ITERS");
        std::process::exit(2);
    };
    let mut rng = Rng(7);
    let mut entries: Vec<(Label, Vec<Vec<f32>>)> = (0..labels)
        .map(|i| {
            let label = Label {
                name: format!("l{i}"),
                prompt: format!("l{i}"),
                background: false,
            };
            (label, vec![rng.vec(dim)])
        })
        .collect();
    entries.push((
        Label {
            name: "an empty scene".into(),
            prompt: "an empty scene".into(),
            background: true,
        },
        vec![rng.vec(dim)],
    ));
    let open = OpenSet {
        vocabulary: (0..vocab)
            .map(|i| (format!("v{i}"), rng.vec(dim)))
            .collect(),
        synonym_cosine: 0.9,
        extras: (0..labels)
            .map(|_| LabelExtras {
                negatives: (0..negatives)
                    .map(|i| (format!("n{i}"), rng.vec(dim)))
                    .collect(),
                images: (0..images).map(|_| rng.vec(dim)).collect(),
                negative_images: vec![],
            })
            .collect(),
        exemplar_weight: 0.3,
        exemplar_sharpness: 5.5,
    };
    let m = Matcher::open_set(entries, open, dim, 100.0).expect("matcher");
    let frame = rng.vec(dim);
    let mut scores = Scores::default();
    let mut sink = 0f32;
    for _ in 0..iters {
        m.score(std::hint::black_box(&frame), &mut scores);
        sink += scores.prob[0];
    }
    println!(
        "dim {dim}, {} rows ({:?} storage), {iters} scores, checksum {sink:.3}",
        m.rows().len(),
        m.storage()
    );
}
