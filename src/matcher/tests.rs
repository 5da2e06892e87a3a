use super::kernels::*;
use super::*;
use proptest::prelude::*;

fn label(name: &str, background: bool) -> Label {
    Label {
        name: name.into(),
        prompt: format!("a photo of a {name}"),
        background,
    }
}

#[test]
fn picks_the_closest_label() {
    let m = Matcher::new(
        vec![
            (label("x", false), vec![vec![1.0, 0.0, 0.0]]),
            (label("y", false), vec![vec![0.0, 1.0, 0.0]]),
            (label("empty", true), vec![vec![0.0, 0.0, 1.0]]),
        ],
        3,
        100.0,
    )
    .unwrap();
    let mut s = Scores::default();
    m.score(&[0.1, 2.0, 0.3], &mut s);
    assert_eq!(m.best(&s), Some(1));
    assert!(s.prob[1] > 0.99);
    assert!((s.prob.iter().sum::<f32>() - 1.0).abs() < 1e-5);
}

#[test]
fn ensembles_average_normalised_embeddings() {
    let m = Matcher::new(
        vec![(label("x", false), vec![vec![10.0, 0.0], vec![0.0, 1.0]])],
        2,
        1.0,
    )
    .unwrap();
    let mut s = Scores::default();
    m.score(&[1.0, 1.0], &mut s);
    assert!((s.cos[0] - 1.0).abs() < 1e-6, "{:?}", s.cos);
}

#[test]
fn bad_embeddings_are_errors() {
    assert_eq!(
        Matcher::new(vec![(label("x", false), vec![vec![1.0, 0.0]])], 3, 1.0).unwrap_err(),
        MatcherError::Dim {
            label: "x".into(),
            got: 2,
            dim: 3
        }
    );
    assert!(matches!(
        Matcher::new(vec![(label("x", false), vec![vec![0.0, 0.0]])], 2, 1.0),
        Err(MatcherError::Empty { .. })
    ));
    assert_eq!(
        Matcher::new(vec![], 2, 1.0).unwrap_err(),
        MatcherError::NoLabels
    );
}

/// `n` pseudo-random unit vectors of width `dim` (sums of uniforms: roughly Gaussian, like
/// CLIP embeddings, whose values spread over every dimension).
fn unit_vectors(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut uniform = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    (0..n)
        .map(|_| {
            let mut v: Vec<f32> = (0..dim).map(|_| (0..4).map(|_| uniform()).sum()).collect();
            assert!(normalize(&mut v));
            v
        })
        .collect()
}

fn matcher_of(rows: &[Vec<f32>]) -> Matcher {
    let entries = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (label(&i.to_string(), false), vec![r.clone()]))
        .collect();
    Matcher::new(entries, rows[0].len(), 100.0).unwrap()
}

#[test]
fn large_prompt_sets_are_scored_in_int8() {
    assert_eq!(
        matcher_of(&unit_vectors(100, 512, 1)).storage(),
        Storage::F32
    );
    assert_eq!(
        matcher_of(&unit_vectors(512, 512, 1)).storage(),
        Storage::F32
    );
    assert_eq!(
        matcher_of(&unit_vectors(513, 512, 1)).storage(),
        Storage::Int8
    );
    assert_eq!(Storage::for_size(1000, 512), Storage::Int8);
    assert_eq!(Storage::for_size(10, 100_000), Storage::F32);
}

/// All-extreme rows and queries of width 1024: the VNNI kernel's lanes wrap around 2^32
/// (its hi-byte lanes alone add up to about 6.4e9) and must still land on the exact sum,
/// which is just below 2^31; likewise with every sign flipped.
#[test]
fn int8_dot_rows_are_exact_where_the_lanes_wrap() {
    let dim = 1024;
    let q = query_max(dim) as i16;
    for sign in [1i16, -1] {
        let matrix = vec![127i8 * sign as i8; 2 * dim];
        let v = vec![q * sign; dim];
        let sums = vec![127 * sign as i32 * dim as i32; 2];
        let exact = (127 * q as i64 * dim as i64) as f32;
        assert!(exact < i32::MAX as f32 && exact > 2e9, "{exact}");
        let mut out = vec![f32::NAN; 2];
        dot_rows_i8(&matrix, &sums, &v, &mut out);
        assert_eq!(out, vec![exact; 2]);
        dot_rows_i8_lanes(&matrix, &v, &mut out);
        assert_eq!(out, vec![exact; 2]);
    }
}

/// What int8 scoring costs in accuracy on CLIP-like embeddings: 1000 prompts of width 512.
#[test]
fn int8_cosines_stay_close_to_f32_and_rank_alike() {
    let rows = unit_vectors(1000, 512, 7);
    let int8 = matcher_of(&rows);
    assert_eq!(int8.storage(), Storage::Int8);
    let exact = int8.clone().with_storage(Storage::F32);
    let (mut a, mut b) = (Scores::default(), Scores::default());
    let (mut worst, mut squares) = (0f32, 0f64);
    for (k, image) in unit_vectors(20, 512, 8).iter().enumerate() {
        // Some images close to one prompt, so that the ranking has a clear winner.
        let image: Vec<f32> = match k % 2 {
            0 => image
                .iter()
                .zip(&rows[k])
                .map(|(x, r)| x + 2.0 * r)
                .collect(),
            _ => image.clone(),
        };
        int8.score(&image, &mut a);
        exact.score(&image, &mut b);
        for (x, y) in a.cos.iter().zip(&b.cos) {
            worst = worst.max((x - y).abs());
            squares += ((x - y) as f64).powi(2);
        }
        if k % 2 == 0 {
            assert_eq!(int8.best(&a), Some(k));
            assert_eq!(exact.best(&b), Some(k));
        }
        let sum: f32 = a.prob.iter().sum();
        assert!((sum - 1.0).abs() < 1e-4, "{sum}");
    }
    let rms = (squares / 20_000.0).sqrt();
    assert!(worst > 0.0, "the int8 path was not taken");
    assert!(
        rms < 5e-4 && worst < 2e-3,
        "int8 cosine error: RMS {rms}, worst {worst}"
    );
}

#[test]
fn int8_scores_of_a_zero_or_broken_image_are_zero() {
    let m = matcher_of(&unit_vectors(3, 8, 3)).with_storage(Storage::Int8);
    let mut s = Scores::default();
    for image in [[0.0; 8], [f32::NAN; 8]] {
        m.score(&image, &mut s);
        assert_eq!(s.cos, vec![0.0; 3]);
        assert!(
            s.prob.iter().all(|p| (p - 1.0 / 3.0).abs() < 1e-6),
            "{:?}",
            s.prob
        );
    }
}

proptest! {
    #[test]
    fn dot_matches_a_double_precision_sum(
        pairs in prop::collection::vec((-1.0f32..1.0, -1.0f32..1.0), 0..600),
    ) {
        let (a, b): (Vec<f32>, Vec<f32>) = pairs.into_iter().unzip();
        let exact: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        let bound = 1e-6 * (a.len() as f64 + 1.0);
        prop_assert!((dot(&a, &b) as f64 - exact).abs() <= bound, "{} vs {exact}", dot(&a, &b));
    }

    #[test]
    fn dot_rows_matches_a_double_precision_sum(
        rows in 1usize..6,
        v in prop::collection::vec(-1.0f32..1.0, 1..600),
        seed in 0u32..1000,
    ) {
        let matrix: Vec<f32> = (0..rows * v.len())
            .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        let mut out = vec![f32::NAN; rows];
        dot_rows(&matrix, &v, &mut out);
        let bound = 1e-6 * (v.len() as f64 + 1.0);
        for (row, got) in matrix.chunks_exact(v.len()).zip(&out) {
            let exact: f64 = row.iter().zip(&v).map(|(x, y)| *x as f64 * *y as f64).sum();
            prop_assert!((*got as f64 - exact).abs() <= bound, "{got} vs {exact}");
        }
    }

    /// The int8 path's error, row by row, within its analytic bound: a row value is off by at
    /// most half its step `s`, a query value by half the query's step `t`, so the dot product
    /// is off by at most (s * |x|_1 + t * |r|_1 + dim * s * t / 2) / 2, over |x|.
    #[test]
    fn int8_scores_stay_within_their_quantization_bound(
        rows in 1usize..6,
        image in prop::collection::vec(-1.0f32..1.0, 1..700),
        seed in 0u64..1000,
    ) {
        let dim = image.len();
        let norm = image.iter().map(|x| x * x).sum::<f32>().sqrt();
        prop_assume!(norm > 1e-3);
        let rows = unit_vectors(rows, dim, seed);
        let int8 = matcher_of(&rows).with_storage(Storage::Int8);
        let exact = int8.clone().with_storage(Storage::F32);
        let (mut a, mut b) = (Scores::default(), Scores::default());
        int8.score(&image, &mut a);
        exact.score(&image, &mut b);
        let q = int8.int8.as_ref().unwrap();
        let max = image.iter().fold(0f32, |m, x| m.max(x.abs()));
        let t = max / query_max(dim);
        let x1: f32 = image.iter().map(|x| x.abs()).sum();
        for (r, row) in rows.iter().enumerate() {
            let s = q.scales[r];
            let r1: f32 = row.iter().map(|x| x.abs()).sum();
            let bound = (s * x1 + t * r1 + dim as f32 * s * t / 2.0) / 2.0 / norm + 1e-5;
            let err = (a.cos[r] - b.cos[r]).abs();
            prop_assert!(err <= bound, "row {r}: {} vs {}, bound {bound}", a.cos[r], b.cos[r]);
        }
    }

    /// Every kernel this CPU can run gives the exact integer dot products (the portable
    /// lanes always, and the dispatched one: AVX-512 VNNI or AVX2 on x86), at the largest
    /// query values the matcher uses.
    #[test]
    fn int8_dot_rows_are_exact(
        rows in 1usize..5,
        dim in 1usize..300,
        seed in 0u64..10_000,
        extreme in any::<bool>(),
    ) {
        let mut state = seed;
        let mut next = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        let qmax = query_max(dim) as i32;
        let matrix: Vec<i8> = (0..rows * dim)
            .map(|_| if extreme { [-127, 127][next() as usize % 2] } else { (next() % 255) as i32 - 127 } as i8)
            .collect();
        let v: Vec<i16> = (0..dim)
            .map(|_| if extreme { [-qmax, qmax][next() as usize % 2] } else { (next() % (2 * qmax as u32 + 1)) as i32 - qmax } as i16)
            .collect();
        let sums: Vec<i32> = matrix.chunks_exact(dim).map(|r| r.iter().map(|&x| x as i32).sum()).collect();
        let exact: Vec<f32> = matrix
            .chunks_exact(dim)
            .map(|r| r.iter().zip(&v).map(|(&a, &b)| a as i64 * b as i64).sum::<i64>() as f32)
            .collect();
        let mut out = vec![f32::NAN; rows];
        dot_rows_i8(&matrix, &sums, &v, &mut out);
        prop_assert_eq!(&out, &exact);
        let mut out = vec![f32::NAN; rows];
        dot_rows_i8_lanes(&matrix, &v, &mut out);
        prop_assert_eq!(&out, &exact);
    }

    #[test]
    fn probabilities_form_a_distribution_and_follow_cosines(
        rows in prop::collection::vec(prop::collection::vec(-1.0f32..1.0, 4), 1..20),
        image in prop::collection::vec(-1.0f32..1.0, 4),
    ) {
        let entries: Vec<_> = rows
            .iter()
            .enumerate()
            .filter(|(_, r)| r.iter().any(|v| v.abs() > 1e-3))
            .map(|(i, r)| (label(&i.to_string(), false), vec![r.clone()]))
            .collect();
        prop_assume!(!entries.is_empty());
        let m = Matcher::new(entries, 4, 50.0).unwrap();
        let mut s = Scores::default();
        m.score(&image, &mut s);
        let sum: f32 = s.prob.iter().sum();
        prop_assert!((sum - 1.0).abs() < 1e-4);
        for i in 0..s.cos.len() {
            prop_assert!(s.cos[i] >= -1.0001 && s.cos[i] <= 1.0001);
            for j in 0..s.cos.len() {
                if s.cos[i] > s.cos[j] {
                    prop_assert!(s.prob[i] >= s.prob[j]);
                }
            }
        }
    }
}

// ---------------------------------------------------------------- open-set scoring

const EXEMPLAR_WEIGHT: f32 = 0.3;

/// The config's defaults.
fn open_defaults() -> OpenSet {
    OpenSet {
        synonym_cosine: 0.9,
        exemplar_weight: EXEMPLAR_WEIGHT,
        exemplar_sharpness: 5.5,
        ..OpenSet::closed()
    }
}

fn unit(dim: usize, axis: usize) -> Vec<f32> {
    let mut v = vec![0.0; dim];
    v[axis] = 1.0;
    v
}

/// Labels x (axis 0) and the background (axis 3) of a 4-d space; `vocabulary` added.
fn open_matcher(vocabulary: Vec<(String, Vec<f32>)>, extras: Vec<LabelExtras>) -> Matcher {
    Matcher::open_set(
        vec![
            (label("x", false), vec![unit(4, 0)]),
            (label("empty", true), vec![unit(4, 3)]),
        ],
        OpenSet {
            vocabulary,
            extras,
            ..open_defaults()
        },
        4,
        20.0,
    )
    .unwrap()
}

#[test]
fn a_nearer_vocabulary_entry_takes_the_probability_from_a_label() {
    // The frame lies between x and a vocabulary entry "y" (axis 1), nearer to y: closed-set, x
    // wins against the background; open-set, y takes the mass and is named as the runner-up.
    let frame = [0.5, 0.8, 0.0, 0.1];
    let mut closed = Scores::default();
    open_matcher(vec![], vec![]).score(&frame, &mut closed);
    assert!(closed.prob[0] > 0.99, "{closed:?}");
    let m = open_matcher(vec![("y".into(), unit(4, 1))], vec![]);
    let mut open = Scores::default();
    m.score(&frame, &mut open);
    assert!(open.prob[0] < 0.01, "{open:?}");
    let r = open.runner_up[0].unwrap();
    assert_eq!(m.rows()[r.row].name, "y");
    assert_eq!(m.rows()[r.row].kind, RowKind::Vocabulary);
    assert!((r.score - open.rows[r.row]).abs() < 1e-6);
    assert_eq!(m.vocabulary_len(), 1);
}

#[test]
fn vocabulary_synonyms_of_a_label_are_left_out() {
    // "x again" is x's own text; "nearly x" has cosine 0.95 with it (above the bound 0.9);
    // "half x" has 0.6 and competes.
    let near = vec![0.95, (1.0f32 - 0.95 * 0.95).sqrt(), 0.0, 0.0];
    let half = vec![0.6, 0.8, 0.0, 0.0];
    let m = open_matcher(
        vec![
            ("x again".into(), unit(4, 0)),
            ("nearly x".into(), near),
            ("half x".into(), half),
            ("the background again".into(), unit(4, 3)),
        ],
        vec![],
    );
    assert_eq!(
        m.synonyms(),
        ["x again", "nearly x", "the background again"]
    );
    assert_eq!(m.vocabulary_len(), 1);
    let mut s = Scores::default();
    m.score(&unit(4, 0), &mut s);
    // Against "half x" (cosine 0.6 with the frame) and the background (0): x still wins clearly.
    let expected = 1.0 / (1.0 + (20.0f32 * -0.4).exp() + (-20.0f32).exp());
    assert!(
        (s.prob[0] - expected).abs() < 1e-5,
        "{} vs {expected}",
        s.prob[0]
    );
}

#[test]
fn negatives_compete_with_their_own_label_only() {
    let m = Matcher::open_set(
        vec![
            (label("x", false), vec![unit(4, 0)]),
            (label("z", false), vec![unit(4, 2)]),
        ],
        OpenSet {
            extras: vec![LabelExtras {
                negatives: vec![("not x".into(), unit(4, 1))],
                ..LabelExtras::default()
            }],
            ..open_defaults()
        },
        4,
        20.0,
    )
    .unwrap();
    assert_eq!(m.rows()[2].kind, RowKind::Negative(0));
    let mut s = Scores::default();
    // Near x and its negative, far from z: x loses to its negative, z's probability only
    // reflects x.
    m.score(&[0.6, 0.8, 0.0, 0.0], &mut s);
    assert!(s.prob[0] < 0.05, "{s:?}");
    assert_eq!(m.rows()[s.runner_up[0].unwrap().row].name, "not x");
    assert_eq!(s.runner_up[1].unwrap().row, 0);
    let z_alone = 1.0 / (1.0 + (20.0f32 * 0.6).exp());
    assert!((s.prob[1] - z_alone).abs() < 1e-6);
}

#[test]
fn exemplars_pull_a_label_up_and_negative_images_push_it_down() {
    // Image embeddings live in their own cone: the frame is an example of x (same as its image)
    // but its text cosine is only 0.3.
    let image = vec![0.3, 0.0, 0.954, 0.0];
    let m = open_matcher(
        vec![],
        vec![LabelExtras {
            images: vec![image.clone()],
            ..LabelExtras::default()
        }],
    );
    let mut s = Scores::default();
    m.score(&image, &mut s);
    // Identical to the example: the full weight is added.
    assert!((s.cos[0] - (0.3 + EXEMPLAR_WEIGHT)).abs() < 1e-3, "{s:?}");
    assert!((s.rows[0] - 0.3).abs() < 1e-3);
    // The same image as a negative example: the weight is taken off.
    let m = open_matcher(
        vec![],
        vec![LabelExtras {
            negative_images: vec![image.clone()],
            ..LabelExtras::default()
        }],
    );
    m.score(&image, &mut s);
    assert!((s.cos[0] - (0.3 - EXEMPLAR_WEIGHT)).abs() < 1e-3, "{s:?}");
    // A frame far from the example gets almost nothing: A(0) = exp(-5.5).
    let m = open_matcher(
        vec![],
        vec![LabelExtras {
            images: vec![unit(4, 2)],
            ..LabelExtras::default()
        }],
    );
    m.score(&unit(4, 1), &mut s);
    assert!(s.cos[0].abs() < EXEMPLAR_WEIGHT * 0.005, "{s:?}");
}

proptest! {
    /// Competitors only take probability away: a label's open-set probability never exceeds its
    /// closed-set one, the runner-up is the best competitor, and every probability is in [0, 1].
    #[test]
    fn competitors_only_lower_a_labels_probability(
        frame in prop::collection::vec(-1.0f32..1.0, 8),
        labels in prop::collection::vec(prop::collection::vec(-1.0f32..1.0, 8), 1..4),
        vocab in prop::collection::vec(prop::collection::vec(-1.0f32..1.0, 8), 0..12),
    ) {
        prop_assume!(labels.iter().chain(&vocab).all(|v| v.iter().any(|x| x.abs() > 0.1)));
        let entries = || -> Vec<(Label, Vec<Vec<f32>>)> {
            labels.iter().enumerate().map(|(i, e)| (label(&format!("l{i}"), false), vec![e.clone()])).collect()
        };
        let closed = Matcher::new(entries(), 8, 30.0).unwrap();
        let open = Matcher::open_set(
            entries(),
            OpenSet {
                vocabulary: vocab.iter().enumerate().map(|(i, v)| (format!("v{i}"), v.clone())).collect(),
                ..open_defaults()
            },
            8,
            30.0,
        ).unwrap();
        let (mut a, mut b) = (Scores::default(), Scores::default());
        closed.score(&frame, &mut a);
        open.score(&frame, &mut b);
        for i in 0..labels.len() {
            prop_assert!(b.prob[i] <= a.prob[i] + 1e-5, "label {i}: {} > {}", b.prob[i], a.prob[i]);
            prop_assert!((0.0..=1.0).contains(&b.prob[i]));
            if let Some(r) = b.runner_up[i] {
                let best = (0..open.rows().len()).filter(|&j| j != i).map(|j| b.rows[j]).fold(f32::MIN, f32::max);
                prop_assert!((r.score - best).abs() < 1e-6);
            }
            // The softmax over every other row, the long way.
            let e = |j: usize| (30.0f64 * f64::from(b.rows[j])).exp();
            let others: f64 = (0..open.rows().len()).filter(|&j| j != i).map(e).sum();
            let direct = e(i) / (e(i) + others);
            prop_assert!((f64::from(b.prob[i]) - direct).abs() < 1e-5, "label {i}: {} vs {direct}", b.prob[i]);
        }
    }
}

#[test]
fn an_example_image_makes_the_vocabulary_entry_that_describes_it_an_alias() {
    // x's text (axis 0) is poor; its example image lies near the vocabulary entry "y" (axis 1).
    // y becomes x's alias: it stops competing with x and lends x its cosine; "z" still competes.
    let image = vec![0.1, 0.9, 0.0, 0.3];
    let m = open_matcher(
        vec![("y".into(), unit(4, 1)), ("z".into(), unit(4, 2))],
        vec![LabelExtras {
            images: vec![image.clone()],
            ..LabelExtras::default()
        }],
    );
    assert_eq!(m.aliases(0).collect::<Vec<_>>(), ["y"]);
    let mut s = Scores::default();
    let frame = [0.05, 0.95, 0.1, 0.0];
    m.score(&frame, &mut s);
    let norm = frame.iter().map(|x| x * x).sum::<f32>().sqrt();
    // The cosine is y's (0.95 / |frame|) plus a part of the exemplar term.
    assert!(s.cos[0] > 0.95 / norm, "{s:?}");
    assert!(s.prob[0] > 0.99, "{s:?}");
    assert_ne!(m.rows()[s.runner_up[0].unwrap().row].name, "y");
    // Without the example, y takes the frame.
    let plain = open_matcher(
        vec![("y".into(), unit(4, 1)), ("z".into(), unit(4, 2))],
        vec![],
    );
    plain.score(&frame, &mut s);
    assert!(s.prob[0] < 0.01, "{s:?}");
}
