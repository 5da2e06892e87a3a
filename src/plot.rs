//! PNG charts for `edgeclip replay --plot` and `edgeclip calibrate --plot`: a trigger's metric
//! over the frames of a recording, and the score histograms behind a calibration.
//!
//! Plain numbers in, PNG bytes out: the callers turn their runs into [`TracePanel`]s and
//! [`HistogramPanel`]s, so this file knows no pipeline. Drawn with `plotters` on its bitmap
//! backend, text in an embedded DejaVu Sans cut down to ASCII (`assets/fonts/`, 14 KB: no
//! system fonts needed, none looked up), encoded by the `image` crate the preprocessing
//! already uses.

use std::sync::Once;

use image::ImageEncoder as _;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

/// The embedded font (see `assets/fonts/README.md` for its origin and licence).
const FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans-subset.ttf");

/// A chart that could not be drawn or encoded.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw the chart: {0}")]
pub struct PlotError(String);

fn err(e: impl std::fmt::Display) -> PlotError {
    PlotError(e.to_string())
}

fn fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is ours and valid (a test draws with it); a failure leaves text undrawn.
        let _ = register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

const METRIC: RGBColor = RGBColor(31, 119, 180);
const COMPETITOR: RGBColor = RGBColor(150, 150, 150);
const THRESHOLD: RGBColor = RGBColor(214, 39, 40);
const EVENT: RGBColor = RGBColor(255, 221, 170);
const HIT: RGBColor = RGBColor(44, 160, 44);
const QUIET: RGBColor = RGBColor(31, 119, 180);
const POSITIVE: RGBColor = RGBColor(255, 127, 14);

/// One label's trace over a recording.
#[derive(Debug, Clone, PartialEq)]
pub struct TracePanel {
    /// The panel's title (the label, its threshold and hysteresis).
    pub title: String,
    /// What the metric is (`probability`, `cosine`).
    pub metric_name: String,
    /// The metric per frame (NaN: no value for that frame).
    pub metric: Vec<f64>,
    /// The strongest competitor's value per frame, and how to name it in the legend.
    pub competitor: Option<(String, Vec<f64>)>,
    /// The trigger's threshold.
    pub threshold: f64,
    /// The y range shown.
    pub y_range: (f64, f64),
    /// Events as `[start frame, end frame)`.
    pub events: Vec<(f64, f64)>,
}

/// One label's calibration scores.
#[derive(Debug, Clone)]
pub struct HistogramPanel {
    /// The panel's title.
    pub title: String,
    /// The x axis's name.
    pub x_name: String,
    /// Quiet scores, on the plotted scale.
    pub quiet: Vec<f64>,
    /// Positive examples' scores, on the plotted scale.
    pub positives: Vec<f64>,
    /// Vertical lines: name, value on the plotted scale, dashed.
    pub marks: Vec<(String, f64, bool)>,
    /// How the x axis's values are written (the plotted scale may be a transform).
    pub x_format: fn(f64) -> String,
}

/// `frames x panels` charts of each label's metric, one panel per label, as PNG bytes.
pub fn trace_png(
    panels: &[TracePanel],
    x_name: &str,
    (width, height): (u32, u32),
) -> Result<Vec<u8>, PlotError> {
    render((width, height), |root| {
        let areas = root.split_evenly((panels.len().max(1), 1));
        for (panel, area) in panels.iter().zip(areas) {
            trace_panel(panel, x_name, &area)?;
        }
        Ok(())
    })
}

/// How a legend entry is drawn.
#[derive(Debug, Clone, Copy)]
enum Swatch {
    Fill(RGBAColor),
    Line(RGBColor),
    Dashed(RGBColor),
}

/// Width of the legend column right of each chart.
const LEGEND_W: u32 = 270;

/// A legend in its own column: a swatch and a line of text per entry.
fn legend(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    entries: &[(Swatch, String)],
) -> Result<(), PlotError> {
    let style = TextStyle::from(("sans-serif", 13).into_font()).color(&BLACK);
    for (k, (swatch, text)) in entries.iter().enumerate() {
        let y = 44 + 22 * k as i32;
        match *swatch {
            Swatch::Fill(c) => area.draw(&Rectangle::new([(8, y - 6), (30, y + 6)], c.filled())),
            Swatch::Line(c) => area.draw(&PathElement::new([(8, y), (30, y)], c.stroke_width(3))),
            Swatch::Dashed(c) => {
                for x in [8, 18] {
                    area.draw(&PathElement::new([(x, y), (x + 7, y)], c.stroke_width(3)))
                        .map_err(err)?;
                }
                Ok(())
            }
        }
        .map_err(err)?;
        area.draw(&Text::new(text.clone(), (38, y - 7), style.clone()))
            .map_err(err)?;
    }
    Ok(())
}

fn trace_panel(
    p: &TracePanel,
    x_name: &str,
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
) -> Result<(), PlotError> {
    let (w, _) = area.dim_in_pixel();
    let (area, side) = area.split_horizontally(w.saturating_sub(LEGEND_W));
    let frames = p.metric.len().max(1) as f64;
    let (y0, y1) = p.y_range;
    let mut chart = ChartBuilder::on(&area)
        .caption(&p.title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(34)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..frames, y0..y1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_name)
        .y_desc(&p.metric_name)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .light_line_style(WHITE)
        .label_style(("sans-serif", 12))
        .axis_desc_style(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(
            p.events
                .iter()
                .map(|&(a, b)| Rectangle::new([(a, y0), (b, y1)], EVENT.filled())),
        )
        .map_err(err)?;
    // Frames at or above the threshold: the ones the hysteresis counts, as a strip along the
    // bottom.
    let strip = (y1 - y0) * 0.04;
    chart
        .draw_series(
            p.metric
                .iter()
                .enumerate()
                .filter(|(_, v)| **v >= p.threshold)
                .map(|(i, _)| {
                    Rectangle::new([(i as f64, y0), (i as f64 + 1.0, y0 + strip)], HIT.filled())
                }),
        )
        .map_err(err)?;
    if let Some((_, values)) = &p.competitor {
        chart
            .draw_series(LineSeries::new(points(values), COMPETITOR.stroke_width(1)))
            .map_err(err)?;
    }
    chart
        .draw_series(DashedLineSeries::new(
            [(0.0, p.threshold), (frames, p.threshold)],
            6,
            4,
            THRESHOLD.stroke_width(2),
        ))
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(points(&p.metric), METRIC.stroke_width(2)))
        .map_err(err)?;
    let mut entries = vec![
        (
            Swatch::Line(METRIC),
            format!("{} of the label", p.metric_name),
        ),
        (
            Swatch::Dashed(THRESHOLD),
            format!("threshold {}", p.threshold),
        ),
    ];
    if let Some((name, _)) = &p.competitor {
        entries.push((Swatch::Line(COMPETITOR), name.clone()));
    }
    entries.push((
        Swatch::Fill(HIT.to_rgba()),
        "frame at or above the threshold".into(),
    ));
    entries.push((Swatch::Fill(EVENT.to_rgba()), "event: start to end".into()));
    legend(&side, &entries)
}

/// `(frame + 0.5, value)` for every finite value (a gap in the data is bridged).
fn points(values: &[f64]) -> Vec<(f64, f64)> {
    values
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .map(|(i, &v)| (i as f64 + 0.5, v))
        .collect()
}

/// Histograms of quiet and positive scores, one panel per label, as PNG bytes. Each set is
/// drawn as the fraction of its own scores per bin, so a few examples show beside many frames.
pub fn histogram_png(
    panels: &[HistogramPanel],
    (width, height): (u32, u32),
) -> Result<Vec<u8>, PlotError> {
    render((width, height), |root| {
        let areas = root.split_evenly((panels.len().max(1), 1));
        for (panel, area) in panels.iter().zip(areas) {
            histogram_panel(panel, &area)?;
        }
        Ok(())
    })
}

const BINS: usize = 60;

fn histogram_panel(
    p: &HistogramPanel,
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
) -> Result<(), PlotError> {
    let all = p
        .quiet
        .iter()
        .chain(&p.positives)
        .chain(p.marks.iter().map(|m| &m.1))
        .copied()
        .filter(|v| v.is_finite());
    let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    let (lo, hi) = if lo < hi {
        let pad = (hi - lo) * 0.05;
        (lo - pad, hi + pad)
    } else if lo.is_finite() {
        (lo - 0.5, lo + 0.5)
    } else {
        (0.0, 1.0)
    };
    let width = (hi - lo) / BINS as f64;
    let bins = |v: &[f64]| {
        let mut counts = [0usize; BINS];
        let n = v.iter().filter(|x| x.is_finite()).count().max(1) as f64;
        for x in v.iter().filter(|x| x.is_finite()) {
            counts[(((x - lo) / width) as usize).min(BINS - 1)] += 1;
        }
        counts.map(|c| c as f64 / n)
    };
    let (quiet, positives) = (bins(&p.quiet), bins(&p.positives));
    let top = quiet
        .iter()
        .chain(&positives)
        .fold(0.0f64, |a, &b| a.max(b))
        * 1.15;
    let (w, _) = area.dim_in_pixel();
    let (area, side) = area.split_horizontally(w.saturating_sub(LEGEND_W));
    let mut chart = ChartBuilder::on(&area)
        .caption(&p.title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(34)
        .y_label_area_size(56)
        .build_cartesian_2d(lo..hi, 0.0..top.max(0.01))
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(&p.x_name)
        .y_desc("fraction of the set")
        .x_label_formatter(&|x| (p.x_format)(*x))
        .light_line_style(WHITE)
        .label_style(("sans-serif", 12))
        .axis_desc_style(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    let sets = [
        (&quiet, QUIET, format!("quiet frames ({})", p.quiet.len())),
        (
            &positives,
            POSITIVE,
            format!("positive examples ({})", p.positives.len()),
        ),
    ];
    let mut entries = Vec::new();
    for (counts, colour, name) in sets {
        chart
            .draw_series(
                counts
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| **c > 0.0)
                    .map(|(i, &c)| {
                        let x = lo + i as f64 * width;
                        Rectangle::new([(x, 0.0), (x + width, c)], colour.mix(0.6).filled())
                    }),
            )
            .map_err(err)?;
        entries.push((Swatch::Fill(colour.mix(0.6)), name));
    }
    for (name, value, dashed) in &p.marks {
        let line = [(*value, 0.0), (*value, top)];
        if *dashed {
            chart.draw_series(DashedLineSeries::new(line, 6, 4, BLACK.stroke_width(2)))
        } else {
            chart.draw_series(LineSeries::new(line, THRESHOLD.stroke_width(2)))
        }
        .map_err(err)?;
        let swatch = if *dashed {
            Swatch::Dashed(BLACK)
        } else {
            Swatch::Line(THRESHOLD)
        };
        entries.push((swatch, name.clone()));
    }
    legend(&side, &entries)
}

/// Draws on a white RGB canvas and encodes it as PNG.
fn render(
    (width, height): (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<(), PlotError>,
) -> Result<Vec<u8>, PlotError> {
    if width < 200 || height < 100 || width > 8000 || height > 8000 {
        return Err(PlotError(format!(
            "a chart of {width}x{height} pixels: between 200x100 and 8000x8000"
        )));
    }
    fonts();
    let mut rgb = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        draw(&root)?;
        root.present().map_err(err)?;
    }
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new_with_quality(
        &mut png,
        image::codecs::png::CompressionType::Best,
        image::codecs::png::FilterType::Adaptive,
    )
    .write_image(&rgb, width, height, image::ExtendedColorType::Rgb8)
    .map_err(err)?;
    Ok(png)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size_of(png: &[u8]) -> (u32, u32) {
        let img = image::load_from_memory_with_format(png, image::ImageFormat::Png).unwrap();
        (img.width(), img.height())
    }

    #[test]
    fn traces_are_pngs_of_the_size_asked_with_text() {
        let panel = TracePanel {
            title: "red_circle (threshold 0.5)".into(),
            metric_name: "probability".into(),
            metric: (0..100)
                .map(|i| if (30..60).contains(&i) { 0.9 } else { 0.01 })
                .collect(),
            competitor: Some(("best other".into(), vec![0.1; 100])),
            threshold: 0.5,
            y_range: (0.0, 1.0),
            events: vec![(32.0, 62.0)],
        };
        let png = trace_png(&[panel.clone(), panel], "frame", (640, 400)).unwrap();
        assert_eq!(size_of(&png), (640, 400));
        // The font drew something: text pixels are neither white nor a series colour. A chart
        // without text has far fewer distinct colours (antialiased glyphs add greys).
        let img = image::load_from_memory(&png).unwrap().to_rgb8();
        let greys = img
            .pixels()
            .filter(|p| p[0] == p[1] && p[1] == p[2] && p[0] > 20 && p[0] < 200)
            .count();
        assert!(greys > 500, "{greys} grey pixels: is the text drawn?");
    }

    #[test]
    fn histograms_draw_empty_and_flat_sets() {
        let panel = HistogramPanel {
            title: "t".into(),
            x_name: "cosine".into(),
            quiet: vec![0.2; 50],
            positives: vec![],
            marks: vec![
                ("threshold 0.3".into(), 0.3, false),
                ("bound".into(), 0.25, true),
            ],
            x_format: |x| format!("{x:.2}"),
        };
        let png = histogram_png(&[panel], (500, 300)).unwrap();
        assert_eq!(size_of(&png), (500, 300));
        let empty = HistogramPanel {
            quiet: vec![],
            marks: vec![],
            ..HistogramPanel {
                title: "empty".into(),
                x_name: "x".into(),
                quiet: vec![],
                positives: vec![f64::NAN],
                marks: vec![],
                x_format: |x| format!("{x}"),
            }
        };
        assert!(histogram_png(&[empty], (500, 300)).is_ok());
    }

    #[test]
    fn absurd_sizes_are_refused() {
        let e = trace_png(&[], "frame", (10, 10)).unwrap_err();
        assert!(e.to_string().contains("10x10"), "{e}");
    }
}
