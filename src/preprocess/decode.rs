//! Bounds on what gets decoded: the size a frame or image file declares in its header is checked
//! before the decoder allocates anything for it, and buffers kept across frames give memory back
//! after a large frame.
//!
//! Issue 25: a 1.5 MB progressive JPEG declaring 16000 x 16000, sent between normal frames, took
//! the daemon to 1.5 GB resident (768 MB of RGB plus the progressive coefficients), and the RGB
//! buffer was kept. Two limits now stand in front of the decoder:
//!
//! - camera frames: at most [`CAMERA_SLACK`] times the camera's configured width and height per
//!   side ([`FrameLimit::camera`]); sources without a configured size (`files:`) and tools that
//!   preprocess frames outside the daemon get [`FrameLimit::absolute`];
//! - image files (`classify`, a label's `images`, `exemplar add`): at most [`MAX_IMAGE_PIXELS`].

use std::io::Cursor;

use image::{ImageDecoder, codecs::jpeg::JpegDecoder};

use super::{MAX_SIDE, PreprocessError, RgbImage, grey_to_rgb};

/// The most pixels an image file or an unbounded source's frame may declare: 40 million.
///
/// The model sees 224 x 224 pixels, so a larger picture only costs memory: decoding holds 3
/// bytes a pixel of RGB plus the decoder's own planes (up to 6 more a pixel for the coefficients
/// of a progressive JPEG), about 480 MB at 40 MP, what a 1 GB board can still afford. 40 MP takes
/// every 8K frame (33 MP), the 12 MP of a phone and the 24 to 36 MP of most cameras; a larger
/// original (a 45 to 50 MP camera's) must be scaled down first, and the error says so.
pub const MAX_IMAGE_PIXELS: u64 = 40_000_000;

/// How much larger than its configured size (per side) a camera's frame may be: cameras that
/// ignore the requested size usually fall back to the next size they have (640 x 480 asked,
/// 1280 x 720 given), and a portrait frame of a landscape configuration fits too.
pub const CAMERA_SLACK: u32 = 2;

/// Whatever its configured size, a camera may send frames up to 4K UHD (3840 x 2160, either
/// way up): a pipe from ffmpeg or GStreamer streaming 1080p under the default 640 x 480 keeps
/// working. Decoded, such a frame is 25 MB of RGB, within the 50 MB a bomb may cost.
pub const CAMERA_FLOOR: (u32, u32) = (3840, 2160);

/// Buffers kept across frames are released when they hold more than twice what the current frame
/// needs, and more than this many bytes (below it, keeping them costs nothing worth a
/// reallocation).
const KEEP_BYTES: usize = 1 << 20;

/// The largest frame a source may deliver, checked from the frame's header before decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameLimit {
    /// The widest frame accepted.
    pub width: u32,
    /// The tallest frame accepted.
    pub height: u32,
    /// The most pixels accepted.
    pub pixels: u64,
    /// What the limit is, for messages.
    pub reason: String,
    /// The source, named in errors (`camera demo (pipe:...)`); empty outside the daemon.
    pub source: String,
}

impl FrameLimit {
    /// The limit for a source without a configured size: [`MAX_IMAGE_PIXELS`], [`MAX_SIDE`].
    pub fn absolute(source: impl Into<String>) -> FrameLimit {
        FrameLimit {
            width: MAX_SIDE,
            height: MAX_SIDE,
            pixels: MAX_IMAGE_PIXELS,
            reason: format!("the limit of {MAX_IMAGE_PIXELS} pixels for a source without a size"),
            source: source.into(),
        }
    }

    /// The limit for a camera configured at `width x height`: [`CAMERA_SLACK`] times each side,
    /// and never less than [`CAMERA_FLOOR`].
    pub fn camera(source: impl Into<String>, width: u32, height: u32) -> FrameLimit {
        let (long, short) = CAMERA_FLOOR;
        let w = width.saturating_mul(CAMERA_SLACK).clamp(long, MAX_SIDE);
        let h = height.saturating_mul(CAMERA_SLACK).clamp(long, MAX_SIDE);
        let pixels = (u64::from(width) * u64::from(height) * u64::from(CAMERA_SLACK).pow(2))
            .max(u64::from(long) * u64::from(short));
        FrameLimit {
            width: w,
            height: h,
            pixels,
            reason: format!(
                "this camera's limit of {w}x{h} and {pixels} pixels ({CAMERA_SLACK} x \
                 camera.width x camera.height, {width}x{height}, and at least 4K UHD; set them \
                 to the size the camera sends)"
            ),
            source: source.into(),
        }
    }

    /// Frame `seq` as errors name it: the source, then the frame.
    pub(crate) fn frame(&self, seq: u64) -> String {
        if self.source.is_empty() {
            format!("frame {seq}")
        } else {
            format!("{}: frame {seq}", self.source)
        }
    }

    /// Whether a frame declaring `width x height` may be decoded; `what` names it in the error.
    pub fn check(&self, width: u32, height: u32, what: &str) -> Result<(), PreprocessError> {
        self.check_with(width, height, || what.to_owned())
    }

    /// [`check`](Self::check) for frame `seq` of the source: the frame's name is written only
    /// when the frame is refused, not for every frame that passes.
    pub(crate) fn check_frame(
        &self,
        width: u32,
        height: u32,
        seq: u64,
    ) -> Result<(), PreprocessError> {
        self.check_with(width, height, || self.frame(seq))
    }

    fn check_with(
        &self,
        width: u32,
        height: u32,
        what: impl FnOnce() -> String,
    ) -> Result<(), PreprocessError> {
        let pixels = u64::from(width) * u64::from(height);
        if width > self.width || height > self.height || pixels > self.pixels {
            return Err(PreprocessError::TooLarge {
                what: what(),
                width,
                height,
                limit: self.reason.clone(),
            });
        }
        Ok(())
    }
}

/// Refuses an image file declaring more than [`MAX_IMAGE_PIXELS`]; `what` names the file.
pub fn check_image_size(width: u32, height: u32, what: &str) -> Result<(), PreprocessError> {
    if u64::from(width) * u64::from(height) > MAX_IMAGE_PIXELS {
        return Err(PreprocessError::TooLarge {
            what: what.to_owned(),
            width,
            height,
            limit: format!(
                "the limit of {MAX_IMAGE_PIXELS} pixels on images (scale it down: the model \
                 sees a few hundred pixels a side)"
            ),
        });
    }
    Ok(())
}

/// Drops `buf`'s allocation when it is more than twice `len` (and more than [`KEEP_BYTES`]), so
/// that a buffer kept across frames does not stay at the size of the largest frame seen. The
/// caller sizes it afterwards as usual.
pub(crate) fn release_excess<T>(buf: &mut Vec<T>, len: usize) {
    let bytes = buf.capacity() * std::mem::size_of::<T>();
    let wanted = len * std::mem::size_of::<T>();
    if bytes > KEEP_BYTES && bytes > 2 * wanted {
        *buf = Vec::new();
    }
}

/// Decodes a camera JPEG into `rgb`, reusing its buffer, after checking the size its header
/// declares against `limit`. Camera frames carry no EXIF rotation.
pub(crate) fn decode_jpeg_into(
    bytes: &[u8],
    seq: u64,
    limit: &FrameLimit,
    rgb: &mut RgbImage,
) -> Result<(), PreprocessError> {
    let what = || limit.frame(seq);
    let decode_err = |source| PreprocessError::Decode {
        what: what(),
        source,
    };
    // Parses the markers up to the first scan: the tables and the frame header, nothing sized
    // by the image.
    let decoder = JpegDecoder::new(Cursor::new(bytes)).map_err(decode_err)?;
    let (w, h) = decoder.dimensions();
    limit.check_frame(w, h, seq)?;
    // A baseline JPEG spends at least 2 bits (a DC and an end-of-block code) on each 8 x 8 block
    // of each component: at most 256 pixels a byte. A header damaged into a larger size would
    // have the decoder allocate and fill that size before the data runs out; twice the bound
    // leaves room (a progressive frame can compress further, but only when it is blank).
    if u64::from(w) * u64::from(h) > 512 * bytes.len() as u64 {
        return Err(PreprocessError::Implausible {
            what: what(),
            width: w,
            height: h,
            bytes: bytes.len(),
        });
    }
    let color = decoder.color_type();
    let n = decoder.total_bytes() as usize;
    release_excess(&mut rgb.data, w as usize * h as usize * 3);
    match color {
        image::ColorType::Rgb8 => {
            rgb.data.resize(n, 0);
            decoder.read_image(&mut rgb.data).map_err(decode_err)?;
        }
        image::ColorType::L8 => {
            let mut grey = vec![0u8; n];
            decoder.read_image(&mut grey).map_err(decode_err)?;
            grey_to_rgb(&grey, w, h, rgb);
        }
        _ => {
            // CMYK and other rarities: take the general path.
            let img = image::load_from_memory_with_format(bytes, image::ImageFormat::Jpeg)
                .map_err(decode_err)?
                .into_rgb8();
            rgb.data.clear();
            rgb.data.extend_from_slice(img.as_raw());
        }
    }
    rgb.width = w;
    rgb.height = h;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_camera_frame_may_be_twice_the_configured_side() {
        let limit = FrameLimit::camera("camera c (pipe:cat)", 2560, 1440);
        limit.check(5120, 2880, "f").unwrap();
        limit.check(2880, 3840, "f").unwrap();
        let e = limit
            .check(5121, 2880, "camera c (pipe:cat): frame 3")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "camera c (pipe:cat): frame 3: declares 5121x2880 pixels, over this camera's limit of \
             5120x3840 and 14745600 pixels (2 x camera.width x camera.height, 2560x1440, and at \
             least 4K UHD; set them to the size the camera sends); refused before decoding"
        );
        assert_eq!(limit.frame(3), "camera c (pipe:cat): frame 3");
        assert_eq!(FrameLimit::absolute("").frame(3), "frame 3");
    }

    /// A pipe streaming 1080p (or 4K) under the default 640 x 480 keeps working; a bomb does not.
    #[test]
    fn any_camera_may_send_up_to_4k() {
        let limit = FrameLimit::camera("c", 640, 480);
        limit.check(1920, 1080, "f").unwrap();
        limit.check(3840, 2160, "f").unwrap();
        limit.check(2160, 3840, "f").unwrap();
        limit.check(3841, 100, "f").unwrap_err();
        limit.check(3840, 3840, "f").unwrap_err();
        limit.check(16000, 16000, "f").unwrap_err();
    }

    #[test]
    fn the_absolute_limit_counts_pixels() {
        let limit = FrameLimit::absolute("");
        limit.check(8000, 5000, "f").unwrap();
        assert!(limit.check(8000, 5001, "f").is_err());
        assert!(limit.check(MAX_SIDE + 1, 1, "f").is_err());
        check_image_size(8000, 5000, "a.jpg").unwrap();
        let e = check_image_size(16000, 16000, "a.jpg").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("a.jpg: declares 16000x16000 pixels, over the limit of 40000000"),
            "{e}"
        );
    }

    #[test]
    fn a_buffer_is_released_after_a_large_frame_only() {
        let mut small = Vec::<u8>::with_capacity(100);
        release_excess(&mut small, 10);
        assert_eq!(small.capacity(), 100, "small buffers are kept");
        let mut big = Vec::<u8>::with_capacity(8 << 20);
        release_excess(&mut big, 5 << 20);
        assert_eq!(
            big.capacity(),
            8 << 20,
            "less than twice what is needed: kept"
        );
        release_excess(&mut big, 1 << 20);
        assert_eq!(big.capacity(), 0, "after a large frame: released");
    }
}
