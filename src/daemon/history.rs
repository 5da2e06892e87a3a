//! The daemon's side of the store: the hook between the frame loop and the store's writer.
//!
//! Per frame, after the snapshot hook (so that start events carry their snapshot's path): the
//! frame's embedding is offered to the [`Sampler`] and, when kept, quantized and queued with the
//! frame's time and number; the frame's events are queued too. Queueing never waits: a full
//! queue drops the record, counted and logged at most once a minute.

use std::time::{Duration, Instant, SystemTime};

use log::{info, warn};

use super::{Daemon, DaemonError};
use crate::config::Config;
use crate::event::Event;
use crate::store::sample::{Sampler, quantize};
use crate::store::{EventRecord, FrameRecord, Limits, Record, Store, Writer, WriterCounts, millis};

/// How often drops are logged at most.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The store state of a running daemon.
pub(super) struct History {
    camera: String,
    sampler: Sampler,
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
            "store: {} (a frame every {} s or on a change over {}, {} days, at most {} MB)",
            path.display(),
            s.sample_s,
            s.change,
            s.retention_days,
            s.max_mb
        );
        Ok(Some(History {
            camera: config.camera.name.clone(),
            sampler: Sampler::new(s.sample(), s.change),
            writer,
            last_warning: None,
        }))
    }

    fn step(&mut self, frame: Option<(u64, SystemTime, Duration, &[f32])>, events: &[Event]) {
        if let Some((seq, wall, now, embedding)) = frame
            && self.sampler.offer(now, embedding)
        {
            let (values, scale) = quantize(embedding);
            self.writer.submit(Record::Frame(FrameRecord {
                ts_ms: millis(wall),
                camera: self.camera.clone(),
                frame: seq,
                embedding: values,
                scale,
            }));
        }
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
    /// The store's part of one frame (`frame`: its number, wall time and time since the start;
    /// the embedding is the pipeline's last; `None` for the end events of a reload, an offline
    /// camera or a shutdown): samples the frame, queues the events.
    pub(super) fn history_step(
        &mut self,
        frame: Option<(u64, SystemTime, Duration)>,
        events: &[Event],
    ) {
        if let Some(h) = &mut self.history {
            let embedding = self.pipeline.embedding();
            h.step(frame.map(|(s, w, n)| (s, w, n, embedding)), events);
        }
    }

    /// Store records dropped so far because the writer was busy (0 when the store is off).
    pub(super) fn history_dropped(&self) -> u64 {
        self.history
            .as_ref()
            .map_or(0, |h| h.writer.counts().dropped)
    }

    /// At shutdown: writes what is queued and logs the counts.
    pub(super) fn finish_history(&mut self) {
        if let Some(h) = self.history.take() {
            let WriterCounts {
                written,
                dropped,
                failed,
                trimmed,
            } = h.writer.finish();
            info!(
                "store: {written} records written, {dropped} dropped (writer busy), {failed} \
                 failed, {trimmed} old frames deleted"
            );
        }
    }
}
