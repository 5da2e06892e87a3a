//! Model bundles and the tract engine that runs their towers.
//!
//! [`Bundle`] reads and checks a bundle folder; [`ImageEncoder`] and [`TextEncoder`] build a tract
//! plan for one of its towers, typed and optimized once at load with a fixed input shape.
//! [`device`] decides where the image tower runs (the CPU, or a GPU through tract's CUDA runtime).
//!
//! Inside, by role: `plan` turns an ONNX file into a runnable plan for the CPU or CUDA (with
//! `graph_cache` keeping decluttered graphs between starts), `tract_fixes` holds the workarounds
//! for tract's bugs that loading applies, `int8_conv` the rewrite that loads onnxruntime's
//! integer convolutions as `QLinearConv` (whose requantization tract fuses), `dynamic_quant`
//! the vector code that replaces tract's `DynamicQuantizeLinear` (dynamic int8 activations),
//! `encoder` the public encoders and their one run path, `batch` batches and inference workers,
//! `parallelism` how many of each (threads, workers), `profile` what a CPU plan runs and where
//! its time goes, `timing` the CPU's precision chosen by timing the shipped files.

mod batch;
mod bundle;
pub mod device;
mod dynamic_quant;
mod encoder;
mod graph_cache;
mod int8_conv;
pub mod options;
mod parallelism;
mod plan;
mod profile;
#[cfg(test)]
mod test_graphs;
pub mod timing;
mod tract_fixes;

use std::path::PathBuf;

pub use bundle::{
    Bundle, ImageTower, MANIFEST, Manifest, PromptsRef, TextTower, TokenizerKind, Variant,
    fingerprint_of,
};
// The `[image]` table's preprocessing types belong to preprocessing; re-exported for readers of
// the manifest.
pub use crate::preprocess::{ChannelOrder, CropMode, Interpolation, ResizeMode};
pub use device::{Device, Selection};
pub use encoder::{ImageEncoder, TextEncoder};
pub use graph_cache::GRAPH_CACHE_ENV;
pub use int8_conv::FUSE_ENV as FUSE_INT8_CONV_ENV;
pub use options::{Precision, Runtime};
pub use parallelism::{Parallelism, THREADS_PAY_FROM_MS, TowerCost, choose_parallelism};
pub use plan::set_threads;
pub use tract_fixes::panic_is_caught;

/// Everything that can go wrong loading or running a bundle. Each variant names the file.
///
/// A variant that wraps another error prints it in its own message and does not return it as
/// its [`source`](std::error::Error::source): a chain printed with `{:#}` (`main`, anyhow)
/// shows each cause once, and a plain `{}` (the log, `doctor`) still shows it.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
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
    #[error("{}: {what}: {error:#}", path.display())]
    Graph {
        /// The ONNX file.
        path: PathBuf,
        /// What was being done.
        what: String,
        /// tract's error chain.
        error: anyhow::Error,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// How often `needle` occurs in `haystack`.
    fn count(haystack: &str, needle: &str) -> usize {
        haystack.matches(needle).count()
    }

    /// Printed as `main` prints it (anyhow's `{:#}`, the whole chain), a missing manifest names
    /// the OS error once; so does a plain `{}` (the log).
    #[test]
    fn an_io_error_prints_its_cause_once() {
        let dir = tempfile::tempdir().unwrap();
        let os = std::fs::read(dir.path().join(MANIFEST))
            .unwrap_err()
            .to_string();
        let e = Bundle::load(dir.path()).unwrap_err();
        assert!(matches!(e, ModelError::Io { .. }), "{e:?}");
        let plain = e.to_string();
        let chain = format!("{:#}", anyhow::Error::new(e));
        assert_eq!(count(&chain, &os), 1, "{chain}");
        assert_eq!(count(&plain, &os), 1, "{plain}");
        assert!(chain.contains(MANIFEST), "{chain}");
    }

    /// tract's error chain, inside [`ModelError::Graph`], is printed once.
    #[test]
    fn a_graph_error_prints_tracts_chain_once() {
        let tract = anyhow::anyhow!("Unsupported operator").context("node #3 \"Foo\"");
        let e = ModelError::Graph {
            path: PathBuf::from("visual.onnx"),
            what: "parsing the ONNX file".into(),
            error: tract,
        };
        let chain = format!("{:#}", anyhow::Error::new(e).context("loading the bundle"));
        assert_eq!(
            chain,
            "loading the bundle: visual.onnx: parsing the ONNX file: node #3 \"Foo\": Unsupported operator"
        );
    }

    /// No variant returns a cause it also prints: none has a source.
    #[test]
    fn no_variant_has_a_source() {
        use std::error::Error;
        let io = ModelError::Io {
            path: PathBuf::from("bundle.toml"),
            error: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        let graph = ModelError::Graph {
            path: PathBuf::from("visual.onnx"),
            what: "typing the graph".into(),
            error: anyhow::anyhow!("x"),
        };
        assert!(io.source().is_none());
        assert!(graph.source().is_none());
    }
}
