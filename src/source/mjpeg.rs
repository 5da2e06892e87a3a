//! Splitting a byte stream of concatenated JPEG images (MJPEG over a pipe) into frames.
//!
//! Searching for the end-of-image marker alone is not enough: an EXIF thumbnail carries its own
//! SOI/EOI pair. The splitter walks the JPEG marker structure instead: segment lengths are
//! skipped (so thumbnails inside APP1 are jumped over) and entropy-coded data is scanned for
//! the next real marker (byte-stuffed `FF 00` and restart markers are data). Garbage between
//! images is skipped; a damaged image is reported and the stream resynchronises on the next
//! start-of-image; a frame larger than the bound is dropped, so a stream that never ends an
//! image cannot grow memory without limit.

/// Why bytes were dropped from the stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// The image structure is broken.
    #[error("{0}")]
    Corrupt(&'static str),
    /// The image grew past the bound without ending.
    #[error("frame larger than {max} bytes without an end-of-image marker")]
    TooLarge {
        /// The bound.
        max: usize,
    },
}

enum Walk {
    NeedMore,
    End(usize),
    NewSoi(usize),
    Corrupt(&'static str),
}

/// An incremental MJPEG stream splitter.
#[derive(Debug)]
pub struct MjpegSplitter {
    buf: Vec<u8>,
    max_frame: usize,
    /// `buf` starts with an SOI.
    aligned: bool,
    /// Where the walk resumes.
    cursor: usize,
    /// The walk is inside entropy-coded data.
    in_scan: bool,
    skipped: u64,
}

impl MjpegSplitter {
    /// A splitter that refuses frames larger than `max_frame` bytes.
    pub fn new(max_frame: usize) -> MjpegSplitter {
        MjpegSplitter {
            buf: Vec::new(),
            max_frame: max_frame.max(4),
            aligned: false,
            cursor: 0,
            in_scan: false,
            skipped: 0,
        }
    }

    /// Bytes skipped so far because they were outside any image.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame (or the reason bytes were dropped); `None` when more input is
    /// needed.
    pub fn next_frame(&mut self) -> Option<Result<Vec<u8>, SplitError>> {
        if !self.aligned && !self.align() {
            return None;
        }
        match self.walk() {
            Walk::NeedMore => {
                if self.buf.len() > self.max_frame {
                    // Drop the frame up to the next start-of-image, and the memory it took.
                    self.resync(2);
                    self.align();
                    if self.buf.capacity() > 2 * self.buf.len() {
                        self.buf.shrink_to_fit();
                    }
                    return Some(Err(SplitError::TooLarge {
                        max: self.max_frame,
                    }));
                }
                None
            }
            Walk::End(end) => {
                let rest = self.buf.split_off(end);
                let frame = std::mem::replace(&mut self.buf, rest);
                self.aligned = false;
                if frame.len() > self.max_frame {
                    return Some(Err(SplitError::TooLarge {
                        max: self.max_frame,
                    }));
                }
                Some(Ok(frame))
            }
            Walk::NewSoi(at) => {
                self.buf.drain(..at);
                self.start_frame();
                Some(Err(SplitError::Corrupt(
                    "truncated image: a new start-of-image came before the end-of-image",
                )))
            }
            Walk::Corrupt(why) => {
                self.resync(2);
                Some(Err(SplitError::Corrupt(why)))
            }
        }
    }

    /// Drops `n` bytes and looks for the next SOI.
    fn resync(&mut self, n: usize) {
        let n = n.min(self.buf.len());
        self.buf.drain(..n);
        self.aligned = false;
    }

    fn start_frame(&mut self) {
        self.aligned = true;
        self.cursor = 2;
        self.in_scan = false;
    }

    /// Moves the buffer start to the next SOI (`FF D8`); false when there is none yet.
    fn align(&mut self) -> bool {
        match self.buf.windows(2).position(|w| w == [0xFF, 0xD8]) {
            Some(at) => {
                self.skipped += at as u64;
                self.buf.drain(..at);
                self.start_frame();
                true
            }
            None => {
                // Keep a trailing FF: it may be the first half of an SOI.
                let keep = usize::from(self.buf.last() == Some(&0xFF));
                let drop = self.buf.len() - keep;
                self.skipped += drop as u64;
                self.buf.drain(..drop);
                false
            }
        }
    }

    fn walk(&mut self) -> Walk {
        let b = &self.buf;
        let mut i = self.cursor;
        loop {
            if self.in_scan {
                // Entropy-coded data: the next marker is FF followed by neither 00 (stuffing),
                // a restart marker, nor another FF (fill).
                loop {
                    if i + 1 >= b.len() {
                        self.cursor = i;
                        return Walk::NeedMore;
                    }
                    if b[i] != 0xFF {
                        i += 1;
                        continue;
                    }
                    match b[i + 1] {
                        0x00 | 0xD0..=0xD7 => i += 2,
                        0xFF => i += 1,
                        _ => break,
                    }
                }
                self.in_scan = false;
            }
            if i + 1 >= b.len() {
                self.cursor = i;
                return Walk::NeedMore;
            }
            if b[i] != 0xFF {
                return Walk::Corrupt("expected a JPEG marker");
            }
            match b[i + 1] {
                0xFF => i += 1,
                0xD9 => return Walk::End(i + 2),
                0xD8 => return Walk::NewSoi(i),
                0x01 | 0xD0..=0xD7 => i += 2,
                0x00 => return Walk::Corrupt("invalid marker FF 00"),
                marker => {
                    if i + 3 >= b.len() {
                        self.cursor = i;
                        return Walk::NeedMore;
                    }
                    let len = usize::from(u16::from_be_bytes([b[i + 2], b[i + 3]]));
                    if len < 2 {
                        return Walk::Corrupt("invalid JPEG segment length");
                    }
                    let next = i + 2 + len;
                    if next > b.len() {
                        self.cursor = i;
                        return Walk::NeedMore;
                    }
                    i = next;
                    if marker == 0xDA {
                        self.in_scan = true;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A structurally valid (not decodable) JPEG: SOI, APP0, SOS with stuffed data, EOI.
    fn fake_jpeg(tag: u8) -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8];
        v.extend_from_slice(&[0xFF, 0xE0, 0x00, 0x04, tag, tag]);
        v.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x03, 0x01]);
        v.extend_from_slice(&[tag, 0xFF, 0x00, 0x12, 0xFF, 0xD3, 0x34, 0xFF, 0xFF, 0xD9]);
        v
    }

    /// A JPEG whose APP1 segment holds a complete thumbnail JPEG.
    fn jpeg_with_thumbnail() -> Vec<u8> {
        let thumb = fake_jpeg(9);
        let mut v = vec![0xFF, 0xD8, 0xFF, 0xE1];
        v.extend_from_slice(&((thumb.len() + 2) as u16).to_be_bytes());
        v.extend_from_slice(&thumb);
        v.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x02, 0x55, 0xFF, 0xD9]);
        v
    }

    fn split_all(s: &mut MjpegSplitter) -> Vec<Result<Vec<u8>, SplitError>> {
        std::iter::from_fn(|| s.next_frame()).collect()
    }

    #[test]
    fn splits_concatenated_frames() {
        let mut s = MjpegSplitter::new(1 << 20);
        let stream = [fake_jpeg(1), fake_jpeg(2), fake_jpeg(3)].concat();
        s.push(&stream);
        let out = split_all(&mut s);
        assert_eq!(
            out,
            vec![Ok(fake_jpeg(1)), Ok(fake_jpeg(2)), Ok(fake_jpeg(3))]
        );
    }

    #[test]
    fn works_byte_by_byte() {
        let mut s = MjpegSplitter::new(1 << 20);
        let stream = [fake_jpeg(1), vec![0, 0, 0xFF], fake_jpeg(2)].concat();
        let mut out = Vec::new();
        for b in stream {
            s.push(&[b]);
            out.extend(split_all(&mut s));
        }
        assert_eq!(out, vec![Ok(fake_jpeg(1)), Ok(fake_jpeg(2))]);
        assert_eq!(s.skipped(), 3);
    }

    #[test]
    fn thumbnails_do_not_end_the_frame() {
        let mut s = MjpegSplitter::new(1 << 20);
        s.push(&[jpeg_with_thumbnail(), fake_jpeg(4)].concat());
        assert_eq!(
            split_all(&mut s),
            vec![Ok(jpeg_with_thumbnail()), Ok(fake_jpeg(4))]
        );
    }

    #[test]
    fn garbage_between_frames_is_skipped() {
        let mut s = MjpegSplitter::new(1 << 20);
        s.push(
            &[
                b"hello".to_vec(),
                fake_jpeg(1),
                b"\x00\x01junk".to_vec(),
                fake_jpeg(2),
            ]
            .concat(),
        );
        assert_eq!(split_all(&mut s), vec![Ok(fake_jpeg(1)), Ok(fake_jpeg(2))]);
        assert_eq!(s.skipped(), 11);
    }

    #[test]
    fn a_corrupt_frame_is_reported_and_the_next_one_survives() {
        let mut s = MjpegSplitter::new(1 << 20);
        let corrupt = [0xFF, 0xD8, 0x12, 0x34, 0x56, 0xFF, 0xD9];
        s.push(&[fake_jpeg(1), corrupt.to_vec(), fake_jpeg(2)].concat());
        let out = split_all(&mut s);
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(out[0], Ok(fake_jpeg(1)));
        assert!(matches!(out[1], Err(SplitError::Corrupt(_))));
        assert_eq!(out[2], Ok(fake_jpeg(2)));
    }

    #[test]
    fn a_truncated_frame_is_reported() {
        let mut s = MjpegSplitter::new(1 << 20);
        let mut truncated = fake_jpeg(1);
        truncated.truncate(14); // inside the entropy-coded data
        s.push(&[truncated, fake_jpeg(2)].concat());
        let out = split_all(&mut s);
        assert!(matches!(out[0], Err(SplitError::Corrupt(_))), "{out:?}");
        assert_eq!(out[1], Ok(fake_jpeg(2)));
    }

    #[test]
    fn frames_beyond_the_bound_are_dropped() {
        let mut s = MjpegSplitter::new(64);
        let mut big = vec![0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02];
        big.extend(std::iter::repeat_n(0x11, 200));
        s.push(&big);
        let out = split_all(&mut s);
        assert_eq!(out, vec![Err(SplitError::TooLarge { max: 64 })]);
        assert!(s.buf.capacity() <= 64, "{} bytes kept", s.buf.capacity());
        s.push(&[0xFF, 0xD9]);
        s.push(&fake_jpeg(3));
        assert_eq!(split_all(&mut s), vec![Ok(fake_jpeg(3))]);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut s = MjpegSplitter::new(256);
        let mut x: u32 = 12345;
        for _ in 0..20_000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let b = [(x >> 16) as u8, 0xFF, (x >> 8) as u8, 0xD8 | (x as u8 & 1)];
            s.push(&b[..1 + (x as usize % 4)]);
            while s.next_frame().is_some() {}
        }
        assert!(s.buf.len() <= 260);
    }
}
