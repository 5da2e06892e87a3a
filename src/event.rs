//! The events and statistics the daemon emits, and their one wire format.
//!
//! Every sink (stdout JSON lines, MQTT, ...) serialises events through [`Event::to_json`] and
//! statistics through [`Stats::to_json`], so a consumer sees the same object whichever transport
//! it listens on.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// Whether a label became active or stopped being active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// The label has been matched for the configured number of consecutive frames.
    Start,
    /// The label has not been matched for the configured number of consecutive frames.
    End,
}

impl EventKind {
    /// `"start"` or `"end"`, as in the JSON `type` field.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Start => "start",
            EventKind::End => "end",
        }
    }

    /// The MQTT state payload that follows this event: `"ON"` after a start, `"OFF"` after an end.
    pub fn state_payload(self) -> &'static str {
        match self {
            EventKind::Start => "ON",
            EventKind::End => "OFF",
        }
    }
}

/// One start or end of a match, with the frame that caused it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Start or end.
    pub kind: EventKind,
    /// The camera name from the config (`camera.name`).
    pub camera: String,
    /// The zone of the camera the label was seen in: `all` for the whole frame, else a
    /// `[[cameras.zones]]` name.
    pub zone: String,
    /// The prompt label (`prompts[].label`).
    pub label: String,
    /// The prompt text shown to consumers (the label's text, or the first text of an ensemble).
    pub prompt: String,
    /// The raw similarity (cosine) of the frame that caused the transition.
    pub score: f32,
    /// The softmax probability of the frame that caused the transition.
    pub prob: f32,
    /// The sequence number of that frame.
    pub frame: u64,
    /// When that frame was captured (wall clock).
    pub ts: SystemTime,
    /// Capture-to-decision latency of that frame, in milliseconds.
    pub latency_ms: f32,
    /// What came second for this label in that frame: its strongest competitor.
    pub runner_up: Option<RunnerUp>,
    /// The event's snapshot file (`snapshots.dir/CAMERA/LABEL/TIMESTAMP.jpg`), on the start
    /// event and its end; `None` when snapshots are off. The path is known at the start; the
    /// file appears when the snapshot's window closes (`snapshots.window_s` later at most).
    pub snapshot: Option<PathBuf>,
}

/// A label's strongest competitor in a frame: another label, a background text, a vocabulary
/// entry or one of its negatives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunnerUp {
    /// The competitor: a label's name, or the text.
    pub label: String,
    /// Its score (cosine).
    pub score: f32,
}

/// The JSON shape of an [`Event`]; field order is the wire order.
#[derive(Serialize, Deserialize)]
struct EventWire<'a> {
    #[serde(rename = "type")]
    kind: EventKind,
    #[serde(borrow)]
    camera: std::borrow::Cow<'a, str>,
    /// Absent in events from before zones: the whole frame.
    #[serde(default = "all_zone", borrow)]
    zone: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    label: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    prompt: std::borrow::Cow<'a, str>,
    score: f32,
    prob: f32,
    frame: u64,
    ts: String,
    latency_ms: f32,
    #[serde(default)]
    runner_up: Option<RunnerUp>,
    /// Always written (`null` without a snapshot); absent in older events.
    #[serde(default, borrow)]
    snapshot: Option<std::borrow::Cow<'a, str>>,
}

/// Why a JSON event could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum EventParseError {
    /// The text is not a JSON event object.
    #[error("not a JSON event: {source}")]
    Json {
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The `ts` field is not an RFC 3339 timestamp.
    #[error("event field `ts`: {value:?} is not an RFC 3339 timestamp: {source}")]
    Timestamp {
        /// The offending value.
        value: String,
        /// The parse error.
        #[source]
        source: humantime::TimestampError,
    },
}

impl Event {
    /// One JSON object, fields in this order:
    /// `{"type":"start","camera":"cam0","zone":"all","label":"person","prompt":"a photo of a person",
    /// "score":0.31,"prob":0.87,"frame":1234,"ts":"2026-11-26T23:59:00.123Z","latency_ms":41.2,
    /// "runner_up":{"label":"a photo of a man","score":0.28},
    /// "snapshot":"/var/lib/edgeclip/snapshots/cam0/person/2026-11-26T23-59-00.123Z.jpg"}`
    /// (`runner_up` is `null` when the label had no competitor).
    ///
    /// `ts` is RFC 3339 in UTC with milliseconds ([`format_timestamp`]: a clock outside the
    /// years 1970 to 9999 is written as the nearest end of that range). Non-finite floats are
    /// written as `null`, and so is `snapshot` when there is none.
    pub fn to_json(&self) -> String {
        let wire = EventWire {
            kind: self.kind,
            camera: self.camera.as_str().into(),
            zone: self.zone.as_str().into(),
            label: self.label.as_str().into(),
            prompt: self.prompt.as_str().into(),
            score: self.score,
            prob: self.prob,
            frame: self.frame,
            ts: format_timestamp(self.ts),
            latency_ms: self.latency_ms,
            runner_up: self.runner_up.clone(),
            snapshot: self.snapshot.as_ref().map(|p| p.to_string_lossy()),
        };
        // Serialising a struct of strings and numbers into a String cannot fail.
        serde_json::to_string(&wire).unwrap_or_default()
    }

    /// Reads back what [`Event::to_json`] wrote (for consumers and tests).
    pub fn from_json(text: &str) -> Result<Event, EventParseError> {
        let wire: EventWire<'_> =
            serde_json::from_str(text).map_err(|source| EventParseError::Json { source })?;
        let ts =
            humantime::parse_rfc3339(&wire.ts).map_err(|source| EventParseError::Timestamp {
                value: wire.ts.clone(),
                source,
            })?;
        Ok(Event {
            kind: wire.kind,
            camera: wire.camera.into_owned(),
            zone: wire.zone.into_owned(),
            label: wire.label.into_owned(),
            prompt: wire.prompt.into_owned(),
            score: wire.score,
            prob: wire.prob,
            frame: wire.frame,
            ts,
            latency_ms: wire.latency_ms,
            runner_up: wire.runner_up,
            snapshot: wire.snapshot.map(|p| PathBuf::from(p.into_owned())),
        })
    }
}

fn all_zone() -> std::borrow::Cow<'static, str> {
    crate::frame::ALL_ZONE.into()
}

/// The latest time RFC 3339 can write (its years have four digits): 9999-12-31T23:59:59.999Z.
const LAST_WRITABLE: Duration = Duration::from_millis(253_402_300_799_999);

/// `ts` in RFC 3339, UTC, with milliseconds (`2026-11-26T23:59:00.123Z`), for every time:
/// a clock before 1970 is written as `1970-01-01T00:00:00.000Z` and one after the year 9999 as
/// `9999-12-31T23:59:59.999Z`.
///
/// Clamped rather than written as `null` or an error string so that `ts` stays a timestamp every
/// consumer (and [`Event::from_json`]) can read; a clock that far off is wrong anyway, and the
/// clamped value says so plainly. humantime alone panics on both: before the epoch
/// (`format_rfc3339_millis`'s `expect`) and after 9999 (a formatting error `to_string` turns
/// into a panic).
pub fn format_timestamp(ts: SystemTime) -> String {
    let since_epoch = ts
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .min(LAST_WRITABLE);
    humantime::format_rfc3339_millis(SystemTime::UNIX_EPOCH + since_epoch).to_string()
}

/// [`format_timestamp`] of a time in milliseconds since the Unix epoch (the store's), before
/// the epoch read as the epoch.
pub fn format_millis(ms: i64) -> String {
    format_timestamp(SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

/// A written snapshot: the JPEG of an event's best frame, handed to the sinks once the file is
/// on disk (MQTT publishes it, retained, to `PREFIX/CAMERA/LABEL/snapshot`).
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The camera name from the config.
    pub camera: String,
    /// The zone of the event (`all`: the whole frame).
    pub zone: String,
    /// The label of the event.
    pub label: String,
    /// The file, as named in the event's `snapshot` field.
    pub path: PathBuf,
    /// The JPEG bytes.
    pub jpeg: Vec<u8>,
}

/// Periodic pipeline statistics (one line every `stats.interval_s`).
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// The camera name from the config.
    pub camera: String,
    /// When the statistics were taken (wall clock).
    pub ts: SystemTime,
    /// Frames per second delivered by the source over the interval.
    pub capture_fps: f32,
    /// Frames per second run through the encoder over the interval.
    pub inference_fps: f32,
    /// Median capture-to-decision latency over the interval, in milliseconds.
    pub p50_ms: f32,
    /// 95th percentile capture-to-decision latency over the interval, in milliseconds.
    pub p95_ms: f32,
    /// Frames dropped since start (stale frames skipped because inference was busy, in the
    /// daemon's mailbox or inside the source, and frames that failed to decode).
    pub dropped: u64,
    /// Frames run through the encoder since start.
    pub frames: u64,
    /// Events a sink accepted and later dropped, since start (MQTT: the oldest episode when
    /// its queue was full, or events older than `mqtt.max_event_age_s`).
    pub events_dropped: u64,
    /// The history store's state and counts (state `off` when it is off).
    pub store: StoreStats,
}

/// How the history store is doing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub enum StoreState {
    /// Writing.
    #[serde(rename = "ok")]
    Ok,
    /// A write found the disk full: storing stopped (detection and publishing go on) until a
    /// retry succeeds.
    #[serde(rename = "disk full")]
    DiskFull,
    /// The last write failed for another reason (logged).
    #[serde(rename = "failing")]
    Failing,
    /// No store (`[store] enabled = false`).
    #[default]
    #[serde(rename = "off")]
    Off,
}

impl StoreState {
    /// Its name in the stats: `ok`, `disk full`, `failing`, `off`.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreState::Ok => "ok",
            StoreState::DiskFull => "disk full",
            StoreState::Failing => "failing",
            StoreState::Off => "off",
        }
    }
}

impl std::fmt::Display for StoreState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The history store's part of the stats, counted since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    /// How it is doing.
    pub state: StoreState,
    /// Frames stored.
    pub frames: u64,
    /// Records (frames, events, thumbnails) dropped because the writer's queue was full.
    pub dropped: u64,
    /// Records that could not be written (disk full, ...).
    pub failed: u64,
    /// The bytes of the database's pages in use.
    pub bytes: u64,
}

#[derive(Serialize)]
struct StatsWire<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    camera: &'a str,
    ts: String,
    capture_fps: f32,
    inference_fps: f32,
    p50_ms: f32,
    p95_ms: f32,
    dropped: u64,
    frames: u64,
    events_dropped: u64,
    store: StoreStats,
}

impl Stats {
    /// One JSON object: `{"type":"stats","camera":"cam0","ts":"...","capture_fps":15.0,
    /// "inference_fps":9.8,"p50_ms":80.1,"p95_ms":97.3,"dropped":12,"frames":9876,
    /// "events_dropped":0,"store":{"state":"ok","frames":512,"dropped":0,"failed":0,
    /// "bytes":339968}}` (`ts` as [`format_timestamp`] writes it; `dropped` counts frames,
    /// `events_dropped` events; `store.state` is `ok`, `disk full`, `failing` or `off`).
    pub fn to_json(&self) -> String {
        let wire = StatsWire {
            kind: "stats",
            camera: &self.camera,
            ts: format_timestamp(self.ts),
            capture_fps: self.capture_fps,
            inference_fps: self.inference_fps,
            p50_ms: self.p50_ms,
            p95_ms: self.p95_ms,
            dropped: self.dropped,
            frames: self.frames,
            events_dropped: self.events_dropped,
            store: self.store,
        };
        serde_json::to_string(&wire).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn example() -> Event {
        Event {
            kind: EventKind::Start,
            camera: "cam0".into(),
            zone: "all".into(),
            label: "person".into(),
            prompt: "a photo of a person".into(),
            score: 0.31,
            prob: 0.87,
            frame: 1234,
            ts: humantime::parse_rfc3339("2026-11-26T23:59:00.123Z").unwrap(),
            latency_ms: 41.2,
            runner_up: Some(RunnerUp {
                label: "a photo of a man".into(),
                score: 0.28,
            }),
            snapshot: Some("/s/cam0/person/2026-11-26T23-59-00.123Z.jpg".into()),
        }
    }

    #[test]
    fn event_json_is_exactly_the_documented_shape() {
        assert_eq!(
            example().to_json(),
            r#"{"type":"start","camera":"cam0","zone":"all","label":"person","prompt":"a photo of a person","score":0.31,"prob":0.87,"frame":1234,"ts":"2026-11-26T23:59:00.123Z","latency_ms":41.2,"runner_up":{"label":"a photo of a man","score":0.28},"snapshot":"/s/cam0/person/2026-11-26T23-59-00.123Z.jpg"}"#
        );
    }

    #[test]
    fn without_a_snapshot_the_field_is_null_and_older_events_still_parse() {
        let mut e = example();
        e.snapshot = None;
        let json = e.to_json();
        assert!(
            json.ends_with(r#""score":0.28},"snapshot":null}"#),
            "{json}"
        );
        assert_eq!(Event::from_json(&json).unwrap(), e);
        let old = json.replace(r#","snapshot":null"#, "");
        assert_eq!(Event::from_json(&old).unwrap(), e);
        // Events from before zones have none: the whole frame.
        let old = json.replace(r#""zone":"all","#, "");
        assert_eq!(Event::from_json(&old).unwrap(), e);
    }

    #[test]
    fn end_event_and_escaping() {
        let mut e = example();
        e.kind = EventKind::End;
        e.prompt = "a \"quoted\"\nprompt".into();
        let json = e.to_json();
        assert!(json.starts_with(r#"{"type":"end","#), "{json}");
        assert!(
            json.contains(r#""prompt":"a \"quoted\"\nprompt""#),
            "{json}"
        );
        assert_eq!(Event::from_json(&json).unwrap(), e);
    }

    #[test]
    fn timestamps_are_utc_with_milliseconds() {
        let mut e = example();
        e.ts = SystemTime::UNIX_EPOCH + Duration::from_millis(1_500);
        assert!(e.to_json().contains(r#""ts":"1970-01-01T00:00:01.500Z""#));
    }

    /// Clocks outside what RFC 3339 can write are clamped to 1970 and 9999, in events, stats
    /// and snapshot names, and the events still read back.
    #[test]
    fn timestamps_outside_1970_to_9999_are_clamped_not_a_panic() {
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(1);
        let far = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(300_000 * 31_556_952));
        let mut cases = vec![(before, "1970-01-01T00:00:00.000Z")];
        // (`None` where the platform's clock cannot hold that time at all.)
        cases.extend(far.map(|t| (t, "9999-12-31T23:59:59.999Z")));
        let last = SystemTime::UNIX_EPOCH + LAST_WRITABLE;
        cases.push((last, "9999-12-31T23:59:59.999Z"));
        cases.push((last + Duration::from_millis(1), "9999-12-31T23:59:59.999Z"));
        for (ts, written) in cases {
            assert_eq!(format_timestamp(ts), written);
            let mut e = example();
            e.ts = ts;
            let json = e.to_json();
            assert!(json.contains(&format!(r#""ts":"{written}""#)), "{json}");
            match Event::from_json(&json) {
                Ok(back) => assert_eq!(format_timestamp(back.ts), written),
                // humantime reads no time after 2038-01-19 where pointers are 32 bits (armv7,
                // CI's qemu run): an error naming the timestamp, not a panic.
                Err(e) => assert!(
                    cfg!(target_pointer_width = "32")
                        && written.starts_with("9999")
                        && e.to_string().contains(written),
                    "{e}"
                ),
            }
            let stats = Stats {
                camera: "cam0".into(),
                ts,
                capture_fps: 1.0,
                inference_fps: 1.0,
                p50_ms: 1.0,
                p95_ms: 1.0,
                dropped: 0,
                frames: 0,
                events_dropped: 0,
                store: StoreStats::default(),
            };
            assert!(stats.to_json().contains(written));
        }
    }

    #[test]
    fn round_trip() {
        let e = example();
        assert_eq!(Event::from_json(&e.to_json()).unwrap(), e);
    }

    #[test]
    fn bad_json_is_an_error_not_a_panic() {
        assert!(matches!(
            Event::from_json("{\"type\":\"maybe\"}"),
            Err(EventParseError::Json { .. })
        ));
        let bad_ts = example()
            .to_json()
            .replace("2026-11-26T23:59:00.123Z", "yesterday");
        assert!(matches!(
            Event::from_json(&bad_ts),
            Err(EventParseError::Timestamp { .. })
        ));
    }

    #[test]
    fn non_finite_scores_become_null() {
        let mut e = example();
        e.score = f32::NAN;
        assert!(e.to_json().contains(r#""score":null"#));
    }

    #[test]
    fn stats_json() {
        let s = Stats {
            camera: "cam0".into(),
            ts: SystemTime::UNIX_EPOCH,
            capture_fps: 15.0,
            inference_fps: 9.5,
            p50_ms: 80.25,
            p95_ms: 97.5,
            dropped: 12,
            frames: 9876,
            events_dropped: 3,
            store: StoreStats {
                state: StoreState::DiskFull,
                frames: 600,
                dropped: 2,
                failed: 40,
                bytes: 409_600,
            },
        };
        assert_eq!(
            s.to_json(),
            r#"{"type":"stats","camera":"cam0","ts":"1970-01-01T00:00:00.000Z","capture_fps":15.0,"inference_fps":9.5,"p50_ms":80.25,"p95_ms":97.5,"dropped":12,"frames":9876,"events_dropped":3,"store":{"state":"disk full","frames":600,"dropped":2,"failed":40,"bytes":409600}}"#
        );
    }
}
