//! One frame as several zones: the frame is decoded once, and each zone (a rectangle of it,
//! `[[cameras.zones]]`) is cropped and then preprocessed exactly as a whole frame is (resize,
//! centre crop, normalisation), so that a zone is to the model what a camera framed on it
//! would give.

use super::{
    PreprocessError, Preprocessor, check_size, decode_jpeg_into, grey_to_rgb, release_excess,
    yuyv_to_rgb,
};
use crate::frame::{Frame, PixelFormat, Rect};

impl Preprocessor {
    /// Writes one tensor per zone of `frame` into `out` (`zones.len() * output_len()` values),
    /// in the order of `zones`. The frame is decoded once; a whole-frame zone costs what
    /// [`frame_to_tensor`](Self::frame_to_tensor) does.
    pub fn frame_to_zone_tensors(
        &mut self,
        frame: &Frame,
        zones: &[Rect],
        out: &mut [f32],
    ) -> Result<(), PreprocessError> {
        let len = self.output_len();
        assert_eq!(out.len(), zones.len() * len, "one tensor per zone");
        if let [only] = zones
            && only.is_whole()
        {
            return self.frame_to_tensor(frame, out);
        }
        self.decode_frame(frame)?;
        let rgb = std::mem::take(&mut self.rgb);
        let mut crop = std::mem::take(&mut self.crop);
        let result = zones
            .iter()
            .zip(out.chunks_exact_mut(len))
            .try_for_each(|(zone, tensor)| {
                if zone.is_whole() {
                    return self.rgb_to_tensor(rgb.width, rgb.height, &rgb.data, tensor);
                }
                let (x, y, w, h) = zone.to_pixels(rgb.width, rgb.height);
                crop_rgb(&rgb.data, rgb.width, (x, y, w, h), &mut crop);
                self.rgb_to_tensor(w, h, &crop, tensor)
            });
        self.rgb = rgb;
        self.crop = crop;
        result
    }

    /// The checks a frame passes before anything sized by it is allocated: its data is as long
    /// as its format and size say, and (a raw frame) its size is within the frame limit (a
    /// JPEG's is checked from its header while it is decoded).
    pub(super) fn check_frame(&self, frame: &Frame) -> Result<(), PreprocessError> {
        let (w, h) = (frame.width, frame.height);
        if let Some(expected) = frame.format.expected_len(w, h)
            && frame.data.len() != expected
        {
            return Err(PreprocessError::FrameSize {
                seq: frame.seq,
                format: frame.format,
                width: w,
                height: h,
                expected,
                actual: frame.data.len(),
            });
        }
        if frame.format != PixelFormat::Mjpeg {
            self.limit.check_frame(w, h, frame.seq)?;
        }
        Ok(())
    }

    /// Decodes or converts `frame` into `self.rgb` (an RGB frame is copied), after
    /// [`check_frame`](Self::check_frame).
    pub(super) fn decode_frame(&mut self, frame: &Frame) -> Result<(), PreprocessError> {
        self.check_frame(frame)?;
        let (w, h) = (frame.width, frame.height);
        let rgb = &mut self.rgb;
        match frame.format {
            PixelFormat::Rgb24 => {
                rgb.width = w;
                rgb.height = h;
                rgb.data.clear();
                rgb.data.extend_from_slice(&frame.data);
                release_excess(&mut rgb.data, frame.data.len());
            }
            PixelFormat::Grey => grey_to_rgb(&frame.data, w, h, rgb),
            PixelFormat::Yuyv => {
                if w % 2 != 0 {
                    return Err(PreprocessError::Size {
                        what: format!("YUYV frame {} (odd width)", frame.seq),
                        width: w,
                        height: h,
                    });
                }
                yuyv_to_rgb(&frame.data, w, h, rgb)
            }
            PixelFormat::Mjpeg => decode_jpeg_into(&frame.data, frame.seq, &self.limit, rgb)?,
        }
        check_size(rgb.width, rgb.height, &format!("frame {}", frame.seq))
    }
}

/// Copies the `(x, y, w, h)` rectangle of a packed RGB image `width` pixels wide into `out`.
fn crop_rgb(rgb: &[u8], width: u32, (x, y, w, h): (u32, u32, u32, u32), out: &mut Vec<u8>) {
    let (width, x, y, w, h) = (
        width as usize,
        x as usize,
        y as usize,
        w as usize,
        h as usize,
    );
    out.clear();
    out.reserve(w * h * 3);
    for row in y..y + h {
        let start = (row * width + x) * 3;
        out.extend_from_slice(&rgb[start..start + w * 3]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::{ChannelOrder, Interpolation, ResizeMode, Spec};
    use std::time::{Instant, SystemTime};

    fn spec() -> Spec {
        Spec {
            width: 16,
            height: 16,
            resize: ResizeMode::Shortest,
            interpolation: Interpolation::Bicubic,
            mean: [0.0; 3],
            std: [1.0; 3],
            channel_order: ChannelOrder::Rgb,
        }
    }

    /// A 64 x 32 RGB frame: the left half red, the right half blue.
    fn halves() -> Frame {
        let (w, h) = (64u32, 32u32);
        let mut data = Vec::with_capacity((w * h * 3) as usize);
        for _ in 0..h {
            for x in 0..w {
                data.extend_from_slice(if x < w / 2 {
                    &[255, 0, 0]
                } else {
                    &[0, 0, 255]
                });
            }
        }
        Frame {
            seq: 1,
            width: w,
            height: h,
            format: PixelFormat::Rgb24,
            data,
            captured_at: Instant::now(),
            captured_wall: SystemTime::now(),
        }
    }

    #[test]
    fn each_zone_sees_its_own_part_of_the_frame() {
        let mut p = Preprocessor::new(spec());
        let len = p.output_len();
        let zones = [
            Rect::WHOLE,
            Rect {
                x: 0.0,
                y: 0.0,
                w: 0.5,
                h: 1.0,
            },
            Rect {
                x: 0.5,
                y: 0.0,
                w: 0.5,
                h: 1.0,
            },
        ];
        let mut out = vec![0f32; 3 * len];
        p.frame_to_zone_tensors(&halves(), &zones, &mut out)
            .unwrap();
        let plane = len / 3;
        let mean =
            |t: &[f32], c: usize| t[c * plane..(c + 1) * plane].iter().sum::<f32>() / plane as f32;
        let (left, right) = (&out[len..2 * len], &out[2 * len..]);
        assert_eq!(
            (mean(left, 0), mean(left, 2)),
            (1.0, 0.0),
            "left zone is red"
        );
        assert_eq!(
            (mean(right, 0), mean(right, 2)),
            (0.0, 1.0),
            "right zone is blue"
        );
        // The whole frame is the same as frame_to_tensor gives.
        let mut whole = vec![0f32; len];
        p.frame_to_tensor(&halves(), &mut whole).unwrap();
        assert_eq!(&out[..len], &whole[..]);
    }

    #[test]
    fn a_zone_equals_the_cropped_image_preprocessed_alone() {
        let mut p = Preprocessor::new(spec());
        let len = p.output_len();
        let frame = halves();
        let zone = Rect {
            x: 0.25,
            y: 0.25,
            w: 0.5,
            h: 0.5,
        };
        let mut out = vec![0f32; len];
        p.frame_to_zone_tensors(&frame, &[zone], &mut out).unwrap();
        let (x, y, w, h) = zone.to_pixels(64, 32);
        assert_eq!((x, y, w, h), (16, 8, 32, 16));
        let mut crop = Vec::new();
        crop_rgb(&frame.data, 64, (x, y, w, h), &mut crop);
        let mut alone = vec![0f32; len];
        Preprocessor::new(spec())
            .rgb_to_tensor(w, h, &crop, &mut alone)
            .unwrap();
        assert_eq!(out, alone);
    }

    #[test]
    fn a_bad_frame_is_an_error_for_every_zone() {
        let mut p = Preprocessor::new(spec());
        let mut frame = halves();
        frame.data.truncate(10);
        let zones = [
            Rect::WHOLE,
            Rect {
                x: 0.0,
                y: 0.0,
                w: 0.5,
                h: 0.5,
            },
        ];
        let mut out = vec![0f32; 2 * p.output_len()];
        assert!(matches!(
            p.frame_to_zone_tensors(&frame, &zones, &mut out),
            Err(PreprocessError::FrameSize { .. })
        ));
    }
}
