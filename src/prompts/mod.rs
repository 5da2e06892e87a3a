//! Prompt texts to embeddings: the CLIP tokenizer, the text tower, and embedding files.
//!
//! Prompt embeddings are computed once (by `edgeclip embed`, by the model tools, or by the
//! daemon at start and on SIGHUP) and stored in safetensors files that carry the bundle's
//! fingerprint, so an embedding file made with other weights is refused instead of giving
//! silently wrong scores.

pub mod images;
pub mod tokenizer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::matcher::normalize;
use crate::model::{Bundle, ModelError, TextEncoder};
pub use tokenizer::ClipTokenizer;

/// The tensor name inside an embeddings file.
pub const TENSOR: &str = "embeddings";

/// Errors reading, writing or computing prompt embeddings.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not a safetensors file of the expected layout.
    #[error("{}: not a prompt embeddings file: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Made for another bundle (fingerprint) or another width.
    #[error("{}: {message}", path.display())]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// What disagrees.
        message: String,
    },
    /// A prompt is not in the file and there is no text tower to embed it.
    #[error("prompt {text:?} is not in {} and the bundle has no text tower to embed it", path.display())]
    Missing {
        /// The prompt.
        text: String,
        /// The embeddings file looked in.
        path: PathBuf,
    },
    /// The text tower failed.
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Normalised prompt embeddings and the texts they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptEmbeddings {
    /// The bundle fingerprint they were made with.
    pub fingerprint: String,
    /// Embedding width.
    pub dim: usize,
    /// The texts, one per row.
    pub texts: Vec<String>,
    /// `texts.len() * dim` values, rows L2-normalised.
    pub data: Vec<f32>,
}

impl PromptEmbeddings {
    /// An empty set for the given bundle.
    pub fn empty(fingerprint: &str, dim: usize) -> PromptEmbeddings {
        PromptEmbeddings {
            fingerprint: fingerprint.into(),
            dim,
            texts: vec![],
            data: vec![],
        }
    }

    /// The embedding of `text`, if present.
    pub fn get(&self, text: &str) -> Option<&[f32]> {
        let i = self.texts.iter().position(|t| t == text)?;
        Some(&self.data[i * self.dim..(i + 1) * self.dim])
    }

    /// Adds (or replaces) a text's embedding; it is normalised here.
    pub fn insert(&mut self, text: &str, mut embedding: Vec<f32>) {
        assert_eq!(embedding.len(), self.dim);
        normalize(&mut embedding);
        match self.texts.iter().position(|t| t == text) {
            Some(i) => self.data[i * self.dim..(i + 1) * self.dim].copy_from_slice(&embedding),
            None => {
                self.texts.push(text.to_string());
                self.data.extend_from_slice(&embedding);
            }
        }
    }

    /// Reads an embeddings file without checking it against a bundle.
    pub fn read(path: &Path) -> Result<PromptEmbeddings, PromptError> {
        let bytes = std::fs::read(path).map_err(|source| PromptError::Io {
            path: path.into(),
            source,
        })?;
        let format = |message: String| PromptError::Format {
            path: path.into(),
            message,
        };
        let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| format(e.to_string()))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| format(e.to_string()))?;
        let meta = meta.metadata().clone().unwrap_or_default();
        let get = |key: &str| {
            meta.get(key)
                .cloned()
                .ok_or_else(|| format(format!("metadata has no {key:?}")))
        };
        let fingerprint = get("fingerprint")?;
        let dim: usize = get("dim")?
            .parse()
            .map_err(|e| format(format!("metadata dim: {e}")))?;
        let texts: Vec<String> = serde_json::from_str(&get("prompts")?)
            .map_err(|e| format(format!("metadata prompts: {e}")))?;
        let t = st
            .tensor(TENSOR)
            .map_err(|e| format(format!("tensor {TENSOR:?}: {e}")))?;
        if t.dtype() != Dtype::F32 {
            return Err(format(format!(
                "tensor {TENSOR:?} is {:?}, expected F32",
                t.dtype()
            )));
        }
        if t.shape() != [texts.len(), dim] {
            return Err(format(format!(
                "tensor {TENSOR:?} has shape {:?}, metadata says {} prompts of width {dim}",
                t.shape(),
                texts.len()
            )));
        }
        let data: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok(PromptEmbeddings {
            fingerprint,
            dim,
            texts,
            data,
        })
    }

    /// Reads an embeddings file and checks it belongs to `bundle`.
    pub fn load_for(path: &Path, bundle: &Bundle) -> Result<PromptEmbeddings, PromptError> {
        let e = Self::read(path)?;
        if e.fingerprint != bundle.fingerprint() {
            return Err(PromptError::Mismatch {
                path: path.into(),
                message: format!(
                    "made for a bundle with fingerprint {}, but {} has {} (re-create it with `edgeclip embed`)",
                    e.fingerprint,
                    bundle.dir().display(),
                    bundle.fingerprint()
                ),
            });
        }
        if e.dim != bundle.embed_dim() {
            return Err(PromptError::Mismatch {
                path: path.into(),
                message: format!(
                    "embeddings have width {}, the bundle's are {}",
                    e.dim,
                    bundle.embed_dim()
                ),
            });
        }
        Ok(e)
    }

    /// Writes the file (atomically: a temporary file renamed over the target).
    pub fn save(&self, path: &Path) -> Result<(), PromptError> {
        let bytes: Vec<u8> = self.data.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view =
            TensorView::new(Dtype::F32, vec![self.texts.len(), self.dim], &bytes).map_err(|e| {
                PromptError::Format {
                    path: path.into(),
                    message: e.to_string(),
                }
            })?;
        let mut meta = HashMap::new();
        meta.insert("fingerprint".to_string(), self.fingerprint.clone());
        meta.insert("dim".to_string(), self.dim.to_string());
        meta.insert(
            "prompts".to_string(),
            serde_json::to_string(&self.texts).expect("strings serialise"),
        );
        let out = safetensors::serialize([(TENSOR, view)], &Some(meta)).map_err(|e| {
            PromptError::Format {
                path: path.into(),
                message: e.to_string(),
            }
        })?;
        let tmp = path.with_extension("safetensors.tmp");
        let io = |source| PromptError::Io {
            path: path.into(),
            source,
        };
        std::fs::write(&tmp, out).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

/// Turns prompt texts into normalised embeddings: from precomputed files when they have the text,
/// else with the bundle's text tower.
#[derive(Debug)]
pub struct PromptEmbedder {
    known: PromptEmbeddings,
    known_from: Option<PathBuf>,
    bundle: Bundle,
    encoder: Option<TextEncoder>,
    embedded: usize,
}

impl PromptEmbedder {
    /// An embedder for `bundle`: its shipped `prompts.safetensors` (if any) plus `extra` files, and
    /// its text tower (loaded lazily, only when a text is missing from the files).
    pub fn new(bundle: &Bundle, extra: &[PathBuf]) -> Result<PromptEmbedder, PromptError> {
        let mut known = PromptEmbeddings::empty(bundle.fingerprint(), bundle.embed_dim());
        let mut known_from = None;
        for path in bundle.prompts_file().iter().chain(extra) {
            let e = PromptEmbeddings::load_for(path, bundle)?;
            for (i, t) in e.texts.iter().enumerate() {
                known.insert(t, e.data[i * e.dim..(i + 1) * e.dim].to_vec());
            }
            known_from = Some(path.clone());
        }
        Ok(PromptEmbedder {
            known,
            known_from,
            bundle: bundle.clone(),
            encoder: None,
            embedded: 0,
        })
    }

    /// The normalised embedding of one text.
    pub fn embed(&mut self, text: &str) -> Result<Vec<f32>, PromptError> {
        if let Some(e) = self.known.get(text) {
            return Ok(e.to_vec());
        }
        if self.bundle.manifest.text.is_none() {
            return Err(PromptError::Missing {
                text: text.into(),
                path: self
                    .known_from
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("(no embeddings file)")),
            });
        }
        if self.encoder.is_none() {
            self.encoder = Some(TextEncoder::load(&self.bundle, None)?);
        }
        let encoder = self.encoder.as_ref().expect("loaded above");
        let ids = ClipTokenizer::shared().tokenize(text, encoder.context_length());
        let mut e = encoder.encode(&ids)?;
        normalize(&mut e);
        self.known.insert(text, e.clone());
        self.embedded += 1;
        Ok(e)
    }

    /// How many texts this embedder ran through the text tower (the rest came from files).
    pub fn embedded(&self) -> usize {
        self.embedded
    }

    /// Every embedding computed or loaded so far (for caching them on disk).
    pub fn known(&self) -> &PromptEmbeddings {
        &self.known
    }
}
