//! The daemon's side of the web page (`[http]`): the listener bound at start-up (a port in use
//! stops the start, naming `http.listen`), the server started with the run, and the hooks that
//! keep its live state: each frame's label scores (the trigger's metric) and, at most every
//! [`crate::http::live::FRAME_EVERY`], a copy of the frame; the run's totals about once a
//! second; the events through a sink ([`LiveSink`]), so every event the other sinks get, the
//! page gets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Daemon, DaemonError, Summary};
use crate::config::{Config, ScoreKind};
use crate::event::Event;
use crate::frame::Frame;
use crate::http::metrics::Totals;
use crate::http::{AppState, EventItem, LabelInfo, Live, Running, Server, TuneSettings};
use crate::sink::{EventSink, SinkError};
use crate::trigger::LabelScore;

/// How often the run's totals are handed to `/metrics`.
const TOTALS_EVERY: Duration = Duration::from_secs(1);

/// The web page's state in a running daemon.
pub(super) struct Web {
    /// Bound at start-up, taken when the run starts serving.
    server: Option<Server>,
    running: Option<Running>,
    live: Arc<Live>,
    last_totals: Option<Instant>,
}

impl Web {
    /// Binds `http.listen` when `[http]` is on.
    pub(super) fn open(config: &Config) -> Result<Option<Web>, DaemonError> {
        if !config.http.enabled {
            return Ok(None);
        }
        let server = Server::bind(&config.http)?;
        let metric = match config.matcher.score {
            ScoreKind::Prob => "prob",
            ScoreKind::Cosine => "cosine",
        };
        Ok(Some(Web {
            server: Some(server),
            running: None,
            live: Arc::new(Live::new(&config.camera().name, metric, Vec::new())),
            last_totals: None,
        }))
    }
}

impl Daemon {
    /// The labels as the Live page shows them, from the pipeline's trigger settings.
    fn live_labels(&self) -> Vec<LabelInfo> {
        self.config
            .prompts
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let t = self.pipeline.trigger_params(i)?;
                Some(LabelInfo {
                    label: p.label.clone(),
                    threshold: t.threshold,
                    enter_frames: t.enter_frames,
                    exit_frames: t.exit_frames,
                    active: false,
                })
            })
            .collect()
    }

    /// Starts serving (when `[http]` is on) and adds the page's event sink to `sinks`.
    pub(super) fn start_web(
        &mut self,
        sinks: &mut Vec<Box<dyn EventSink>>,
    ) -> Result<(), DaemonError> {
        let labels = self.live_labels();
        let Some(web) = &mut self.web else {
            return Ok(());
        };
        let Some(server) = web.server.take() else {
            return Ok(());
        };
        web.live.set_labels(labels);
        let c = &self.config;
        let sample_s = f64::from(c.store.sample_s);
        let state = AppState {
            live: web.live.clone(),
            token: c.http.token.as_ref().map(|t| t.expose().to_owned()),
            store: c.store.enabled.then(|| c.store.file()).flatten(),
            snapshots: c
                .snapshots
                .enabled
                .then(|| crate::snapshot::folder(&c.snapshots).ok())
                .flatten(),
            bundle: self.pipeline.bundle().dir().to_owned(),
            embedder: std::sync::Mutex::new(None),
            search: crate::search::search,
            gap_ms: (sample_s.max(0.0) * 3000.0).max(1000.0) as i64,
            tune: TuneSettings {
                enter_frames: c.trigger.enter_frames,
                fps: if sample_s > 0.0 { 1.0 / sample_s } else { 15.0 },
                false_alarms_per_day: 1.0,
                prob_metric: c.matcher.score == ScoreKind::Prob,
            },
        };
        web.running = Some(server.start(state)?);
        sinks.push(Box::new(LiveSink(web.live.clone())));
        Ok(())
    }

    /// The Live page's labels after a reload.
    pub(super) fn reload_web(&mut self) {
        let labels = self.live_labels();
        if let Some(web) = &self.web {
            web.live.set_labels(labels);
        }
    }

    /// One processed frame: its scores (the trigger's metric, in label order) and its latency;
    /// a copy of the frame when the page's one is due.
    pub(super) fn web_step(&mut self, frame: &Frame, latency_ms: f32, scores: &[LabelScore]) {
        let Some(web) = &self.web else {
            return;
        };
        let prob = self.config.matcher.score == ScoreKind::Prob;
        let mut values = vec![f32::NAN; self.config.prompts.len()];
        for s in scores {
            if let Some(v) = values.get_mut(s.label) {
                *v = if prob { s.prob } else { s.score };
            }
        }
        web.live.frame(frame.captured_wall, &values);
        web.live.metrics.frame(latency_ms);
        if web.live.wants_frame(frame.captured_wall) {
            web.live.put_frame(frame.clone());
        }
    }

    /// Whether the run's totals are due for `/metrics` (about once a second).
    pub(super) fn web_totals_due(&mut self, now: Instant) -> bool {
        let Some(web) = &mut self.web else {
            return false;
        };
        let due = web
            .last_totals
            .is_none_or(|t| now.duration_since(t) >= TOTALS_EVERY);
        if due {
            web.last_totals = Some(now);
        }
        due
    }

    /// The run's totals for `/metrics` (the store's drops from its writer), and the events the
    /// sinks hold undelivered (`queued`).
    pub(super) fn web_totals(&self, summary: &Summary, queued: u64) {
        if let Some(web) = &self.web {
            web.live.metrics.totals(Totals {
                captured: summary.captured,
                dropped: summary.dropped,
                bad_frames: summary.bad_frames,
                events_dropped: summary.events_dropped,
                store_dropped: self.store_stats().dropped,
                events_queued: queued,
            });
        }
    }

    /// Stops the server (at the end of the run).
    pub(super) fn stop_web(&mut self) {
        if let Some(running) = self.web.as_mut().and_then(|w| w.running.take()) {
            running.stop();
        }
    }
}

/// The page's sink: every published event goes to the live state and `/metrics`.
struct LiveSink(Arc<Live>);

impl EventSink for LiveSink {
    fn name(&self) -> &str {
        "http"
    }

    fn publish(&mut self, e: &Event) -> Result<(), SinkError> {
        let metric_is_prob = self.0.view_metric() == "prob";
        self.0.metrics.event(&e.label, e.kind.as_str());
        self.0.event(EventItem {
            ts_ms: crate::store::millis(e.ts),
            camera: e.camera.clone(),
            label: e.label.clone(),
            kind: e.kind.as_str().into(),
            score: Some(if metric_is_prob { e.prob } else { e.score }),
            snapshot: e.snapshot.as_ref().map(|p| p.display().to_string()),
        });
        Ok(())
    }
}
