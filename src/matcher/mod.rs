//! Scores a frame embedding against the labels, open-set.
//!
//! Each label is one or more prompt texts (an ensemble): their L2-normalised embeddings are
//! averaged and normalised again, as CLIP's zero-shot classifiers do. A frame's score for a label is
//! the cosine between the two.
//!
//! A label's probability is not a softmax over the user's few labels only: there, whatever is
//! nearest wins (a red square "is" a red circle when the only other choice is an empty scene).
//! Each label competes with every other label, the background texts ("an empty scene"), the
//! bundle's **vocabulary** (many everyday things a camera sees) and its own **negatives** (texts
//! that must not fire it):
//!
//! ```text
//! prob(label) = exp(s * cos(label)) / (exp(s * cos(label)) + sum over its competitors c of exp(s * cos(c)))
//! ```
//!
//! with `s` the bundle's logit scale. A vocabulary entry that means the same as a label or a
//! background text (cosine of the text embeddings at least [`OpenSet::synonym_cosine`]; the
//! same text gives 1) is left out: the label itself already stands for it, so "a person" does
//! not compete with "a man". Background labels compete for the mass but never match.
//!
//! **Exemplars.** Image embeddings of examples of a label (`images`) and of things that must not
//! fire it (`negative_images`) adjust the label's score by a nearest-example term (after
//! Tip-Adapter, Zhang et al. 2022), in cosine units:
//!
//! ```text
//! score(label) = cos(frame, text) + w * (A(max cos(frame, images)) - A(max cos(frame, negative_images)))
//! A(x) = exp(-beta * (1 - x))
//! ```
//!
//! `A` is 1 for a frame identical to an example and falls off quickly (`beta`, sharpness); image
//! to image cosines are not on the scale of image to text ones, so examples do not enter the
//! softmax as rows of their own. A term is 0 when the label has no such images.
//!
//! Examples also say what the label means in words: for each example image, the vocabulary entry
//! that describes it best (when it describes it better than the label's own texts) becomes an
//! **alias** of the label: it no longer competes with it, and its cosine counts as the label's
//! text cosine when higher (`cos(frame, text)` above is the best of the label's texts and
//! aliases). So a label named by examples of a thing the vocabulary knows fires where that
//! thing is seen, not only on frames that look like the examples. The defaults of
//! the bound, `w` and `beta` are the config's (`matcher.*` in `docs/CONFIG.md`).
//!
//! Pure and allocation-free per frame: [`Matcher::score`] writes into a reused [`Scores`].
//! Large row sets are scored from an int8 copy of the matrix ([`Storage`]): a quarter of the
//! bytes to stream per frame, for cosines off by about 3e-4 (RMS) from the f32 ones.

/// Errors building a matcher.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MatcherError {
    /// An embedding has the wrong width.
    #[error("label {label:?}: embedding has {got} values, the model's embeddings have {dim}")]
    Dim {
        /// The label (or vocabulary text).
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

/// What a row of the matcher's matrix stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKind {
    /// Label `i` of [`Matcher::labels`] (background labels included).
    Label(usize),
    /// A vocabulary entry: competes with every label.
    Vocabulary,
    /// A negative text of label `i`: competes with that label only.
    Negative(usize),
}

/// One row: its kind and the name shown for it (a label's name, or the text).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// What it stands for.
    pub kind: RowKind,
    /// The label name, or the vocabulary or negative text.
    pub name: String,
}

/// The strongest competitor of a label in one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunnerUp {
    /// Its row ([`Matcher::rows`]).
    pub row: usize,
    /// Its score (cosine; a label's with its exemplar term).
    pub score: f32,
}

/// Per-label results for one frame, indexed like [`Matcher::labels`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scores {
    /// The score per label: the cosine with its texts, plus its exemplar term.
    pub cos: Vec<f32>,
    /// Open-set probability per label (see the module comment).
    pub prob: Vec<f32>,
    /// Each label's strongest competitor (`None` for a label with none).
    pub runner_up: Vec<Option<RunnerUp>>,
    /// The cosine of every row of [`Matcher::rows`] (labels: their text cosine).
    pub rows: Vec<f32>,
    /// The image embedding quantized to i16 when the matcher holds int8 rows (reused).
    query: Vec<i16>,
    /// The cosine with every exemplar image (reused).
    exemplars: Vec<f32>,
    /// Every row's softmax term (reused).
    exps: Vec<f32>,
    /// The best shared rows (reused).
    top: Vec<u32>,
}

/// The vocabulary, negatives and exemplars a matcher adds to its labels.
#[derive(Debug, Clone)]
pub struct OpenSet {
    /// The vocabulary: texts and their embeddings.
    pub vocabulary: Vec<(String, Vec<f32>)>,
    /// Vocabulary entries whose embedding has at least this cosine with a label's or a
    /// background text's embedding mean the same and are left out.
    pub synonym_cosine: f32,
    /// Per label (indexed like the entries; missing ones have none): negatives and exemplars.
    pub extras: Vec<LabelExtras>,
    /// `w`: the weight of the exemplar term, in cosine units.
    pub exemplar_weight: f32,
    /// `beta`: how fast an example's pull falls off with distance.
    pub exemplar_sharpness: f32,
}

impl OpenSet {
    /// No vocabulary, negatives or exemplars: the labels compete with each other only.
    pub fn closed() -> OpenSet {
        OpenSet {
            vocabulary: vec![],
            synonym_cosine: 1.0,
            extras: vec![],
            exemplar_weight: 0.0,
            exemplar_sharpness: 0.0,
        }
    }
}

/// A label's negatives and example images.
#[derive(Debug, Clone, Default)]
pub struct LabelExtras {
    /// Texts that must not fire the label, with their embeddings.
    pub negatives: Vec<(String, Vec<f32>)>,
    /// Image embeddings of examples of the label.
    pub images: Vec<Vec<f32>>,
    /// Image embeddings of things that must not fire the label.
    pub negative_images: Vec<Vec<f32>>,
}

mod kernels;

pub use kernels::{INT8_FROM_VALUES, Int8Query, Storage, cosine, dot, dot_rows, normalize};
use kernels::{Int8Rows, dot_rows_i8, query_max};

/// The exemplar images of every label, scored in f32 (a few dozen rows at most).
#[derive(Debug, Clone, Default)]
struct Exemplars {
    /// Normalised image embeddings, one row each.
    matrix: Vec<f32>,
    /// Per row: the label and whether it is a positive example.
    owner: Vec<(usize, bool)>,
    weight: f32,
    sharpness: f32,
}

/// The label, vocabulary and negative embeddings, and the softmax scale.
#[derive(Debug, Clone)]
pub struct Matcher {
    labels: Vec<Label>,
    rows: Vec<Row>,
    /// `rows.len() * dim` values, each row L2-normalised; the labels' rows first.
    matrix: Vec<f32>,
    /// The same rows in int8 when they are scored that way ([`Storage::Int8`]).
    int8: Option<Int8Rows>,
    /// The rows every label competes with (but itself and its aliases): the labels and the
    /// vocabulary kept, `rows[..shared]`; the negatives follow.
    shared: usize,
    /// How many of the best shared rows a frame's scoring keeps apart: enough that each label
    /// finds its best competitor among them (1 for itself, its aliases, 1 more).
    top: usize,
    /// Per label: its negatives' rows.
    negatives: Vec<Vec<u32>>,
    exemplars: Exemplars,
    /// Vocabulary entries left out as synonyms of a label.
    synonyms: Vec<String>,
    /// Per label: the vocabulary rows its example images made its aliases.
    aliases: Vec<Vec<u32>>,
    dim: usize,
    logit_scale: f32,
}

/// The normalised mean of a label's normalised embeddings.
fn ensemble(name: &str, embeddings: &[Vec<f32>], dim: usize) -> Result<Vec<f32>, MatcherError> {
    let mut mean = vec![0f32; dim];
    let mut used = 0;
    for e in embeddings {
        let e = normalized(name, e, dim)?;
        if let Some(e) = e {
            mean.iter_mut().zip(&e).for_each(|(m, x)| *m += x);
            used += 1;
        }
    }
    if used == 0 || !normalize(&mut mean) {
        return Err(MatcherError::Empty { label: name.into() });
    }
    Ok(mean)
}

/// `e` normalised, `None` when it is zero; an error when its width is not `dim`.
fn normalized(name: &str, e: &[f32], dim: usize) -> Result<Option<Vec<f32>>, MatcherError> {
    if e.len() != dim {
        return Err(MatcherError::Dim {
            label: name.into(),
            got: e.len(),
            dim,
        });
    }
    let mut e = e.to_vec();
    Ok(normalize(&mut e).then_some(e))
}

/// Per label: the vocabulary rows that describe one of its example images best, and better than
/// the label's own row does.
fn aliases_of(
    rows: &[Row],
    matrix: &[f32],
    dim: usize,
    exemplars: &Exemplars,
    n_labels: usize,
) -> Vec<Vec<u32>> {
    let mut aliases = vec![Vec::new(); n_labels];
    let row = |j: usize| &matrix[j * dim..][..dim];
    for (image, &(label, positive)) in exemplars.matrix.chunks_exact(dim).zip(&exemplars.owner) {
        if !positive {
            continue;
        }
        let best = rows
            .iter()
            .enumerate()
            .filter(|(_, r)| r.kind == RowKind::Vocabulary)
            .map(|(j, _)| (j, dot(row(j), image)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((j, c)) = best
            && c > dot(row(label), image)
            && !aliases[label].contains(&(j as u32))
        {
            aliases[label].push(j as u32);
        }
    }
    aliases
}

impl Matcher {
    /// A closed-set matcher: labels (one or more prompt embeddings each) that compete with each
    /// other only, scored in the [`Storage::for_size`] of their matrix.
    pub fn new(
        entries: Vec<(Label, Vec<Vec<f32>>)>,
        dim: usize,
        logit_scale: f32,
    ) -> Result<Matcher, MatcherError> {
        Matcher::open_set(entries, OpenSet::closed(), dim, logit_scale)
    }

    /// An open-set matcher: the labels, the vocabulary, each label's negatives and exemplars
    /// (see the module comment).
    pub fn open_set(
        entries: Vec<(Label, Vec<Vec<f32>>)>,
        open: OpenSet,
        dim: usize,
        logit_scale: f32,
    ) -> Result<Matcher, MatcherError> {
        if entries.is_empty() {
            return Err(MatcherError::NoLabels);
        }
        let n_labels = entries.len();
        let mut labels = Vec::with_capacity(n_labels);
        let mut rows = Vec::new();
        let mut matrix = Vec::new();
        // Every text embedding of the labels, for the synonym test.
        let mut label_texts: Vec<Vec<f32>> = Vec::new();
        for (i, (label, embeddings)) in entries.into_iter().enumerate() {
            matrix.extend(ensemble(&label.name, &embeddings, dim)?);
            for e in &embeddings {
                label_texts.extend(normalized(&label.name, e, dim)?);
            }
            rows.push(Row {
                kind: RowKind::Label(i),
                name: label.name.clone(),
            });
            labels.push(label);
        }
        let mut synonyms = Vec::new();
        for (text, e) in &open.vocabulary {
            let Some(e) = normalized(text, e, dim)? else {
                continue;
            };
            if label_texts
                .iter()
                .any(|t| dot(t, &e) >= open.synonym_cosine)
            {
                synonyms.push(text.clone());
                continue;
            }
            matrix.extend(e);
            rows.push(Row {
                kind: RowKind::Vocabulary,
                name: text.clone(),
            });
        }
        let mut exemplars = Exemplars {
            weight: open.exemplar_weight,
            sharpness: open.exemplar_sharpness,
            ..Exemplars::default()
        };
        for (i, extras) in open.extras.iter().enumerate().take(n_labels) {
            for (text, e) in &extras.negatives {
                if let Some(e) = normalized(text, e, dim)? {
                    matrix.extend(e);
                    rows.push(Row {
                        kind: RowKind::Negative(i),
                        name: text.clone(),
                    });
                }
            }
            for (images, positive) in [(&extras.images, true), (&extras.negative_images, false)] {
                for e in images {
                    if let Some(e) = normalized(&labels[i].name, e, dim)? {
                        exemplars.matrix.extend(e);
                        exemplars.owner.push((i, positive));
                    }
                }
            }
        }
        let aliases = aliases_of(&rows, &matrix, dim, &exemplars, n_labels);
        let negatives = (0..n_labels)
            .map(|i| {
                rows.iter()
                    .enumerate()
                    .filter(|(_, r)| r.kind == RowKind::Negative(i))
                    .map(|(j, _)| j as u32)
                    .collect()
            })
            .collect();
        let shared = rows
            .iter()
            .take_while(|r| !matches!(r.kind, RowKind::Negative(_)))
            .count();
        let top = (2 + aliases.iter().map(Vec::len).max().unwrap_or(0)).min(shared);
        let storage = Storage::for_size(rows.len(), dim);
        Ok(Matcher {
            labels,
            rows,
            matrix,
            int8: None,
            shared,
            top,
            negatives,
            exemplars,
            synonyms,
            aliases,
            dim,
            logit_scale,
        }
        .with_storage(storage))
    }

    /// The same matcher scoring from `storage` (benches and tests compare the two).
    pub fn with_storage(mut self, storage: Storage) -> Matcher {
        self.int8 = match storage {
            Storage::F32 => None,
            Storage::Int8 => Some(Int8Rows::quantize(&self.matrix, self.dim)),
        };
        self
    }

    /// How the matrix is scored.
    pub fn storage(&self) -> Storage {
        match self.int8 {
            Some(_) => Storage::Int8,
            None => Storage::F32,
        }
    }

    /// The labels, in score order.
    pub fn labels(&self) -> &[Label] {
        &self.labels
    }

    /// Every row: the labels first, then the vocabulary kept, then the negatives.
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// The vocabulary entries left out because they mean the same as a label.
    pub fn synonyms(&self) -> &[String] {
        &self.synonyms
    }

    /// The vocabulary entries label `i`'s example images made its aliases.
    pub fn aliases(&self, i: usize) -> impl Iterator<Item = &str> {
        self.aliases[i]
            .iter()
            .map(|&j| self.rows[j as usize].name.as_str())
    }

    /// How many vocabulary entries compete with the labels.
    pub fn vocabulary_len(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| r.kind == RowKind::Vocabulary)
            .count()
    }

    /// Embedding width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Scores an image embedding (any norm; it is normalised here) into `out`.
    pub fn score(&self, image: &[f32], out: &mut Scores) {
        assert_eq!(image.len(), self.dim, "image embedding width");
        let n = self.labels.len();
        out.rows.resize(self.rows.len(), 0.0);
        let norm = dot(image, image).sqrt();
        let inv = if norm > 0.0 && norm.is_finite() {
            1.0 / norm
        } else {
            0.0
        };
        match &self.int8 {
            None => {
                dot_rows(&self.matrix, image, &mut out.rows);
                out.rows.iter_mut().for_each(|c| *c *= inv);
            }
            Some(rows) if inv > 0.0 => {
                // The query in i16: its largest |value| maps to query_max(dim).
                let max = image.iter().fold(0f32, |m, x| m.max(x.abs()));
                let step = max / query_max(self.dim);
                let per_step = 1.0 / step;
                out.query.clear();
                // Rounded half away from zero by hand: `f32::round` is a libm call on the x86-64
                // baseline (no SSE4.1), 512 of them a frame.
                out.query.extend(
                    image
                        .iter()
                        .map(|x| (x * per_step + 0.5f32.copysign(*x)) as i16),
                );
                dot_rows_i8(&rows.values, &rows.sums, &out.query, &mut out.rows);
                for (c, row_scale) in out.rows.iter_mut().zip(&rows.scales) {
                    *c *= row_scale * step * inv;
                }
            }
            // A zero or non-finite image embedding.
            Some(_) => out.rows.fill(0.0),
        }
        out.cos.clear();
        out.cos.extend_from_slice(&out.rows[..n]);
        for (c, aliases) in out.cos.iter_mut().zip(&self.aliases) {
            for &j in aliases {
                *c = c.max(out.rows[j as usize]);
            }
        }
        self.add_exemplar_terms(image, inv, out);
        self.softmax(out);
    }

    /// Each label's open-set probability and runner-up from the scores in `out`.
    ///
    /// Linear in the rows: every row's exponential once, then per label the sum over the shared
    /// rows less its own and its aliases', plus its negatives'. The largest shared rows are kept
    /// apart (`top` of them) and summed per label, so no label subtracts a dominant term from
    /// a total (no cancellation), and its runner-up is the best of them it competes with.
    fn softmax(&self, out: &mut Scores) {
        let n = self.labels.len();
        // The labels' rows compete with their exemplar terms included.
        let score_of = |out: &Scores, j: usize| if j < n { out.cos[j] } else { out.rows[j] };
        let max = (0..self.shared)
            .map(|j| score_of(out, j))
            .fold(f32::NEG_INFINITY, f32::max);
        // Relative to the largest shared score, a shared row's exponential is at most 1 and a
        // label's own too; only a negative can be larger (capped: its label's probability is 0
        // to f32 precision then).
        out.exps.clear();
        for j in 0..self.rows.len() {
            let x = (self.logit_scale * (score_of(out, j) - max)).min(80.0);
            out.exps.push(x.exp());
        }
        // The `top` best shared rows, best first.
        out.top.clear();
        for j in 0..self.shared {
            let s = score_of(out, j);
            // Full and no better than its last (the smallest): the search below would not place it.
            if out.top.len() == self.top
                && out
                    .top
                    .last()
                    .is_some_and(|&t| s <= score_of(out, t as usize))
            {
                continue;
            }
            let at = out
                .top
                .iter()
                .position(|&t| s > score_of(out, t as usize))
                .unwrap_or(out.top.len());
            if at < self.top {
                out.top.insert(at, j as u32);
                out.top.truncate(self.top);
            }
        }
        let rest: f64 = (0..self.shared)
            .filter(|j| !out.top.contains(&(*j as u32)))
            .map(|j| f64::from(out.exps[j]))
            .sum();
        out.prob.resize(n, 0.0);
        out.runner_up.resize(n, None);
        for i in 0..n {
            let aliases = self.aliases.get(i).map_or(&[][..], Vec::as_slice);
            if aliases.is_empty() && self.negatives[i].is_empty() {
                // Most labels: every shared row but their own competes, and the runner-up is the
                // best of `top` that is not the label (the same sums, in the same order, as the
                // general case below, without its per-row closures: 1000 labels paid for them).
                let own = i as u32;
                let mut sum = rest;
                if !out.top.contains(&own) {
                    sum -= f64::from(out.exps[i]);
                }
                let mut best = None;
                for &t in out.top.iter().filter(|&&t| t != own) {
                    let t = t as usize;
                    sum += f64::from(out.exps[t]);
                    best = best.or(Some(RunnerUp {
                        row: t,
                        score: score_of(out, t),
                    }));
                }
                let mine = f64::from(out.exps[i]);
                out.prob[i] = if mine > 0.0 {
                    (mine / (mine + sum.max(0.0))) as f32
                } else {
                    0.0
                };
                out.runner_up[i] = best;
                continue;
            }
            let excluded = |j: u32| j as usize == i || aliases.contains(&j);
            let mut sum = rest;
            // Itself and its aliases, where they are in `rest`.
            for j in std::iter::once(i as u32).chain(aliases.iter().copied()) {
                if !out.top.contains(&j) {
                    sum -= f64::from(out.exps[j as usize]);
                }
            }
            let mut best: Option<RunnerUp> = None;
            let mut consider = |j: usize, sum: &mut f64| {
                *sum += f64::from(out.exps[j]);
                let s = score_of(out, j);
                if best.is_none_or(|b| s > b.score) {
                    best = Some(RunnerUp { row: j, score: s });
                }
            };
            for &t in out.top.iter().filter(|&&t| !excluded(t)) {
                consider(t as usize, &mut sum);
            }
            for &j in &self.negatives[i] {
                consider(j as usize, &mut sum);
            }
            let mine = f64::from(out.exps[i]);
            out.prob[i] = if mine > 0.0 {
                (mine / (mine + sum.max(0.0))) as f32
            } else {
                0.0
            };
            out.runner_up[i] = best;
        }
    }

    /// Adds each label's exemplar term to `out.cos` (nothing when no label has images).
    fn add_exemplar_terms(&self, image: &[f32], inv: f32, out: &mut Scores) {
        let ex = &self.exemplars;
        if ex.owner.is_empty() {
            return;
        }
        out.exemplars.resize(ex.owner.len(), 0.0);
        dot_rows(&ex.matrix, image, &mut out.exemplars);
        let n = self.labels.len();
        // Per label: the best cosine with a positive and with a negative image.
        for i in 0..n {
            let (mut pos, mut neg) = (None::<f32>, None::<f32>);
            for (&(owner, positive), &c) in ex.owner.iter().zip(&out.exemplars) {
                if owner != i {
                    continue;
                }
                let slot = if positive { &mut pos } else { &mut neg };
                *slot = Some(slot.map_or(c * inv, |m| m.max(c * inv)));
            }
            let pull = |c: Option<f32>| c.map_or(0.0, |c| (-ex.sharpness * (1.0 - c)).exp());
            out.cos[i] += ex.weight * (pull(pos) - pull(neg));
        }
    }

    /// The best label, background labels included, by score.
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
mod tests;
