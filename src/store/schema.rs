//! The store's schema (format 2), the upgrade from format 1, and the checks that a file is a
//! readable edgeclip store.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension};

use super::StoreError;

/// The `meta` row that marks a database as an edgeclip store.
pub(super) const FORMAT: &str = "edgeclip-store";
/// The schema's version.
pub(super) const VERSION: &str = "2";

/// The page size of a new store's file.
pub(super) const PAGE_SIZE: i64 = 8192;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cameras (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS frames (
    id INTEGER PRIMARY KEY,
    ts_ms INTEGER NOT NULL,
    camera INTEGER NOT NULL,
    frame INTEGER NOT NULL,
    scale REAL NOT NULL,
    embedding BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS frames_ts ON frames (ts_ms);
CREATE TABLE IF NOT EXISTS thumbnails (
    id INTEGER PRIMARY KEY,
    ts_ms INTEGER NOT NULL,
    camera INTEGER NOT NULL,
    frame INTEGER NOT NULL,
    jpeg BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS thumbnails_at ON thumbnails (camera, ts_ms);
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

/// Format 1 to 2: the cameras' names move to `cameras`, the unused `thumbnail` column goes.
pub(super) const UPGRADE_1: &str = "
CREATE TABLE cameras (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
INSERT INTO cameras (name) SELECT DISTINCT camera FROM frames ORDER BY camera;
CREATE TABLE frames_2 (
    id INTEGER PRIMARY KEY,
    ts_ms INTEGER NOT NULL,
    camera INTEGER NOT NULL,
    frame INTEGER NOT NULL,
    scale REAL NOT NULL,
    embedding BLOB NOT NULL
);
INSERT INTO frames_2 (id, ts_ms, camera, frame, scale, embedding)
    SELECT f.id, f.ts_ms, c.id, f.frame, f.scale, f.embedding
    FROM frames f JOIN cameras c ON c.name = f.camera;
DROP TABLE frames;
ALTER TABLE frames_2 RENAME TO frames;
UPDATE meta SET value = '2' WHERE key = 'version';
";

/// The `meta` row `version` ("1" when absent: the first stores wrote it too, but say so).
pub(super) fn version(conn: &Connection, path: &Path) -> Result<String, StoreError> {
    conn.query_row("SELECT value FROM meta WHERE key = 'version'", [], |r| {
        r.get(0)
    })
    .optional()
    .map(|v| v.unwrap_or_else(|| "1".into()))
    .map_err(|source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    })
}

pub(super) fn check_integrity(conn: &Connection, path: &Path) -> Result<(), StoreError> {
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

pub(super) fn check_format(conn: &Connection, path: &Path) -> Result<(), StoreError> {
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
