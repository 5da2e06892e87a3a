//! The history: events and sampled frame embeddings in an embedded SQLite database (rusqlite
//! with its bundled SQLite, in WAL mode), written by a thread of its own and read by `edgeclip
//! search`.
//!
//! [`Store::open`] opens or creates the file; one that is not a readable edgeclip store (a
//! damaged file, another program's database, not SQLite at all) is renamed aside to
//! `NAME.corrupt-TIMESTAMP` and a new one started, with a warning naming both; a store of the
//! previous format (1: the camera's name on every row, no thumbnails) is upgraded in place.
//! [`Writer`] owns the database on its thread behind a bounded queue ([`writer`]): queueing
//! never waits (a full queue drops the record and counts it), and the writer trims the history
//! to `retention_days` and `max_mb` as it goes ([`retention`]). Which frames are kept and their
//! int8 form are [`sample`]'s; which get a thumbnail, [`thumbnail`]'s; merging a search's scores
//! into moments is [`moments`]'.
//!
//! Rows are kept small: a frame row is its time, its camera as an integer (the `cameras`
//! table), its number, its scale and its 512 bytes (D=512); thumbnails (about 160 px JPEGs) are
//! a table of their own, taken for some frames only, so that a search's scan of `frames` does
//! not step over them.

pub mod moments;
pub mod retention;
pub mod sample;
mod schema;
#[cfg(test)]
mod tests;
pub mod thumbnail;
pub mod writer;

pub use writer::{Limits, StoreState, Writer, WriterCounts};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log::{info, warn};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use schema::{
    FORMAT, PAGE_SIZE, SCHEMA, UPGRADE_1, VERSION, check_format, check_integrity, version,
};

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

/// A thumbnail as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ThumbnailRecord {
    /// Milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// The camera's name.
    pub camera: String,
    /// The frame's sequence number.
    pub frame: u64,
    /// The JPEG.
    pub jpeg: Vec<u8>,
}

/// A stored thumbnail with its row id (which [`Store::thumbnail_by_id`] takes).
#[derive(Debug, Clone, PartialEq)]
pub struct Thumbnail {
    /// Its row id.
    pub id: i64,
    /// Milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// The frame's sequence number.
    pub frame: u64,
    /// The JPEG.
    pub jpeg: Vec<u8>,
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

/// How [`Store::frames_in`] walks the frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Through the time index, oldest first.
    ByTime,
    /// Through the table in row order.
    Table,
}

/// An open store.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// The `cameras` table's ids by name, as far as this connection wrote or read them.
    cameras: HashMap<String, i64>,
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
        } else {
            // A new file: 8 KiB pages hold 15 frame rows of D=512 (4 KiB pages hold 7: 585
            // bytes a row instead of 546). Set before the first write; kept for the file's life.
            conn.pragma_update(None, "page_size", PAGE_SIZE)
                .map_err(sql)?;
        }
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql)?;
        if tables > 0 && version(&conn, path)? == "1" {
            conn.execute_batch(&format!("BEGIN; {UPGRADE_1} COMMIT;"))
                .map_err(sql)?;
            info!(
                "store {}: upgraded from format 1 to {VERSION}",
                path.display()
            );
        }
        conn.execute_batch(SCHEMA).map_err(sql)?;
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('format', ?1), ('version', ?2)",
            params![FORMAT, VERSION],
        )
        .map_err(sql)?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
            cameras: HashMap::new(),
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
        let v = version(&conn, path)?;
        if v != VERSION {
            return Err(StoreError::Foreign {
                path: path.to_path_buf(),
                why: format!(
                    "format version {v}, this build reads {VERSION}; the daemon upgrades a \
                     version 1 store when it starts on it"
                ),
            });
        }
        // A search reads every frame of its window: mapped pages are read in place, not copied
        // through SQLite's page cache (about a sixth less time for a day of frames).
        conn.pragma_update(None, "mmap_size", 1i64 << 30)
            .map_err(sql)?;
        Ok(Some(Store {
            conn,
            path: path.to_path_buf(),
            cameras: HashMap::new(),
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
        let result = self.write_tx(records);
        if result.is_err() {
            // Camera rows of a transaction rolled back are not in the file.
            self.cameras.clear();
        }
        result
    }

    fn write_tx(&mut self, records: &[Record]) -> Result<(), StoreError> {
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
            let mut thumbnails = tx
                .prepare_cached(
                    "INSERT INTO thumbnails (ts_ms, camera, frame, jpeg) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(sql)?;
            let mut events = tx
                .prepare_cached(
                    "INSERT INTO events (ts_ms, camera, label, kind, snapshot, json) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(sql)?;
            let number = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            for r in records {
                match r {
                    Record::Frame(f) => {
                        let camera = camera_id(&tx, &mut self.cameras, &f.camera).map_err(sql)?;
                        let bytes: Vec<u8> = f.embedding.iter().map(|&v| v as u8).collect();
                        frames
                            .execute(params![f.ts_ms, camera, number(f.frame), f.scale, bytes])
                            .map_err(sql)?;
                    }
                    Record::Thumbnail(t) => {
                        let camera = camera_id(&tx, &mut self.cameras, &t.camera).map_err(sql)?;
                        thumbnails
                            .execute(params![t.ts_ms, camera, number(t.frame), t.jpeg])
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
        self.conn
            .execute("DELETE FROM thumbnails WHERE ts_ms < ?1", [cutoff])
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
            // The thumbnails of the deleted frames' time go with them.
            self.conn
                .execute(
                    "DELETE FROM thumbnails WHERE ts_ms < (SELECT min(ts_ms) FROM frames)",
                    [],
                )
                .map_err(|e| self.sql(e))?;
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
        each: impl FnMut(FrameRef<'_>),
    ) -> Result<(), StoreError> {
        self.frames_in(Scan::ByTime, since_ms, until_ms, camera, each)
    }

    /// [`Store::for_each_frame`] in the order SQLite finds them cheapest (a search, which
    /// sorts what it keeps): a window over most of the history is read straight through the
    /// table (one B-tree walk) instead of through the time index (a walk plus a lookup a row).
    pub fn for_each_frame_any_order(
        &self,
        since_ms: i64,
        until_ms: i64,
        camera: Option<&str>,
        each: impl FnMut(FrameRef<'_>),
    ) -> Result<(), StoreError> {
        let (first, last): (Option<i64>, Option<i64>) = self
            .conn
            .query_row("SELECT min(ts_ms), max(ts_ms) FROM frames", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(|e| self.sql(e))?;
        let (Some(first), Some(last)) = (first, last) else {
            return Ok(());
        };
        let covered = until_ms.min(last).saturating_sub(since_ms.max(first));
        let scan = if covered.saturating_mul(2) >= last.saturating_sub(first) {
            Scan::Table
        } else {
            Scan::ByTime
        };
        self.frames_in(scan, since_ms, until_ms, camera, each)
    }

    fn frames_in(
        &self,
        scan: Scan,
        since_ms: i64,
        until_ms: i64,
        camera: Option<&str>,
        mut each: impl FnMut(FrameRef<'_>),
    ) -> Result<(), StoreError> {
        let names = self.camera_names()?;
        let camera_id = match camera {
            Some(c) => match names.iter().find(|n| n.1 == c) {
                Some(n) => Some(n.0),
                None => return Ok(()),
            },
            None => None,
        };
        // `+ts_ms` keeps SQLite off the time index: the table is walked in row order.
        let sql = match scan {
            Scan::ByTime => {
                "SELECT ts_ms, camera, frame, scale, embedding FROM frames \
                 WHERE ts_ms BETWEEN ?1 AND ?2 AND (?3 IS NULL OR camera = ?3) ORDER BY ts_ms, id"
            }
            Scan::Table => {
                "SELECT ts_ms, camera, frame, scale, embedding FROM frames \
                 WHERE +ts_ms BETWEEN ?1 AND ?2 AND (?3 IS NULL OR camera = ?3)"
            }
        };
        let mut q = self.conn.prepare(sql).map_err(|e| self.sql(e))?;
        let mut rows = q
            .query(params![since_ms, until_ms, camera_id])
            .map_err(|e| self.sql(e))?;
        let name = |id: i64| {
            names
                .iter()
                .find(|n| n.0 == id)
                .map_or("?", |n| n.1.as_str())
        };
        let bad = |i, t, e| rusqlite::Error::FromSqlConversionFailure(i, t, Box::new(e));
        while let Some(r) = rows.next().map_err(|e| self.sql(e))? {
            let read = || -> rusqlite::Result<FrameRef<'_>> {
                use rusqlite::types::Type;
                Ok(FrameRef {
                    ts_ms: r.get(0)?,
                    camera: name(r.get(1)?),
                    frame: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                    scale: r.get(3)?,
                    embedding: r.get_ref(4)?.as_blob().map_err(|e| bad(4, Type::Blob, e))?,
                })
            };
            each(read().map_err(|e| self.sql(e))?);
        }
        Ok(())
    }

    /// The cameras' ids and names.
    fn camera_names(&self) -> Result<Vec<(i64, String)>, StoreError> {
        let mut q = self
            .conn
            .prepare_cached("SELECT id, name FROM cameras")
            .map_err(|e| self.sql(e))?;
        let rows = q
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sql(e))
    }

    /// The thumbnail of `camera` nearest `ts_ms` at or before it (what a search hit at `ts_ms`
    /// shows); `None` when that camera has none so early.
    pub fn thumbnail(&self, camera: &str, ts_ms: i64) -> Result<Option<Thumbnail>, StoreError> {
        self.conn
            .query_row(
                "SELECT t.id, t.ts_ms, t.frame, t.jpeg FROM thumbnails t \
                 JOIN cameras c ON c.id = t.camera \
                 WHERE c.name = ?1 AND t.ts_ms <= ?2 ORDER BY t.ts_ms DESC, t.id DESC LIMIT 1",
                params![camera, ts_ms],
                read_thumbnail,
            )
            .optional()
            .map_err(|e| self.sql(e))
    }

    /// The thumbnail with row id `id` ([`Thumbnail::id`]), if it is still stored.
    pub fn thumbnail_by_id(&self, id: i64) -> Result<Option<Thumbnail>, StoreError> {
        self.conn
            .query_row(
                "SELECT id, ts_ms, frame, jpeg FROM thumbnails WHERE id = ?1",
                [id],
                read_thumbnail,
            )
            .optional()
            .map_err(|e| self.sql(e))
    }

    /// How many thumbnails are stored.
    pub fn thumbnail_count(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT count(*) FROM thumbnails", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(|e| self.sql(e))
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

fn read_thumbnail(r: &rusqlite::Row<'_>) -> rusqlite::Result<Thumbnail> {
    Ok(Thumbnail {
        id: r.get(0)?,
        ts_ms: r.get(1)?,
        frame: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
        jpeg: r.get(3)?,
    })
}

/// The id of `name` in `cameras`, added when new (cached in `ids`).
fn camera_id(
    conn: &Connection,
    ids: &mut HashMap<String, i64>,
    name: &str,
) -> rusqlite::Result<i64> {
    if let Some(&id) = ids.get(name) {
        return Ok(id);
    }
    conn.execute("INSERT OR IGNORE INTO cameras (name) VALUES (?1)", [name])?;
    let id = conn.query_row("SELECT id FROM cameras WHERE name = ?1", [name], |r| {
        r.get(0)
    })?;
    ids.insert(name.to_owned(), id);
    Ok(id)
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
    /// A thumbnail.
    Thumbnail(ThumbnailRecord),
}
