//! Frames and image files to model tensors, exactly as CLIP's Python transform does it.
//!
//! CLIP prepares images with torchvision on PIL images: `Resize(size, BICUBIC)` of the shortest
//! side, `CenterCrop(size)`, `ToTensor()`, `Normalize(mean, std)`. Embeddings are sensitive to
//! that resampling, so this module reproduces Pillow's separable convolution resampler to the bit:
//! the same filter support (widened by the scale factor when downscaling: antialiasing), the same
//! fixed-point coefficients (22 fractional bits), the same rounding and clamping to 8 bits between
//! the horizontal and the vertical pass. Only the output pixels inside the crop are computed.
//!
//! Scratch buffers and filter coefficients live in the [`Preprocessor`] and are reused across
//! frames of the same size, so steady-state preprocessing allocates nothing.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{ImageDecoder, metadata::Orientation};
use serde::Deserialize;

use crate::frame::{Frame, PixelFormat};

mod decode;
mod resample;
mod zones;
pub use decode::{CAMERA_SLACK, FrameLimit, MAX_IMAGE_PIXELS, check_image_size};
use decode::{decode_jpeg_into, release_excess};
use resample::{Plan, resample};

/// What can go wrong turning a frame or a file into a tensor.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    /// The image file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bytes are not a decodable image.
    #[error("{what}: not a decodable image: {source}")]
    Decode {
        /// The file path, or a description of the frame.
        what: String,
        /// The decoder's error.
        source: image::ImageError,
    },
    /// A raw frame's size does not match its announced format.
    #[error("frame {seq}: {format:?} {width}x{height} needs {expected} bytes, got {actual}")]
    FrameSize {
        /// Frame number.
        seq: u64,
        /// Announced format.
        format: PixelFormat,
        /// Announced width.
        width: u32,
        /// Announced height.
        height: u32,
        /// Bytes the format needs.
        expected: usize,
        /// Bytes received.
        actual: usize,
    },
    /// A camera JPEG declares more pixels than its bytes can encode: damaged, and decoding it
    /// would first allocate the declared size (up to 800 MB for 16384 x 16384).
    #[error(
        "{what}: declares {width}x{height} pixels in {bytes} bytes, more than a JPEG can encode (a damaged frame)"
    )]
    Implausible {
        /// The frame.
        what: String,
        /// The declared width.
        width: u32,
        /// The declared height.
        height: u32,
        /// The frame's length.
        bytes: usize,
    },
    /// A frame or image declares a size over its limit ([`FrameLimit`], [`MAX_IMAGE_PIXELS`]);
    /// refused from its header, before the decoder allocates anything.
    #[error("{what}: declares {width}x{height} pixels, over {limit}; refused before decoding")]
    TooLarge {
        /// The file, or the source and frame.
        what: String,
        /// The declared width.
        width: u32,
        /// The declared height.
        height: u32,
        /// The limit, in words.
        limit: String,
    },
    /// An empty image, or one too large to process.
    #[error("{what}: unsupported image size {width}x{height}")]
    Size {
        /// The file or frame.
        what: String,
        /// Width.
        width: u32,
        /// Height.
        height: u32,
    },
}

/// The preprocessing parameters. A bundle's `[image]` table gives them (the model side converts
/// it); this module knows nothing of bundles.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// Output height.
    pub height: u32,
    /// Output width.
    pub width: u32,
    /// Resize mode.
    pub resize: ResizeMode,
    /// Resampling filter.
    pub interpolation: Interpolation,
    /// Per-channel mean (model channel order).
    pub mean: [f32; 3],
    /// Per-channel std (model channel order).
    pub std: [f32; 3],
    /// Channel order of the model.
    pub channel_order: ChannelOrder,
}

/// How the frame is brought to the model's input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizeMode {
    /// Scale so the image covers the input (the shortest side fits), then crop: CLIP's transform.
    Shortest,
    /// Scale each axis to the input size, ignoring the aspect ratio.
    Stretch,
}

/// Where the crop is taken after a `shortest` resize.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CropMode {
    /// The middle of the image, as torchvision's `CenterCrop`.
    Center,
}

/// Resampling filter, both computed as Pillow computes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    /// Pillow's BICUBIC (a = -0.5), antialiased when downscaling.
    Bicubic,
    /// Pillow's BILINEAR (triangle filter), antialiased when downscaling.
    Bilinear,
}

/// Channel order the image tower expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    /// Red, green, blue (every CLIP).
    Rgb,
    /// Blue, green, red.
    Bgr,
}

/// The largest side accepted, as a guard against absurd allocations from corrupt headers.
pub const MAX_SIDE: u32 = 16384;

/// An 8-bit RGB image held in a reusable buffer.
#[derive(Debug, Default, Clone)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 3` bytes, row-major, R G B.
    pub data: Vec<u8>,
}

/// Decodes an image file (JPEG or PNG) to RGB with its EXIF orientation applied; grayscale is
/// replicated to three channels and alpha dropped (PIL's `convert("RGB")`).
pub fn load_image(path: &Path) -> Result<RgbImage, PreprocessError> {
    let bytes = std::fs::read(path).map_err(|source| PreprocessError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode_image(&bytes, &path.display().to_string())
}

/// Decodes JPEG or PNG bytes like [`load_image`]; `what` names the source in errors.
pub fn decode_image(bytes: &[u8], what: &str) -> Result<RgbImage, PreprocessError> {
    let decode_err = |source| PreprocessError::Decode {
        what: what.to_string(),
        source,
    };
    let reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| decode_err(image::ImageError::IoError(e)))?;
    let mut decoder = reader.into_decoder().map_err(decode_err)?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let (w, h) = decoder.dimensions();
    check_size(w, h, what)?;
    check_image_size(w, h, what)?;
    let mut img = image::DynamicImage::from_decoder(decoder).map_err(decode_err)?;
    img.apply_orientation(orientation);
    let rgb = img.into_rgb8();
    Ok(RgbImage {
        width: rgb.width(),
        height: rgb.height(),
        data: rgb.into_raw(),
    })
}

fn check_size(w: u32, h: u32, what: &str) -> Result<(), PreprocessError> {
    if w == 0 || h == 0 || w > MAX_SIDE || h > MAX_SIDE {
        return Err(PreprocessError::Size {
            what: what.to_string(),
            width: w,
            height: h,
        });
    }
    Ok(())
}

/// How many input sizes keep their resampling plan: a frame and its zones (up to 8 per camera
/// in the daemon's bench) are planned once, not on every frame.
const MAX_PLANS: usize = 16;

/// Turns frames and images into normalised NCHW tensors for one bundle, reusing its buffers.
#[derive(Debug, Clone)]
pub struct Preprocessor {
    spec: Spec,
    /// The resampling plans of the input sizes seen last (a frame and its zones), newest first.
    plans: Vec<Plan>,
    /// Decoded or converted RGB of the current frame.
    rgb: RgbImage,
    /// The horizontal pass's output: rows `row_lo..row_hi`, `width` columns, RGB.
    tmp: Vec<u8>,
    /// The cropped, resized RGB image (`height * width * 3`).
    out: Vec<u8>,
    /// A zone cut out of `rgb` ([`Preprocessor::frame_to_zone_tensors`]).
    crop: Vec<u8>,
    /// `(v / 255 - mean) / std` for every byte value and channel, in model channel order.
    lut: [[f32; 256]; 3],
    /// The largest frame `frame_to_tensor` decodes.
    limit: FrameLimit,
}

impl Preprocessor {
    /// A preprocessor for the given spec.
    pub fn new(spec: Spec) -> Preprocessor {
        let mut lut = [[0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, slot) in table.iter_mut().enumerate() {
                // Same operations, in f32, as ToTensor + Normalize.
                *slot = (v as f32 / 255.0 - spec.mean[c]) / spec.std[c];
            }
        }
        Preprocessor {
            spec,
            plans: Vec::new(),
            rgb: RgbImage::default(),
            tmp: Vec::new(),
            out: Vec::new(),
            crop: Vec::new(),
            lut,
            limit: FrameLimit::absolute(""),
        }
    }

    /// Bounds the frames [`frame_to_tensor`](Self::frame_to_tensor) takes (default:
    /// [`FrameLimit::absolute`]): a larger one is refused from its header.
    pub fn with_frame_limit(mut self, limit: FrameLimit) -> Preprocessor {
        self.limit = limit;
        self
    }

    /// The spec.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Number of f32 values in one output tensor (`3 * height * width`).
    pub fn output_len(&self) -> usize {
        3 * self.spec.height as usize * self.spec.width as usize
    }

    /// The resized, cropped 8-bit RGB image of the last call (before normalisation).
    pub fn last_rgb(&self) -> &[u8] {
        &self.out
    }

    /// Converts a camera frame and writes the tensor into `out` (`output_len()` values).
    pub fn frame_to_tensor(
        &mut self,
        frame: &Frame,
        out: &mut [f32],
    ) -> Result<(), PreprocessError> {
        if frame.format == PixelFormat::Rgb24 {
            // Already RGB: preprocessed in place, not copied.
            let (w, h) = (frame.width, frame.height);
            self.check_frame(frame)?;
            check_size(w, h, &format!("frame {}", frame.seq))?;
            return self.rgb_to_tensor(w, h, &frame.data, out);
        }
        self.decode_frame(frame)?;
        let rgb = std::mem::take(&mut self.rgb);
        let result = self.rgb_to_tensor(rgb.width, rgb.height, &rgb.data, out);
        self.rgb = rgb;
        result
    }

    /// Preprocesses an RGB image.
    pub fn image_to_tensor(
        &mut self,
        img: &RgbImage,
        out: &mut [f32],
    ) -> Result<(), PreprocessError> {
        check_size(img.width, img.height, "image")?;
        self.rgb_to_tensor(img.width, img.height, &img.data, out)
    }

    /// Preprocesses packed RGB bytes of the given size into `out`.
    pub fn rgb_to_tensor(
        &mut self,
        w: u32,
        h: u32,
        rgb: &[u8],
        out: &mut [f32],
    ) -> Result<(), PreprocessError> {
        let (w, h) = (w as usize, h as usize);
        assert_eq!(rgb.len(), w * h * 3, "rgb buffer does not match its size");
        assert_eq!(
            out.len(),
            self.output_len(),
            "output buffer does not match the spec"
        );
        match self.plans.iter().position(|p| p.in_w == w && p.in_h == h) {
            Some(0) => {}
            Some(i) => {
                let p = self.plans.remove(i);
                self.plans.insert(0, p);
            }
            None => {
                self.plans.truncate(MAX_PLANS - 1);
                self.plans.insert(0, Plan::new(w, h, &self.spec));
            }
        }
        let plan = &self.plans[0];
        let ow = self.spec.width as usize;
        let oh = self.spec.height as usize;
        resample(plan, rgb, w, &mut self.tmp, &mut self.out, ow, oh);
        // Normalise into planar channels in the model's order.
        let plane = ow * oh;
        let order: [usize; 3] = match self.spec.channel_order {
            ChannelOrder::Rgb => [0, 1, 2],
            ChannelOrder::Bgr => [2, 1, 0],
        };
        let (p0, rest) = out.split_at_mut(plane);
        let (p1, p2) = rest.split_at_mut(plane);
        let [l0, l1, l2] = &self.lut;
        for (i, px) in self.out.chunks_exact(3).enumerate() {
            p0[i] = l0[px[order[0]] as usize];
            p1[i] = l1[px[order[1]] as usize];
            p2[i] = l2[px[order[2]] as usize];
        }
        Ok(())
    }
}

/// 8-bit luma to RGB (each value three times), into `rgb`'s buffer.
pub fn grey_to_rgb(data: &[u8], w: u32, h: u32, rgb: &mut RgbImage) {
    rgb.width = w;
    rgb.height = h;
    release_excess(&mut rgb.data, data.len() * 3);
    rgb.data.clear();
    rgb.data.extend(data.iter().flat_map(|&v| [v, v, v]));
}

/// YUYV 4:2:2 (BT.601, limited range, as UVC cameras send it) to RGB, into `rgb`'s buffer.
/// `data` holds `w * h * 2` bytes and `w` is even.
pub fn yuyv_to_rgb(data: &[u8], w: u32, h: u32, rgb: &mut RgbImage) {
    rgb.width = w;
    rgb.height = h;
    release_excess(&mut rgb.data, w as usize * h as usize * 3);
    rgb.data.resize(w as usize * h as usize * 3, 0);
    for (src, dst) in data.chunks_exact(4).zip(rgb.data.chunks_exact_mut(6)) {
        let (y0, u, y1, v) = (src[0], src[1], src[2], src[3]);
        let (r, g, b) = yuv601(y0, u, v);
        dst[0] = r;
        dst[1] = g;
        dst[2] = b;
        let (r, g, b) = yuv601(y1, u, v);
        dst[3] = r;
        dst[4] = g;
        dst[5] = b;
    }
}

/// One BT.601 limited-range YCbCr pixel to RGB, in 16-bit fixed point.
#[inline]
pub fn yuv601(y: u8, u: u8, v: u8) -> (u8, u8, u8) {
    let c = (y as i32 - 16) * 76309; // 1.164 * 65536
    let d = u as i32 - 128;
    let e = v as i32 - 128;
    let r = (c + 104597 * e + 32768) >> 16; // 1.596
    let g = (c - 25675 * d - 53279 * e + 32768) >> 16; // 0.392, 0.813
    let b = (c + 132201 * d + 32768) >> 16; // 2.017
    (
        r.clamp(0, 255) as u8,
        g.clamp(0, 255) as u8,
        b.clamp(0, 255) as u8,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(size: u32) -> Spec {
        Spec {
            height: size,
            width: size,
            resize: ResizeMode::Shortest,
            interpolation: Interpolation::Bicubic,
            mean: [0.0; 3],
            std: [1.0; 3],
            channel_order: ChannelOrder::Rgb,
        }
    }

    #[test]
    fn uniform_image_stays_uniform() {
        let mut p = Preprocessor::new(spec(32));
        let img = RgbImage {
            width: 100,
            height: 60,
            data: [10u8, 128, 250].repeat(6000),
        };
        let mut out = vec![0.0; p.output_len()];
        p.image_to_tensor(&img, &mut out).unwrap();
        let plane = 32 * 32;
        assert!(
            out[..plane]
                .iter()
                .all(|&v| (v - 10.0 / 255.0).abs() < 1e-6)
        );
        assert!(
            out[plane..2 * plane]
                .iter()
                .all(|&v| (v - 128.0 / 255.0).abs() < 1e-6)
        );
        assert!(
            out[2 * plane..]
                .iter()
                .all(|&v| (v - 250.0 / 255.0).abs() < 1e-6)
        );
    }

    #[test]
    fn same_size_input_is_only_cropped() {
        let mut p = Preprocessor::new(spec(4));
        // 4 wide, 6 high: no horizontal resize; vertical 6 -> int(4*6/4) = 6, so no resize either;
        // the crop takes rows 1..5.
        let data: Vec<u8> = (0..4 * 6 * 3).map(|v| v as u8).collect();
        let img = RgbImage {
            width: 4,
            height: 6,
            data: data.clone(),
        };
        let mut out = vec![0.0; p.output_len()];
        p.image_to_tensor(&img, &mut out).unwrap();
        assert_eq!(p.last_rgb(), &data[4 * 3..5 * 4 * 3]);
    }

    #[test]
    fn yuyv_grey_levels_map_to_grey() {
        // Y=16 is black, Y=235 white, with neutral chroma.
        assert_eq!(yuv601(16, 128, 128), (0, 0, 0));
        assert_eq!(yuv601(235, 128, 128), (255, 255, 255));
        let (r, g, b) = yuv601(126, 128, 128);
        assert!(r == g && g == b && (127..=129).contains(&r));
    }

    #[test]
    fn wrong_raw_frame_size_is_an_error() {
        let mut p = Preprocessor::new(spec(8));
        let frame = Frame {
            data: vec![0; 10],
            width: 4,
            height: 4,
            format: PixelFormat::Yuyv,
            seq: 7,
            captured_at: std::time::Instant::now(),
            captured_wall: std::time::SystemTime::now(),
        };
        let mut out = vec![0.0; p.output_len()];
        let err = p.frame_to_tensor(&frame, &mut out).unwrap_err();
        assert!(err.to_string().contains("frame 7"), "{err}");
    }

    #[test]
    fn corrupt_jpeg_is_an_error_not_a_panic() {
        let mut p = Preprocessor::new(spec(8));
        let frame = Frame {
            data: vec![0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3],
            width: 640,
            height: 480,
            format: PixelFormat::Mjpeg,
            seq: 3,
            captured_at: std::time::Instant::now(),
            captured_wall: std::time::SystemTime::now(),
        };
        let mut out = vec![0.0; p.output_len()];
        assert!(matches!(
            p.frame_to_tensor(&frame, &mut out),
            Err(PreprocessError::Decode { .. })
        ));
    }

    /// A camera JPEG whose header was damaged into 6000 x 6000 (under every size limit, but more
    /// pixels than its bytes can hold) is refused before the decoder allocates 108 MB for it;
    /// the frame as it came decodes.
    #[test]
    fn a_jpeg_declaring_more_pixels_than_its_bytes_hold_is_refused() {
        let jpeg = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/clip/frame_0030.jpg"),
        )
        .unwrap();
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        let mut damaged = jpeg.clone();
        damaged[sof + 5..sof + 9].copy_from_slice(&[0x17, 0x70, 0x17, 0x70]);
        let mut p = Preprocessor::new(spec(8));
        let mut out = vec![0.0; p.output_len()];
        let mut frame = Frame {
            data: damaged,
            width: 640,
            height: 480,
            format: PixelFormat::Mjpeg,
            seq: 4,
            captured_at: std::time::Instant::now(),
            captured_wall: std::time::SystemTime::now(),
        };
        let error = p.frame_to_tensor(&frame, &mut out).unwrap_err();
        assert!(
            matches!(
                error,
                PreprocessError::Implausible {
                    width: 6000,
                    height: 6000,
                    ..
                }
            ),
            "{error}"
        );
        assert!(
            error
                .to_string()
                .starts_with("frame 4: declares 6000x6000 pixels in ")
        );
        frame.data = jpeg;
        p.frame_to_tensor(&frame, &mut out).unwrap();
    }

    /// Issue 25: a frame declaring more than the camera's limit is refused from its header, and
    /// the preprocessor's buffers shrink back after a large-but-allowed frame.
    #[test]
    fn camera_frames_over_the_limit_are_refused_and_buffers_shrink_back() {
        let mut p = Preprocessor::new(spec(8)).with_frame_limit(FrameLimit::camera(
            "camera c (pipe:cat)",
            640,
            480,
        ));
        let mut out = vec![0.0; p.output_len()];
        let frame = |w: u32, h: u32, seq| Frame {
            data: vec![128; w as usize * h as usize * 2],
            width: w,
            height: h,
            format: PixelFormat::Yuyv,
            seq,
            captured_at: std::time::Instant::now(),
            captured_wall: std::time::SystemTime::now(),
        };
        let error = p
            .frame_to_tensor(&frame(3842, 2160, 9), &mut out)
            .unwrap_err();
        assert!(
            error.to_string().starts_with(
                "camera c (pipe:cat): frame 9: declares 3842x2160 pixels, over this camera's limit of 3840x3840"
            ),
            "{error}"
        );
        p.frame_to_tensor(&frame(3840, 2160, 10), &mut out).unwrap();
        let peak = p.rgb.data.capacity() + p.tmp.capacity();
        assert!(peak >= 3840 * 2160 * 3, "{peak}");
        p.frame_to_tensor(&frame(64, 48, 11), &mut out).unwrap();
        let after = p.rgb.data.capacity() + p.tmp.capacity();
        assert!(after <= 1 << 20, "kept {after} bytes after a small frame");
    }
}
