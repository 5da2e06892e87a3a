//! What the web page shows live, shared between the daemon's frame loop (which writes it) and
//! the server (which reads it): each label's score over the last minutes with its trigger
//! settings and state, the recent events, a copy of the latest frame, and the counters behind
//! `/metrics`.
//!
//! Memory is bounded: at most [`POINTS_PER_S`] score points a second are kept, for [`WINDOW`];
//! at most [`RECENT_EVENTS`] events; one frame, copied at most every [`FRAME_EVERY`] (the JPEG
//! is encoded only when the page asks for it, and at most once per copied frame). The loop's
//! side takes one short lock per frame and does no encoding.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::metrics::Metrics;
use crate::frame::Frame;

/// How far back the score series goes.
pub const WINDOW: Duration = Duration::from_secs(300);
/// Score points kept per second at most (faster frames are skipped in the series).
pub const POINTS_PER_S: u32 = 5;
/// Events kept in memory for the Events page when the store is off.
pub const RECENT_EVENTS: usize = 200;
/// A frame is copied for the page at most this often.
pub const FRAME_EVERY: Duration = Duration::from_millis(500);

/// A label as the Live page shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LabelInfo {
    /// The label.
    pub label: String,
    /// The trigger's threshold (on the metric's scale).
    pub threshold: f32,
    /// Frames at or above the threshold to start.
    pub enter_frames: u32,
    /// Frames below it to end.
    pub exit_frames: u32,
    /// Between a start and its end.
    pub active: bool,
}

/// One event as the page lists it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EventItem {
    /// Milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// The camera.
    pub camera: String,
    /// The label.
    pub label: String,
    /// `start` or `end`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The trigger's metric at the event, when known.
    pub score: Option<f32>,
    /// The snapshot file, when one was written.
    pub snapshot: Option<String>,
}

/// The latest frame copied for the page, and its JPEG once encoded.
#[derive(Debug, Default)]
pub struct LatestFrame {
    /// The frame (a copy).
    pub frame: Option<Arc<Frame>>,
    /// The JPEG of `frame`, with its sequence number, once asked for.
    pub jpeg: Option<(u64, Arc<Vec<u8>>)>,
}

#[derive(Debug, Default)]
struct Inner {
    camera: String,
    metric: &'static str,
    labels: Vec<LabelInfo>,
    /// (ms since the epoch, one value per label), oldest first.
    series: VecDeque<(i64, Vec<f32>)>,
    events: VecDeque<EventItem>,
    frames: u64,
    last_frame_copy: Option<SystemTime>,
}

/// The live state (see the module docs).
#[derive(Debug)]
pub struct Live {
    inner: Mutex<Inner>,
    frame: Mutex<LatestFrame>,
    /// The counters and gauges behind `/metrics`.
    pub metrics: Metrics,
}

/// The Live page's data.
#[derive(Debug, Serialize)]
pub struct LiveView {
    /// The camera.
    pub camera: String,
    /// The metric the thresholds apply to (`prob` or `cosine`).
    pub metric: &'static str,
    /// The labels, in config order.
    pub labels: Vec<LabelInfo>,
    /// Times of the points (ms since the epoch), oldest first.
    pub t: Vec<i64>,
    /// Per label, its values at those times.
    pub scores: Vec<Vec<f32>>,
    /// Frames processed since the start.
    pub frames: u64,
    /// The sequence number of the latest copied frame, when there is one.
    pub frame: Option<u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding it leaves plain data behind: still readable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Live {
    /// The state for `camera`, whose thresholds are on `metric` (`prob` or `cosine`).
    pub fn new(camera: &str, metric: &'static str, labels: Vec<LabelInfo>) -> Live {
        Live {
            inner: Mutex::new(Inner {
                camera: camera.into(),
                metric,
                labels,
                ..Inner::default()
            }),
            frame: Mutex::new(LatestFrame::default()),
            metrics: Metrics::new(),
        }
    }

    /// New labels after a reload: the series starts over (its columns were the old labels').
    pub fn set_labels(&self, labels: Vec<LabelInfo>) {
        let mut i = lock(&self.inner);
        i.labels = labels;
        i.series.clear();
    }

    /// One processed frame: `values` (one per label, the trigger's metric) at `wall`.
    pub fn frame(&self, wall: SystemTime, values: &[f32]) {
        let ts = crate::store::millis(wall);
        let mut i = lock(&self.inner);
        i.frames += 1;
        let min_gap = 1000 / i64::from(POINTS_PER_S);
        if i.series
            .back()
            .is_none_or(|b| ts - b.0 >= min_gap || ts < b.0)
        {
            i.series.push_back((ts, values.to_vec()));
        }
        let oldest = ts - WINDOW.as_millis() as i64;
        while i.series.front().is_some_and(|f| f.0 < oldest) {
            i.series.pop_front();
        }
    }

    /// Whether the frame captured at `wall` should be copied for the page
    /// ([`Live::put_frame`]): the first one, then one every [`FRAME_EVERY`].
    pub fn wants_frame(&self, wall: SystemTime) -> bool {
        let mut i = lock(&self.inner);
        let due = i
            .last_frame_copy
            .is_none_or(|t| wall.duration_since(t).map_or(true, |d| d >= FRAME_EVERY));
        if due {
            i.last_frame_copy = Some(wall);
        }
        due
    }

    /// One published event: kept for the Events page, and its label's state follows it.
    pub fn event(&self, e: EventItem) {
        let mut i = lock(&self.inner);
        if let Some(l) = i.labels.iter_mut().find(|l| l.label == e.label) {
            l.active = e.kind == "start";
        }
        if i.events.len() == RECENT_EVENTS {
            i.events.pop_front();
        }
        i.events.push_back(e);
    }

    /// The metric the thresholds apply to (`prob` or `cosine`).
    pub fn view_metric(&self) -> &'static str {
        lock(&self.inner).metric
    }

    /// The latest frame for the page (a copy the caller made).
    pub fn put_frame(&self, frame: Frame) {
        let mut f = lock(&self.frame);
        f.frame = Some(Arc::new(frame));
    }

    /// The latest frame's JPEG, encoded now if it was not yet (`encode` is the encoder, run
    /// outside the lock so the frame loop never waits for it); `None` before the first frame.
    pub fn jpeg(
        &self,
        encode: impl FnOnce(&Frame) -> Result<Vec<u8>, String>,
    ) -> Option<Result<Arc<Vec<u8>>, String>> {
        let frame = {
            let f = lock(&self.frame);
            let frame = f.frame.clone()?;
            if let Some((s, j)) = &f.jpeg
                && *s == frame.seq
            {
                return Some(Ok(j.clone()));
            }
            frame
        };
        Some(encode(&frame).map(|bytes| {
            let bytes = Arc::new(bytes);
            lock(&self.frame).jpeg = Some((frame.seq, bytes.clone()));
            bytes
        }))
    }

    /// The Live page's data.
    pub fn view(&self) -> LiveView {
        let frame = lock(&self.frame).frame.as_ref().map(|f| f.seq);
        let i = lock(&self.inner);
        let n = i.labels.len();
        let mut scores = vec![Vec::with_capacity(i.series.len()); n];
        for (_, values) in &i.series {
            for (k, s) in scores.iter_mut().enumerate() {
                s.push(values.get(k).copied().unwrap_or(f32::NAN));
            }
        }
        LiveView {
            camera: i.camera.clone(),
            metric: i.metric,
            labels: i.labels.clone(),
            t: i.series.iter().map(|p| p.0).collect(),
            scores,
            frames: i.frames,
            frame,
        }
    }

    /// The recent events, newest first, of `camera` and `label` when given, at most `limit`.
    pub fn recent_events(
        &self,
        camera: Option<&str>,
        label: Option<&str>,
        limit: usize,
    ) -> Vec<EventItem> {
        let i = lock(&self.inner);
        i.events
            .iter()
            .rev()
            .filter(|e| camera.is_none_or(|c| e.camera == c))
            .filter(|e| label.is_none_or(|l| e.label == l))
            .take(limit)
            .cloned()
            .collect()
    }
}
