//! Where the daemon keeps what it computes once and reuses between runs: prompt embeddings,
//! weight fingerprints, tract's decluttered graphs and compiled GPU kernels.
//!
//! A module of its own, below everything that caches, so that the model side can find the cache
//! without knowing about the daemon.

use std::path::PathBuf;

/// Where prompt embeddings computed with the text tower are cached between runs, and (unless
/// `model.kernel_cache` says otherwise) the GPU kernels tract-cuda compiles, under `tract/`.
///
/// `$CACHE_DIRECTORY` (set by systemd's `CacheDirectory=`), else `$XDG_CACHE_HOME/edgeclip`, else
/// `~/.cache/edgeclip`.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("CACHE_DIRECTORY") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("edgeclip"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/edgeclip"))
}
