//! The `[[prompts]]` and `[matcher]` keys: what to detect and how frames are scored.

use std::path::{Path, PathBuf};

use super::reader::{Key, Presence, Reader, Section, key, resolve};
use super::{MatcherConfig, PromptConfig, ScoreKind, Vocabulary};

pub(super) fn read_prompt(r: &mut Reader, s: &mut Section, base: Option<&Path>) -> PromptConfig {
    let label = r
        .req(
            s,
            key(
                "label",
                "The label used in events, MQTT topics and GPIO lines: 1 to 64 of A-Z, a-z, \
                 0-9, `_`, `-`; unique.",
            )
            .example("\"person\""),
        )
        .unwrap_or_default();
    let texts = match r.raw(
        s,
        key(
            "text",
            "The text that describes the label, or several (an ensemble whose embeddings are \
             combined). Events show the first.",
        )
        .example("\"a photo of a person\""),
        "string or array of strings",
        Presence::Required,
    ) {
        Some(v) => read_texts(r, s, "text", v, false),
        None => {
            r.problem(s, "text", "missing (required)");
            Vec::new()
        }
    };
    PromptConfig {
        label,
        texts,
        threshold: r.opt(
            s,
            key(
                "threshold",
                "This label's threshold. Not set: `matcher.threshold`.",
            )
            .example("0.6"),
        ),
        enter_frames: r.opt(
            s,
            key(
                "enter_frames",
                "This label's frames above its threshold before a start. Not set: \
                 `trigger.enter_frames`.",
            )
            .example("3"),
        ),
        exit_frames: r.opt(
            s,
            key(
                "exit_frames",
                "This label's frames below its threshold before an end. Not set: \
                 `trigger.exit_frames`.",
            )
            .example("5"),
        ),
        cooldown_s: r.opt(
            s,
            key(
                "cooldown_s",
                "This label's seconds without a new start after an end. Not set: \
                 `trigger.cooldown_s`.",
            )
            .example("0.0"),
        ),
        negatives: list(
            r,
            s,
            key(
                "negatives",
                "Texts that must not fire this label: they compete with it (and only with it) \
                 like vocabulary entries.",
            )
            .example("[\"a photo of a red square\"]"),
        ),
        images: patterns(
            r,
            s,
            base,
            key(
                "images",
                "Example images of this label (paths or globs, relative to this file), embedded \
                 by the image tower at start: a frame close to one of them scores higher (see \
                 `matcher.exemplar_weight`). `matcher.exemplars_dir`/LABEL/ is added without \
                 being named here.",
            )
            .example("[\"exemplars/parcel/*.jpg\"]"),
        ),
        negative_images: patterns(
            r,
            s,
            base,
            key(
                "negative_images",
                "Images of things that must not fire this label: a frame close to one of them \
                 scores lower. `matcher.exemplars_dir`/LABEL/negative/ is added without being \
                 named here.",
            )
            .example("[\"exemplars/not-parcel/*.jpg\"]"),
        ),
        zones: opt_list(
            r,
            s,
            key(
                "zones",
                "The zones this label is watched in, on every camera that has them (`all` is the \
                 whole frame). Not set: every zone of every camera that watches the label.",
            )
            .example("[\"all\"]"),
        ),
    }
}

/// An optional array of strings: `None` when absent.
pub(super) fn opt_list(r: &mut Reader, s: &mut Section, k: Key) -> Option<Vec<String>> {
    let name = k.name();
    r.raw(s, k, "array of strings", Presence::Optional)
        .map(|v| read_texts(r, s, name, v, true))
}

/// An optional array of strings, empty when absent.
fn list(r: &mut Reader, s: &mut Section, k: Key) -> Vec<String> {
    let name = k.name();
    match r.raw(s, k, "array of strings", Presence::Default("[]".into())) {
        Some(v) => read_texts(r, s, name, v, true),
        None => Vec::new(),
    }
}

/// An optional array of path patterns, resolved against the config file's folder.
fn patterns(r: &mut Reader, s: &mut Section, base: Option<&Path>, k: Key) -> Vec<PathBuf> {
    list(r, s, k)
        .into_iter()
        .map(|p| resolve(base, PathBuf::from(p)))
        .collect()
}

pub(super) fn read_matcher(r: &mut Reader, s: &mut Section, base: Option<&Path>) -> MatcherConfig {
    let default_background = || vec!["an empty scene".to_owned()];
    let background = match r.raw(
        s,
        key(
            "background",
            "Background texts: they compete with the labels in the softmax but never fire.",
        ),
        "array of strings",
        Presence::Default(toml::Value::from(default_background()).to_string()),
    ) {
        Some(v) => read_texts(r, s, "background", v, true),
        None => default_background(),
    };
    MatcherConfig {
        background,
        threshold: r.or(
            s,
            key(
                "threshold",
                "The threshold of every label without its own: in [0, 1] for `prob`, in \
                 [-1, 1] for `cosine`.",
            ),
            0.5,
        ),
        score: r.or(
            s,
            key(
                "score",
                "What thresholds apply to: `prob`, the label's open-set probability against \
                 the other labels, the background, the vocabulary and its negatives; `cosine`, \
                 the label's score (cosine, plus its exemplar term).",
            ),
            ScoreKind::Prob,
        ),
        vocabulary: {
            let v: String = r.or(
                s,
                key(
                    "vocabulary",
                    "What else the labels compete with: `bundle`, the vocabulary the model \
                     bundle carries (many everyday things a camera sees); `none`, only the \
                     labels and the background; or the path of an embeddings file made with \
                     this bundle's weights (`edgeclip embed`).",
                ),
                "bundle".to_owned(),
            );
            match v.as_str() {
                "bundle" => Vocabulary::Bundle,
                "none" => Vocabulary::None,
                _ => Vocabulary::File(resolve(base, PathBuf::from(v))),
            }
        },
        synonym_cosine: r.or(
            s,
            key(
                "synonym_cosine",
                "A vocabulary entry whose text embedding has at least this cosine with one of \
                 a label's texts (or a background text) means the same and is left out, so \
                 \"a person\" does not compete with \"a man\". The same text gives 1.",
            ),
            0.9,
        ),
        exemplar_weight: r.or(
            s,
            key(
                "exemplar_weight",
                "How much example images move a label's score, in cosine units: \
                 `w * (A(best image) - A(best negative image))` with `A(c) = exp(-sharpness * \
                 (1 - c))`.",
            ),
            0.3,
        ),
        exemplar_sharpness: r.or(
            s,
            key(
                "exemplar_sharpness",
                "How fast an example image's pull falls off as a frame differs from it.",
            ),
            5.5,
        ),
        exemplars_dir: resolve(
            base,
            r.or(
                s,
                key(
                    "exemplars_dir",
                    "The config's exemplar folder (relative to this file): the images in \
                     LABEL/ are that label's examples, those in LABEL/negative/ its negative \
                     examples (`edgeclip exemplar add` copies images there).",
                ),
                PathBuf::from("exemplars"),
            ),
        ),
        calibration: r
            .opt::<PathBuf>(
                s,
                key(
                    "calibration",
                    "A calibration file written by `edgeclip calibrate`: `score` (the metric it \
                     was made for, which must be `matcher.score`) and a `[thresholds]` table of \
                     label = threshold. A label's threshold is its own `threshold`, else the \
                     file's, else `matcher.threshold`; the file and a label's own `threshold` \
                     must not both set one. Not set: no calibration.",
                )
                .example("\"calib.toml\""),
            )
            .map(|p| resolve(base, p)),
    }
}

pub(super) fn read_texts(
    r: &mut Reader,
    s: &Section,
    name: &str,
    v: toml::Value,
    list_only: bool,
) -> Vec<String> {
    match v {
        toml::Value::String(text) if !list_only => vec![text],
        toml::Value::Array(items) => {
            let mut out = Vec::new();
            for (i, item) in items.into_iter().enumerate() {
                match item {
                    toml::Value::String(text) => out.push(text),
                    other => r.problem(
                        s,
                        &format!("{name}[{i}]"),
                        format!("expected a string, got {}", other.type_str()),
                    ),
                }
            }
            out
        }
        other => {
            let expected = if list_only {
                "an array of strings"
            } else {
                "a string or an array of strings"
            };
            r.problem(
                s,
                name,
                format!("expected {expected}, got {}", other.type_str()),
            );
            Vec::new()
        }
    }
}
