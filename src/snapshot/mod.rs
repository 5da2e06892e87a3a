//! Event snapshots: the JPEG of the best frame of every start event's first moments, written to
//! `DIR/CAMERA/LABEL/TIMESTAMP.jpg` and kept within a count and size limit.
//!
//! Three parts, in the layers of the rest of the crate:
//!
//! - [`select`] (pure): which frame of a start's window becomes its snapshot. It asks for a
//!   frame only when the frame beats the best so far, so the daemon keeps one frame per open
//!   window and copies none (it moves the frame it owns into an `Arc`).
//! - [`retention`] (pure): which files to delete, oldest first, so the folder stays within
//!   `max_count` and `max_mb`.
//! - this file (the adapter): the folder and its file names, the start-up check that the folder
//!   is writable, JPEG encoding, atomic writes, and the [`Writer`] thread that does the slow
//!   part (encoding, writing, enforcing retention) off the frame loop. Its queue is bounded: a
//!   snapshot that finds it full is dropped and counted, the frame loop never waits.
//!
//! A camera's own JPEG frames (MJPEG, `files:` JPEGs) are written as they came (no decode, no
//! second compression) when they carry their Huffman tables; raw frames (RGB, YUYV, grey) and
//! table-less MJPEG are encoded with `snapshots.jpeg_quality`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime};

use image::ExtendedColorType;
use image::codecs::jpeg::JpegEncoder;

use crate::config::SnapshotsConfig;
use crate::frame::{Frame, PixelFormat};
use crate::preprocess::{RgbImage, decode_image, grey_to_rgb, yuyv_to_rgb};

pub mod retention;
pub mod select;

pub use retention::Limits;
pub use select::{Chosen, Selector};

/// Most snapshots waiting for the writer thread; more are dropped and counted.
pub const QUEUE: usize = 4;

/// What can go wrong with snapshots. Start-up errors name the folder; runtime errors the file.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The folder cannot be created or written (start-up, or `check-config --probe`).
    #[error("snapshots.dir: cannot write snapshots to {}: {source}", dir.display())]
    Folder {
        /// The folder.
        dir: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// `snapshots.dir` is not set and there is no state folder to put them in.
    #[error(
        "snapshots.dir: not set, and there is no state folder ($STATE_DIRECTORY, \
         $XDG_DATA_HOME and $HOME are unset): set snapshots.dir, or snapshots.enabled = false"
    )]
    NoFolder,
    /// The writer thread could not be started.
    #[error("snapshots: cannot start the writer thread: {0}")]
    Thread(io::Error),
    /// A frame could not be turned into a JPEG.
    #[error("snapshot {}: cannot encode frame {seq}: {message}", path.display())]
    Encode {
        /// The snapshot file.
        path: PathBuf,
        /// The frame's sequence number.
        seq: u64,
        /// Why.
        message: String,
    },
    /// The file could not be written (disk full, folder removed, ...).
    #[error("snapshot {}: cannot write: {source}", path.display())]
    Write {
        /// The snapshot file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The writer's queue was full: the snapshot was dropped.
    #[error("snapshot {}: dropped, {QUEUE} snapshots are already waiting for the disk", path.display())]
    Busy {
        /// The snapshot file that will not be written.
        path: PathBuf,
    },
}

/// The snapshot folder of a config: `snapshots.dir`, else `snapshots/` in the daemon's state
/// folder ([`crate::paths::state_dir`]).
pub fn folder(config: &SnapshotsConfig) -> Result<PathBuf, SnapshotError> {
    match &config.dir {
        Some(d) => Ok(d.clone()),
        None => crate::paths::state_dir()
            .map(|d| d.join("snapshots"))
            .ok_or(SnapshotError::NoFolder),
    }
}

/// A timestamp as a file name stem: RFC 3339 in UTC with milliseconds, `:` replaced by `-`
/// (`2026-12-05T11-22-33.123Z`), so names sort in time order. A clock outside the years 1970 to
/// 9999 is clamped to that range ([`crate::event::format_timestamp`]).
pub fn file_stem(ts: SystemTime) -> String {
    crate::event::format_timestamp(ts).replace(':', "-")
}

/// The time a [`file_stem`] names, if it is one.
pub fn stem_time(stem: &str) -> Option<SystemTime> {
    let (date, time) = stem.split_once('T')?;
    humantime::parse_rfc3339(&format!("{date}T{}", time.replace('-', ":"))).ok()
}

/// Where the snapshot of `label`'s event at `ts` goes: `root/LABEL/STEM.jpg`, `root` being the
/// camera's folder (`DIR/CAMERA`).
pub fn path_for(root: &Path, label: &str, ts: SystemTime) -> PathBuf {
    root.join(label).join(format!("{}.jpg", file_stem(ts)))
}

/// Creates `dir` (and its parents) and checks that a file can be written in it.
pub fn check_folder(dir: &Path) -> Result<(), SnapshotError> {
    let fail = |source| SnapshotError::Folder {
        dir: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    write_probe(dir).map_err(fail)
}

/// Writes and removes an empty file in `dir`. Its name is unique per call, not per process:
/// two daemons in one process (tests; later, one per camera) may check the same folder at
/// once, and one must not delete the other's probe.
fn write_probe(dir: &Path) -> io::Result<()> {
    static CHECKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = CHECKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = dir.join(format!(".edgeclip-write-check-{}-{n}", std::process::id()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}

/// Checks, without creating anything, that `dir` could be created and written: a file can be
/// written in it, or (when it does not exist yet) in its nearest existing parent. For
/// `check-config --probe`, which may run as another user than the daemon.
pub fn probe_folder(dir: &Path) -> Result<(), SnapshotError> {
    let fail = |source| SnapshotError::Folder {
        dir: dir.to_owned(),
        source,
    };
    let mut existing = dir;
    while !existing.exists() {
        existing = match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
    }
    if !existing.is_dir() {
        let what = format!("{} is not a folder", existing.display());
        return Err(fail(io::Error::new(io::ErrorKind::NotADirectory, what)));
    }
    write_probe(existing).map_err(fail)
}

/// Whether a JPEG carries Huffman tables (a DHT segment before its scan). Many UVC cameras'
/// MJPEG frames do not (decoders then assume the standard tables, browsers may not).
pub fn has_huffman_tables(jpeg: &[u8]) -> bool {
    if !jpeg.starts_with(&[0xFF, 0xD8]) {
        return false;
    }
    let mut i = 2;
    while i + 1 < jpeg.len() {
        if jpeg[i] != 0xFF {
            return false;
        }
        match jpeg[i + 1] {
            0xFF => i += 1,
            0xC4 => return true,
            0xDA | 0xD9 => return false,
            0x01 | 0xD0..=0xD7 => i += 2,
            _ => {
                let Some(len) = jpeg.get(i + 2..i + 4) else {
                    return false;
                };
                let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
                if len < 2 {
                    return false;
                }
                i += 2 + len;
            }
        }
    }
    false
}

/// A frame as a JPEG: a camera JPEG with its Huffman tables as it is, anything else converted
/// to RGB and encoded at `quality` (1 to 100).
pub fn encode(frame: &Frame, quality: u8) -> Result<Vec<u8>, String> {
    if frame.format == PixelFormat::Mjpeg && has_huffman_tables(&frame.data) {
        return Ok(frame.data.clone());
    }
    let mut rgb = RgbImage::default();
    let (data, w, h) = rgb_of(frame, &mut rgb)?;
    let mut out = Vec::with_capacity(data.len() / 10);
    JpegEncoder::new_with_quality(&mut out, quality.clamp(1, 100))
        .encode(data, w, h, ExtendedColorType::Rgb8)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// `frame`'s pixels as packed RGB with their width and height: an RGB frame's own bytes, other
/// formats converted (or decoded) into `rgb`. An error says what is wrong with the frame.
pub fn rgb_of<'a>(frame: &'a Frame, rgb: &'a mut RgbImage) -> Result<(&'a [u8], u32, u32), String> {
    let (w, h) = (frame.width, frame.height);
    if let Some(n) = frame.format.expected_len(w, h)
        && frame.data.len() != n
    {
        return Err(format!(
            "{} bytes, expected {n} for a {w}x{h} {:?} frame",
            frame.data.len(),
            frame.format
        ));
    }
    Ok(match frame.format {
        PixelFormat::Rgb24 => (&frame.data[..], w, h),
        PixelFormat::Grey => {
            grey_to_rgb(&frame.data, w, h, rgb);
            (&rgb.data[..], w, h)
        }
        PixelFormat::Yuyv if w % 2 == 0 => {
            yuyv_to_rgb(&frame.data, w, h, rgb);
            (&rgb.data[..], w, h)
        }
        PixelFormat::Yuyv => return Err(format!("a YUYV frame of odd width {w}")),
        PixelFormat::Mjpeg => {
            *rgb = decode_image(&frame.data, &format!("frame {}", frame.seq))
                .map_err(|e| e.to_string())?;
            (&rgb.data[..], rgb.width, rgb.height)
        }
    })
}

/// Writes `bytes` to `path` atomically: to a hidden temporary file next to it, then renamed,
/// so a reader never sees half a JPEG. Creates the parent folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = parent.join(format!(".{}.tmp", name.unwrap_or_default()));
    let written = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// The snapshots under a camera's folder (`root/LABEL/*.jpg`), with their sizes and times (the
/// time in the name, else the file's modification time).
pub fn list(root: &Path) -> io::Result<Vec<retention::Stored<PathBuf>>> {
    let mut out = Vec::new();
    for label in std::fs::read_dir(root)? {
        let label = label?;
        if !label.file_type()?.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(label.path())? {
            let file = file?;
            let path = file.path();
            if path.extension().is_none_or(|e| e != "jpg") || !file.file_type()?.is_file() {
                continue;
            }
            let meta = file.metadata()?;
            let named = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(stem_time);
            let time = match named {
                Some(t) => t,
                None => meta.modified()?,
            };
            out.push(retention::Stored {
                id: path,
                bytes: meta.len(),
                time,
            });
        }
    }
    Ok(out)
}

/// Deletes the oldest snapshots under `root` until it holds `limits`; returns how many went.
pub fn enforce(root: &Path, limits: Limits) -> io::Result<usize> {
    let files = list(root)?;
    let plan = retention::plan(&files, limits);
    for &i in &plan {
        match std::fs::remove_file(&files[i].id) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(plan.len())
}

/// A snapshot for the writer: `frame` goes to `path`.
#[derive(Debug, Clone)]
pub struct Job {
    /// The label of the event.
    pub label: String,
    /// The file (`root/LABEL/STEM.jpg`).
    pub path: PathBuf,
    /// The chosen frame.
    pub frame: Arc<Frame>,
}

/// What became of a [`Job`].
#[derive(Debug)]
pub enum Outcome {
    /// The file is written (and the folder trimmed to its limits).
    Written {
        /// The label of the event.
        label: String,
        /// The file.
        path: PathBuf,
        /// The JPEG written, for the sinks.
        jpeg: Vec<u8>,
        /// Time spent encoding, in milliseconds (0 for a camera JPEG kept as it came).
        encode_ms: f32,
        /// Old snapshots deleted to keep the limits, or why they could not be.
        trimmed: Result<usize, String>,
    },
    /// The snapshot could not be written.
    Failed {
        /// The label of the event.
        label: String,
        /// Why.
        error: SnapshotError,
    },
}

/// Where and how a [`Writer`] writes.
#[derive(Debug, Clone)]
pub struct WriterSettings {
    /// The camera's folder (`DIR/CAMERA`).
    pub root: PathBuf,
    /// The retention limits of that folder.
    pub limits: Limits,
    /// JPEG quality of encoded frames.
    pub quality: u8,
}

/// The writer thread: encodes, writes and trims, one job at a time, from a bounded queue.
pub struct Writer {
    jobs: Option<SyncSender<Job>>,
    outcomes: Receiver<Outcome>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Checks that the folder is writable (creating it), removes temporary files a crash left
    /// behind, and starts the thread.
    pub fn start(settings: WriterSettings) -> Result<Writer, SnapshotError> {
        check_folder(&settings.root)?;
        remove_leftovers(&settings.root);
        let (jobs, rx) = mpsc::sync_channel::<Job>(QUEUE);
        let (tx, outcomes) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("edgeclip-snapshots".into())
            .spawn(move || {
                for job in rx {
                    if tx.send(write_one(&settings, job)).is_err() {
                        return;
                    }
                }
            })
            .map_err(SnapshotError::Thread)?;
        Ok(Writer {
            jobs: Some(jobs),
            outcomes,
            thread: Some(thread),
        })
    }

    /// Hands a job to the thread without waiting: `Err(Busy)` when the queue is full.
    pub fn submit(&self, job: Job) -> Result<(), SnapshotError> {
        let Some(jobs) = &self.jobs else {
            return Err(SnapshotError::Busy { path: job.path });
        };
        jobs.try_send(job).map_err(|e| match e {
            TrySendError::Full(job) | TrySendError::Disconnected(job) => {
                SnapshotError::Busy { path: job.path }
            }
        })
    }

    /// Hands a job to the thread, waiting for room in the queue (at shutdown, when nothing else
    /// waits on the caller).
    pub fn submit_waiting(&self, job: Job) -> Result<(), SnapshotError> {
        let Some(jobs) = &self.jobs else {
            return Err(SnapshotError::Busy { path: job.path });
        };
        jobs.send(job)
            .map_err(|e| SnapshotError::Busy { path: e.0.path })
    }

    /// The outcomes ready now.
    pub fn ready(&self) -> impl Iterator<Item = Outcome> + '_ {
        self.outcomes.try_iter()
    }

    /// Waits for every job handed over to be done and stops the thread; returns the outcomes
    /// not yet taken. Jobs handed over later are refused.
    pub fn finish(&mut self) -> Vec<Outcome> {
        self.stop();
        self.outcomes.try_iter().collect()
    }

    fn stop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            log::error!("the snapshot writer thread panicked");
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn write_one(settings: &WriterSettings, job: Job) -> Outcome {
    let started = Instant::now();
    let fail = |label, error| Outcome::Failed { label, error };
    let jpeg = match encode(&job.frame, settings.quality) {
        Ok(j) => j,
        Err(message) => {
            let error = SnapshotError::Encode {
                path: job.path,
                seq: job.frame.seq,
                message,
            };
            return fail(job.label, error);
        }
    };
    let encode_ms = started.elapsed().as_secs_f32() * 1e3;
    if let Err(source) = write_atomic(&job.path, &jpeg) {
        let error = SnapshotError::Write {
            path: job.path,
            source,
        };
        return fail(job.label, error);
    }
    let trimmed = enforce(&settings.root, settings.limits)
        .map_err(|e| format!("{}: {e}", settings.root.display()));
    Outcome::Written {
        label: job.label,
        path: job.path,
        jpeg,
        encode_ms,
        trimmed,
    }
}

/// Removes `root/LABEL/.*.tmp`: files of writes a crash interrupted.
fn remove_leftovers(root: &Path) {
    let Ok(labels) = std::fs::read_dir(root) else {
        return;
    };
    for label in labels.flatten() {
        let Ok(files) = std::fs::read_dir(label.path()) else {
            continue;
        };
        for f in files.flatten() {
            let name = f.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(".jpg.tmp") {
                let _ = std::fs::remove_file(f.path());
            }
        }
    }
}

#[cfg(test)]
mod tests;
