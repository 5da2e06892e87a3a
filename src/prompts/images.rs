//! Example images to embeddings: the exemplars of a label, through the bundle's own image tower
//! and preprocessing, cached by the content hash of each file.
//!
//! A label's `images` and `negative_images` are paths or glob patterns; each must name at least
//! one readable image, so a typo is an error at start instead of a label that silently lost its
//! examples. The embeddings are cached on disk (an embeddings file like the prompts', keyed by
//! `sha256:<hex>` of the file's bytes), so a restart re-embeds only new images.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::PromptEmbeddings;
use crate::matcher::normalize;
use crate::model::{ImageEncoder, ModelError};
use crate::preprocess::{PreprocessError, Preprocessor, decode_image};

/// Why an example image could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ExemplarError {
    /// A pattern that names no file.
    #[error("{key}: {pattern:?} matches no file")]
    NoMatch {
        /// The config key (e.g. `prompts[2].images[0]`).
        key: String,
        /// The path or pattern.
        pattern: String,
    },
    /// A pattern that is not a valid glob.
    #[error("{key}: {pattern:?} is not a valid pattern: {message}")]
    Pattern {
        /// The config key.
        key: String,
        /// The pattern.
        pattern: String,
        /// The glob error.
        message: String,
    },
    /// A file that is not a readable image.
    #[error("{key}: {error}")]
    Image {
        /// The config key.
        key: String,
        /// The decoding or reading error (names the file; in the message, not a second link of
        /// the error chain).
        error: Box<PreprocessError>,
    },
    /// The image tower failed on an example.
    #[error("{key}: {}: {error}", path.display())]
    Model {
        /// The config key.
        key: String,
        /// The image.
        path: PathBuf,
        /// The tower's error.
        error: Box<ModelError>,
    },
}

/// The image files a pattern names, sorted; an error when it names none.
pub fn expand(key: &str, pattern: &Path) -> Result<Vec<PathBuf>, ExemplarError> {
    let text = pattern.to_string_lossy().into_owned();
    if pattern.is_file() {
        return Ok(vec![pattern.to_path_buf()]);
    }
    let paths = glob::glob(&text).map_err(|e| ExemplarError::Pattern {
        key: key.into(),
        pattern: text.clone(),
        message: e.to_string(),
    })?;
    let mut files: Vec<PathBuf> = paths
        .filter_map(Result::ok)
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ExemplarError::NoMatch {
            key: key.into(),
            pattern: text,
        });
    }
    Ok(files)
}

/// The images (JPEG, PNG) directly inside `dir`, sorted; none when it does not exist.
pub fn images_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.extension().is_some_and(|e| {
                    let e = e.to_ascii_lowercase();
                    e == "jpg" || e == "jpeg" || e == "png"
                })
        })
        .collect();
    files.sort();
    files
}

/// Embeds example images with an image tower, remembering each file's embedding by content hash.
#[derive(Debug)]
pub struct ExemplarEmbedder<'a> {
    encoder: &'a ImageEncoder,
    preprocessor: Preprocessor,
    known: PromptEmbeddings,
    pixels: Vec<f32>,
    embedded: usize,
}

impl<'a> ExemplarEmbedder<'a> {
    /// An embedder running `encoder` after `preprocessor`, starting from the embeddings in
    /// `known` (a cache made for the same bundle and image file; keys `sha256:<hex>`).
    pub fn new(
        encoder: &'a ImageEncoder,
        preprocessor: Preprocessor,
        known: PromptEmbeddings,
    ) -> ExemplarEmbedder<'a> {
        let pixels = vec![0f32; preprocessor.output_len()];
        ExemplarEmbedder {
            encoder,
            preprocessor,
            known,
            pixels,
            embedded: 0,
        }
    }

    /// The normalised embedding of the image at `path`; `key` names it in errors.
    pub fn embed(&mut self, key: &str, path: &Path) -> Result<Vec<f32>, ExemplarError> {
        let image_err = |error| ExemplarError::Image {
            key: key.into(),
            error: Box::new(error),
        };
        let bytes = std::fs::read(path).map_err(|source| {
            image_err(PreprocessError::Io {
                path: path.into(),
                source,
            })
        })?;
        let hash = format!("sha256:{:x}", Sha256::digest(&bytes));
        if let Some(e) = self.known.get(&hash) {
            return Ok(e.to_vec());
        }
        let img = decode_image(&bytes, &path.display().to_string()).map_err(image_err)?;
        self.preprocessor
            .image_to_tensor(&img, &mut self.pixels)
            .map_err(image_err)?;
        let mut e = self
            .encoder
            .encode(&self.pixels)
            .map_err(|source| ExemplarError::Model {
                key: key.into(),
                path: path.into(),
                error: Box::new(source),
            })?;
        normalize(&mut e);
        self.known.insert(&hash, e.clone());
        self.embedded += 1;
        Ok(e)
    }

    /// How many images went through the tower (the rest came from the cache).
    pub fn embedded(&self) -> usize {
        self.embedded
    }

    /// Every embedding known so far (to cache on disk).
    pub fn known(&self) -> &PromptEmbeddings {
        &self.known
    }
}
