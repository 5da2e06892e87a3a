//! Camera frames as they cross from a source to the preprocessing stage.
//!
//! Sources hand out owned frames, so a frame outlives the capture buffer it came from (the `v4l`
//! crate lends mmap buffers that must go back to the driver before the next capture).

use std::time::{Instant, SystemTime};

/// How the bytes of a [`Frame`] are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// Packed 8-bit R, G, B; `width * height * 3` bytes.
    Rgb24,
    /// Packed YUV 4:2:2 (Y0 U Y1 V); `width * height * 2` bytes, `width` even.
    Yuyv,
    /// 8-bit luma only; `width * height` bytes.
    Grey,
    /// One JPEG (or camera MJPEG) image; width and height are what the source announced and are
    /// checked against the decoded image.
    Mjpeg,
}

impl PixelFormat {
    /// The number of bytes a frame of this format and size must have, when the format has a
    /// fixed size (everything but MJPEG).
    pub fn expected_len(self, width: u32, height: u32) -> Option<usize> {
        // Saturating: a size no buffer can have (a corrupt header, `u32::MAX` sides) is a length
        // no frame matches, not an overflow.
        let pixels = (width as usize).saturating_mul(height as usize);
        match self {
            PixelFormat::Rgb24 => Some(pixels.saturating_mul(3)),
            PixelFormat::Yuyv => Some(pixels.saturating_mul(2)),
            PixelFormat::Grey => Some(pixels),
            PixelFormat::Mjpeg => None,
        }
    }
}

/// One captured image with the metadata the rest of the pipeline needs.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The pixel bytes, laid out as `format` says.
    pub data: Vec<u8>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Layout of `data`.
    pub format: PixelFormat,
    /// Frame number from the source, starting at 0; gaps mean the source dropped frames.
    pub seq: u64,
    /// When the frame was captured, on the monotonic clock (for latency).
    pub captured_at: Instant,
    /// When the frame was captured, on the wall clock (for event timestamps).
    pub captured_wall: SystemTime,
}

/// The name of the whole frame as a zone (events, topics, GPIO lines).
pub const ALL_ZONE: &str = "all";

/// A rectangle of a frame in relative coordinates (a zone, `[[cameras.zones]]`): `x, y` its top-left corner, `w, h` its size, all
/// fractions of the frame's width and height.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    /// Left edge, 0..1 of the width.
    pub x: f32,
    /// Top edge, 0..1 of the height.
    pub y: f32,
    /// Width, 0..1 of the width.
    pub w: f32,
    /// Height, 0..1 of the height.
    pub h: f32,
}

impl Rect {
    /// The whole frame.
    pub const WHOLE: Rect = Rect {
        x: 0.0,
        y: 0.0,
        w: 1.0,
        h: 1.0,
    };

    /// Whether this is the whole frame.
    pub fn is_whole(&self) -> bool {
        *self == Rect::WHOLE
    }

    /// The rectangle in pixels of a `width` x `height` frame: `(x, y, w, h)`, at least one pixel
    /// each way and inside the frame.
    pub fn to_pixels(&self, width: u32, height: u32) -> (u32, u32, u32, u32) {
        let px = |v: f32, n: u32| ((v.clamp(0.0, 1.0) * n as f32).round() as u32).min(n);
        let x = px(self.x, width).min(width.saturating_sub(1));
        let y = px(self.y, height).min(height.saturating_sub(1));
        let w = px(self.w, width).clamp(1, width.saturating_sub(x).max(1));
        let h = px(self.h, height).clamp(1, height.saturating_sub(y).max(1));
        (x, y, w, h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by `tests/fuzz.rs`: a frame claiming `u32::MAX` sides overflowed the size.
    #[test]
    fn sizes_no_buffer_can_have_do_not_overflow() {
        assert_eq!(PixelFormat::Rgb24.expected_len(4, 2), Some(24));
        assert_eq!(PixelFormat::Yuyv.expected_len(4, 2), Some(16));
        assert_eq!(PixelFormat::Grey.expected_len(4, 2), Some(8));
        assert_eq!(PixelFormat::Mjpeg.expected_len(4, 2), None);
        for format in [PixelFormat::Rgb24, PixelFormat::Yuyv, PixelFormat::Grey] {
            let len = format.expected_len(u32::MAX, 1_431_655_766).unwrap();
            assert!(len >= u32::MAX as usize, "{format:?}: {len}");
        }
    }
}
