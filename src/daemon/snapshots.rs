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
use crate::config::{ALL_ZONE, Config, ScoreKind};
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
    /// The folder under the camera's: [`folder_name`].
    folder: String,
    path: PathBuf,
}

/// The folder of a label's snapshots under its camera's: `LABEL` for the whole frame,
/// `LABEL@ZONE` for a zone (labels and zones cannot hold `@`, so it splits back unambiguously).
fn folder_name(zone: &str, label: &str) -> String {
    if zone == ALL_ZONE {
        label.to_owned()
    } else {
        format!("{label}@{zone}")
    }
}

/// The zone and label of a [`folder_name`].
fn split_folder(folder: &str) -> (String, String) {
    match folder.split_once('@') {
        Some((label, zone)) => (zone.to_owned(), label.to_owned()),
        None => (ALL_ZONE.to_owned(), folder.to_owned()),
    }
}

/// The snapshot state of one camera of a running daemon.
pub(super) struct Snapshots {
    /// The camera's folder: `snapshots.dir/CAMERA`.
    root: PathBuf,
    camera: String,
    /// The camera's labels (its prompts, in order) and zones: a window is keyed by
    /// `zone * labels.len() + label`.
    labels: Vec<String>,
    zones: Vec<String>,
    metric: ScoreKind,
    selector: Selector<Pending, Arc<Frame>>,
    writer: Writer,
    /// The snapshot of each active (zone, label)'s event, with its window key, for its end
    /// event.
    current: HashMap<(String, String), (usize, PathBuf)>,
    counts: SnapshotCounts,
    last_warning: Option<Instant>,
    unlogged: u64,
}

impl Snapshots {
    /// The snapshots of the camera of `config` (a [`Config::for_camera`] view): `None` when
    /// they are off; an error naming the folder when it cannot be created or written.
    pub(super) fn open(config: &Config) -> Result<Option<Snapshots>, DaemonError> {
        let s = &config.snapshots;
        if !s.enabled {
            return Ok(None);
        }
        let root = crate::snapshot::folder(s)?.join(&config.camera().name);
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
            camera: config.camera().name.clone(),
            labels: config.prompts.iter().map(|p| p.label.clone()).collect(),
            zones: config
                .camera()
                .zone_list()
                .into_iter()
                .map(|z| z.0)
                .collect(),
            metric: config.matcher.score,
            selector: Selector::new(s.window()),
            writer,
            current: HashMap::new(),
            counts: SnapshotCounts::default(),
            last_warning: None,
            unlogged: 0,
        }))
    }

    /// After a reload (its end events already through [`Snapshots::step`], so no window is
    /// open): the camera's labels and zones as `config` (a [`Config::for_camera`] view) has them
    /// now.
    pub(super) fn relabel(&mut self, config: &Config) {
        self.labels = config.prompts.iter().map(|p| p.label.clone()).collect();
        self.zones = config
            .camera()
            .zone_list()
            .into_iter()
            .map(|z| z.0)
            .collect();
        self.metric = config.matcher.score;
    }

    /// The window key of `label` in `zone`, if both are this camera's.
    fn key(&self, zone: &str, label: &str) -> Option<usize> {
        let z = self.zones.iter().position(|n| n == zone)?;
        let l = self.labels.iter().position(|n| n == label)?;
        Some(z * self.labels.len() + l)
    }

    /// Applies one frame's events (`frame` is `None` for the end events of a reload or a
    /// shutdown) and offers the frame to the open windows. `scores[z]` are zone `z`'s label
    /// scores (labelled with the label's position in the camera's prompts).
    fn step(
        &mut self,
        frame: Option<&Arc<Frame>>,
        now: Duration,
        scores: &[Vec<LabelScore>],
        events: &mut [Event],
    ) {
        for c in self.selector.expire(now) {
            self.submit(c, false);
        }
        for e in events.iter_mut() {
            if e.camera != self.camera {
                continue;
            }
            let place = (e.zone.clone(), e.label.clone());
            match e.kind {
                EventKind::End => {
                    let Some((key, path)) = self.current.remove(&place) else {
                        continue;
                    };
                    e.snapshot = Some(path);
                    if let Some(c) = self.selector.close(key) {
                        self.submit(c, false);
                    }
                }
                EventKind::Start => {
                    let Some(key) = self.key(&e.zone, &e.label) else {
                        continue;
                    };
                    let folder = folder_name(&e.zone, &e.label);
                    let path = crate::snapshot::path_for(&self.root, &folder, e.ts);
                    let pending = Pending {
                        folder,
                        path: path.clone(),
                    };
                    if let Some(c) = self.selector.open(key, pending, now) {
                        self.submit(c, false);
                    }
                    self.current.insert(place, (key, path.clone()));
                    e.snapshot = Some(path);
                }
            }
        }
        let Some(frame) = frame else { return };
        if self.selector.is_empty() {
            return;
        }
        let n = self.labels.len().max(1);
        let metric = self.metric;
        let value = |key: usize| {
            scores
                .get(key / n)
                .and_then(|zone| zone.iter().find(|s| s.label == key % n))
                .map_or(f32::NAN, |s| match metric {
                    ScoreKind::Prob => s.prob,
                    ScoreKind::Cosine => s.score,
                })
        };
        if self.selector.offer(now, value, || Arc::clone(frame)) > 0 {
            self.counts.kept_frames += 1;
        }
    }

    fn submit(&mut self, c: Chosen<Pending, Arc<Frame>>, wait: bool) {
        let job = Job {
            label: c.key.folder,
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
                    label: folder,
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
                    let (zone, label) = split_folder(&folder);
                    let snapshot = Snapshot {
                        camera: self.camera.clone(),
                        zone,
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
    /// Snapshots' part of one frame of camera `camera` (`None`: the end events of a reload, an
    /// offline camera or a shutdown): fills the `snapshot` field of `events`, opens and closes
    /// windows, offers the frame. `scores[z]`: zone `z`'s label scores.
    pub(super) fn snapshot_step(
        &mut self,
        camera: usize,
        frame: Option<&Arc<Frame>>,
        now: Duration,
        scores: &[Vec<LabelScore>],
        events: &mut [Event],
    ) {
        if let Some(s) = self.snapshots.get_mut(camera) {
            s.step(frame, now, scores, events);
        }
    }

    /// The end events of a reload or a shutdown (of any camera) through every camera's
    /// snapshots: each end event gets its start's snapshot path.
    pub(super) fn snapshot_ends(&mut self, now: Duration, events: &mut [Event]) {
        for s in &mut self.snapshots {
            s.step(None, now, &[], events);
        }
    }

    /// After a reload: each camera's snapshots learn its labels as they are now.
    pub(super) fn relabel_snapshots(&mut self) {
        for (i, s) in self.snapshots.iter_mut().enumerate() {
            s.relabel(&self.config.for_camera(i));
        }
    }

    /// Hands the snapshots written since the last call to the sinks.
    pub(super) fn deliver_snapshots(&mut self, sinks: &mut [Box<dyn EventSink>]) {
        for s in &mut self.snapshots {
            s.deliver(sinks);
        }
    }

    /// At shutdown, after the last end events: writes what the open windows hold, waits for
    /// the writers and hands the last snapshots to the sinks.
    pub(super) fn finish_snapshots(&mut self, sinks: &mut [Box<dyn EventSink>]) -> SnapshotCounts {
        let mut total = SnapshotCounts::default();
        for s in &mut self.snapshots {
            let c = s.finish(sinks);
            total.written += c.written;
            total.failed += c.failed;
            total.dropped += c.dropped;
            total.kept_frames += c.kept_frames;
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zone_folder_splits_back_into_its_zone_and_label() {
        assert_eq!(folder_name("all", "person"), "person");
        assert_eq!(folder_name("gate", "person"), "person@gate");
        assert_eq!(
            split_folder("person"),
            ("all".to_owned(), "person".to_owned())
        );
        assert_eq!(
            split_folder("person@gate"),
            ("gate".to_owned(), "person".to_owned())
        );
    }
}
