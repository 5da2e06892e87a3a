//! Decluttered graphs kept as NNEF between starts.
//!
//! Turning an ONNX file into tract's decluttered graph (parse the protobuf, type every node,
//! simplify) is most of a load: 87% of the fp32 ViT-B/32 tower's on the build machine
//! (`benches/README.md`). tract writes that graph to NNEF (its own format, a tar of the graph text
//! and raw tensors) and reads it back far faster, so the first start stores it in the cache
//! folder and later starts load it from there; only the CPU-specific optimization runs at every
//! start (tract cannot write an optimized graph).
//!
//! tract 0.23 has no NNEF form for its int8 quantization operators (`QuantizeLinearU8`,
//! `DynamicQuantizeLinearU8`), so QDQ and dynamic int8 graphs are not cached: they load from the
//! ONNX file every time. The first failed write logs why (debug level) and leaves a stamp marked
//! `unwritable`, so that later starts do not try again until the file or edgeclip changes.
//!
//! Files under [`MIN_CACHED_BYTES`] are not cached: they parse faster than NNEF reads.
//!
//! One entry per model file, input shape and output: `graphs/<key>.nnef.tar`, with
//! `graphs/<key>.stamp` holding the file's size and modification time and the edgeclip version
//! (which pins tract's). An entry whose stamp differs is rebuilt in place. Like the fingerprint
//! memo (`bundle.rs`) this trusts timestamps, as `make` does. `EDGECLIP_GRAPH_CACHE=off` turns
//! the cache off.

use std::path::{Path, PathBuf};

use tract_onnx::prelude::*;

/// Set to `off` to neither read nor write cached graphs.
pub const GRAPH_CACHE_ENV: &str = "EDGECLIP_GRAPH_CACHE";

/// ONNX files smaller than this are not cached. Reading NNEF has a fixed cost (tract parses its
/// NNEF standard library at every read: about 10 ms on the build machine), more than parsing a
/// small ONNX file: the demo's 1.2 MB fp32 tower loads in 11-18 ms from ONNX and 20-36 ms from
/// the cache. Parsing costs about 1.5 ms per MB of ONNX (ViT-B/32 fp32), so the cache pays from a
/// few MB on.
pub const MIN_CACHED_BYTES: u64 = 8 << 20;

/// What the cache holds for one model file.
#[derive(Debug)]
pub enum Cached {
    /// The decluttered graph.
    Graph(TypedModel),
    /// Nothing usable (no entry, a stale one or a damaged one): parse the ONNX file, then
    /// [`GraphCache::store`].
    Missing,
    /// An earlier start found that tract cannot write this graph: parse the ONNX file, and do
    /// not try to store it again.
    Unwritable,
}

/// The cache entry of one model file loaded with one input shape and output.
#[derive(Debug)]
pub struct GraphCache {
    tar: PathBuf,
    stamp_file: PathBuf,
    stamp: String,
}

impl GraphCache {
    /// The entry for `path` in the default cache folder ([`crate::paths::cache_dir`]), unless
    /// [`GRAPH_CACHE_ENV`] is `off`, there is no cache folder or the file is smaller than
    /// [`MIN_CACHED_BYTES`].
    pub fn for_file(path: &Path, input: &InferenceFact, output: &str) -> Option<GraphCache> {
        if std::env::var_os(GRAPH_CACHE_ENV).is_some_and(|v| v == "off")
            || std::fs::metadata(path).map_or(true, |m| m.len() < MIN_CACHED_BYTES)
        {
            return None;
        }
        GraphCache::in_folder(&crate::paths::cache_dir()?, path, input, output)
    }

    /// The entry for `path` under `cache` (`None` when the file's metadata cannot be read).
    pub fn in_folder(
        cache: &Path,
        path: &Path,
        input: &InferenceFact,
        output: &str,
    ) -> Option<GraphCache> {
        let stamp = super::bundle::file_stamp(path)?;
        let key = super::bundle::cache_key(path, &format!("\0{input:?}\0{output}"))?;
        let dir = cache.join("graphs");
        Some(GraphCache {
            tar: dir.join(format!("{key}.nnef.tar")),
            stamp_file: dir.join(format!("{key}.stamp")),
            stamp: format!("{stamp} edgeclip {}\n", env!("CARGO_PKG_VERSION")),
        })
    }

    /// The NNEF file of this entry (tests damage it).
    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.tar
    }

    /// What the entry holds for the model file as it is now. A damaged NNEF file is logged and
    /// counts as [`Cached::Missing`] (the next [`GraphCache::store`] replaces it).
    pub fn read(&self) -> Cached {
        let Ok(stamp) = std::fs::read_to_string(&self.stamp_file) else {
            return Cached::Missing;
        };
        match stamp.strip_prefix(&self.stamp) {
            Some("") => match nnef().model_for_path(&self.tar) {
                Ok(model) => Cached::Graph(model),
                Err(e) => {
                    log::warn!("ignoring the cached graph {}: {e:#}", self.tar.display());
                    Cached::Missing
                }
            },
            Some(UNWRITABLE) => Cached::Unwritable,
            _ => Cached::Missing,
        }
    }

    /// Writes `model` to the entry, when tract can write all of its operators. Failures cost
    /// only the next start's time: they are logged, never returned.
    pub fn store(&self, model: &TypedModel, source: &Path) {
        let Some(dir) = self.tar.parent() else { return };
        let tmp = self
            .tar
            .with_extension(format!("tmp{}", std::process::id()));
        let written = std::fs::create_dir_all(dir)
            .map_err(anyhow::Error::from)
            .and_then(|_| {
                let file = std::fs::File::create(&tmp)?;
                nnef().write_to_tar(model, std::io::BufWriter::new(file))?;
                // The stamp goes last: a tar without its stamp is never read.
                let _ = std::fs::remove_file(&self.stamp_file);
                std::fs::rename(&tmp, &self.tar)?;
                std::fs::write(&self.stamp_file, &self.stamp)?;
                Ok(())
            });
        match written {
            Ok(()) => log::info!(
                "{}: decluttered graph cached in {} ({:.1} MB): later starts skip parsing it",
                source.display(),
                self.tar.display(),
                std::fs::metadata(&self.tar).map_or(0.0, |m| m.len() as f64 / 1e6)
            ),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                log::debug!("{}: graph not cached: {e:#}", source.display());
                // Remembered, so that the next starts skip the attempt.
                let _ = std::fs::write(&self.stamp_file, format!("{}{UNWRITABLE}", self.stamp));
            }
        }
    }
}

/// The stamp's last line for a graph tract could not write.
const UNWRITABLE: &str = "unwritable\n";

/// tract's NNEF reader and writer, with tract-core's operators and the ONNX extras.
fn nnef() -> tract_nnef::framework::Nnef {
    tract_nnef::nnef().with_onnx()
}
