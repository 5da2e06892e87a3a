//! The history: events and sampled frame embeddings in an embedded SQLite database (rusqlite
//! with its bundled SQLite, in WAL mode), written by a thread of its own and read by `edgeclip
//! search`.
//!
//! [`Store::open`] opens or creates the file; one that is not a readable edgeclip store (a
//! damaged file, another program's database, not SQLite at all) is renamed aside to
//! `NAME.corrupt-TIMESTAMP` and a new one started, with a warning naming both. [`Writer`] owns
//! the database on its thread behind a bounded queue: [`Writer::frame`] and [`Writer::event`]
//! never wait (a full queue drops the record and counts it), and the writer trims the history
//! to `retention_days` and `max_mb` as it goes ([`retention`]). Which frames are kept and their
//! int8 form are [`sample`]'s; merging a search's scores into moments is [`moments`]'.

pub mod moments;
pub mod retention;
pub mod sample;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{debug, warn};
use rusqlite::{Connection, OpenFlags, params};

/// The `meta` row that marks a database as an edgeclip store.
const FORMAT: &str = "edgeclip-store";
/// The schema's version.
const VERSION: &str = "1";
/// Records written in one transaction at most.
const BATCH: usize = 256;
/// How often the writer applies the retention limits at most.
const TRIM_EVERY: Duration = Duration::from_secs(30);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS frames (
    id INTEGER PRIMARY KEY,
    ts_ms INTEGER NOT NULL,
    camera TEXT NOT NULL,
    frame INTEGER NOT NULL,
    scale REAL NOT NULL,
    embedding BLOB NOT NULL,
    thumbnail BLOB
);
CREATE INDEX IF NOT EXISTS frames_ts ON frames (ts_ms);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    ts_ms INTEGER NOT NULL,
    camera TEXT NOT NULL,
    label TEXT NOT NULL,
    kind TEXT NOT NULL,
    snapshot TEXT,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts_ms);
";

/// A store problem; each message names the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused an operation.
    #[error("store {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The file exists but is not an edgeclip store (or is damaged).
    #[error("store {path}: not an edgeclip store ({why})")]
    Foreign {
        /// The database file.
        path: PathBuf,
        /// What was found.
        why: String,
    },
    /// The folder or the renaming failed.
    #[error("store {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The writer thread could not be started.
    #[error("store writer thread: {0}")]
    Thread(std::io::Error),
}

impl StoreError {
    /// Whether the file itself is bad (not SQLite, damaged, another program's database), as
    /// opposed to a problem of the moment (locked, unreadable, disk full) that moving the file
    /// aside would not fix.
    fn is_damage(&self) -> bool {
        use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
        match self {
            StoreError::Foreign { .. } => true,
            StoreError::Sqlite { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(NotADatabase | DatabaseCorrupt)
            ),
            _ => false,
        }
    }
}

/// A sampled frame.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameRecord {
    /// Milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// The camera's name.
    pub camera: String,
    /// The frame's sequence number.
    pub frame: u64,
    /// The embedding in int8 ([`sample::quantize`]).
    pub embedding: Vec<i8>,
    /// Its scale.
    pub scale: f32,
}

/// A stored frame as read, borrowed from the database's row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameRef<'a> {
    /// Milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// The camera's name.
    pub camera: &'a str,
    /// The frame's sequence number.
    pub frame: u64,
    /// The embedding's scale.
    pub scale: f32,
    /// The embedding's int8 values, as bytes ([`sample::score_bytes`]).
    pub embedding: &'a [u8],
}

impl FrameRef<'_> {
    /// An owned copy.
    pub fn to_record(&self) -> FrameRecord {
        FrameRecord {
            ts_ms: self.ts_ms,
            camera: self.camera.to_owned(),
            frame: self.frame,
            embedding: self.embedding.iter().map(|&b| b as i8).collect(),
            scale: self.scale,
        }
    }
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// Milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// The camera's name.
    pub camera: String,
    /// The label.
    pub label: String,
    /// `start` or `end`.
    pub kind: String,
    /// The snapshot's path, when one was written.
    pub snapshot: Option<String>,
    /// The event as the sinks publish it (JSON).
    pub json: String,
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// An open store.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens the store at `path`, creating it (and its folder); a file that is not a readable
    /// edgeclip store is renamed aside (logged) and a new one started. Returns the store and the
    /// path a bad file was moved to.
    pub fn open(path: &Path) -> Result<(Store, Option<PathBuf>), StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        match Store::open_checked(path) {
            Ok(s) => Ok((s, None)),
            Err(e) if path.exists() && e.is_damage() => {
                let aside = rename_aside(path)?;
                warn!(
                    "{e}: not a readable edgeclip store; moved to {} and a new store started",
                    aside.display()
                );
                Ok((Store::open_checked(path)?, Some(aside)))
            }
            Err(e) => Err(e),
        }
    }

    fn open_checked(path: &Path) -> Result<Store, StoreError> {
        let sql = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(sql)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(sql)?;
        check_integrity(&conn, path)?;
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(sql)?;
        if tables > 0 {
            check_format(&conn, path)?;
        }
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql)?;
        conn.execute_batch(SCHEMA).map_err(sql)?;
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('format', ?1), ('version', ?2)",
            params![FORMAT, VERSION],
        )
        .map_err(sql)?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// Opens an existing store to read it (`edgeclip search`): `None` when there is no file yet;
    /// an error when it is not an edgeclip store (it is left as it is).
    pub fn open_read(path: &Path) -> Result<Option<Store>, StoreError> {
        if !path.exists() {
            return Ok(None);
        }
        let sql = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(sql)?;
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(sql)?;
        if tables == 0 {
            return Ok(None);
        }
        check_format(&conn, path)?;
        // A search reads every frame of its window: mapped pages are read in place, not copied
        // through SQLite's page cache (about a sixth less time for a day of frames).
        conn.pragma_update(None, "mmap_size", 1i64 << 30)
            .map_err(sql)?;
        Ok(Some(Store {
            conn,
            path: path.to_path_buf(),
        }))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sql(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Writes `records` in one transaction.
    pub fn write(&mut self, records: &[Record]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let sql = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sql)?;
        {
            let mut frames = tx
                .prepare_cached(
                    "INSERT INTO frames (ts_ms, camera, frame, scale, embedding) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(sql)?;
            let mut events = tx
                .prepare_cached(
                    "INSERT INTO events (ts_ms, camera, label, kind, snapshot, json) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(sql)?;
            for r in records {
                match r {
                    Record::Frame(f) => {
                        let bytes: Vec<u8> = f.embedding.iter().map(|&v| v as u8).collect();
                        frames
                            .execute(params![
                                f.ts_ms,
                                f.camera,
                                i64::try_from(f.frame).unwrap_or(i64::MAX),
                                f.scale,
                                bytes
                            ])
                            .map_err(sql)?;
                    }
                    Record::Event(e) => {
                        events
                            .execute(params![
                                e.ts_ms, e.camera, e.label, e.kind, e.snapshot, e.json
                            ])
                            .map_err(sql)?;
                    }
                }
            }
        }
        tx.commit().map_err(sql)
    }

    /// The bytes the database's pages in use take (free pages left by deletions are reused and
    /// not counted).
    pub fn used_bytes(&self) -> Result<u64, StoreError> {
        let get = |p: &str| {
            self.conn
                .query_row(&format!("PRAGMA {p}"), [], |r| r.get::<_, i64>(0))
                .map_err(|e| self.sql(e))
        };
        let pages = get("page_count")? - get("freelist_count")?;
        Ok(u64::try_from(pages * get("page_size")?).unwrap_or(0))
    }

    /// Applies the limits: frames and events older than `days` before `now_ms` go, then the
    /// oldest frames while the database takes more than `max_bytes`. Returns the frames deleted.
    pub fn trim(&mut self, now_ms: i64, days: u32, max_bytes: u64) -> Result<u64, StoreError> {
        let cutoff = retention::cutoff_ms(now_ms, days);
        let mut deleted = self
            .conn
            .execute("DELETE FROM frames WHERE ts_ms < ?1", [cutoff])
            .map_err(|e| self.sql(e))? as u64;
        self.conn
            .execute("DELETE FROM events WHERE ts_ms < ?1", [cutoff])
            .map_err(|e| self.sql(e))?;
        let rows = self.frame_count()?;
        let excess = retention::excess_rows(self.used_bytes()?, max_bytes, rows);
        if excess > 0 {
            deleted += self
                .conn
                .execute(
                    "DELETE FROM frames WHERE id IN (SELECT id FROM frames ORDER BY ts_ms, id LIMIT ?1)",
                    [i64::try_from(excess).unwrap_or(i64::MAX)],
                )
                .map_err(|e| self.sql(e))? as u64;
        }
        Ok(deleted)
    }

    /// How many frames are stored.
    pub fn frame_count(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT count(*) FROM frames", [], |r| r.get::<_, i64>(0))
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(|e| self.sql(e))
    }

    /// Calls `each` with every frame stored between `since_ms` and `until_ms` (inclusive), of
    /// `camera` when given, oldest first (borrowed from SQLite's row: nothing is copied).
    pub fn for_each_frame(
        &self,
        since_ms: i64,
        until_ms: i64,
        camera: Option<&str>,
        mut each: impl FnMut(FrameRef<'_>),
    ) -> Result<(), StoreError> {
        let mut q = self
            .conn
            .prepare(
                "SELECT ts_ms, camera, frame, scale, embedding FROM frames \
                 WHERE ts_ms BETWEEN ?1 AND ?2 AND (?3 IS NULL OR camera = ?3) ORDER BY ts_ms, id",
            )
            .map_err(|e| self.sql(e))?;
        let mut rows = q
            .query(params![since_ms, until_ms, camera])
            .map_err(|e| self.sql(e))?;
        let bad = |i, t, e| rusqlite::Error::FromSqlConversionFailure(i, t, Box::new(e));
        while let Some(r) = rows.next().map_err(|e| self.sql(e))? {
            let read = || -> rusqlite::Result<FrameRef<'_>> {
                use rusqlite::types::Type;
                Ok(FrameRef {
                    ts_ms: r.get(0)?,
                    camera: r.get_ref(1)?.as_str().map_err(|e| bad(1, Type::Text, e))?,
                    frame: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                    scale: r.get(3)?,
                    embedding: r.get_ref(4)?.as_blob().map_err(|e| bad(4, Type::Blob, e))?,
                })
            };
            each(read().map_err(|e| self.sql(e))?);
        }
        Ok(())
    }

    /// The events stored between `since_ms` and `until_ms`, oldest first.
    pub fn events(&self, since_ms: i64, until_ms: i64) -> Result<Vec<EventRecord>, StoreError> {
        let mut q = self
            .conn
            .prepare(
                "SELECT ts_ms, camera, label, kind, snapshot, json FROM events \
                 WHERE ts_ms BETWEEN ?1 AND ?2 ORDER BY ts_ms, id",
            )
            .map_err(|e| self.sql(e))?;
        let rows = q
            .query_map([since_ms, until_ms], |r| {
                Ok(EventRecord {
                    ts_ms: r.get(0)?,
                    camera: r.get(1)?,
                    label: r.get(2)?,
                    kind: r.get(3)?,
                    snapshot: r.get(4)?,
                    json: r.get(5)?,
                })
            })
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sql(e))
    }
}

fn check_integrity(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let result: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        })?;
    if result == "ok" {
        Ok(())
    } else {
        Err(StoreError::Foreign {
            path: path.to_path_buf(),
            why: format!("integrity check: {result}"),
        })
    }
}

fn check_format(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let format: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'format'", [], |r| {
            r.get(0)
        })
        .ok();
    match format.as_deref() {
        Some(FORMAT) => Ok(()),
        Some(other) => Err(StoreError::Foreign {
            path: path.to_path_buf(),
            why: format!("its format is {other:?}"),
        }),
        None => Err(StoreError::Foreign {
            path: path.to_path_buf(),
            why: "a SQLite database without edgeclip's tables".into(),
        }),
    }
}

/// Renames `path` (and its `-wal` and `-shm` files) to `PATH.corrupt-TIMESTAMP`.
fn rename_aside(path: &Path) -> Result<PathBuf, StoreError> {
    let stamp = humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .replace(':', "");
    let with = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    let aside = with(&format!(".corrupt-{stamp}"));
    std::fs::rename(path, &aside).map_err(|source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    for side in ["-wal", "-shm"] {
        let from = with(side);
        if from.exists() {
            let _ = std::fs::rename(&from, with(&format!(".corrupt-{stamp}{side}")));
        }
    }
    Ok(aside)
}

/// One thing to write.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A sampled frame.
    Frame(FrameRecord),
    /// An event.
    Event(EventRecord),
}

/// What the writer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterCounts {
    /// Records written.
    pub written: u64,
    /// Records dropped because the queue was full.
    pub dropped: u64,
    /// Records that could not be written (disk full, ...).
    pub failed: u64,
    /// Frames deleted by the retention limits.
    pub trimmed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    written: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    trimmed: AtomicU64,
}

/// The retention limits the writer applies.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Days of history kept.
    pub retention_days: u32,
    /// Most bytes of the database.
    pub max_bytes: u64,
}

/// The writer thread and its bounded queue.
#[derive(Debug)]
pub struct Writer {
    tx: Option<SyncSender<Record>>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl Writer {
    /// Starts the writer on `store`, with room for `queue` records.
    pub fn start(store: Store, queue: usize, limits: Limits) -> Result<Writer, StoreError> {
        let (tx, rx) = sync_channel(queue.max(1));
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let thread = std::thread::Builder::new()
            .name("edgeclip-store".into())
            .spawn(move || write_loop(store, rx, limits, &c))
            .map_err(StoreError::Thread)?;
        Ok(Writer {
            tx: Some(tx),
            thread: Some(thread),
            counters,
        })
    }

    /// Queues `record` without waiting; `false` when the queue was full (dropped, counted).
    pub fn submit(&self, record: Record) -> bool {
        let Some(tx) = &self.tx else { return false };
        match tx.try_send(record) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> WriterCounts {
        let c = &self.counters;
        WriterCounts {
            written: c.written.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            trimmed: c.trimmed.load(Ordering::Relaxed),
        }
    }

    /// Writes what is queued, stops the thread and returns the counts.
    pub fn finish(mut self) -> WriterCounts {
        self.stop();
        self.counts()
    }

    fn stop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            warn!("the store's writer thread panicked");
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn write_loop(mut store: Store, rx: Receiver<Record>, limits: Limits, c: &Counters) {
    let mut last_trim: Option<Instant> = None;
    let mut batch = Vec::with_capacity(BATCH);
    let mut warned = false;
    while let Ok(first) = rx.recv() {
        batch.clear();
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        match store.write(&batch) {
            Ok(()) => {
                c.written.fetch_add(batch.len() as u64, Ordering::Relaxed);
                warned = false;
            }
            Err(e) => {
                c.failed.fetch_add(batch.len() as u64, Ordering::Relaxed);
                if !warned {
                    warn!("{e}; {} records not stored, detection goes on", batch.len());
                    warned = true;
                }
            }
        }
        if last_trim.is_none_or(|t| t.elapsed() >= TRIM_EVERY) {
            last_trim = Some(Instant::now());
            match store.trim(
                millis(SystemTime::now()),
                limits.retention_days,
                limits.max_bytes,
            ) {
                Ok(0) => {}
                Ok(n) => {
                    c.trimmed.fetch_add(n, Ordering::Relaxed);
                    debug!("store: {n} old frames deleted");
                }
                Err(e) => warn!("{e}: old frames not deleted"),
            }
        }
    }
}
