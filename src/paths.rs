//! Where the daemon keeps what it computes once and reuses between runs (prompt embeddings,
//! weight fingerprints, tract's decluttered graphs and compiled GPU kernels: the cache folder)
//! and what it produces and keeps (event snapshots: the state folder).
//!
//! A module of its own, below everything that caches or stores, so that the model side can find
//! the cache without knowing about the daemon.

use std::ffi::OsString;
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

/// Where the image tower's precision chosen by timing on this CPU is cached
/// ([`crate::model::timing`]): `precision/` in the cache folder, one file per bundle, CPU and
/// thread count.
pub fn precision_cache_dir() -> Option<PathBuf> {
    cache_dir().map(|d| d.join("precision"))
}

/// Where the daemon keeps what it produces (event snapshots, under `snapshots/`).
///
/// `$STATE_DIRECTORY` (set by systemd's `StateDirectory=`: `/var/lib/edgeclip` for the packaged
/// unit; the first folder when it lists several), else `$XDG_DATA_HOME/edgeclip`, else
/// `~/.local/share/edgeclip`. `None` when none of those variables is set.
pub fn state_dir() -> Option<PathBuf> {
    state_dir_from(|name| std::env::var_os(name))
}

/// [`state_dir`] with the environment given as a function (for tests).
fn state_dir_from(var: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let set = |name| var(name).filter(|v| !v.is_empty());
    if let Some(d) = set("STATE_DIRECTORY") {
        // systemd separates the folders of `StateDirectory=a b` with ':'.
        let first = d.to_string_lossy().split(':').next().map(PathBuf::from);
        return first.filter(|p| !p.as_os_str().is_empty());
    }
    if let Some(d) = set("XDG_DATA_HOME") {
        return Some(PathBuf::from(d).join("edgeclip"));
    }
    set("HOME").map(|h| PathBuf::from(h).join(".local/share/edgeclip"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(vars: &[(&str, &str)]) -> Option<PathBuf> {
        state_dir_from(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        })
    }

    #[test]
    fn state_dir_prefers_systemd_then_xdg_then_home() {
        let all = [
            ("STATE_DIRECTORY", "/var/lib/edgeclip"),
            ("XDG_DATA_HOME", "/x"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(with(&all), Some(PathBuf::from("/var/lib/edgeclip")));
        assert_eq!(with(&all[1..]), Some(PathBuf::from("/x/edgeclip")));
        assert_eq!(
            with(&all[2..]),
            Some(PathBuf::from("/home/u/.local/share/edgeclip"))
        );
        assert_eq!(with(&[]), None);
        // Empty variables count as unset; several systemd folders: the first.
        assert_eq!(
            with(&[("STATE_DIRECTORY", ""), ("HOME", "/h")]),
            Some(PathBuf::from("/h/.local/share/edgeclip"))
        );
        assert_eq!(
            with(&[("STATE_DIRECTORY", "/var/lib/a:/var/lib/b")]),
            Some(PathBuf::from("/var/lib/a"))
        );
    }
}
