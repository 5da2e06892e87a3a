//! The daemon's side of the store: the hook between the frame loop and the store's writer.
//!
//! Per frame, [`Daemon::history_frame`]
//! offers the frame's embedding to the [`Sampler`] and, when kept, queues it quantized with the
//! frame's time and number; when the [`ThumbnailPolicy`] says so (the first frame, an event
//! start, a changed scene, a still one every `thumbnail_s`), a copy of the frame goes to the
//! writer thread, which makes the thumbnail (the frame loop neither decodes nor encodes). After
//! the snapshot hook (so that start events carry their snapshot's path),
//! [`Daemon::history_events`] queues the frame's events. Queueing never waits: a full queue
//! drops the record, counted and logged at most once a minute.

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};

use super::{Daemon, DaemonError};
use crate::config::Config;
use crate::event::{Event, EventKind, StoreStats};
use crate::frame::Frame;
use crate::store::sample::ThumbnailPolicy;
use crate::store::sample::{Sampler, quantize};
use crate::store::{EventRecord, FrameRecord, Limits, Record, Store, Writer, WriterCounts, millis};
use crate::trigger::FrameStamp;

/// How often drops are logged at most.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// What the store keeps apart for each camera: which of its frames are sampled and get a
/// thumbnail.
struct CameraHistory {
    camera: String,
    sampler: Sampler,
    thumbnails: ThumbnailPolicy,
}

/// The store state of a running daemon: one writer, and each camera's sampling.
pub(super) struct History {
    cameras: Vec<CameraHistory>,
    writer: Writer,
    last_warning: Option<(Instant, u64)>,
}

impl History {
    /// The store `config` asks for: `None` when it is off; an error naming the file when it
    /// cannot be opened or created.
    pub(super) fn open(config: &Config) -> Result<Option<History>, DaemonError> {
        let s = &config.store;
        if !s.enabled {
            return Ok(None);
        }
        let path = s.file().ok_or_else(|| {
            DaemonError::Store(crate::store::StoreError::Io {
                path: "store.path".into(),
                source: std::io::Error::other(
                    "not set, and no state folder ($STATE_DIRECTORY, $XDG_DATA_HOME or $HOME)",
                ),
            })
        })?;
        let (store, _aside) = Store::open(&path)?;
        let limits = Limits {
            retention_days: s.retention_days,
            max_bytes: s.max_bytes(),
        };
        let writer = Writer::start(store, s.queue as usize, limits)?;
        info!(
            "store: {} (a frame every {} s or on a change over {}, a thumbnail at least every {} \
             s, {} days, at most {} MB)",
            path.display(),
            s.sample_s,
            s.change,
            s.thumbnail_s,
            s.retention_days,
            s.max_mb
        );
        Ok(Some(History {
            cameras: config
                .cameras
                .iter()
                .map(|c| CameraHistory {
                    camera: c.name.clone(),
                    sampler: Sampler::new(s.sample(), s.change),
                    thumbnails: ThumbnailPolicy::new(s.thumbnails()),
                })
                .collect(),
            writer,
            last_warning: None,
        }))
    }

    fn frame(
        &mut self,
        camera: usize,
        frame: &Arc<Frame>,
        stamp: FrameStamp,
        embedding: &[f32],
        starts: bool,
    ) {
        let Some(c) = self.cameras.get_mut(camera) else {
            return;
        };
        let kept = c.sampler.offer_why(stamp.now, embedding);
        let ts_ms = millis(stamp.wall);
        if kept.is_some() {
            let (values, scale) = quantize(embedding);
            self.writer.submit(Record::Frame(FrameRecord {
                ts_ms,
                camera: c.camera.clone(),
                frame: stamp.seq,
                embedding: values,
                scale,
            }));
        }
        if c.thumbnails.due(stamp.now, kept, starts) {
            self.writer.thumbnail(ts_ms, &c.camera, Arc::clone(frame));
        }
    }

    fn events(&mut self, events: &[Event]) {
        for e in events {
            self.writer.submit(Record::Event(EventRecord {
                ts_ms: millis(e.ts),
                camera: e.camera.clone(),
                label: e.label.clone(),
                kind: e.kind.as_str().into(),
                snapshot: e.snapshot.as_ref().map(|p| p.display().to_string()),
                json: e.to_json(),
            }));
        }
        let dropped = self.writer.counts().dropped;
        let logged = self.last_warning.map_or(0, |w| w.1);
        if dropped > logged
            && self
                .last_warning
                .is_none_or(|w| w.0.elapsed() >= WARN_EVERY)
        {
            warn!(
                "store: {} records dropped (writer busy) since the last warning; detection goes on",
                dropped - logged
            );
            self.last_warning = Some((Instant::now(), dropped));
        }
    }
}

impl Daemon {
    /// The store's part of one frame of camera `camera`: samples the frame (the embedding is
    /// the pipeline's last of that camera's first zone) and hands the frame over for a
    /// thumbnail when one is due (`events`: the frame's events; a start makes a thumbnail due).
    pub(super) fn history_frame(
        &mut self,
        camera: usize,
        frame: &Arc<Frame>,
        stamp: FrameStamp,
        events: &[Event],
    ) {
        if let Some(h) = &mut self.history {
            let starts = events.iter().any(|e| e.kind == EventKind::Start);
            h.frame(
                camera,
                frame,
                stamp,
                self.pipeline.camera_embedding(camera),
                starts,
            );
        }
    }

    /// Queues `events` (a frame's, after the snapshot hook gave them their paths; or the end
    /// events of a reload, an offline camera or a shutdown).
    pub(super) fn history_events(&mut self, events: &[Event]) {
        if let Some(h) = &mut self.history {
            h.events(events);
        }
    }

    /// The store's state and counts for the stats (state `off` and zeros when it is off).
    pub(super) fn store_stats(&self) -> StoreStats {
        let Some(h) = &self.history else {
            return StoreStats::default();
        };
        let c = h.writer.counts();
        StoreStats {
            state: h.writer.state(),
            frames: c.frames,
            dropped: c.dropped,
            failed: c.failed,
            bytes: c.bytes,
        }
    }

    /// At shutdown: writes what is queued, logs the counts and returns the store's stats.
    pub(super) fn finish_history(&mut self) -> StoreStats {
        let Some(h) = self.history.take() else {
            return StoreStats::default();
        };
        let state = h.writer.state();
        let WriterCounts {
            written,
            frames,
            dropped,
            failed,
            trimmed,
            thumbnails,
            bytes,
        } = h.writer.finish();
        info!(
            "store: {written} records written ({frames} frames, {thumbnails} thumbnails), \
             {dropped} dropped (writer busy), {failed} failed, {trimmed} old frames deleted; \
             {:.1} MB, {state}",
            bytes as f64 / 1e6
        );
        StoreStats {
            state,
            frames,
            dropped,
            failed,
            bytes,
        }
    }
}
