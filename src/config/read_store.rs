//! The `[store]` table (the history of events and sampled frame embeddings that `edgeclip
//! search` reads), read like every other table of [`super::read`], in a file of its own so that
//! `read.rs` stays under the size limit. Its checks are here too.

use std::path::PathBuf;
use std::time::Duration;

use super::reader::{Reader, Section, key};

/// `[store]`: the on-device history (a SQLite file) of events and sampled frame embeddings.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    /// Keep the history.
    pub enabled: bool,
    /// The database file, resolved against the config file's folder. `None`: `store.sqlite` in
    /// the daemon's state folder ([`crate::paths::state_dir`]).
    pub path: Option<PathBuf>,
    /// Seconds between stored frames (a frame whose embedding moved further is stored sooner).
    pub sample_s: f32,
    /// Cosine distance from the last stored frame's embedding past which a frame is stored at
    /// once.
    pub change: f32,
    /// Days of history kept.
    pub retention_days: u32,
    /// Most megabytes (10^6 bytes) the database may take.
    pub max_mb: u32,
    /// Frames and events waiting for the writer thread at most (more are dropped and counted).
    pub queue: u32,
    /// Most seconds between two thumbnails of a still scene; 0: no thumbnails.
    pub thumbnail_s: f32,
}

impl StoreConfig {
    /// `sample_s` as a [`Duration`] (zero if unusable).
    pub fn sample(&self) -> Duration {
        Duration::try_from_secs_f32(self.sample_s).unwrap_or(Duration::ZERO)
    }

    /// `thumbnail_s` as a [`Duration`]; `None` when thumbnails are off (0).
    pub fn thumbnails(&self) -> Option<Duration> {
        Duration::try_from_secs_f32(self.thumbnail_s)
            .ok()
            .filter(|d| !d.is_zero())
    }

    /// `max_mb` in bytes.
    pub fn max_bytes(&self) -> u64 {
        u64::from(self.max_mb) * 1_000_000
    }

    /// The database file: `path`, else `store.sqlite` in the state folder; `None` when neither
    /// is known.
    pub fn file(&self) -> Option<PathBuf> {
        self.path
            .clone()
            .or_else(|| crate::paths::state_dir().map(|d| d.join("store.sqlite")))
    }
}

/// Reads `[store]` from the root table (all its keys have defaults); `path` is left as written
/// (the caller resolves it against the config file's folder).
pub(super) fn read(r: &mut Reader, root: &mut Section) -> StoreConfig {
    let mut s = r.defaults_table(
        root,
        key(
            "store",
            "The history: events and a sample of frame embeddings in a SQLite file, searched by \
             text afterwards with `edgeclip search`. Writes go through a writer thread and never \
             hold up detection (a full queue drops and counts). Read at start-up.",
        ),
    );
    let enabled = r.or(
        &mut s,
        key(
            "enabled",
            "Keep the history. Off by default: it writes to the disk (about 560 bytes per stored \
             frame at D=512, and the thumbnails: about 57 MB a camera-day at the defaults).",
        ),
        false,
    );
    let path = r.opt::<PathBuf>(
        &mut s,
        key(
            "path",
            "The database file. Not set: `store.sqlite` in the daemon's state folder \
             (`/var/lib/edgeclip` under systemd, else `$XDG_DATA_HOME/edgeclip` or \
             `~/.local/share/edgeclip`). A file that is not a readable edgeclip store is \
             renamed aside (`.corrupt-TIMESTAMP`) and a new one started.",
        )
        .example("\"/var/lib/edgeclip/store.sqlite\""),
    );
    let sample_s = r.or(
        &mut s,
        key(
            "sample_s",
            "Seconds between stored frames; 0 stores every frame.",
        ),
        1.0,
    );
    let change = r.or(
        &mut s,
        key(
            "change",
            "A frame whose embedding is further than this cosine distance (1 - cosine) from the \
             last stored frame's is stored at once, before `sample_s` has passed; 2 turns this \
             off.",
        ),
        0.1,
    );
    let retention_days = r.or(
        &mut s,
        key(
            "retention_days",
            "Days of history kept; older frames and events are deleted as the daemon runs.",
        ),
        30,
    );
    let max_mb = r.or(
        &mut s,
        key(
            "max_mb",
            "Most megabytes (10^6 bytes) of the database; past it the oldest frames and events \
             are deleted, whichever of this and `retention_days` comes first.",
        ),
        1000,
    );
    let queue = r.or(
        &mut s,
        key(
            "queue",
            "Frames and events waiting for the writer thread at most; more are dropped and \
             counted (logged at most once a minute).",
        ),
        256,
    );
    let thumbnail_s = r.or(
        &mut s,
        key(
            "thumbnail_s",
            "Thumbnails (JPEGs 160 px wide, about 3.5 kB) go with some stored frames, for \
             search results and the web page: the first, then one every `thumbnail_s` seconds \
             of a still scene, and sooner for a changed scene (see `change`; at most every 5 s) \
             or an event start, up to 30 in a burst and one per `2 * thumbnail_s` on average. \
             At the default (60) a camera-day at a frame a second stays under 60 MB however \
             busy the scene. 0: no thumbnails.",
        ),
        60.0,
    );
    let config = StoreConfig {
        enabled,
        path,
        sample_s,
        change,
        retention_days,
        max_mb,
        queue,
        thumbnail_s,
    };
    r.finish(s);
    config
}

/// `[store]`'s ranges, pushed through `push(key, message)`; checked whether or not it is enabled.
pub(super) fn check(s: &StoreConfig, mut push: impl FnMut(&str, String)) {
    if s.path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
        push("store.path", "must not be empty".into());
    }
    let mut range = |key: &str, v: f64, lo: f64, hi: f64| {
        if !(v >= lo && v <= hi) {
            push(key, format!("must be in [{lo}, {hi}], got {v}"));
        }
    };
    range("store.sample_s", s.sample_s.into(), 0.0, 3600.0);
    range("store.change", s.change.into(), 0.0, 2.0);
    range("store.retention_days", s.retention_days.into(), 1.0, 3650.0);
    range("store.max_mb", s.max_mb.into(), 1.0, 10_000_000.0);
    range("store.queue", s.queue.into(), 1.0, 100_000.0);
    range("store.thumbnail_s", s.thumbnail_s.into(), 0.0, 86_400.0);
}
