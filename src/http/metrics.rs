//! `/metrics` in the Prometheus text format, with `prometheus-client` (the Prometheus project's
//! own Rust client: its registry and text encoder, atomics underneath, so the frame loop's side
//! is a few atomic adds).
//!
//! The frame loop observes each frame's latency and counts its events as they happen; totals
//! the loop learns from elsewhere (frames captured and dropped, the sinks' drops, the store's
//! counts) are handed over as totals about once a second and turned into counter increments.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Totals the frame loop knows about once in a while.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    /// Frames the source delivered.
    pub captured: u64,
    /// Frames dropped for fresher ones.
    pub dropped: u64,
    /// Frames that failed to decode or preprocess.
    pub bad_frames: u64,
    /// Events the sinks accepted and later dropped (the MQTT queue's overflow and age limit).
    pub events_dropped: u64,
    /// Store records dropped because its writer was busy.
    pub store_dropped: u64,
    /// Events the sinks hold undelivered (the MQTT delivery queue).
    pub events_queued: u64,
}

/// The metrics (see the module docs).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    processed: Counter,
    captured: Counter,
    dropped: Counter,
    bad_frames: Counter,
    events: Family<Vec<(String, String)>, Counter>,
    events_dropped: Counter,
    store_dropped: Counter,
    latency: Histogram,
    store_bytes: Gauge<i64, AtomicI64>,
    store_frames: Gauge<i64, AtomicI64>,
    events_queued: Gauge<i64, AtomicI64>,
    last: Mutex<Totals>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// The metrics, registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("edgeclip");
        let m = Metrics {
            processed: Counter::default(),
            captured: Counter::default(),
            dropped: Counter::default(),
            bad_frames: Counter::default(),
            events: Family::default(),
            events_dropped: Counter::default(),
            store_dropped: Counter::default(),
            // 1 ms to about 16 s.
            latency: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            store_bytes: Gauge::default(),
            store_frames: Gauge::default(),
            events_queued: Gauge::default(),
            last: Mutex::new(Totals::default()),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "frames_processed",
            "Frames encoded and matched",
            m.processed.clone(),
        );
        r.register(
            "frames_captured",
            "Frames the source delivered",
            m.captured.clone(),
        );
        r.register(
            "frames_dropped",
            "Frames dropped for fresher ones",
            m.dropped.clone(),
        );
        r.register(
            "frames_bad",
            "Frames that failed to decode or preprocess",
            m.bad_frames.clone(),
        );
        r.register(
            "events",
            "Events published, by label and type",
            m.events.clone(),
        );
        r.register(
            "events_dropped",
            "Events the sinks accepted and later dropped (the MQTT queue)",
            m.events_dropped.clone(),
        );
        r.register(
            "events_queued",
            "Events accepted and not yet delivered (the MQTT delivery queue)",
            m.events_queued.clone(),
        );
        r.register(
            "store_dropped",
            "Store records dropped because its writer was busy",
            m.store_dropped.clone(),
        );
        r.register(
            "frame_latency_seconds",
            "Capture to matched scores, per frame",
            m.latency.clone(),
        );
        r.register(
            "store_bytes",
            "Size of the store's database file",
            m.store_bytes.clone(),
        );
        r.register(
            "store_frames",
            "Frames held in the store",
            m.store_frames.clone(),
        );
        Metrics { registry, ..m }
    }

    /// One processed frame and its latency.
    pub fn frame(&self, latency_ms: f32) {
        self.processed.inc();
        self.latency.observe(f64::from(latency_ms) / 1e3);
    }

    /// One published event.
    pub fn event(&self, label: &str, kind: &str) {
        self.events
            .get_or_create(&vec![
                ("label".to_owned(), label.to_owned()),
                ("type".to_owned(), kind.to_owned()),
            ])
            .inc();
    }

    /// The loop's totals now: the counters move by what they grew.
    pub fn totals(&self, now: Totals) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let grow = |c: &Counter<u64, AtomicU64>, then: u64, now: u64| {
            c.inc_by(now.saturating_sub(then));
        };
        grow(&self.captured, last.captured, now.captured);
        grow(&self.dropped, last.dropped, now.dropped);
        grow(&self.bad_frames, last.bad_frames, now.bad_frames);
        grow(
            &self.events_dropped,
            last.events_dropped,
            now.events_dropped,
        );
        grow(&self.store_dropped, last.store_dropped, now.store_dropped);
        self.events_queued
            .set(i64::try_from(now.events_queued).unwrap_or(i64::MAX));
        *last = now;
    }

    /// The store's size and frame count, read when `/metrics` is asked for.
    pub fn store(&self, bytes: u64, frames: u64) {
        self.store_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.store_frames
            .set(i64::try_from(frames).unwrap_or(i64::MAX));
    }

    /// The text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_grow_by_the_totals_difference_and_encode_as_text() {
        let m = Metrics::new();
        m.frame(12.0);
        m.event("person", "start");
        m.totals(Totals {
            captured: 10,
            dropped: 3,
            ..Totals::default()
        });
        m.totals(Totals {
            captured: 15,
            dropped: 3,
            ..Totals::default()
        });
        m.totals(Totals {
            captured: 15,
            dropped: 3,
            events_queued: 2,
            ..Totals::default()
        });
        m.store(2048, 7);
        let text = m.encode();
        assert!(
            text.contains("edgeclip_frames_processed_total 1\n"),
            "{text}"
        );
        assert!(
            text.contains("edgeclip_frames_captured_total 15\n"),
            "{text}"
        );
        assert!(text.contains("edgeclip_frames_dropped_total 3\n"), "{text}");
        assert!(
            text.contains("edgeclip_events_total{label=\"person\",type=\"start\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("edgeclip_frame_latency_seconds_count 1\n"),
            "{text}"
        );
        assert!(text.contains("edgeclip_store_bytes 2048\n"), "{text}");
        assert!(text.contains("edgeclip_events_queued 2\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
