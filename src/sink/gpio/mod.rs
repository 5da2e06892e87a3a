//! Events to GPIO lines: a relay, a LED or a buzzer per label.
//!
//! A line follows one label ([`Follows`]), of every camera and zone unless `camera` and / or
//! `zone` narrow it. A level line may so follow several (camera, zone) pairs at once: it is
//! active while any of them is (a person in two zones, one ends: the line stays on until the
//! other ends too). A pulse line fires on a start of any of them.
//!
//! The behaviour of a line (level or pulse, active-high or active-low) lives in [`LineLogic`],
//! which is pure: it is told the events and the time and answers which physical level to drive.
//! Hardware sits behind the one-method [`OutputLine`] trait, so the logic is tested with a
//! recording fake line.
//!
//! Pulses are ended by a small timer thread owned by the [`GpioSink`]: it sleeps on a condition
//! variable until the earliest pulse deadline (or until an event or `close` wakes it) and then
//! drives the line back to idle. That is the simplest design that ends a pulse on time even
//! when no further frame or event arrives (a stalled camera must not leave a relay on).
//!
//! Active-low is handled here, not by the driver, so every backend behaves the same. Backends:
//! the GPIO character device through `gpiocdev` (feature `gpio`, Linux; lines by name, searched
//! on the configured chip or on every chip, or by offset on the configured chip) and the
//! Raspberry Pi `rppal` driver (feature `rpi`, Linux; lines by BCM number or `GPIO<n>` name).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{EventSink, SinkError};
use crate::config::{GpioBackend, GpioConfig, LineRef};
use crate::event::Event;

mod logic;
pub use logic::{Follows, LineLogic};

/// A boxed error from a GPIO driver.
pub type DriverError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong with a GPIO chip or line. Every variant names the chip and the line.
#[derive(Debug, thiserror::Error)]
pub enum GpioError {
    /// The chip could not be opened.
    #[error("gpio chip {chip}: cannot open: {source}")]
    OpenChip {
        /// The chip path or name.
        chip: String,
        /// The driver error.
        #[source]
        source: DriverError,
    },
    /// No line with this name or offset exists.
    #[error("gpio line {line} not found on {chip}")]
    LineNotFound {
        /// The chip searched (`any chip` when none was configured).
        chip: String,
        /// The line.
        line: String,
    },
    /// The line exists but is held by another consumer.
    #[error("gpio chip {chip} line {line}: busy, used by {consumer:?}")]
    Busy {
        /// The chip.
        chip: String,
        /// The line.
        line: String,
        /// Who holds it.
        consumer: String,
    },
    /// Requesting the line as an output failed.
    #[error("gpio chip {chip} line {line}: cannot request it as an output: {source}")]
    Request {
        /// The chip.
        chip: String,
        /// The line.
        line: String,
        /// The driver error.
        #[source]
        source: DriverError,
    },
    /// Driving the line failed.
    #[error("gpio chip {chip} line {line}: cannot drive it {level}: {source}")]
    Set {
        /// The chip.
        chip: String,
        /// The line.
        line: String,
        /// `high` or `low`.
        level: &'static str,
        /// The driver error.
        #[source]
        source: DriverError,
    },
    /// The configured backend is not compiled in.
    #[error(
        "gpio backend {backend:?} is not available in this build (it needs Linux and the cargo \
         feature {feature:?})"
    )]
    Unsupported {
        /// The backend.
        backend: GpioBackend,
        /// The cargo feature that enables it.
        feature: &'static str,
    },
    /// The pulse timer thread could not be started.
    #[error("gpio: cannot start the pulse timer thread: {source}")]
    Thread {
        /// The spawn error.
        #[source]
        source: std::io::Error,
    },
}

/// One output line. `set(true)` drives it physically high.
pub trait OutputLine: Send {
    /// Drives the line high (`true`) or low (`false`).
    fn set(&mut self, high: bool) -> Result<(), GpioError>;

    /// The chip and line, for logs.
    fn describe(&self) -> String;
}

struct Driven {
    follows: Follows,
    logic: LineLogic,
    line: Box<dyn OutputLine>,
}

impl Driven {
    fn drive(&mut self, level: Option<bool>) -> Result<(), GpioError> {
        match level {
            Some(high) => {
                log::debug!("gpio {}: {}", self.line.describe(), level_name(high));
                self.line.set(high)
            }
            None => Ok(()),
        }
    }
}

fn level_name(high: bool) -> &'static str {
    if high { "high" } else { "low" }
}

struct State {
    lines: Vec<Driven>,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the lines inconsistent beyond one level.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Drives one GPIO line per configured `[[gpio.lines]]` entry from the events of its label (of
/// its camera and zone, when the entry names them).
pub struct GpioSink {
    name: String,
    shared: Arc<Shared>,
    timer: Option<JoinHandle<()>>,
}

impl GpioSink {
    /// Opens the configured backend and requests every line as an output, driven idle.
    pub fn open(config: &GpioConfig) -> Result<GpioSink, GpioError> {
        let mut lines: Vec<(Follows, LineLogic, Box<dyn OutputLine>)> = Vec::new();
        for l in &config.lines {
            let logic = LineLogic::new(l.mode, l.active_low, Duration::from_millis(l.pulse_ms));
            let line = open_line(config, &l.line, logic.idle_level())?;
            let follows = Follows::of(l);
            log::info!("gpio: {} follows {follows}", line.describe());
            lines.push((follows, logic, line));
        }
        GpioSink::with_lines(lines)
    }

    /// A sink over lines opened elsewhere (tests, other backends): `(follows, logic, line)`.
    /// Every line is driven to its idle level first.
    pub fn with_lines(
        lines: Vec<(Follows, LineLogic, Box<dyn OutputLine>)>,
    ) -> Result<GpioSink, GpioError> {
        let mut driven = Vec::with_capacity(lines.len());
        for (follows, logic, mut line) in lines {
            line.set(logic.idle_level())?;
            driven.push(Driven {
                follows,
                logic,
                line,
            });
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                lines: driven,
                stop: false,
            }),
            wake: Condvar::new(),
        });
        let worker = Arc::clone(&shared);
        let timer = std::thread::Builder::new()
            .name("edgeclip-gpio".into())
            .spawn(move || run_timer(&worker))
            .map_err(|source| GpioError::Thread { source })?;
        Ok(GpioSink {
            name: "gpio".into(),
            shared,
            timer: Some(timer),
        })
    }

    fn stop_timer(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.timer.take()
            && t.join().is_err()
        {
            log::error!("gpio: the pulse timer thread panicked");
        }
    }
}

/// Ends pulses at their deadlines until told to stop.
fn run_timer(shared: &Shared) {
    let mut state = shared.lock();
    loop {
        if state.stop {
            return;
        }
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        for d in &mut state.lines {
            let level = d.logic.on_tick(now);
            if let Err(e) = d.drive(level) {
                log::warn!("{e}");
            }
            if let Some(t) = d.logic.deadline() {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        state = match next {
            Some(t) => {
                let wait = t.saturating_duration_since(Instant::now());
                shared
                    .wake
                    .wait_timeout(state, wait)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0)
            }
            None => shared.wake.wait(state).unwrap_or_else(|p| p.into_inner()),
        };
    }
}

impl EventSink for GpioSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn publish(&mut self, event: &Event) -> Result<(), SinkError> {
        let now = Instant::now();
        let mut first_err = None;
        {
            let mut state = self.shared.lock();
            for d in state.lines.iter_mut().filter(|d| d.follows.matches(event)) {
                let level = d
                    .logic
                    .on_event(event.kind, (&event.camera, &event.zone), now);
                if let Err(e) = d.drive(level) {
                    log::warn!("{e}");
                    first_err.get_or_insert(e);
                }
            }
        }
        self.shared.wake.notify_all();
        match first_err {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Drives every line idle and stops the timer.
    fn close(&mut self) -> Result<(), SinkError> {
        let mut first_err = None;
        {
            let mut state = self.shared.lock();
            for d in &mut state.lines {
                let level = d.logic.turn_off();
                if let Err(e) = d.drive(level) {
                    log::warn!("{e}");
                    first_err.get_or_insert(e);
                }
            }
        }
        self.stop_timer();
        match first_err {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

impl Drop for GpioSink {
    fn drop(&mut self) {
        self.stop_timer();
    }
}

/// Opens one line with the configured backend, driven to `idle_high`.
fn open_line(
    config: &GpioConfig,
    line: &LineRef,
    idle_high: bool,
) -> Result<Box<dyn OutputLine>, GpioError> {
    match config.backend {
        GpioBackend::Cdev => {
            #[cfg(all(target_os = "linux", feature = "gpio"))]
            {
                Ok(Box::new(cdev::CdevLine::open(config, line, idle_high)?))
            }
            #[cfg(not(all(target_os = "linux", feature = "gpio")))]
            {
                let _ = (line, idle_high);
                Err(GpioError::Unsupported {
                    backend: GpioBackend::Cdev,
                    feature: "gpio",
                })
            }
        }
        GpioBackend::Rppal => {
            #[cfg(all(target_os = "linux", feature = "rpi"))]
            {
                Ok(Box::new(rpi::RppalLine::open(line, idle_high)?))
            }
            #[cfg(not(all(target_os = "linux", feature = "rpi")))]
            {
                let _ = (line, idle_high);
                Err(GpioError::Unsupported {
                    backend: GpioBackend::Rppal,
                    feature: "rpi",
                })
            }
        }
    }
}

/// Looks every configured line up without requesting it (nothing is driven). Returns one line
/// of text per GPIO line found.
pub fn probe(config: &GpioConfig) -> Result<Vec<String>, GpioError> {
    match config.backend {
        GpioBackend::Cdev => {
            #[cfg(all(target_os = "linux", feature = "gpio"))]
            {
                config
                    .lines
                    .iter()
                    .map(|l| {
                        let found = cdev::resolve(config, &l.line)?;
                        Ok(format!(
                            "label {:?} -> {} line {} (offset {})",
                            l.label,
                            found.chip.display(),
                            l.line,
                            found.offset
                        ))
                    })
                    .collect()
            }
            #[cfg(not(all(target_os = "linux", feature = "gpio")))]
            {
                Err(GpioError::Unsupported {
                    backend: GpioBackend::Cdev,
                    feature: "gpio",
                })
            }
        }
        GpioBackend::Rppal => {
            #[cfg(all(target_os = "linux", feature = "rpi"))]
            {
                rpi::probe(config)
            }
            #[cfg(not(all(target_os = "linux", feature = "rpi")))]
            {
                Err(GpioError::Unsupported {
                    backend: GpioBackend::Rppal,
                    feature: "rpi",
                })
            }
        }
    }
}

#[cfg(all(target_os = "linux", feature = "gpio"))]
mod cdev {
    //! The GPIO character device backend (`gpiocdev`).

    use std::path::PathBuf;

    use gpiocdev::line::Value;

    use super::{GpioError, OutputLine};
    use crate::config::{GpioConfig, LineRef};

    /// Where a configured line lives.
    pub(super) struct Found {
        pub chip: PathBuf,
        pub offset: u32,
    }

    fn chip_label(config: &GpioConfig) -> String {
        config
            .chip_path()
            .map_or_else(|| "any chip".to_owned(), |p| p.display().to_string())
    }

    /// Finds the chip and offset of a line, refusing lines already held by someone else.
    pub(super) fn resolve(config: &GpioConfig, line: &LineRef) -> Result<Found, GpioError> {
        let (chip, info) = match (config.chip_path(), line) {
            (Some(path), _) => {
                let chip = gpiocdev::Chip::from_path(&path).map_err(|e| GpioError::OpenChip {
                    chip: path.display().to_string(),
                    source: Box::new(e),
                })?;
                let info = match line {
                    LineRef::Name(name) => chip.find_line_info(name),
                    LineRef::Offset(o) => chip.line_info(*o).ok(),
                };
                (path, info)
            }
            (None, LineRef::Name(name)) => match gpiocdev::find_named_line(name) {
                Some(found) => (found.chip, Some(found.info)),
                None => (PathBuf::from("any chip"), None),
            },
            (None, LineRef::Offset(_)) => (PathBuf::from("no chip configured"), None),
        };
        let info = info.ok_or_else(|| GpioError::LineNotFound {
            chip: chip_label(config),
            line: line.to_string(),
        })?;
        if info.used {
            return Err(GpioError::Busy {
                chip: chip.display().to_string(),
                line: line.to_string(),
                consumer: info.consumer,
            });
        }
        Ok(Found {
            chip,
            offset: info.offset,
        })
    }

    /// A line requested as an output through the character device.
    pub(super) struct CdevLine {
        request: gpiocdev::Request,
        offset: u32,
        chip: String,
        line: String,
    }

    fn value(high: bool) -> Value {
        if high { Value::Active } else { Value::Inactive }
    }

    impl CdevLine {
        pub(super) fn open(
            config: &GpioConfig,
            line: &LineRef,
            idle_high: bool,
        ) -> Result<CdevLine, GpioError> {
            let found = resolve(config, line)?;
            let chip = found.chip.display().to_string();
            let request = gpiocdev::Request::builder()
                .on_chip(&found.chip)
                .with_consumer("edgeclip")
                .with_line(found.offset)
                .as_output(value(idle_high))
                .request()
                .map_err(|e| GpioError::Request {
                    chip: chip.clone(),
                    line: line.to_string(),
                    source: Box::new(e),
                })?;
            Ok(CdevLine {
                request,
                offset: found.offset,
                chip,
                line: line.to_string(),
            })
        }
    }

    impl OutputLine for CdevLine {
        fn set(&mut self, high: bool) -> Result<(), GpioError> {
            self.request
                .set_value(self.offset, value(high))
                .map(|_| ())
                .map_err(|e| GpioError::Set {
                    chip: self.chip.clone(),
                    line: self.line.clone(),
                    level: super::level_name(high),
                    source: Box::new(e),
                })
        }

        fn describe(&self) -> String {
            format!("{} line {} (offset {})", self.chip, self.line, self.offset)
        }
    }
}

#[cfg(all(target_os = "linux", feature = "rpi"))]
mod rpi {
    //! The Raspberry Pi backend (`rppal`), by BCM GPIO number.

    use super::{GpioError, OutputLine};
    use crate::config::{GpioConfig, LineRef, bcm_from_name};

    const CHIP: &str = "rppal (BCM GPIO)";

    fn bcm(line: &LineRef) -> Result<u8, GpioError> {
        let n = match line {
            LineRef::Name(n) => bcm_from_name(n),
            LineRef::Offset(o) => u8::try_from(*o).ok().filter(|n| *n <= 53),
        };
        n.ok_or_else(|| GpioError::LineNotFound {
            chip: CHIP.into(),
            line: line.to_string(),
        })
    }

    pub(super) struct RppalLine {
        pin: rppal::gpio::OutputPin,
        line: String,
    }

    impl RppalLine {
        pub(super) fn open(line: &LineRef, idle_high: bool) -> Result<RppalLine, GpioError> {
            let n = bcm(line)?;
            let request_err = |e: rppal::gpio::Error| GpioError::Request {
                chip: CHIP.into(),
                line: line.to_string(),
                source: Box::new(e),
            };
            let gpio = rppal::gpio::Gpio::new().map_err(|e| GpioError::OpenChip {
                chip: CHIP.into(),
                source: Box::new(e),
            })?;
            let pin = gpio.get(n).map_err(request_err)?;
            let pin = if idle_high {
                pin.into_output_high()
            } else {
                pin.into_output_low()
            };
            Ok(RppalLine {
                pin,
                line: line.to_string(),
            })
        }
    }

    impl OutputLine for RppalLine {
        fn set(&mut self, high: bool) -> Result<(), GpioError> {
            if high {
                self.pin.set_high();
            } else {
                self.pin.set_low();
            }
            Ok(())
        }

        fn describe(&self) -> String {
            format!("{CHIP} line {}", self.line)
        }
    }

    pub(super) fn probe(config: &GpioConfig) -> Result<Vec<String>, GpioError> {
        let gpio = rppal::gpio::Gpio::new().map_err(|e| GpioError::OpenChip {
            chip: CHIP.into(),
            source: Box::new(e),
        })?;
        config
            .lines
            .iter()
            .map(|l| {
                let n = bcm(&l.line)?;
                gpio.get(n).map_err(|e| GpioError::Request {
                    chip: CHIP.into(),
                    line: l.line.to_string(),
                    source: Box::new(e),
                })?;
                Ok(format!("label {:?} -> BCM GPIO{n}", l.label))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
