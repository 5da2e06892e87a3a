//! Where frames come from: V4L2 cameras, commands that write frames to stdout, image files.
//!
//! Every source implements [`FrameSource`] and hands out owned [`Frame`]s, so a frame outlives
//! the capture buffer it came from. Every source has a capture timeout: a stalled camera or
//! command yields [`SourceError::Timeout`] instead of hanging the capture thread.
//!
//! Errors are recoverable (log, count, call `next_frame` again) unless
//! [`SourceError::is_fatal`] says otherwise; the sources reconnect or restart by themselves.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{CameraConfig, CaptureFormat, SourceSpec};
use crate::frame::{Frame, PixelFormat};
use crate::preprocess::FrameLimit;

pub mod files;
pub mod mjpeg;
pub mod pipe;
#[cfg(all(target_os = "linux", feature = "v4l2"))]
pub mod v4l;

pub use files::FilesSource;
pub use pipe::{PipeFormat, PipeOptions, PipeSource};

/// What went wrong while capturing. Variants name the device, command, file or pattern.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The `files:` glob matched no file (fatal).
    #[error("files:{pattern}: no file matches")]
    NoFiles {
        /// The glob.
        pattern: String,
    },
    /// The `files:` glob is invalid (fatal).
    #[error("files:{pattern}: invalid glob: {message}")]
    Glob {
        /// The glob.
        pattern: String,
        /// What is wrong.
        message: String,
    },
    /// A file could not be read (recoverable: the source moves on to the next file).
    #[error("{}: cannot read: {source}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file or frame is not a usable JPEG/PNG image (recoverable).
    #[error("{what}: not a usable image: {message}")]
    BadImage {
        /// The file path or the source and frame number.
        what: String,
        /// What is wrong.
        message: String,
    },
    /// The frame command could not be started (recoverable: it is retried with backoff).
    #[error("pipe `{command}`: cannot start `sh -c`: {source}")]
    Spawn {
        /// The command.
        command: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The frame command exited (recoverable: it is restarted with backoff).
    #[error("pipe `{command}`: exited ({status}); restarting in {restart_in:?}")]
    PipeExited {
        /// The command.
        command: String,
        /// Its exit status, as text.
        status: String,
        /// The backoff before the restart.
        restart_in: Duration,
    },
    /// Reading the command's stdout failed (recoverable).
    #[error("pipe `{command}`: read failed: {source}")]
    PipeRead {
        /// The command.
        command: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A frame in an MJPEG stream is damaged and was skipped (recoverable).
    #[error("{source_name}: corrupt frame skipped: {message}")]
    CorruptFrame {
        /// The source (`pipe `...``, a device).
        source_name: String,
        /// What is wrong.
        message: String,
    },
    /// No frame arrived within the capture timeout (recoverable).
    #[error("{source_name}: no frame within {after:?}")]
    Timeout {
        /// The source.
        source_name: String,
        /// The timeout.
        after: Duration,
    },
    /// A V4L2 device operation failed (recoverable: the device is reopened with backoff).
    #[error("{}: {action} failed: {source}", device.display())]
    Device {
        /// The device node.
        device: PathBuf,
        /// What was being done (`open`, `set format`, `capture`, ...).
        action: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The device does not offer the requested pixel format (fatal: fix the config).
    #[error("{}: {message}", device.display())]
    Format {
        /// The device node.
        device: PathBuf,
        /// What it offers instead.
        message: String,
    },
    /// The source kind is not compiled into this build (fatal).
    #[error("{what} is not available in this build: {why}")]
    Unsupported {
        /// The source.
        what: String,
        /// Why (platform, cargo feature).
        why: String,
    },
    /// The source's capture thread is gone (fatal).
    #[error("{source_name}: capture thread stopped")]
    Stopped {
        /// The source.
        source_name: String,
    },
}

impl SourceError {
    /// Whether calling `next_frame` again is pointless.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            SourceError::NoFiles { .. }
                | SourceError::Glob { .. }
                | SourceError::Format { .. }
                | SourceError::Unsupported { .. }
                | SourceError::Stopped { .. }
        )
    }
}

/// A producer of frames, driven by the daemon's capture thread.
pub trait FrameSource: Send {
    /// Blocks until the next frame (at most about the capture timeout). `Ok(None)` means the
    /// source is finished (files without `loop`); errors are recoverable unless
    /// [`SourceError::is_fatal`].
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError>;

    /// The source, for logs: `v4l2:/dev/video0 640x480 MJPEG`, `pipe `...``.
    fn describe(&self) -> String;

    /// Frames the source itself dropped since it started (a pipe source's reader thread
    /// replacing an unread frame with a fresher one), as of the last `next_frame`; the daemon
    /// adds them to its own dropped frames. Sources that never drop keep the default, 0.
    fn dropped(&self) -> u64 {
        0
    }
}

/// The largest frame `camera` may deliver (issue 25): `v4l2:` and `pipe:` cameras have a
/// configured size (`camera.width` x `camera.height`) and may send up to
/// [`crate::preprocess::CAMERA_SLACK`] times it per side (at least 4K UHD); `files:` have none and get the absolute
/// limit. Checked from each frame's header before it is decoded.
pub fn frame_limit(camera: &CameraConfig) -> FrameLimit {
    let source = format!("camera {} ({})", camera.name, camera.source);
    match camera.source {
        SourceSpec::Files { .. } => FrameLimit::absolute(source),
        SourceSpec::Pipe { .. } | SourceSpec::V4l2 { .. } => {
            FrameLimit::camera(source, camera.width, camera.height)
        }
    }
}

/// Opens the source `camera.source` describes.
pub fn open_source(camera: &CameraConfig) -> Result<Box<dyn FrameSource>, SourceError> {
    match &camera.source {
        SourceSpec::Files { pattern } => Ok(Box::new(FilesSource::open(
            pattern,
            camera.fps,
            camera.looping,
        )?)),
        SourceSpec::Pipe { command } => {
            let format = match camera.format {
                CaptureFormat::Auto | CaptureFormat::Mjpeg => PipeFormat::Mjpeg,
                CaptureFormat::Rgb24 => PipeFormat::raw(PixelFormat::Rgb24, camera),
                CaptureFormat::Yuyv => PipeFormat::raw(PixelFormat::Yuyv, camera),
                CaptureFormat::Grey => PipeFormat::raw(PixelFormat::Grey, camera),
            };
            Ok(Box::new(PipeSource::spawn(
                command,
                PipeOptions {
                    format,
                    timeout: camera.timeout(),
                    ..PipeOptions::default()
                },
            )?))
        }
        SourceSpec::V4l2 { device } => {
            #[cfg(all(target_os = "linux", feature = "v4l2"))]
            {
                Ok(Box::new(v4l::V4lSource::open(
                    device,
                    v4l::V4lRequest::from_camera(camera),
                )?))
            }
            #[cfg(not(all(target_os = "linux", feature = "v4l2")))]
            {
                Err(SourceError::Unsupported {
                    what: format!("v4l2:{}", device.display()),
                    why: "V4L2 capture needs Linux and the cargo feature \"v4l2\"".into(),
                })
            }
        }
    }
}

/// Opens the camera and waits (up to about `timeout`) for one frame; returns a description of
/// the source and the frame (`v4l2:/dev/video0: 640x480 Mjpeg frame`).
pub fn probe(camera: &CameraConfig, timeout: Duration) -> Result<String, SourceError> {
    let mut probe_camera = camera.clone();
    probe_camera.timeout_s = timeout.as_secs_f32().max(0.01);
    let mut source = open_source(&probe_camera)?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match source.next_frame() {
            Ok(Some(f)) => {
                return Ok(format!(
                    "{}: {}x{} {:?} frame",
                    source.describe(),
                    f.width,
                    f.height,
                    f.format
                ));
            }
            Ok(None) => {
                return Err(SourceError::Timeout {
                    source_name: source.describe(),
                    after: timeout,
                });
            }
            Err(e) if e.is_fatal() || std::time::Instant::now() >= deadline => return Err(e),
            Err(e) => log::debug!("probe: {e}"),
        }
    }
}
