//! The daemon's side of snapshots: the hook between the frame loop and the snapshot writer.
//!
//! Per frame, after the trigger bank: windows past `snapshots.window_s` close, a label that
//! ended closes its window, a label that started opens one (its start event gets the
//! snapshot's path, which the end event repeats), and the frame is offered to the windows
//! still open. The frame is moved into an `Arc` only when it beats a window's best so far: frames are
//! never copied, and at most one per open window is held. A closed window becomes a job for the
//! writer thread ([`crate::snapshot::Writer`]); its outcomes come back here, are counted and
//! logged (problems at most once a minute, with a count of the ones not logged), and written
//! snapshots are handed to the sinks on the loop's thread.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::{Daemon, DaemonError};
use crate::config::{Config, ScoreKind};
use crate::event::{Event, EventKind, Snapshot};
use crate::frame::Frame;
use crate::sink::EventSink;
use crate::snapshot::{
    Chosen, Job, Limits, Outcome, Selector, SnapshotError, Writer, WriterSettings,
};
use crate::trigger::LabelScore;

/// How often snapshot problems are logged at most.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// What the snapshots of a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotCounts {
    /// Snapshot files written.
    pub written: u64,
    /// Snapshots that could not be encoded or written (disk full, folder gone, ...).
    pub failed: u64,
    /// Snapshots dropped because the writer was busy with earlier ones.
    pub dropped: u64,
    /// Frames kept as the best of a window so far (moved, not copied).
    pub kept_frames: u64,
}

/// The event a window is open for.
#[derive(Debug, Clone)]
struct Pending {
    label: String,
    path: PathBuf,
}

/// The snapshot state of a running daemon.
pub(super) struct Snapshots {
    /// The camera's folder: `snapshots.dir/CAMERA`.
    root: PathBuf,
    camera: String,
    selector: Selector<Pending, Arc<Frame>>,
    writer: Writer,
    /// The snapshot of each active label's event, with the label's index when it started, for
    /// its end event.
    current: HashMap<String, (usize, PathBuf)>,
    counts: SnapshotCounts,
    last_warning: Option<Instant>,
    unlogged: u64,
}

impl Snapshots {
    /// The snapshots `config` asks for: `None` when they are off; an error naming the folder
    /// when it cannot be created or written.
    pub(super) fn open(config: &Config) -> Result<Option<Snapshots>, DaemonError> {
        let s = &config.snapshots;
        if !s.enabled {
            return Ok(None);
        }
        let root = crate::snapshot::folder(s)?.join(&config.camera.name);
        let writer = Writer::start(WriterSettings {
            root: root.clone(),
            limits: Limits {
                max_count: usize::try_from(s.max_count).unwrap_or(usize::MAX),
                max_bytes: s.max_bytes(),
            },
            quality: s.jpeg_quality,
        })?;
        info!(
            "snapshots: {} (best frame of the first {:.1} s of each start; at most {} files, {} MB)",
            root.display(),
            s.window_s,
            s.max_count,
            s.max_mb
        );
        Ok(Some(Snapshots {
            root,
            camera: config.camera.name.clone(),
            selector: Selector::new(s.window()),
            writer,
            current: HashMap::new(),
            counts: SnapshotCounts::default(),
            last_warning: None,
            unlogged: 0,
        }))
    }

    /// Applies one frame's events (`frame` is `None` for the end events of a reload or a
    /// shutdown) and offers the frame to the open windows.
    fn step(
        &mut self,
        frame: Option<Frame>,
        now: Duration,
        scores: &[LabelScore],
        events: &mut [Event],
        config: &Config,
    ) {
        for c in self.selector.expire(now) {
            self.submit(c, false);
        }
        for e in events.iter_mut() {
            match e.kind {
                EventKind::End => {
                    let Some((label, path)) = self.current.remove(&e.label) else {
                        continue;
                    };
                    e.snapshot = Some(path);
                    if let Some(c) = self.selector.close(label) {
                        self.submit(c, false);
                    }
                }
                EventKind::Start => {
                    let Some(label) = config.prompt_index(&e.label) else {
                        continue;
                    };
                    let path = crate::snapshot::path_for(&self.root, &e.label, e.ts);
                    let pending = Pending {
                        label: e.label.clone(),
                        path: path.clone(),
                    };
                    if let Some(c) = self.selector.open(label, pending, now) {
                        self.submit(c, false);
                    }
                    self.current.insert(e.label.clone(), (label, path.clone()));
                    e.snapshot = Some(path);
                }
            }
        }
        let Some(frame) = frame else { return };
        if self.selector.is_empty() {
            return;
        }
        let value = |label: usize| {
            scores
                .iter()
                .find(|s| s.label == label)
                .map_or(f32::NAN, |s| match config.matcher.score {
                    ScoreKind::Prob => s.prob,
                    ScoreKind::Cosine => s.score,
                })
        };
        if self.selector.offer(now, value, move || Arc::new(frame)) > 0 {
            self.counts.kept_frames += 1;
        }
    }

    fn submit(&mut self, c: Chosen<Pending, Arc<Frame>>, wait: bool) {
        let job = Job {
            label: c.key.label,
            path: c.key.path,
            frame: c.frame,
        };
        let handed = if wait {
            self.writer.submit_waiting(job)
        } else {
            self.writer.submit(job)
        };
        if let Err(e) = handed {
            self.counts.dropped += 1;
            self.warn(&e);
        }
    }

    /// Hands the snapshots written since the last call to the sinks.
    fn deliver(&mut self, sinks: &mut [Box<dyn EventSink>]) {
        let outcomes: Vec<Outcome> = self.writer.ready().collect();
        self.apply(outcomes, sinks);
    }

    fn apply(&mut self, outcomes: Vec<Outcome>, sinks: &mut [Box<dyn EventSink>]) {
        for outcome in outcomes {
            match outcome {
                Outcome::Written {
                    label,
                    path,
                    jpeg,
                    encode_ms,
                    trimmed,
                } => {
                    self.counts.written += 1;
                    debug!(
                        "snapshot {} written ({} bytes, encoded in {encode_ms:.1} ms)",
                        path.display(),
                        jpeg.len()
                    );
                    match trimmed {
                        Ok(0) => {}
                        Ok(n) => debug!("snapshots: {n} old files deleted"),
                        Err(e) => warn!("snapshots: old files not deleted: {e}"),
                    }
                    let snapshot = Snapshot {
                        camera: self.camera.clone(),
                        label,
                        path,
                        jpeg,
                    };
                    for s in sinks.iter_mut() {
                        if let Err(e) = s.publish_snapshot(&snapshot) {
                            warn!("{}: snapshot not accepted: {e}", s.name());
                        }
                    }
                }
                Outcome::Failed { error, .. } => {
                    self.counts.failed += 1;
                    self.warn(&error);
                }
            }
        }
    }

    /// Logs a snapshot problem, at most once per [`WARN_EVERY`].
    fn warn(&mut self, error: &SnapshotError) {
        let now = Instant::now();
        if self
            .last_warning
            .is_some_and(|t| now.duration_since(t) < WARN_EVERY)
        {
            self.unlogged += 1;
            return;
        }
        let also = match std::mem::take(&mut self.unlogged) {
            0 => String::new(),
            n => format!(" ({n} more snapshot problems since the last warning)"),
        };
        warn!("{error}{also}; detection goes on");
        self.last_warning = Some(now);
    }

    /// Closes every window, waits for the writer and hands the last snapshots to the sinks.
    fn finish(&mut self, sinks: &mut [Box<dyn EventSink>]) -> SnapshotCounts {
        for c in self.selector.close_all() {
            self.submit(c, true);
        }
        let outcomes = self.writer.finish();
        self.apply(outcomes, sinks);
        let unlogged = std::mem::take(&mut self.unlogged);
        if unlogged > 0 {
            warn!("snapshots: {unlogged} more problems since the last warning");
        }
        let c = self.counts;
        info!(
            "snapshots: {} written, {} failed, {} dropped (writer busy), in {}; {} frames kept \
             as a window's best (moved, none copied)",
            c.written,
            c.failed,
            c.dropped,
            self.root.display(),
            c.kept_frames
        );
        c
    }
}

impl Daemon {
    /// Snapshots' part of one frame (`None`: the end events of a reload or a shutdown): fills
    /// the `snapshot` field of `events`, opens and closes windows, offers the frame.
    pub(super) fn snapshot_step(
        &mut self,
        frame: Option<Frame>,
        now: Duration,
        scores: &[LabelScore],
        events: &mut [Event],
    ) {
        if let Some(s) = &mut self.snapshots {
            s.step(frame, now, scores, events, &self.config);
        }
    }

    /// Hands the snapshots written since the last call to the sinks.
    pub(super) fn deliver_snapshots(&mut self, sinks: &mut [Box<dyn EventSink>]) {
        if let Some(s) = &mut self.snapshots {
            s.deliver(sinks);
        }
    }

    /// At shutdown, after the last end events: writes what the open windows hold, waits for
    /// the writer and hands the last snapshots to the sinks.
    pub(super) fn finish_snapshots(&mut self, sinks: &mut [Box<dyn EventSink>]) -> SnapshotCounts {
        self.snapshots
            .as_mut()
            .map_or_else(SnapshotCounts::default, |s| s.finish(sinks))
    }
}
