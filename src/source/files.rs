//! Replaying image files (a recorded clip, a folder of stills) as a camera, for demos, tests and
//! benches.
//!
//! The glob is expanded once, sorted, and replayed at `fps` (the source sleeps until each
//! frame's due time; a source that falls behind does not burst to catch up). JPEG files are
//! handed out as [`PixelFormat::Mjpeg`] frames carrying the file bytes (only the header is
//! parsed, for the size); PNG files are decoded to [`PixelFormat::Rgb24`], once their header
//! declares at most [`crate::preprocess::MAX_IMAGE_PIXELS`]. A file that cannot
//! be read or is not a JPEG/PNG image yields a recoverable error and the replay moves on.

use std::io::Cursor;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use super::{FrameSource, SourceError};
use crate::frame::{Frame, PixelFormat};
use crate::preprocess::check_image_size;

/// Replays a sorted list of image files.
pub struct FilesSource {
    pattern: String,
    files: Vec<PathBuf>,
    next: usize,
    looping: bool,
    interval: Option<Duration>,
    due: Option<Instant>,
    seq: u64,
}

impl FilesSource {
    /// Expands `pattern` (sorted) and prepares a replay at `fps` frames per second (`fps <= 0`
    /// or not finite: as fast as possible); `looping` starts over after the last file.
    pub fn open(pattern: &str, fps: f32, looping: bool) -> Result<FilesSource, SourceError> {
        let paths = glob::glob(pattern).map_err(|e| SourceError::Glob {
            pattern: pattern.to_owned(),
            message: e.msg.to_owned(),
        })?;
        let mut files: Vec<PathBuf> = paths
            .filter_map(|p| match p {
                Ok(p) if p.is_file() => Some(p),
                Ok(_) => None,
                Err(e) => {
                    log::warn!(
                        "files:{pattern}: skipping {}: {}",
                        e.path().display(),
                        e.error()
                    );
                    None
                }
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(SourceError::NoFiles {
                pattern: pattern.to_owned(),
            });
        }
        let interval = (fps.is_finite() && fps > 0.0)
            .then(|| Duration::try_from_secs_f32(1.0 / fps).ok())
            .flatten();
        log::info!(
            "files:{pattern}: {} files at {fps} fps{}",
            files.len(),
            if looping { ", looping" } else { "" }
        );
        Ok(FilesSource {
            pattern: pattern.to_owned(),
            files,
            next: 0,
            looping,
            interval,
            due: None,
            seq: 0,
        })
    }

    /// Turns pacing off: frames come as fast as they are asked for.
    pub fn unpaced(mut self) -> FilesSource {
        self.interval = None;
        self
    }

    /// The files, in replay order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    fn pace(&mut self) {
        let Some(interval) = self.interval else {
            return;
        };
        let now = Instant::now();
        match self.due {
            Some(due) if due > now => {
                std::thread::sleep(due - now);
                self.due = Some(due + interval);
            }
            // First frame, or behind schedule: start a new schedule from now.
            _ => self.due = Some(now + interval),
        }
    }
}

/// Reads a JPEG header or decodes a PNG into a frame.
pub fn load_image(path: &std::path::Path, seq: u64) -> Result<Frame, SourceError> {
    let bytes = std::fs::read(path).map_err(|source| SourceError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    let bad = |message: String| SourceError::BadImage {
        what: path.display().to_string(),
        message,
    };
    let reader = image::ImageReader::new(Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|e| bad(e.to_string()))?;
    let (data, width, height, format) = match reader.format() {
        Some(image::ImageFormat::Jpeg) => {
            let (w, h) = reader.into_dimensions().map_err(|e| bad(e.to_string()))?;
            (bytes, w, h, PixelFormat::Mjpeg)
        }
        Some(image::ImageFormat::Png) => {
            // Decoded here, so bounded here, from the header (issue 25).
            let (w, h) =
                image::ImageReader::with_format(Cursor::new(&bytes), image::ImageFormat::Png)
                    .into_dimensions()
                    .map_err(|e| bad(e.to_string()))?;
            check_image_size(w, h, "PNG").map_err(|e| bad(e.to_string()))?;
            let img = reader.decode().map_err(|e| bad(e.to_string()))?.to_rgb8();
            let (w, h) = img.dimensions();
            (img.into_raw(), w, h, PixelFormat::Rgb24)
        }
        other => {
            return Err(bad(format!(
                "expected a JPEG or PNG file, found {}",
                other.map_or_else(|| "unknown data".to_owned(), |f| format!("{f:?}"))
            )));
        }
    };
    Ok(Frame {
        data,
        width,
        height,
        format,
        seq,
        captured_at: Instant::now(),
        captured_wall: SystemTime::now(),
    })
}

impl FrameSource for FilesSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        if self.next >= self.files.len() {
            if !self.looping {
                return Ok(None);
            }
            self.next = 0;
        }
        let path = self.files[self.next].clone();
        self.next += 1;
        self.pace();
        let seq = self.seq;
        self.seq += 1;
        load_image(&path, seq).map(Some)
    }

    fn describe(&self) -> String {
        format!("files:{}", self.pattern)
    }
}
