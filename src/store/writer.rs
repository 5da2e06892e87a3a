//! The store's writer thread and its bounded queue: the frame loop hands over records (and
//! frames to make thumbnails of) without waiting; this thread encodes the thumbnails, writes in
//! batches, trims the history to its limits, and says how it is doing ([`StoreState`]).
//!
//! A full disk (SQLite's `SQLITE_FULL`, the file system's `ENOSPC`) stops storing, not the
//! daemon: it is logged once, the state becomes [`StoreState::DiskFull`], and the records that
//! come meanwhile are counted as failed and let go. Every [`RETRY_FULL`] the writer tries
//! again (retention may have freed room, or the operator did); a write that succeeds logs that
//! storing resumed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use log::{debug, error, info, warn};

use super::thumbnail::make_thumbnail;
use super::{Record, Store, StoreError, ThumbnailRecord, millis};
pub use crate::event::StoreState;
use crate::frame::Frame;

/// Records written in one transaction at most.
const BATCH: usize = 256;
/// How often the writer applies the retention limits at most.
const TRIM_EVERY: Duration = Duration::from_secs(30);
/// How often a writer that found the disk full tries again.
pub const RETRY_FULL: Duration = Duration::from_secs(60);

/// What the writer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterCounts {
    /// Records written.
    pub written: u64,
    /// Frames written (counted in `written` too).
    pub frames: u64,
    /// Records dropped because the queue was full.
    pub dropped: u64,
    /// Records that could not be written (disk full, ...), thumbnails that could not be made.
    pub failed: u64,
    /// Frames deleted by the retention limits.
    pub trimmed: u64,
    /// Thumbnails written (counted in `written` too).
    pub thumbnails: u64,
    /// The bytes of the database's pages in use, as last measured (after a write or a trim).
    pub bytes: u64,
}

fn state_from_u8(v: u8) -> StoreState {
    match v {
        0 => StoreState::Ok,
        1 => StoreState::DiskFull,
        2 => StoreState::Failing,
        _ => StoreState::Off,
    }
}

fn state_to_u8(state: StoreState) -> u8 {
    match state {
        StoreState::Ok => 0,
        StoreState::DiskFull => 1,
        StoreState::Failing => 2,
        StoreState::Off => 3,
    }
}

#[derive(Debug, Default)]
struct Counters {
    written: AtomicU64,
    frames: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    trimmed: AtomicU64,
    thumbnails: AtomicU64,
    bytes: AtomicU64,
    state: AtomicU8,
}

/// The retention limits the writer applies.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Days of history kept.
    pub retention_days: u32,
    /// Most bytes of the database.
    pub max_bytes: u64,
}

/// What the queue carries: a record, or a frame whose thumbnail the thread makes.
enum Job {
    Record(Record),
    Thumbnail {
        ts_ms: i64,
        camera: String,
        frame: Arc<Frame>,
    },
}

/// The writer thread and its bounded queue.
#[derive(Debug)]
pub struct Writer {
    tx: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Record(r) => r.fmt(f),
            Job::Thumbnail { ts_ms, camera, .. } => write!(f, "thumbnail of {camera} at {ts_ms}"),
        }
    }
}

impl Writer {
    /// Starts the writer on `store`, with room for `queue` records.
    pub fn start(store: Store, queue: usize, limits: Limits) -> Result<Writer, StoreError> {
        let (tx, rx) = sync_channel(queue.max(1));
        let counters = Arc::new(Counters::default());
        if let Ok(bytes) = store.used_bytes() {
            counters.bytes.store(bytes, Ordering::Relaxed);
        }
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
        self.send(Job::Record(record))
    }

    /// Queues a thumbnail of `frame` (made on the writer's thread, [`make_thumbnail`]) without
    /// waiting; `false` when the queue was full (dropped, counted).
    pub fn thumbnail(&self, ts_ms: i64, camera: &str, frame: Arc<Frame>) -> bool {
        self.send(Job::Thumbnail {
            ts_ms,
            camera: camera.to_owned(),
            frame,
        })
    }

    fn send(&self, job: Job) -> bool {
        let Some(tx) = &self.tx else { return false };
        match tx.try_send(job) {
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
            frames: c.frames.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            trimmed: c.trimmed.load(Ordering::Relaxed),
            thumbnails: c.thumbnails.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
        }
    }

    /// How the store is doing.
    pub fn state(&self) -> StoreState {
        state_from_u8(self.counters.state.load(Ordering::Relaxed))
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

/// Whether `e` says the disk (or the file system's quota) is full.
pub fn is_disk_full(e: &StoreError) -> bool {
    match e {
        StoreError::Sqlite { source, .. } => {
            source.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
        }
        StoreError::Io { source, .. } => source.kind() == std::io::ErrorKind::StorageFull,
        _ => false,
    }
}

fn write_loop(mut store: Store, rx: Receiver<Job>, limits: Limits, c: &Counters) {
    let mut last_trim: Option<Instant> = None;
    let mut full_since: Option<Instant> = None;
    let mut batch: Vec<Record> = Vec::with_capacity(BATCH);
    let mut warned = false;
    let mut jobs = Vec::with_capacity(BATCH);
    while let Ok(first) = rx.recv() {
        jobs.clear();
        jobs.push(first);
        while jobs.len() < BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        // While the disk is full, nothing is tried (no thumbnail made) until the next retry.
        if full_since.is_some_and(|t| t.elapsed() < RETRY_FULL) {
            c.failed.fetch_add(jobs.len() as u64, Ordering::Relaxed);
            continue;
        }
        batch.clear();
        let mut thumbnails = 0;
        let mut frames = 0;
        for job in jobs.drain(..) {
            match job {
                Job::Record(r) => {
                    frames += u64::from(matches!(r, Record::Frame(_)));
                    batch.push(r);
                }
                Job::Thumbnail {
                    ts_ms,
                    camera,
                    frame,
                } => match make_thumbnail(&frame) {
                    Ok(jpeg) => {
                        thumbnails += 1;
                        batch.push(Record::Thumbnail(ThumbnailRecord {
                            ts_ms,
                            camera,
                            frame: frame.seq,
                            jpeg,
                        }));
                    }
                    Err(e) => {
                        c.failed.fetch_add(1, Ordering::Relaxed);
                        debug!("store: no thumbnail of frame {}: {e}", frame.seq);
                    }
                },
            }
        }
        match store.write(&batch) {
            Ok(()) => {
                c.written.fetch_add(batch.len() as u64, Ordering::Relaxed);
                c.thumbnails.fetch_add(thumbnails, Ordering::Relaxed);
                c.frames.fetch_add(frames, Ordering::Relaxed);
                if full_since.take().is_some() || warned {
                    info!("store: writing again");
                }
                warned = false;
                c.state
                    .store(state_to_u8(StoreState::Ok), Ordering::Relaxed);
            }
            Err(e) => {
                c.failed.fetch_add(batch.len() as u64, Ordering::Relaxed);
                if is_disk_full(&e) {
                    if full_since.is_none() {
                        error!(
                            "{e}: the disk is full; storing stops (detection and publishing go \
                             on), retried every {} s",
                            RETRY_FULL.as_secs()
                        );
                    }
                    full_since = Some(Instant::now());
                    c.state
                        .store(state_to_u8(StoreState::DiskFull), Ordering::Relaxed);
                } else {
                    if !warned {
                        warn!("{e}; {} records not stored, detection goes on", batch.len());
                        warned = true;
                    }
                    c.state
                        .store(state_to_u8(StoreState::Failing), Ordering::Relaxed);
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
        if let Ok(bytes) = store.used_bytes() {
            c.bytes.store(bytes, Ordering::Relaxed);
        }
    }
}
