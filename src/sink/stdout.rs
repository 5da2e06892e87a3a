//! Events as JSON lines on stdout (or any writer), one object per line, flushed per event so a
//! consumer piping the daemon into `jq` or a log shipper sees each event as it happens.

use std::io::Write;

use super::{EventSink, SinkError};
use crate::event::{Event, Stats};

/// Writes each event (and statistics line) as one JSON line to a writer.
pub struct StdoutSink<W: Write + Send = std::io::Stdout> {
    name: String,
    out: W,
    stats: bool,
}

impl StdoutSink<std::io::Stdout> {
    /// Events and statistics to the process's stdout.
    pub fn stdout() -> Self {
        StdoutSink::new("stdout", std::io::stdout(), true)
    }
}

impl<W: Write + Send> StdoutSink<W> {
    /// Events to `out`; statistics too when `stats` is true.
    pub fn new(name: impl Into<String>, out: W, stats: bool) -> Self {
        StdoutSink {
            name: name.into(),
            out,
            stats,
        }
    }

    /// The writer (for tests).
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// Gives the writer back.
    pub fn into_inner(self) -> W {
        self.out
    }

    fn line(&mut self, json: &str) -> Result<(), SinkError> {
        let result = self
            .out
            .write_all(json.as_bytes())
            .and_then(|()| self.out.write_all(b"\n"))
            .and_then(|()| self.out.flush());
        result.map_err(|source| SinkError::Write {
            sink: self.name.clone(),
            source,
        })
    }
}

impl<W: Write + Send> EventSink for StdoutSink<W> {
    fn name(&self) -> &str {
        &self.name
    }

    fn publish(&mut self, event: &Event) -> Result<(), SinkError> {
        self.line(&event.to_json())
    }

    fn publish_stats(&mut self, stats: &Stats) -> Result<(), SinkError> {
        if self.stats {
            self.line(&stats.to_json())
        } else {
            Ok(())
        }
    }

    fn close(&mut self) -> Result<(), SinkError> {
        let name = self.name.clone();
        self.out
            .flush()
            .map_err(|source| SinkError::Write { sink: name, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;
    use std::time::SystemTime;

    fn event(kind: EventKind, frame: u64) -> Event {
        Event {
            kind,
            camera: "cam0".into(),
            zone: "all".into(),
            label: "person".into(),
            prompt: "a person".into(),
            score: 0.3,
            prob: 0.9,
            frame,
            ts: SystemTime::UNIX_EPOCH,
            latency_ms: 12.5,
            runner_up: None,
            snapshot: None,
        }
    }

    #[test]
    fn one_line_per_event_in_order() {
        let mut sink = StdoutSink::new("test", Vec::new(), false);
        sink.publish(&event(EventKind::Start, 1)).unwrap();
        sink.publish(&event(EventKind::End, 9)).unwrap();
        let stats = Stats {
            camera: "cam0".into(),
            ts: SystemTime::UNIX_EPOCH,
            capture_fps: 1.0,
            inference_fps: 1.0,
            p50_ms: 1.0,
            p95_ms: 1.0,
            dropped: 0,
            frames: 2,
            events_dropped: 0,
            store: Default::default(),
        };
        sink.publish_stats(&stats).unwrap();
        sink.close().unwrap();
        let text = String::from_utf8(sink.into_inner()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "stats are off: {text}");
        assert_eq!(
            Event::from_json(lines[0]).unwrap(),
            event(EventKind::Start, 1)
        );
        assert_eq!(
            Event::from_json(lines[1]).unwrap(),
            event(EventKind::End, 9)
        );

        // An event of a zone of another camera: its line says both, and reads back the same.
        let mut zoned = StdoutSink::new("test", Vec::new(), false);
        let mut e = event(EventKind::Start, 3);
        e.camera = "garden".into();
        e.zone = "driveway".into();
        zoned.publish(&e).unwrap();
        let line = String::from_utf8(zoned.into_inner()).unwrap();
        assert!(
            line.contains(r#""camera":"garden","zone":"driveway""#),
            "{line}"
        );
        assert_eq!(Event::from_json(line.trim_end()).unwrap(), e);

        let mut with_stats = StdoutSink::new("test", Vec::new(), true);
        with_stats.publish_stats(&stats).unwrap();
        assert_eq!(
            String::from_utf8(with_stats.into_inner()).unwrap(),
            format!("{}\n", stats.to_json())
        );
    }

    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "closed",
            ))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn write_errors_name_the_sink() {
        let mut sink = StdoutSink::new("stdout", Broken, true);
        let err = sink.publish(&event(EventKind::Start, 1)).unwrap_err();
        assert!(matches!(err, SinkError::Write { .. }));
        assert!(err.to_string().starts_with("stdout: write failed"), "{err}");
    }
}
