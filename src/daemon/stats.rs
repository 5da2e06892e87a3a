//! The daemon's figures: the one latency histogram type, the periodic stats window built on it,
//! and the process's CPU time.
//!
//! The run keeps a single cumulative [`LatencyHistogram`] (the [`Summary`]'s); a
//! [`StatsWindow`] remembers a copy of it from the start of its interval and takes its
//! percentiles from the difference, so a stats line costs nothing per frame and a run of any
//! length keeps its latencies in 3 KB. Time comes in as values: nothing here reads a clock.

use std::time::{Duration, Instant, SystemTime};

use super::Summary;
use crate::event::Stats;

/// A fixed-size latency histogram: 2% wide logarithmic buckets from 10 us to 100 s, so that a
/// daemon running for months keeps its latency percentiles in 3 KB instead of a growing list.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyHistogram {
    counts: Vec<u32>,
    total: u64,
}

impl LatencyHistogram {
    const MIN_MS: f64 = 0.01;
    const RATIO: f64 = 1.02;
    const BUCKETS: usize = 815; // 0.01 ms * 1.02^815 > 100 s

    /// Counts one latency.
    pub fn record(&mut self, ms: f32) {
        let ms = f64::from(ms).max(Self::MIN_MS);
        let i = ((ms / Self::MIN_MS).ln() / Self::RATIO.ln()) as usize;
        self.counts[i.min(Self::BUCKETS - 1)] += 1;
        self.total += 1;
    }

    /// How many latencies were counted.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The latency below which a share `q` (0..=1) of the counted ones fall, to within 2%
    /// (the upper edge of its bucket); `None` when nothing was counted.
    pub fn percentile(&self, q: f64) -> Option<f32> {
        Self::percentile_of(self.counts.iter().map(|&c| u64::from(c)), self.total, q)
    }

    /// Like [`LatencyHistogram::percentile`], over the latencies counted since `earlier` was a
    /// copy of this histogram.
    pub fn percentile_since(&self, earlier: &LatencyHistogram, q: f64) -> Option<f32> {
        let counts = self
            .counts
            .iter()
            .zip(&earlier.counts)
            .map(|(&now, &then)| u64::from(now.saturating_sub(then)));
        Self::percentile_of(counts, self.total.saturating_sub(earlier.total), q)
    }

    /// Makes this histogram a copy of `other`, without allocating.
    pub fn copy_from(&mut self, other: &LatencyHistogram) {
        self.counts.copy_from_slice(&other.counts);
        self.total = other.total;
    }

    /// The nearest-rank percentile of buckets holding `counts` (`total` in all).
    fn percentile_of(counts: impl Iterator<Item = u64>, total: u64, q: f64) -> Option<f32> {
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0u64;
        for (i, c) in counts.enumerate() {
            seen += c;
            if seen >= rank {
                return Some((Self::MIN_MS * Self::RATIO.powi(i as i32 + 1)) as f32);
            }
        }
        None
    }
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: vec![0; Self::BUCKETS],
            total: 0,
        }
    }
}

/// The interval of the periodic stats line: what the run's totals were when it began.
#[derive(Debug)]
pub(super) struct StatsWindow {
    since: Instant,
    captured_before: u64,
    processed_before: u64,
    latency_before: LatencyHistogram,
}

impl StatsWindow {
    /// A window starting at `now`, with every total at zero.
    pub(super) fn new(now: Instant) -> StatsWindow {
        StatsWindow {
            since: now,
            captured_before: 0,
            processed_before: 0,
            latency_before: LatencyHistogram::default(),
        }
    }

    /// Whether the window has lasted `every` at `now`.
    pub(super) fn due(&self, now: Instant, every: Duration) -> bool {
        now.saturating_duration_since(self.since) >= every
    }

    /// The stats of the window ending at `now` (`wall` on the wall clock), from the run's totals
    /// so far, and starts the next window. The rates and percentiles cover the window; the
    /// dropped frames (in the source, the mailbox, or bad) and the processed frames are totals.
    pub(super) fn take(
        &mut self,
        camera: &str,
        now: Instant,
        wall: SystemTime,
        totals: &Summary,
    ) -> Stats {
        let secs = now
            .saturating_duration_since(self.since)
            .as_secs_f32()
            .max(1e-3);
        let ms = |q| {
            totals
                .latency
                .percentile_since(&self.latency_before, q)
                .unwrap_or(0.0)
        };
        let st = Stats {
            camera: camera.to_string(),
            ts: wall,
            capture_fps: totals.captured.saturating_sub(self.captured_before) as f32 / secs,
            inference_fps: totals.processed.saturating_sub(self.processed_before) as f32 / secs,
            p50_ms: ms(0.5),
            p95_ms: ms(0.95),
            dropped: totals.dropped + totals.bad_frames,
            frames: totals.processed,
            events_dropped: totals.events_dropped,
            store: totals.store,
        };
        self.since = now;
        self.captured_before = totals.captured;
        self.processed_before = totals.processed;
        self.latency_before.copy_from(&totals.latency);
        st
    }
}

/// CPU seconds this process has used (all threads, user + system), from `/proc/self/stat`.
pub(super) fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5), counted in USER_HZ ticks, which the kernel
    // ABI fixes at 100 per second on every architecture.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_percentiles_within_two_percent() {
        let mut h = LatencyHistogram::default();
        assert_eq!(h.percentile(0.5), None);
        for i in 1..=1000 {
            h.record(i as f32 / 10.0); // 0.1 .. 100 ms
        }
        assert_eq!(h.count(), 1000);
        for (q, want) in [(0.5, 50.0f32), (0.95, 95.0), (1.0, 100.0), (0.001, 0.1)] {
            let got = h.percentile(q).unwrap();
            assert!(got >= want && got <= want * 1.021, "q {q}: {got} vs {want}");
        }
        // Out of range values land in the end buckets instead of panicking.
        h.record(0.0);
        h.record(1e9);
        h.record(f32::NAN);
        assert_eq!(h.count(), 1003);
    }

    #[test]
    fn percentiles_since_a_copy_cover_only_the_later_latencies() {
        let mut h = LatencyHistogram::default();
        for _ in 0..1000 {
            h.record(500.0);
        }
        let mut earlier = LatencyHistogram::default();
        earlier.copy_from(&h);
        assert_eq!(earlier, h);
        assert_eq!(h.percentile_since(&earlier, 0.5), None);
        for i in 1..=100 {
            h.record(i as f32); // 1 .. 100 ms
        }
        for (q, want) in [(0.5, 50.0f32), (0.95, 95.0), (0.01, 1.0)] {
            let got = h.percentile_since(&earlier, q).unwrap();
            assert!(got >= want && got <= want * 1.021, "q {q}: {got} vs {want}");
        }
        // The whole run still sees the slow ones.
        assert!(h.percentile(0.5).unwrap() >= 500.0);
    }

    fn totals(captured: u64, processed: u64, dropped: u64, bad_frames: u64) -> Summary {
        Summary {
            captured,
            processed,
            dropped,
            bad_frames,
            ..Summary::default()
        }
    }

    #[test]
    fn a_window_reports_its_own_rates_and_percentiles_and_the_run_totals() {
        let t0 = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let every = Duration::from_secs(10);
        let mut w = StatsWindow::new(t0);
        assert!(!w.due(t0 + Duration::from_secs(9), every));
        assert!(w.due(t0 + every, every));

        let mut run = totals(200, 100, 90, 3);
        for _ in 0..100 {
            run.latency.record(20.0);
        }
        let st = w.take("cam0", t0 + every, wall, &run);
        assert_eq!(st.camera, "cam0");
        assert_eq!(st.ts, wall);
        assert_eq!((st.capture_fps, st.inference_fps), (20.0, 10.0));
        assert!(st.p50_ms >= 20.0 && st.p50_ms <= 20.0 * 1.021, "{st:?}");
        // Dropped: the source's and the mailbox's (the run's `dropped`) and the bad frames.
        assert_eq!((st.dropped, st.frames), (93, 100));
        assert_eq!(st.events_dropped, 0);
        run.events_dropped = 7;
        let st = w.take("cam0", t0 + every, wall, &run);
        assert_eq!(
            st.events_dropped, 7,
            "the sinks' drops, as the run counted them"
        );

        // The next window: 5 s, 50 more frames captured, 10 processed at 5 ms.
        let (captured, processed) = (run.captured + 50, run.processed + 10);
        run.captured = captured;
        run.processed = processed;
        for _ in 0..10 {
            run.latency.record(5.0);
        }
        let t1 = t0 + every + Duration::from_secs(5);
        assert!(!w.due(t1, every));
        let st = w.take("cam0", t1, wall, &run);
        assert_eq!((st.capture_fps, st.inference_fps), (10.0, 2.0));
        assert!(st.p95_ms >= 5.0 && st.p95_ms <= 5.0 * 1.021, "{st:?}");
        assert_eq!(st.frames, 110);

        // A window without frames has no latencies.
        let st = w.take("cam0", t1 + every, wall, &run);
        assert_eq!((st.inference_fps, st.p50_ms, st.p95_ms), (0.0, 0.0, 0.0));
    }

    #[test]
    fn cpu_seconds_grow_with_work() {
        let before = process_cpu_seconds();
        if !cfg!(target_os = "linux") {
            return;
        }
        let before = before.expect("/proc/self/stat is readable on Linux");
        // Spin until the counter moves by 50 ms (ticks are 10 ms); a busy machine only delays it.
        let t = Instant::now();
        let mut x = 0u64;
        let mut used = 0.0;
        while used < 0.05 && t.elapsed() < Duration::from_secs(20) {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            used = process_cpu_seconds().unwrap() - before;
        }
        assert!(
            used >= 0.05,
            "{used} s of CPU after {:?} of spinning",
            t.elapsed()
        );
    }
}
