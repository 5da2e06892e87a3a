//! Builds the matcher a config asks for: each label's texts, the background texts, the
//! vocabulary the labels compete with, each label's negatives and its example images.
//!
//! Texts come from the bundle's precomputed embeddings, the daemon's cache or the text tower;
//! example images go through the running image tower (and are cached by content hash). Every
//! problem stops the start with the key that caused it: the daemon never starts with a label
//! that silently lost its examples or a vocabulary made with other weights.

use std::path::{Path, PathBuf};

use log::{debug, info, warn};

use super::DaemonError;
use crate::config::{Config, Vocabulary};
use crate::matcher::{Label, LabelExtras, Matcher, OpenSet};
use crate::model::{Bundle, ImageEncoder};
use crate::preprocess::{Preprocessor, Spec};
use crate::prompts::images::{ExemplarEmbedder, expand, images_in};
use crate::prompts::{PromptEmbedder, PromptEmbeddings};

fn prompt_cache(bundle: &Bundle) -> Option<PathBuf> {
    crate::paths::cache_dir()
        .map(|d| d.join(format!("prompts-{}.safetensors", bundle.fingerprint())))
}

fn exemplar_cache(bundle: &Bundle, encoder: &ImageEncoder) -> Option<PathBuf> {
    crate::paths::cache_dir().map(|d| {
        d.join(format!(
            "exemplars-{}-{}.safetensors",
            bundle.fingerprint(),
            encoder.precision()
        ))
    })
}

/// One example image source of a label: the config key that names it and its pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct ExemplarSource {
    /// The label's index in `config.prompts`.
    pub label: usize,
    /// Whether the images are examples of the label (else of what must not fire it).
    pub positive: bool,
    /// The config key (`prompts[2].images[0]`, or `matcher.exemplars_dir` for the folders).
    pub key: String,
    /// The path or glob pattern; `None` for the label's folder in `matcher.exemplars_dir`.
    pub pattern: Option<PathBuf>,
    /// The folder, for the `exemplars_dir` sources.
    pub dir: Option<PathBuf>,
}

/// Where the config's example images come from: each label's `images` and `negative_images`,
/// and its folders `exemplars_dir/LABEL/` and `exemplars_dir/LABEL/negative/`.
pub fn exemplar_sources(config: &Config) -> Vec<ExemplarSource> {
    let mut out = Vec::new();
    for (i, p) in config.prompts.iter().enumerate() {
        for (list, name, positive) in [
            (&p.images, "images", true),
            (&p.negative_images, "negative_images", false),
        ] {
            out.extend(list.iter().enumerate().map(|(j, pattern)| ExemplarSource {
                label: i,
                positive,
                key: format!("prompts[{i}].{name}[{j}]"),
                pattern: Some(pattern.clone()),
                dir: None,
            }));
        }
        let dir = label_dir(config, &p.label);
        for (dir, positive) in [(dir.clone(), true), (dir.join("negative"), false)] {
            out.push(ExemplarSource {
                label: i,
                positive,
                key: "matcher.exemplars_dir".into(),
                pattern: None,
                dir: Some(dir),
            });
        }
    }
    out
}

/// A label's folder of example images.
pub fn label_dir(config: &Config, label: &str) -> PathBuf {
    config.matcher.exemplars_dir.join(label)
}

/// Whether the config has any example image (so the image tower is needed to build the matcher).
pub fn has_exemplars(config: &Config) -> bool {
    exemplar_sources(config).iter().any(|s| match &s.dir {
        Some(dir) => !images_in(dir).is_empty(),
        None => true,
    })
}

/// The vocabulary `matcher.vocabulary` names, checked against the bundle's fingerprint.
fn vocabulary(config: &Config, bundle: &Bundle) -> Result<PromptEmbeddings, DaemonError> {
    let path = match &config.matcher.vocabulary {
        Vocabulary::None => return Ok(PromptEmbeddings::empty(bundle.fingerprint(), 0)),
        Vocabulary::File(path) => path.clone(),
        Vocabulary::Bundle => match bundle.vocabulary_file() {
            Some(path) => path,
            None => {
                warn!(
                    "the model bundle {} carries no vocabulary: each label competes only with the \
                     other labels and matcher.background, so a thing that is none of them can \
                     still fire the nearest label (export the bundle with a vocabulary, or set \
                     matcher.vocabulary)",
                    bundle.dir().display()
                );
                return Ok(PromptEmbeddings::empty(bundle.fingerprint(), 0));
            }
        },
    };
    PromptEmbeddings::load_for(&path, bundle).map_err(|error| DaemonError::Vocabulary {
        file: config_file(config),
        error: Box::new(error),
    })
}

fn config_file(config: &Config) -> PathBuf {
    config
        .file
        .clone()
        .unwrap_or_else(|| PathBuf::from("<memory>"))
}

/// Builds the matcher: texts embedded (and cached), the vocabulary loaded, the example images
/// embedded with `encoder` (needed only when [`has_exemplars`]).
pub fn build_matcher(
    config: &Config,
    bundle: &Bundle,
    encoder: Option<&ImageEncoder>,
) -> Result<Matcher, DaemonError> {
    let cache = prompt_cache(bundle).filter(|p| p.is_file());
    // A stale or damaged cache is not fatal: it is rebuilt.
    let extra: Vec<PathBuf> = cache
        .iter()
        .filter(|p| match PromptEmbeddings::load_for(p, bundle) {
            Ok(_) => true,
            Err(e) => {
                warn!("ignoring the prompt cache: {e}");
                false
            }
        })
        .cloned()
        .collect();
    let mut embedder = PromptEmbedder::new(bundle, &extra)?;
    let mut entries = Vec::new();
    let mut extras = Vec::new();
    for p in &config.prompts {
        let embeddings = p
            .texts
            .iter()
            .map(|t| embedder.embed(t))
            .collect::<Result<Vec<_>, _>>()?;
        let label = Label {
            name: p.label.clone(),
            prompt: p.display_text().to_string(),
            background: false,
        };
        entries.push((label, embeddings));
        let negatives = p
            .negatives
            .iter()
            .map(|t| Ok((t.clone(), embedder.embed(t)?)))
            .collect::<Result<Vec<_>, DaemonError>>()?;
        extras.push(LabelExtras {
            negatives,
            ..LabelExtras::default()
        });
    }
    for text in &config.matcher.background {
        let label = Label {
            name: text.clone(),
            prompt: text.clone(),
            background: true,
        };
        entries.push((label, vec![embedder.embed(text)?]));
    }
    let images = embed_exemplars(config, bundle, encoder, &mut extras)?;
    let vocab = vocabulary(config, bundle)?;
    let negatives: usize = config.prompts.iter().map(|p| p.negatives.len()).sum();
    save_prompt_cache(bundle, &embedder);
    let m = &config.matcher;
    let matcher = Matcher::open_set(
        entries,
        OpenSet {
            vocabulary: vocab
                .texts
                .iter()
                .enumerate()
                .map(|(i, t)| (t.clone(), vocab.data[i * vocab.dim..][..vocab.dim].to_vec()))
                .collect(),
            synonym_cosine: m.synonym_cosine,
            extras,
            exemplar_weight: m.exemplar_weight,
            exemplar_sharpness: m.exemplar_sharpness,
        },
        bundle.embed_dim(),
        bundle.manifest.logit_scale,
    )?;
    info!(
        "prompts: {} labels, {} background texts, {} negatives; {} texts embedded by the text \
         tower, the rest from {}; vocabulary: {} entries compete{}; {} example images",
        config.prompts.len(),
        config.matcher.background.len(),
        negatives,
        embedder.embedded(),
        match &extra[..] {
            [cache] => format!("the bundle's prompts and the cache {}", cache.display()),
            _ => "the bundle's prompts".to_string(),
        },
        matcher.vocabulary_len(),
        match matcher.synonyms() {
            [] => String::new(),
            s => format!(
                " ({} left out as synonyms of a label: {})",
                s.len(),
                s.join(", ")
            ),
        },
        images
    );
    for (i, p) in config.prompts.iter().enumerate() {
        let aliases: Vec<&str> = matcher.aliases(i).collect();
        if !aliases.is_empty() {
            info!(
                "label {}: its example images are best described by {}: those vocabulary \
                 entries no longer compete with it and count as its texts",
                p.label,
                aliases.join(", ")
            );
        }
    }
    Ok(matcher)
}

/// Embeds every example image into `extras` (per label); returns how many there are.
fn embed_exemplars(
    config: &Config,
    bundle: &Bundle,
    encoder: Option<&ImageEncoder>,
    extras: &mut [LabelExtras],
) -> Result<usize, DaemonError> {
    let file = config_file(config);
    let sources = exemplar_sources(config);
    let mut files = Vec::new();
    for s in &sources {
        let found = match (&s.pattern, &s.dir) {
            (Some(pattern), _) => {
                expand(&s.key, pattern).map_err(|error| DaemonError::Exemplar {
                    file: file.clone(),
                    error: Box::new(error),
                })?
            }
            (None, Some(dir)) => images_in(dir),
            (None, None) => vec![],
        };
        files.extend(found.into_iter().map(|f| (s, f)));
    }
    if files.is_empty() {
        return Ok(0);
    }
    let Some(encoder) = encoder else {
        return Err(DaemonError::Runtime(
            "example images need the image tower, which is not loaded".into(),
        ));
    };
    let cache = exemplar_cache(bundle, encoder);
    // A stale or damaged cache is not fatal: it is rebuilt (as the prompt cache).
    let known = cache
        .as_deref()
        .filter(|p| p.is_file())
        .and_then(|p| {
            PromptEmbeddings::load_for(p, bundle)
                .map_err(|e| warn!("ignoring the exemplar cache: {e}"))
                .ok()
        })
        .unwrap_or_else(|| PromptEmbeddings::empty(bundle.fingerprint(), bundle.embed_dim()));
    let mut embedder = ExemplarEmbedder::new(
        encoder,
        Preprocessor::new(Spec::from(&bundle.manifest.image)),
        known,
    );
    for (s, path) in &files {
        let e = embedder
            .embed(&s.key, path)
            .map_err(|error| DaemonError::Exemplar {
                file: file.clone(),
                error: Box::new(error),
            })?;
        let x = &mut extras[s.label];
        if s.positive {
            x.images.push(e);
        } else {
            x.negative_images.push(e);
        }
    }
    if embedder.embedded() > 0
        && let Some(path) = &cache
    {
        save(path, embedder.known(), "example image embeddings");
    }
    Ok(files.len())
}

fn save_prompt_cache(bundle: &Bundle, embedder: &PromptEmbedder) {
    if embedder.embedded() == 0 {
        return;
    }
    if let Some(path) = prompt_cache(bundle) {
        save(&path, embedder.known(), "prompt embeddings");
    }
}

fn save(path: &Path, e: &PromptEmbeddings, what: &str) {
    let saved = std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))
        .map_err(|e| e.to_string())
        .and_then(|_| e.save(path).map_err(|e| e.to_string()));
    match saved {
        Ok(()) => debug!("{what} cached in {}", path.display()),
        Err(e) => warn!("{what} not cached: {e}"),
    }
}
