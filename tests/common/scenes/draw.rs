//! The drawing of the test-material generator (`../scenes.rs`): the background window, the
//! things' outlines and paint, the scanline rasteriser and the soft shadows. Pure functions on
//! f32 RGB buffers.

use std::f32::consts::{PI, TAU};

use image::RgbImage;

use super::{BH, BW, Clutter, H, Pose, Rng, SUB, Shape, Thing, Visit, W};

/// The photo, cropped (random zoom and place), maybe mirrored, slightly re-balanced and
/// scaled to the frame plus the shake margin, as f32 RGB.
pub(super) fn prepare_background(photo: &RgbImage, rng: &mut Rng) -> Vec<f32> {
    let (pw, ph) = (photo.width() as f32, photo.height() as f32);
    let aspect = BW as f32 / BH as f32;
    let zoom = rng.range(1.0, 1.3);
    let cw = (pw.min(ph * aspect) / zoom).floor();
    let ch = (cw / aspect).floor();
    let x0 = rng.range(0.0, pw - cw).floor() as u32;
    let y0 = rng.range(0.0, ph - ch).floor() as u32;
    let crop = image::imageops::crop_imm(photo, x0, y0, cw as u32, ch as u32).to_image();
    let mut img = image::imageops::resize(
        &crop,
        BW as u32,
        BH as u32,
        image::imageops::FilterType::Triangle,
    );
    if rng.unit() < 0.5 {
        image::imageops::flip_horizontal_in_place(&mut img);
    }
    let balance = [
        rng.range(0.94, 1.06),
        rng.range(0.96, 1.04),
        rng.range(0.94, 1.06),
    ];
    img.as_raw()
        .chunks_exact(3)
        .flat_map(|p| (0..3).map(move |c| p[c] as f32 * balance[c]))
        .collect()
}

/// The frame-sized window of the background at (sx, sy), bilinear.
pub(super) fn sample_shifted(bg: &[f32], out: &mut [f32], sx: f32, sy: f32) {
    let (ix, iy) = (sx.floor() as usize, sy.floor() as usize);
    let (fx, fy) = (sx - sx.floor(), sy - sy.floor());
    let w = W as usize;
    for y in 0..H as usize {
        let r0 = &bg[((iy + y) * BW + ix) * 3..];
        let r1 = &bg[((iy + y + 1) * BW + ix) * 3..];
        let o = &mut out[y * w * 3..(y + 1) * w * 3];
        for i in 0..w * 3 {
            let top = r0[i] + (r0[i + 3] - r0[i]) * fx;
            let bottom = r1[i] + (r1[i + 3] - r1[i]) * fx;
            o[i] = top + (bottom - top) * fy;
        }
    }
}

type Contour = Vec<[f32; 2]>;

fn regular(n: usize, r: f32, phase: f32) -> Contour {
    (0..n)
        .map(|i| {
            let a = phase + TAU * i as f32 / n as f32;
            [r * a.cos(), r * a.sin()]
        })
        .collect()
}

/// The outline of a thing, unit radius, centred on its centre, even-odd filled.
fn outline(thing: Thing, form: u64) -> Vec<Contour> {
    const HALF: f32 = 0.72; // square: half side
    const STAR_INNER: f32 = 0.4;
    const RING_INNER: f32 = 0.57;
    const ARM: f32 = 0.3; // cross: half width of an arm
    match thing {
        Thing::Shape(_, Shape::Circle) => vec![regular(96, 1.0, 0.0)],
        Thing::Shape(_, Shape::Ring) => vec![regular(96, 1.0, 0.0), regular(96, RING_INNER, 0.0)],
        Thing::Shape(_, Shape::Square) => {
            vec![vec![
                [-HALF, -HALF],
                [HALF, -HALF],
                [HALF, HALF],
                [-HALF, HALF],
            ]]
        }
        Thing::Shape(_, Shape::Triangle) => vec![regular(3, 1.0, -PI / 2.0)],
        Thing::Shape(_, Shape::Star) => vec![
            (0..10)
                .map(|i| {
                    let a = -PI / 2.0 + PI * i as f32 / 5.0;
                    let r = if i % 2 == 0 { 1.0 } else { STAR_INNER };
                    [r * a.cos(), r * a.sin()]
                })
                .collect(),
        ],
        Thing::Shape(_, Shape::Cross) => {
            let (a, l) = (ARM, 0.95);
            vec![vec![
                [-a, -l],
                [a, -l],
                [a, -a],
                [l, -a],
                [l, a],
                [a, a],
                [a, l],
                [-a, l],
                [-a, a],
                [-l, a],
                [-l, -a],
                [-a, -a],
            ]]
        }
        Thing::Clutter(Clutter::GreyBlob) => {
            let mut rng = Rng::new(form);
            let h: Vec<[f32; 2]> = (2..6)
                .map(|_| [rng.range(0.03, 0.12), rng.range(0.0, TAU)])
                .collect();
            vec![
                (0..64)
                    .map(|i| {
                        let a = TAU * i as f32 / 64.0;
                        let r = 0.85
                            + h.iter()
                                .enumerate()
                                .map(|(k, [amp, ph])| amp * ((k + 2) as f32 * a + ph).cos())
                                .sum::<f32>();
                        [r * a.cos(), r * a.sin()]
                    })
                    .collect(),
            ]
        }
        Thing::Clutter(Clutter::Patch) => {
            // a rounded rectangle, 1.5 : 1
            let (hw, hh, rr) = (0.82, 0.55, 0.14);
            let mut c = Vec::new();
            for (k, (cx, cy)) in [
                (hw - rr, hh - rr),
                (-hw + rr, hh - rr),
                (-hw + rr, -hh + rr),
                (hw - rr, -hh + rr),
            ]
            .into_iter()
            .enumerate()
            {
                for j in 0..=6 {
                    let a = PI / 2.0 * (k as f32 + j as f32 / 6.0);
                    c.push([cx + rr * a.cos(), cy + rr * a.sin()]);
                }
            }
            vec![c]
        }
        Thing::Clutter(Clutter::Leaf) => {
            // pointed at both ends: y = +-w (1 - x^2)
            let mut c: Contour = (0..=24)
                .map(|i| {
                    let x = 1.0 - 2.0 * i as f32 / 24.0;
                    [x, -0.36 * (1.0 - x * x)]
                })
                .collect();
            c.extend((1..24).map(|i| {
                let x = -1.0 + 2.0 * i as f32 / 24.0;
                [x, 0.32 * (1.0 - x * x)]
            }));
            vec![c]
        }
    }
}

/// The paint of a thing at a point of its own unit frame.
fn paint(v: &Visit, base: [f32; 3], lx: f32, ly: f32) -> [f32; 3] {
    let ramp = 1.0 + v.shade[1] * 0.5 * (v.shade[0].cos() * lx + v.shade[0].sin() * ly);
    let texture = match v.thing {
        Thing::Shape(..) => 1.0,
        Thing::Clutter(Clutter::GreyBlob) => 1.0 + 0.07 * (5.0 * lx + 1.3).sin() * (4.0 * ly).sin(),
        Thing::Clutter(Clutter::Patch) => {
            1.0 + 0.12 * (lx * 26.0).sin() * (ly * 26.0).sin() + 0.05 * (lx * 7.0 + ly * 3.0).sin()
        }
        Thing::Clutter(Clutter::Leaf) => {
            let vein = if ly.abs() < 0.025 || ((lx * 9.0 - ly.abs() * 6.0).sin().abs() < 0.08) {
                0.8
            } else {
                1.0
            };
            vein * (1.0 + 0.04 * (lx * 13.0).sin())
        }
    };
    let k = ramp * texture;
    [base[0] * k, base[1] * k, base[2] * k]
}

fn base_colour(v: &Visit) -> [f32; 3] {
    let raw = match v.thing {
        Thing::Shape(c, _) => c.rgb(),
        Thing::Clutter(k) => {
            let mut rng = Rng::new(v.form ^ 0xC0FFEE);
            match k {
                Clutter::GreyBlob => [rng.range(95.0, 165.0); 3],
                Clutter::Patch => [
                    rng.range(150.0, 180.0),
                    rng.range(118.0, 140.0),
                    rng.range(80.0, 100.0),
                ],
                Clutter::Leaf => [
                    rng.range(70.0, 95.0),
                    rng.range(105.0, 130.0),
                    rng.range(30.0, 50.0),
                ],
            }
        }
    };
    [raw[0] + v.tint[0], raw[1] + v.tint[1], raw[2] + v.tint[2]]
}

/// Draws a posed thing (its soft drop shadow, then its shaded body) into an f32 RGB frame.
pub(super) fn draw(buf: &mut [f32], v: &Visit, p: Pose) {
    let r = v.size / 2.0;
    let sh = [v.shadow[0] * v.size, v.shadow[1] * v.size];
    let blur = (v.size * 0.03).max(1.0) as usize;
    let ext = v.extent() + sh[0].abs().max(sh[1].abs()) + 2.0 * blur as f32 + 2.0;
    let x0 = (p.cx - ext).floor().max(0.0) as usize;
    let y0 = (p.cy - ext).floor().max(0.0) as usize;
    let x1 = ((p.cx + ext).ceil().max(0.0) as usize).min(W as usize);
    let y1 = ((p.cy + ext).ceil().max(0.0) as usize).min(H as usize);
    if x1 <= x0 || y1 <= y0 {
        return;
    }
    let (bw, bh) = (x1 - x0, y1 - y0);
    let unit = outline(v.thing, v.form);
    let (ca, sa) = (p.angle.cos(), p.angle.sin());
    let (ax, ay) = (r * v.aspect, r / v.aspect);
    let place = |dx: f32, dy: f32| -> Vec<Contour> {
        unit.iter()
            .map(|c| {
                c.iter()
                    .map(|&[ux, uy]| {
                        let (x, y) = (ux * ax, uy * ay);
                        [
                            p.cx + dx + ca * x - sa * y - x0 as f32,
                            p.cy + dy + sa * x + ca * y - y0 as f32,
                        ]
                    })
                    .collect()
            })
            .collect()
    };
    let w = W as usize;
    let mut shadow = rasterise(&place(sh[0], sh[1]), bw, bh);
    box_blur(&mut shadow, bw, bh, blur);
    box_blur(&mut shadow, bw, bh, blur);
    let body = rasterise(&place(0.0, 0.0), bw, bh);
    let base = base_colour(v);
    for y in 0..bh {
        for x in 0..bw {
            let (s, c) = (shadow[y * bw + x], body[y * bw + x]);
            if s <= 0.0 && c <= 0.0 {
                continue;
            }
            let i = ((y0 + y) * w + x0 + x) * 3;
            let dark = 1.0 - v.shadow[2] * s.min(1.0);
            let col = if c > 0.0 {
                let dx = (x0 + x) as f32 + 0.5 - p.cx;
                let dy = (y0 + y) as f32 + 0.5 - p.cy;
                paint(v, base, (ca * dx + sa * dy) / ax, (-sa * dx + ca * dy) / ay)
            } else {
                [0.0; 3]
            };
            for k in 0..3 {
                let under = buf[i + k] * dark;
                buf[i + k] = under + (col[k].max(0.0) - under) * c;
            }
        }
    }
}

/// Coverage (0..1) of closed contours, even-odd rule, over a `w` x `h` pixel box: SUB
/// sub-scanlines per pixel row, each crossing the row with exact horizontal coverage.
fn rasterise(contours: &[Contour], w: usize, h: usize) -> Vec<f32> {
    let mut cov = vec![0f32; w * h];
    let edges: Vec<([f32; 2], [f32; 2])> = contours
        .iter()
        .flat_map(|c| (0..c.len()).map(move |i| (c[i], c[(i + 1) % c.len()])))
        .filter(|(a, b)| a[1] != b[1])
        .collect();
    let weight = 1.0 / SUB as f32;
    let mut xs: Vec<f32> = Vec::new();
    for py in 0..h {
        let row = &mut cov[py * w..(py + 1) * w];
        for s in 0..SUB {
            let y = py as f32 + (s as f32 + 0.5) * weight;
            xs.clear();
            for (a, b) in &edges {
                if (a[1] <= y) != (b[1] <= y) {
                    xs.push(a[0] + (y - a[1]) * (b[0] - a[0]) / (b[1] - a[1]));
                }
            }
            xs.sort_by(f32::total_cmp);
            for pair in xs.chunks_exact(2) {
                add_span(row, pair[0], pair[1], weight);
            }
        }
    }
    cov
}

fn add_span(row: &mut [f32], a: f32, b: f32, weight: f32) {
    let w = row.len() as f32;
    let (a, b) = (a.clamp(0.0, w), b.clamp(0.0, w));
    if b <= a {
        return;
    }
    let (ia, ib) = (a.floor() as usize, b.floor() as usize);
    if ia == ib {
        row[ia] += (b - a) * weight;
        return;
    }
    row[ia] += (ia as f32 + 1.0 - a) * weight;
    for v in &mut row[ia + 1..ib] {
        *v += weight;
    }
    if ib < row.len() {
        row[ib] += (b - ib as f32) * weight;
    }
}

/// A box blur of radius `r` (zero outside), rows then columns.
fn box_blur(m: &mut [f32], w: usize, h: usize, r: usize) {
    let norm = 1.0 / (2 * r + 1) as f32;
    let mut prefix = vec![0f32; w.max(h) + 1];
    let mut line = vec![0f32; w.max(h)];
    for y in 0..h {
        for x in 0..w {
            prefix[x + 1] = prefix[x] + m[y * w + x];
        }
        for x in 0..w {
            line[x] = (prefix[(x + r + 1).min(w)] - prefix[x.saturating_sub(r)]) * norm;
        }
        m[y * w..(y + 1) * w].copy_from_slice(&line[..w]);
    }
    for x in 0..w {
        for y in 0..h {
            prefix[y + 1] = prefix[y] + m[y * w + x];
        }
        for y in 0..h {
            line[y] = (prefix[(y + r + 1).min(h)] - prefix[y.saturating_sub(r)]) * norm;
        }
        for y in 0..h {
            m[y * w + x] = line[y];
        }
    }
}
