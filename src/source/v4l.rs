//! USB (UVC) cameras through V4L2 (`v4l` crate, Linux, cargo feature `v4l2`).
//!
//! The device is opened with the requested pixel format (`auto` prefers MJPEG, then YUYV),
//! size and frame rate, and streamed through mmap buffers with a capture timeout. Each buffer
//! is copied into an owned [`Frame`] (row padding removed for raw formats) before it goes back
//! to the driver. When the device errors or disappears (USB unplugged) it is closed and
//! reopened on the next call, after a capped exponential backoff; every error names the device.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use v4l::buffer::Type;
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::{Device, FourCC};

use super::{FrameSource, SourceError};
use crate::config::{CameraConfig, CaptureFormat};
use crate::frame::{Frame, PixelFormat};

/// What to ask the device for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct V4lRequest {
    /// Pixel format (`Auto`: MJPEG if offered, else YUYV).
    pub format: CaptureFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frames per second.
    pub fps: f32,
    /// Capture timeout.
    pub timeout: Duration,
}

impl V4lRequest {
    /// The request a camera config describes.
    pub fn from_camera(camera: &CameraConfig) -> V4lRequest {
        V4lRequest {
            format: camera.format,
            width: camera.width,
            height: camera.height,
            fps: camera.fps,
            timeout: camera.timeout(),
        }
    }
}

fn fourcc_of(format: PixelFormat) -> FourCC {
    match format {
        PixelFormat::Mjpeg => FourCC::new(b"MJPG"),
        PixelFormat::Yuyv => FourCC::new(b"YUYV"),
        PixelFormat::Grey => FourCC::new(b"GREY"),
        PixelFormat::Rgb24 => FourCC::new(b"RGB3"),
    }
}

fn format_of(fourcc: FourCC) -> Option<PixelFormat> {
    match &fourcc.repr {
        b"MJPG" | b"JPEG" => Some(PixelFormat::Mjpeg),
        b"YUYV" => Some(PixelFormat::Yuyv),
        b"GREY" => Some(PixelFormat::Grey),
        b"RGB3" => Some(PixelFormat::Rgb24),
        _ => None,
    }
}

fn bytes_per_pixel(format: PixelFormat) -> usize {
    match format {
        PixelFormat::Rgb24 => 3,
        PixelFormat::Yuyv => 2,
        PixelFormat::Grey | PixelFormat::Mjpeg => 1,
    }
}

struct Open {
    // Field order matters: the stream (its mmap buffers) goes before the device.
    stream: Stream<'static>,
    _device: Device,
    format: PixelFormat,
    width: u32,
    height: u32,
    stride: usize,
}

/// A V4L2 capture device, reopened when it fails.
pub struct V4lSource {
    device: PathBuf,
    request: V4lRequest,
    open: Option<Open>,
    backoff: Duration,
    retry_at: Option<Instant>,
    timeouts_in_a_row: u32,
    seq: u64,
}

const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

impl V4lSource {
    /// Opens the device now (so a wrong path or format fails at start-up).
    pub fn open(device: &Path, request: V4lRequest) -> Result<V4lSource, SourceError> {
        let mut s = V4lSource {
            device: device.to_owned(),
            request,
            open: None,
            backoff: BACKOFF_MIN,
            retry_at: None,
            timeouts_in_a_row: 0,
            seq: 0,
        };
        s.open = Some(s.open_device()?);
        Ok(s)
    }

    fn err(&self, action: &'static str) -> impl Fn(std::io::Error) -> SourceError + '_ {
        move |source| SourceError::Device {
            device: self.device.clone(),
            action,
            source,
        }
    }

    fn open_device(&self) -> Result<Open, SourceError> {
        let dev = Device::with_path(&self.device).map_err(self.err("open"))?;
        let wanted: &[PixelFormat] = match self.request.format {
            CaptureFormat::Auto => &[PixelFormat::Mjpeg, PixelFormat::Yuyv],
            CaptureFormat::Mjpeg => &[PixelFormat::Mjpeg],
            CaptureFormat::Yuyv => &[PixelFormat::Yuyv],
            CaptureFormat::Rgb24 => &[PixelFormat::Rgb24],
            CaptureFormat::Grey => &[PixelFormat::Grey],
        };
        let mut chosen = None;
        let mut offered = String::new();
        for &want in wanted {
            let mut fmt = dev.format().map_err(self.err("get format"))?;
            fmt.width = self.request.width;
            fmt.height = self.request.height;
            fmt.fourcc = fourcc_of(want);
            let got = dev.set_format(&fmt).map_err(self.err("set format"))?;
            if format_of(got.fourcc) == Some(want) {
                chosen = Some((want, got));
                break;
            }
            offered = got.fourcc.str().unwrap_or("?").to_owned();
        }
        let Some((format, fmt)) = chosen else {
            return Err(SourceError::Format {
                device: self.device.clone(),
                message: format!(
                    "does not offer {:?} (it answered {offered}); set camera.format to a format \
                     it supports (v4l2-ctl --list-formats-ext)",
                    self.request.format
                ),
            });
        };
        if (fmt.width, fmt.height) != (self.request.width, self.request.height) {
            log::info!(
                "{}: asked for {}x{}, the driver chose {}x{}",
                self.device.display(),
                self.request.width,
                self.request.height,
                fmt.width,
                fmt.height
            );
        }
        let fps = self.request.fps.round().clamp(1.0, 1000.0) as u32;
        if let Err(e) = dev.set_params(&v4l::video::capture::Parameters::with_fps(fps)) {
            log::warn!("{}: cannot set {fps} fps: {e}", self.device.display());
        }
        let mut stream =
            Stream::with_buffers(&dev, Type::VideoCapture, 4).map_err(self.err("map buffers"))?;
        stream.set_timeout(self.request.timeout);
        log::info!(
            "{}: opened {}x{} {format:?}",
            self.device.display(),
            fmt.width,
            fmt.height
        );
        Ok(Open {
            stream,
            _device: dev,
            format,
            width: fmt.width,
            height: fmt.height,
            stride: fmt.stride as usize,
        })
    }

    fn close(&mut self) {
        self.open = None;
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }
}

/// Copies a captured buffer into an owned frame, removing row padding of raw formats.
fn copy_frame(open: &Open, data: Vec<u8>, seq: u64, device: &Path) -> Result<Frame, SourceError> {
    let payload = match open.format {
        PixelFormat::Mjpeg => data,
        raw => {
            let row = open.width as usize * bytes_per_pixel(raw);
            let stride = open.stride.max(row);
            let rows = open.height as usize;
            if rows == 0 || data.len() < stride * (rows - 1) + row {
                return Err(SourceError::CorruptFrame {
                    source_name: format!("v4l2:{}", device.display()),
                    message: format!(
                        "short buffer: {} bytes for {}x{} {raw:?}",
                        data.len(),
                        open.width,
                        open.height
                    ),
                });
            }
            if stride == row {
                let mut data = data;
                data.truncate(row * rows);
                data
            } else {
                let mut out = Vec::with_capacity(row * rows);
                for r in 0..rows {
                    out.extend_from_slice(&data[r * stride..r * stride + row]);
                }
                out
            }
        }
    };
    Ok(Frame {
        data: payload,
        width: open.width,
        height: open.height,
        format: open.format,
        seq,
        captured_at: Instant::now(),
        captured_wall: SystemTime::now(),
    })
}

impl FrameSource for V4lSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        if self.open.is_none() {
            if let Some(at) = self.retry_at {
                let now = Instant::now();
                if at > now {
                    std::thread::sleep(at - now);
                }
            }
            match self.open_device() {
                Ok(o) => {
                    log::info!("{}: reopened", self.device.display());
                    self.open = Some(o);
                    self.backoff = BACKOFF_MIN;
                }
                Err(e) => {
                    self.close();
                    return Err(e);
                }
            }
        }
        let device = self.device.clone();
        let seq = self.seq;
        let Some(open) = self.open.as_mut() else {
            return Err(SourceError::Stopped {
                source_name: format!("v4l2:{}", device.display()),
            });
        };
        let captured = match open.stream.next() {
            Ok((buf, meta)) => {
                let used = (meta.bytesused as usize).min(buf.len());
                let data = if used == 0 { buf } else { &buf[..used] };
                Ok(data.to_vec())
            }
            Err(e) => Err(e),
        };
        match captured {
            Ok(data) => {
                self.timeouts_in_a_row = 0;
                self.seq += 1;
                let open = self.open.as_ref().ok_or_else(|| SourceError::Stopped {
                    source_name: format!("v4l2:{}", device.display()),
                })?;
                copy_frame(open, data, seq, &device).map(Some)
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                self.timeouts_in_a_row += 1;
                if self.timeouts_in_a_row >= 3 {
                    log::warn!(
                        "{}: no frame for {:?}, reopening",
                        device.display(),
                        self.request.timeout * 3
                    );
                    self.timeouts_in_a_row = 0;
                    self.close();
                }
                Err(SourceError::Timeout {
                    source_name: format!("v4l2:{}", device.display()),
                    after: self.request.timeout,
                })
            }
            Err(source) => {
                log::warn!(
                    "{}: capture failed ({source}); reopening in {:?}",
                    device.display(),
                    self.backoff
                );
                self.close();
                Err(SourceError::Device {
                    device,
                    action: "capture",
                    source,
                })
            }
        }
    }

    fn describe(&self) -> String {
        match &self.open {
            Some(o) => format!(
                "v4l2:{} {}x{} {:?}",
                self.device.display(),
                o.width,
                o.height,
                o.format
            ),
            None => format!("v4l2:{} (closed)", self.device.display()),
        }
    }
}
