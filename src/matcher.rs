//! Scores a frame embedding against the label embeddings.
//!
//! Each label is one or more prompt texts (an ensemble): their L2-normalised embeddings are
//! averaged and normalised again, as CLIP's zero-shot classifiers do. A frame's score for a label is
//! the cosine between the two; probabilities are a softmax of `logit_scale * cosine` over every
//! label, background labels ("an empty scene") included. Background labels compete for the
//! probability mass but are never reported as matches.
//!
//! Pure and allocation-free per frame: [`Matcher::score`] writes into a reused [`Scores`].

/// Errors building a matcher.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MatcherError {
    /// An embedding has the wrong width.
    #[error("label {label:?}: embedding has {got} values, the model's embeddings have {dim}")]
    Dim {
        /// The label.
        label: String,
        /// Its width.
        got: usize,
        /// The expected width.
        dim: usize,
    },
    /// A label without any prompt embedding, or an all-zero one.
    #[error("label {label:?}: no usable prompt embedding")]
    Empty {
        /// The label.
        label: String,
    },
    /// No labels.
    #[error("no labels to match against")]
    NoLabels,
}

/// One label as the matcher sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    /// The label's name (e.g. "person").
    pub name: String,
    /// The prompt text shown in events (the first of the ensemble).
    pub prompt: String,
    /// Whether this is a background label that never matches.
    pub background: bool,
}

/// Per-label results for one frame, indexed like [`Matcher::labels`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scores {
    /// Cosine similarity per label.
    pub cos: Vec<f32>,
    /// Softmax probability per label.
    pub prob: Vec<f32>,
}

/// L2-normalises `v` in place; returns false for a zero (or non-finite) vector.
pub fn normalize(v: &mut [f32]) -> bool {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if !(norm.is_finite() && norm > 0.0) {
        return false;
    }
    v.iter_mut().for_each(|x| *x /= norm);
    true
}

/// The dot product of two equally long vectors.
///
/// Sixteen independent partial sums: a plain `zip().map().sum()` is one serial chain of float
/// additions, which the compiler may not reorder, so it runs one multiply-add per add latency.
/// With sixteen lanes it becomes four (SSE) or two (AVX/NEON) vector accumulators: about 5x
/// faster when scoring a frame against hundreds of prompts (`benches/pipeline.rs`).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    debug_assert_eq!(a.len(), b.len());
    let (a_chunks, a_rest) = a.as_chunks::<LANES>();
    let (b_chunks, b_rest) = b.as_chunks::<LANES>();
    let mut acc = [0f32; LANES];
    for (x, y) in a_chunks.iter().zip(b_chunks) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    let rest: f32 = a_rest.iter().zip(b_rest).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + rest
}

/// `out[r]` = [`dot`] of row `r` of `matrix` (rows of `v.len()` values) with `v`: the kernel of
/// [`Matcher::score`].
///
/// The portable build targets the x86-64 baseline (SSE2: four lanes, separate multiply and add),
/// so on x86-64 CPUs with AVX2 and FMA, checked at run time, the rows go through an 8-lane fused
/// multiply-add version instead (`benches/pipeline.rs`, `matching`). Elsewhere (NEON is the
/// aarch64 baseline) [`dot`] runs as built.
pub fn dot_rows(matrix: &[f32], v: &[f32], out: &mut [f32]) {
    debug_assert_eq!(matrix.len(), v.len() * out.len());
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA, checked just above.
        #[allow(unsafe_code)]
        unsafe {
            x86::dot_rows_avx2_fma(matrix, v, out)
        };
        return;
    }
    for (row, o) in matrix.chunks_exact(v.len()).zip(out) {
        *o = dot(row, v);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    /// [`super::dot_rows`] compiled for AVX2 + FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn dot_rows_avx2_fma(matrix: &[f32], v: &[f32], out: &mut [f32]) {
        for (row, o) in matrix.chunks_exact(v.len()).zip(out) {
            *o = dot_fma(row, v);
        }
    }

    /// [`super::dot`] with 32 partial sums (four 8-lane accumulators, enough to keep two FMA
    /// units busy through their latency) and fused multiply-adds.
    #[target_feature(enable = "avx2,fma")]
    fn dot_fma(a: &[f32], b: &[f32]) -> f32 {
        const LANES: usize = 32;
        let (a_chunks, a_rest) = a.as_chunks::<LANES>();
        let (b_chunks, b_rest) = b.as_chunks::<LANES>();
        let mut acc = [0f32; LANES];
        for (x, y) in a_chunks.iter().zip(b_chunks) {
            for i in 0..LANES {
                acc[i] = x[i].mul_add(y[i], acc[i]);
            }
        }
        let rest: f32 = a_rest.iter().zip(b_rest).map(|(x, y)| x * y).sum();
        acc.iter().sum::<f32>() + rest
    }
}

/// Cosine similarity of two vectors (0 when either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let na = dot(a, a).sqrt();
    let nb = dot(b, b).sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot(a, b) / (na * nb)
    }
}

/// The label embeddings of a prompt set and the softmax scale.
#[derive(Debug, Clone)]
pub struct Matcher {
    labels: Vec<Label>,
    /// `labels.len() * dim` values, each row L2-normalised.
    matrix: Vec<f32>,
    dim: usize,
    logit_scale: f32,
}

impl Matcher {
    /// Builds a matcher from labels and the embeddings of each label's prompts (one or more each).
    pub fn new(
        entries: Vec<(Label, Vec<Vec<f32>>)>,
        dim: usize,
        logit_scale: f32,
    ) -> Result<Matcher, MatcherError> {
        if entries.is_empty() {
            return Err(MatcherError::NoLabels);
        }
        let mut labels = Vec::with_capacity(entries.len());
        let mut matrix = Vec::with_capacity(entries.len() * dim);
        for (label, embeddings) in entries {
            let mut mean = vec![0f32; dim];
            let mut used = 0;
            for e in &embeddings {
                if e.len() != dim {
                    return Err(MatcherError::Dim {
                        label: label.name.clone(),
                        got: e.len(),
                        dim,
                    });
                }
                let mut e = e.clone();
                if normalize(&mut e) {
                    mean.iter_mut().zip(&e).for_each(|(m, x)| *m += x);
                    used += 1;
                }
            }
            if used == 0 || !normalize(&mut mean) {
                return Err(MatcherError::Empty { label: label.name });
            }
            matrix.extend_from_slice(&mean);
            labels.push(label);
        }
        Ok(Matcher {
            labels,
            matrix,
            dim,
            logit_scale,
        })
    }

    /// The labels, in score order.
    pub fn labels(&self) -> &[Label] {
        &self.labels
    }

    /// Embedding width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Scores an image embedding (any norm; it is normalised here) into `out`.
    pub fn score(&self, image: &[f32], out: &mut Scores) {
        assert_eq!(image.len(), self.dim, "image embedding width");
        let n = self.labels.len();
        out.cos.resize(n, 0.0);
        out.prob.resize(n, 0.0);
        let norm = image.iter().map(|x| x * x).sum::<f32>().sqrt();
        let inv = if norm > 0.0 && norm.is_finite() {
            1.0 / norm
        } else {
            0.0
        };
        dot_rows(&self.matrix, image, &mut out.cos);
        out.cos.iter_mut().for_each(|c| *c *= inv);
        let max = out.cos.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for (p, &c) in out.prob.iter_mut().zip(&out.cos) {
            *p = (self.logit_scale * (c - max)).exp();
            sum += *p;
        }
        out.prob.iter_mut().for_each(|p| *p /= sum);
    }

    /// The best label, background labels included, by cosine.
    pub fn best(&self, scores: &Scores) -> Option<usize> {
        scores
            .cos
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
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
}
