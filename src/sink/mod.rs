//! Where events go: stdout JSON lines, MQTT, GPIO lines.
//!
//! Every sink implements [`EventSink`], a push interface in the spirit of ripgrep's `Sink`: one
//! required method ([`EventSink::publish`]) and defaulted optional ones, so a simple sink stays
//! simple. Sinks own their transport; a sink that needs background work (the MQTT connection,
//! GPIO pulse timers) runs it on its own thread and never blocks `publish` on the network.
//!
//! One set of sinks serves every camera of the daemon: an event carries its camera and zone,
//! and each sink routes by them (MQTT: one connection, topics per camera and zone; GPIO: a line
//! may name its camera and zone; stdout: the `"camera"` and `"zone"` of each line). What is
//! watched is a list of [`Watched`] (camera, zone, label).

use crate::config::Config;
use crate::event::{Event, Snapshot, Stats};

pub mod gpio;
pub mod mqtt;
pub mod stdout;

pub use gpio::{GpioError, GpioSink};
pub use mqtt::Watched;
pub use mqtt::{MqttError, MqttSink};
pub use stdout::StdoutSink;

/// Why a sink could not take an event.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Writing JSON lines failed (stdout closed, disk full, ...).
    #[error("{sink}: write failed: {source}")]
    Write {
        /// The sink's name.
        sink: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The MQTT sink refused or lost the event.
    #[error(transparent)]
    Mqtt(#[from] MqttError),
    /// A GPIO line could not be driven.
    #[error(transparent)]
    Gpio(#[from] GpioError),
}

/// Whether the camera delivers frames, as the daemon judges it: `Offline` when its source failed
/// or gave no frame for a while, `Online` again with the next frame. Sinks learn it through
/// [`EventSink::camera_status`] (MQTT: `PREFIX/CAMERA/availability`, retained).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CameraStatus {
    /// Frames arrive.
    Online,
    /// No frame: why, in words for a log or a dashboard.
    Offline {
        /// What the source said (`pipe: command exited with status 1`, `no frame for 10 s`).
        reason: String,
    },
}

/// A consumer of events. `publish` must not block for long: the daemon calls it on the
/// inference path.
pub trait EventSink: Send {
    /// A short name for logs (`stdout`, `mqtt://broker:1883`, `gpio`).
    fn name(&self) -> &str;

    /// Takes one event. `Ok` means the sink accepted it (it may deliver it later).
    fn publish(&mut self, event: &Event) -> Result<(), SinkError>;

    /// Takes periodic statistics; ignored by default.
    fn publish_stats(&mut self, _stats: &Stats) -> Result<(), SinkError> {
        Ok(())
    }

    /// Takes an event's snapshot once its file is written (up to `snapshots.window_s` after
    /// the start event that named it); ignored by default. Like `publish`, it must not block.
    fn publish_snapshot(&mut self, _snapshot: &Snapshot) -> Result<(), SinkError> {
        Ok(())
    }

    /// Learns that `camera` went offline or came back; called on each change (and once
    /// with `Online` after its first frame). Ignored by default. Like `publish`, it must not
    /// block.
    fn camera_status(&mut self, _camera: &str, _status: &CameraStatus) -> Result<(), SinkError> {
        Ok(())
    }

    /// Learns what is watched (every camera, zone and label) after a reload (SIGHUP), once the
    /// end events of the old ones were published; ignored by default (MQTT: discovery configs
    /// for each new (camera, zone, label), deletion for removed ones).
    fn labels_changed(&mut self, _watched: &[Watched]) -> Result<(), SinkError> {
        Ok(())
    }

    /// Events this sink accepted and then dropped since start (MQTT: a full queue, too old to
    /// send); reported as `events_dropped` in the stats. 0 by default.
    fn events_dropped(&self) -> u64 {
        0
    }

    /// Events accepted and not yet delivered (MQTT: the delivery queue's length); shown by
    /// `/metrics`. 0 by default.
    fn events_queued(&self) -> u64 {
        0
    }

    /// Flushes and releases the transport; called once at shutdown. Does nothing by default.
    fn close(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Opens every sink the config asks for: stdout (`events.stdout`), MQTT (`[mqtt]`) and GPIO
/// (`[gpio]`), in that order. Fails on the first sink that cannot be opened (MQTT does not
/// need the broker to be up: it connects in the background).
pub fn open_sinks(config: &Config) -> Result<Vec<Box<dyn EventSink>>, SinkError> {
    let mut sinks: Vec<Box<dyn EventSink>> = Vec::new();
    if config.events.stdout {
        sinks.push(Box::new(StdoutSink::stdout()));
    }
    if let Some(m) = &config.mqtt {
        let watched = Watched::all(config);
        let options = mqtt::MqttOptions {
            snapshots: config.snapshots.enabled,
            ..mqtt::MqttOptions::default()
        };
        sinks.push(Box::new(MqttSink::connect(m, &watched, options)?));
    }
    if let Some(g) = &config.gpio {
        sinks.push(Box::new(GpioSink::open(g)?));
    }
    Ok(sinks)
}
