//! Model bundles and the tract engine that runs their towers.
//!
//! [`Bundle`] reads and checks a bundle folder; [`ImageEncoder`] and [`TextEncoder`] build a tract
//! plan for one of its towers, typed and optimized once at load with a fixed input shape.
//! [`device`] decides where the image tower runs (the CPU, or a GPU through tract's CUDA runtime).

mod bundle;
pub mod device;
mod engine;
mod graph_cache;
pub mod options;

use std::path::PathBuf;

pub use bundle::{
    Bundle, ImageTower, MANIFEST, Manifest, PromptsRef, TextTower, TokenizerKind, Variant,
    fingerprint_of,
};
// The `[image]` table's preprocessing types belong to preprocessing; re-exported for readers of
// the manifest.
pub use crate::preprocess::{ChannelOrder, CropMode, Interpolation, ResizeMode};
pub use device::{Device, Selection};
pub use engine::{ImageEncoder, TextEncoder, set_threads};
pub use graph_cache::GRAPH_CACHE_ENV;
pub use options::{Precision, Runtime};

/// Everything that can go wrong loading or running a bundle. Each variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `bundle.toml` is not valid TOML or does not fit the schema (unknown or missing keys).
    #[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// What the TOML parser said.
        message: String,
        /// The line it points at, if any.
        line: Option<usize>,
    },
    /// A manifest value is out of range or names a missing file.
    #[error("{}: {key}: {message}", path.display())]
    Invalid {
        /// The manifest.
        path: PathBuf,
        /// The key path.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The weights are not the ones the manifest's fingerprint names.
    #[error(
        "{}: fingerprint is {expected} but {} hashes to {actual} (files replaced without updating bundle.toml?)",
        path.display(),
        file.display()
    )]
    Fingerprint {
        /// The manifest.
        path: PathBuf,
        /// The file hashed.
        file: PathBuf,
        /// The manifest's value.
        expected: String,
        /// The file's hash.
        actual: String,
    },
    /// The bundle has no text tower but one was needed.
    #[error("{}: the bundle has no [text] tower, so prompts cannot be embedded (use precomputed embeddings)", path.display())]
    NoTextTower {
        /// The manifest.
        path: PathBuf,
    },
    /// No variant of the requested precision.
    #[error("{}: the {tower} tower has no {precision} variant", path.display())]
    NoVariant {
        /// The manifest.
        path: PathBuf,
        /// "image" or "text".
        tower: &'static str,
        /// What was asked for.
        precision: Precision,
    },
    /// tract refused the graph (corrupt file, unsupported op, shapes that do not agree).
    #[error("{}: {what}: {source:#}", path.display())]
    Graph {
        /// The ONNX file.
        path: PathBuf,
        /// What was being done.
        what: String,
        /// tract's error chain.
        source: anyhow::Error,
    },
    /// The runtime asked for (`model.runtime`, `--runtime`) is not available: no CUDA in this
    /// build, no driver, no GPU, a missing CUDA library, or tract's CUDA runtime failed to start.
    #[error("{wanted:?} is not available: {reason}")]
    Runtime {
        /// `"cuda"`.
        wanted: &'static str,
        /// Why, with what to do about it.
        reason: String,
    },
    /// The graph's inputs or outputs disagree with the manifest.
    #[error("{}: {message}", path.display())]
    Shape {
        /// The ONNX file.
        path: PathBuf,
        /// What disagrees.
        message: String,
    },
}
