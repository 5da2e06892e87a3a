//! Thumbnails: making a small JPEG of a frame ([`make_thumbnail`], on the store's writer
//! thread). Which frames get one is [`super::sample::ThumbnailPolicy`]'s (pure):
//!
//! a thumbnail with every stored frame would not fit issue 26's budget (60 MB a camera-day at
//! one frame a second: the embeddings alone take about 49 MB), and neighbouring frames of a
//! still scene look alike. So a camera gets one with its first stored frame and then every
//! `thumbnail_s` of a still scene, and sooner for a changed scene or an event start, within a
//! bucket that bounds a busy day (the policy and its bound: [`super::sample::ThumbnailPolicy`]).
//! A search hit shows the nearest thumbnail of its camera at or before its time
//! ([`super::Store::thumbnail`]).

use image::codecs::jpeg::JpegEncoder;
use image::imageops::FilterType;
use image::{ExtendedColorType, ImageBuffer, Rgb};

use crate::frame::Frame;
use crate::preprocess::RgbImage;

/// A thumbnail's width in pixels (its height keeps the frame's aspect).
pub const WIDTH: u32 = 160;
/// Its JPEG quality.
pub const QUALITY: u8 = 70;
/// A JPEG of `frame` [`WIDTH`] pixels wide (narrower frames keep their width).
pub fn make_thumbnail(frame: &Frame) -> Result<Vec<u8>, String> {
    let mut rgb = RgbImage::default();
    let (data, w, h) = crate::snapshot::rgb_of(frame, &mut rgb)?;
    let image: ImageBuffer<Rgb<u8>, &[u8]> =
        ImageBuffer::from_raw(w, h, data).ok_or_else(|| format!("a {w}x{h} frame too short"))?;
    let tw = WIDTH.min(w).max(1);
    let th = ((u64::from(h) * u64::from(tw)).div_ceil(u64::from(w.max(1))) as u32).max(1);
    let small = image::imageops::resize(&image, tw, th, FilterType::Triangle);
    let mut out = Vec::with_capacity(8 << 10);
    JpegEncoder::new_with_quality(&mut out, QUALITY)
        .encode(small.as_raw(), tw, th, ExtendedColorType::Rgb8)
        .map_err(|e| e.to_string())?;
    Ok(out)
}
