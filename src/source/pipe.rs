//! Frames from a command's stdout: how Pi CSI cameras (`rpicam-vid`), Jetson CSI cameras
//! (`gst-launch-1.0 nvarguscamerasrc ...`) and network streams (`ffmpeg`) come in.
//!
//! The command runs under `sh -c` in its own process group, on a reader thread that splits its
//! stdout into frames (an MJPEG stream, or raw frames of a fixed size) and hands them over
//! through a [`Mailbox`] that keeps the freshest frame (older unread frames are dropped and
//! counted, and reported through [`FrameSource::dropped`]). When the command exits it is
//! restarted with a capped exponential backoff.
//! `next_frame` waits at most the capture timeout; after three timeouts in a row the command is
//! considered stalled and killed, so it restarts.
//!
//! An exit or a failed start is posted as an error for `next_frame` to return (the daemon logs
//! those, rate-limited) and logged here at debug level only; the stall warning is this file's
//! own and is rate-limited here (`log_limit`), so a command that hangs again and again writes
//! it once a minute with a count.

use std::collections::VecDeque;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use super::mjpeg::MjpegSplitter;
use super::{FrameSource, SourceError};
use crate::config::CameraConfig;
use crate::frame::{Frame, PixelFormat};
use crate::log_limit::{self, Repeats};
use crate::mailbox::{Delivery, Mailbox};

/// What the command writes to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipeFormat {
    /// Concatenated JPEG images.
    Mjpeg,
    /// Raw frames of a fixed size, back to back.
    Raw {
        /// The layout (not MJPEG).
        format: PixelFormat,
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
}

impl PipeFormat {
    /// Raw frames of the camera's configured size.
    pub fn raw(format: PixelFormat, camera: &CameraConfig) -> PipeFormat {
        PipeFormat::Raw {
            format,
            width: camera.width,
            height: camera.height,
        }
    }
}

/// How a [`PipeSource`] runs its command.
#[derive(Debug, Clone)]
pub struct PipeOptions {
    /// The stream format. Default MJPEG.
    pub format: PipeFormat,
    /// Capture timeout. Default 5 s.
    pub timeout: Duration,
    /// First restart delay. Default 500 ms.
    pub restart_min: Duration,
    /// Longest restart delay. Default 30 s.
    pub restart_max: Duration,
    /// Largest MJPEG frame accepted. Default 16 MiB.
    pub max_frame: usize,
}

impl Default for PipeOptions {
    fn default() -> Self {
        PipeOptions {
            format: PipeFormat::Mjpeg,
            timeout: Duration::from_secs(5),
            restart_min: Duration::from_millis(500),
            restart_max: Duration::from_secs(30),
            max_frame: 16 << 20,
        }
    }
}

/// Most errors kept for `next_frame` (older ones are dropped).
const MAX_ERRORS: usize = 16;

/// What the reader thread shares with `next_frame` besides the frame slot (the mailbox's
/// `closed` says that the reader thread ended).
#[derive(Default)]
struct Reader {
    errors: VecDeque<SourceError>,
    /// Set when the source is dropped: the reader thread ends.
    stop: bool,
    /// The running command (for killing it on stall and at drop).
    child: Option<Child>,
}

type PipeMailbox = Mailbox<Frame, Reader>;

fn post_frame(mailbox: &PipeMailbox, frame: Frame) {
    mailbox.put(frame, Delivery::Freshest, || false);
}

fn post_error(mailbox: &PipeMailbox, e: SourceError) {
    {
        let mut m = mailbox.lock();
        let errors = &mut m.extra.errors;
        if errors.len() >= MAX_ERRORS {
            errors.pop_front();
        }
        errors.push_back(e);
    }
    mailbox.notify();
}

/// Sleeps up to `d`, waking early when told to stop; returns whether to stop.
fn sleep(mailbox: &PipeMailbox, d: Duration) -> bool {
    mailbox
        .wait_for(Some(Instant::now() + d), None, |m| {
            m.extra.stop.then_some(())
        })
        .is_ok()
}

fn stopping(mailbox: &PipeMailbox) -> bool {
    mailbox.lock().extra.stop
}

/// Kills the command and everything it started (its process group).
fn kill_group(child: &mut Child) {
    let pid = child.id();
    // `sh` started with process_group(0) leads a group with its own pid. The shell's `kill`
    // builtin reaches the whole group without unsafe code; `kill -KILL -PGID` (no `--`) is the
    // form both dash and bash accept.
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -KILL -{pid} 2>/dev/null"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
}

/// Frames from a command's stdout, restarted when it exits.
pub struct PipeSource {
    command: String,
    name: String,
    mailbox: Arc<PipeMailbox>,
    reader: Option<JoinHandle<()>>,
    timeout: Duration,
    timeouts_in_a_row: u32,
    /// The mailbox's drop count as of the last `next_frame`.
    dropped: u64,
    /// Rate limit of the stall warning.
    stalls: Repeats<()>,
}

impl PipeSource {
    /// Starts `sh -c command` and its reader thread. Fails only when the thread cannot be
    /// started; a command that fails to start is retried and reported through `next_frame`.
    pub fn spawn(command: &str, options: PipeOptions) -> Result<PipeSource, SourceError> {
        let mailbox = Arc::new(PipeMailbox::default());
        let name = format!("pipe `{command}`");
        let timeout = options.timeout;
        let reader = {
            let mailbox = Arc::clone(&mailbox);
            let thread_command = command.to_owned();
            std::thread::Builder::new()
                .name("edgeclip-pipe".into())
                .spawn(move || {
                    run_reader(&thread_command, &options, &mailbox);
                    mailbox.close();
                })
                .map_err(|source| SourceError::Spawn {
                    command: command.to_owned(),
                    source,
                })?
        };
        log::info!("{name}: started");
        Ok(PipeSource {
            command: command.to_owned(),
            name,
            mailbox,
            reader: Some(reader),
            timeout,
            timeouts_in_a_row: 0,
            dropped: 0,
            stalls: Repeats::new(log_limit::EVERY),
        })
    }
}

impl FrameSource for PipeSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        let deadline = Instant::now() + self.timeout;
        let (name, dropped) = (&self.name, &mut self.dropped);
        let waited = self.mailbox.wait_for(Some(deadline), None, |m| {
            *dropped = m.slot().dropped();
            if let Some(e) = m.extra.errors.pop_front() {
                return Some(Err(e));
            }
            if let Some(f) = m.take() {
                return Some(Ok(f));
            }
            m.is_closed().then(|| {
                Err(SourceError::Stopped {
                    source_name: name.clone(),
                })
            })
        });
        let mut m = match waited {
            Ok(Ok(f)) => {
                self.timeouts_in_a_row = 0;
                return Ok(Some(f));
            }
            Ok(Err(e)) => return Err(e),
            Err(m) => m,
        };
        self.timeouts_in_a_row += 1;
        if self.timeouts_in_a_row >= 3 {
            self.timeouts_in_a_row = 0;
            if let Some(child) = m.extra.child.as_mut() {
                let line = format!(
                    "{}: no frame for {:?}, killing the command to restart it",
                    self.name,
                    self.timeout * 3
                );
                if let Some(line) = self.stalls.note(&(), Instant::now()).text(line) {
                    log::warn!("{line}");
                }
                kill_group(child);
            }
        }
        Err(SourceError::Timeout {
            source_name: self.name.clone(),
            after: self.timeout,
        })
    }

    fn describe(&self) -> String {
        format!("pipe:{}", self.command)
    }

    /// Frames replaced in the mailbox by a fresher one before `next_frame` took them, as of the
    /// last `next_frame`.
    fn dropped(&self) -> u64 {
        self.dropped
    }
}

impl Drop for PipeSource {
    fn drop(&mut self) {
        {
            let mut m = self.mailbox.lock();
            m.extra.stop = true;
            if let Some(child) = m.extra.child.as_mut() {
                kill_group(child);
            }
        }
        self.mailbox.notify();
        if let Some(r) = self.reader.take() {
            // The reader sees EOF once the group is dead; do not hang if something else still
            // holds the pipe open.
            let deadline = Instant::now() + Duration::from_secs(2);
            while !r.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if r.is_finished() {
                let _ = r.join();
            }
        }
    }
}

/// Runs the command again and again until told to stop.
fn run_reader(command: &str, options: &PipeOptions, mailbox: &PipeMailbox) {
    let mut backoff = options.restart_min;
    let mut seq: u64 = 0;
    let name = format!("pipe `{command}`");
    loop {
        if stopping(mailbox) {
            return;
        }
        let spawned = Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(source) => {
                log::debug!("{name}: cannot start: {source}; retrying in {backoff:?}");
                post_error(
                    mailbox,
                    SourceError::Spawn {
                        command: command.to_owned(),
                        source,
                    },
                );
                if sleep(mailbox, backoff) {
                    return;
                }
                backoff = (backoff * 2).min(options.restart_max);
                continue;
            }
        };
        let Some(stdout) = child.stdout.take() else {
            kill_group(&mut child);
            return;
        };
        {
            let mut m = mailbox.lock();
            if m.extra.stop {
                kill_group(&mut child);
                let _ = child.wait();
                return;
            }
            m.extra.child = Some(child);
        }
        let produced = read_frames(command, &name, stdout, options, mailbox, &mut seq);
        // The stream ended: collect the exit status (killing a command that closed its stdout
        // but lingers).
        let child = mailbox.lock().extra.child.take();
        let status = match child {
            Some(mut child) => {
                let deadline = Instant::now() + Duration::from_secs(1);
                loop {
                    match child.try_wait() {
                        Ok(Some(status)) => break status.to_string(),
                        Ok(None) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        _ => {
                            kill_group(&mut child);
                            break child
                                .wait()
                                .map_or_else(|e| e.to_string(), |s| format!("{s}, killed"));
                        }
                    }
                }
            }
            None => "unknown status".to_owned(),
        };
        if stopping(mailbox) {
            return;
        }
        if produced {
            backoff = options.restart_min;
        }
        log::debug!("{name}: exited ({status}); restarting in {backoff:?}");
        post_error(
            mailbox,
            SourceError::PipeExited {
                command: command.to_owned(),
                status,
                restart_in: backoff,
            },
        );
        if sleep(mailbox, backoff) {
            return;
        }
        if !produced {
            backoff = (backoff * 2).min(options.restart_max);
        }
    }
}

/// Reads frames until EOF or a read error; returns whether any frame was produced.
fn read_frames(
    command: &str,
    name: &str,
    mut stdout: impl Read,
    options: &PipeOptions,
    mailbox: &PipeMailbox,
    seq: &mut u64,
) -> bool {
    let mut produced = false;
    let mut buf = vec![0u8; 64 * 1024];
    let mut splitter = MjpegSplitter::new(options.max_frame);
    let raw_len = match options.format {
        PipeFormat::Raw {
            format,
            width,
            height,
        } => format.expected_len(width, height).filter(|&n| n > 0),
        PipeFormat::Mjpeg => None,
    };
    let mut raw = Vec::with_capacity(raw_len.unwrap_or(0));
    loop {
        let n = match stdout.read(&mut buf) {
            Ok(0) => return produced,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                post_error(
                    mailbox,
                    SourceError::PipeRead {
                        command: command.to_owned(),
                        source,
                    },
                );
                return produced;
            }
        };
        match (options.format, raw_len) {
            (
                PipeFormat::Raw {
                    format,
                    width,
                    height,
                },
                Some(len),
            ) => {
                let mut chunk = &buf[..n];
                while !chunk.is_empty() {
                    let take = (len - raw.len()).min(chunk.len());
                    raw.extend_from_slice(&chunk[..take]);
                    chunk = &chunk[take..];
                    if raw.len() == len {
                        let data = std::mem::replace(&mut raw, Vec::with_capacity(len));
                        post_frame(mailbox, frame(data, width, height, format, seq));
                        produced = true;
                    }
                }
            }
            _ => {
                splitter.push(&buf[..n]);
                while let Some(next) = splitter.next_frame() {
                    match next {
                        Ok(jpeg) => match jpeg_size(&jpeg) {
                            Ok((w, h)) => {
                                post_frame(mailbox, frame(jpeg, w, h, PixelFormat::Mjpeg, seq));
                                produced = true;
                            }
                            Err(message) => {
                                *seq += 1;
                                post_error(
                                    mailbox,
                                    SourceError::CorruptFrame {
                                        source_name: name.to_owned(),
                                        message,
                                    },
                                );
                            }
                        },
                        Err(e) => {
                            *seq += 1;
                            post_error(
                                mailbox,
                                SourceError::CorruptFrame {
                                    source_name: name.to_owned(),
                                    message: e.to_string(),
                                },
                            );
                        }
                    }
                }
            }
        }
        if stopping(mailbox) {
            return produced;
        }
    }
}

fn frame(data: Vec<u8>, width: u32, height: u32, format: PixelFormat, seq: &mut u64) -> Frame {
    let f = Frame {
        data,
        width,
        height,
        format,
        seq: *seq,
        captured_at: Instant::now(),
        captured_wall: SystemTime::now(),
    };
    *seq += 1;
    f
}

/// The size in a JPEG header (parsing the header only).
fn jpeg_size(jpeg: &[u8]) -> Result<(u32, u32), String> {
    image::ImageReader::with_format(std::io::Cursor::new(jpeg), image::ImageFormat::Jpeg)
        .into_dimensions()
        .map_err(|e| e.to_string())
}
