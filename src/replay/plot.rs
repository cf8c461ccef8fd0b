//! `latency.png` and `stability.png` of the report directory.
//!
//! plotters draws the series into an RGB buffer; titles, tick labels and legends are drawn here
//! with the 8x8 bitmap font, because plotters' text needs system fonts (fontconfig) or a bundled
//! TTF, neither of which every machine that replays a bag has.

use std::collections::BTreeMap;
use std::path::Path;

use font8x8::UnicodeFonts;
use image::{Rgb, RgbImage};
use plotters::prelude::*;

use super::FrameSample;
use crate::error::{Error, Result};

pub const LATENCY_SIZE: (u32, u32) = (1000, 560);
/// Three stacked panels.
pub const STABILITY_SIZE: (u32, u32) = (1000, 840);

const LEFT: u32 = 80;
const RIGHT: u32 = 240;
const TOP: u32 = 30;
const BOTTOM: u32 = 34;

/// Distinct, print-friendly line colours (Tableau 10).
const PALETTE: [[u8; 3]; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];

/// One line of a panel; non-finite `y` values break the line.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub series: Vec<Series>,
}

fn plot_err(e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("drawing a plot: {e}"))
}

fn draw_text(img: &mut RgbImage, x: i64, y: i64, text: &str, scale: i64, c: [u8; 3]) {
    let (w, h) = (i64::from(img.width()), i64::from(img.height()));
    for (i, ch) in text.chars().enumerate() {
        let Some(glyph) = font8x8::BASIC_FONTS.get(ch) else {
            continue;
        };
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8i64 {
                if bits & (1 << col) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let px = x + (i as i64 * 8 + col) * scale + dx;
                        let py = y + row as i64 * scale + dy;
                        if (0..w).contains(&px) && (0..h).contains(&py) {
                            img.put_pixel(px as u32, py as u32, Rgb(c));
                        }
                    }
                }
            }
        }
    }
}

fn hline(img: &mut RgbImage, x0: u32, x1: u32, y: u32, c: [u8; 3]) {
    for x in x0..=x1.min(img.width() - 1) {
        if y < img.height() {
            img.put_pixel(x, y, Rgb(c));
        }
    }
}

fn vline(img: &mut RgbImage, x: u32, y0: u32, y1: u32, c: [u8; 3]) {
    for y in y0..=y1.min(img.height() - 1) {
        if x < img.width() {
            img.put_pixel(x, y, Rgb(c));
        }
    }
}

/// Short tick label: integers as such, else up to three significant decimals.
fn tick(v: f64) -> String {
    if (v == v.round() && v.abs() < 1e7) || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Data range of the panel's finite points, widened so a flat line is not on the border.
fn ranges(p: &Panel) -> ((f64, f64), (f64, f64)) {
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    // The x range spans every frame, even those whose value is undefined (NaN), so that panels
    // over the same frames line up.
    for &(x, y) in p.series.iter().flat_map(|s| s.points.iter()) {
        if !x.is_finite() {
            continue;
        }
        x0 = x0.min(x);
        x1 = x1.max(x);
        if y.is_finite() {
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
    }
    if x0 > x1 {
        return ((0.0, 1.0), (0.0, 1.0));
    }
    if y0 > y1 {
        (y0, y1) = (0.0, 1.0);
    }
    if x1 - x0 < 1e-9 {
        x1 = x0 + 1.0;
    }
    // Latencies and counts read best from zero.
    y0 = y0.min(0.0);
    if y1 - y0 < 1e-9 {
        y1 = y0 + 1.0;
    }
    // Margins on both sides keep a line at the extremes (often 0) off the axes.
    let pad = 0.05 * (y1 - y0);
    ((x0, x1), (y0 - pad, y1 + pad))
}

/// Renders stacked panels into one image.
pub fn render(size: (u32, u32), panels: &[Panel]) -> Result<RgbImage> {
    let (w, h) = size;
    let n = panels.len().max(1) as u32;
    let ph = h / n;
    if w <= LEFT + RIGHT + 10 || ph <= TOP + BOTTOM + 10 {
        return Err(plot_err(format!("image {w}x{h} too small")));
    }
    let (pw, plot_h) = (w - LEFT - RIGHT, ph - TOP - BOTTOM);
    let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    let all_ranges: Vec<_> = panels.iter().map(ranges).collect();

    // Grid first, so that the series are drawn over it.
    for (k, _) in panels.iter().enumerate() {
        let top = k as u32 * ph + TOP;
        for i in 0..=4 {
            let y = top + (plot_h - 1) * i / 4;
            hline(&mut img, LEFT, LEFT + pw - 1, y, [225, 225, 225]);
            let x = LEFT + (pw - 1) * i / 4;
            vline(&mut img, x, top, top + plot_h - 1, [225, 225, 225]);
        }
    }

    {
        let buf: &mut [u8] = &mut img;
        let root = BitMapBackend::with_buffer(buf, (w, h)).into_drawing_area();
        for (k, p) in panels.iter().enumerate() {
            let ((x0, x1), (y0, y1)) = all_ranges[k];
            let area = root
                .clone()
                .shrink((LEFT, k as u32 * ph + TOP), (pw, plot_h));
            let mut chart = ChartBuilder::on(&area)
                .build_cartesian_2d(x0..x1, y0..y1)
                .map_err(plot_err)?;
            for (j, s) in p.series.iter().enumerate() {
                let [r, g, b] = PALETTE[j % PALETTE.len()];
                let style = RGBColor(r, g, b).stroke_width(2);
                for seg in s
                    .points
                    .split(|(x, y)| !x.is_finite() || !y.is_finite())
                    .filter(|seg| !seg.is_empty())
                {
                    if seg.len() == 1 {
                        chart
                            .draw_series(std::iter::once(Circle::new(seg[0], 3, style.filled())))
                            .map_err(plot_err)?;
                    } else {
                        chart
                            .draw_series(LineSeries::new(seg.iter().copied(), style))
                            .map_err(plot_err)?;
                    }
                }
            }
        }
        root.present().map_err(plot_err)?;
    }

    let black = [0, 0, 0];
    for (k, p) in panels.iter().enumerate() {
        let ((x0, x1), (y0, y1)) = all_ranges[k];
        let base = k as u32 * ph;
        let top = base + TOP;
        let bottom = top + plot_h - 1;
        let right = LEFT + pw - 1;
        hline(&mut img, LEFT, right, top, black);
        hline(&mut img, LEFT, right, bottom, black);
        vline(&mut img, LEFT, top, bottom, black);
        vline(&mut img, right, top, bottom, black);
        draw_text(&mut img, LEFT as i64, base as i64 + 8, &p.title, 2, black);
        for i in 0..=4u32 {
            let f = f64::from(i) / 4.0;
            let yv = y1 - f * (y1 - y0);
            let y = top + (plot_h - 1) * i / 4;
            let label = tick(yv);
            let lx = LEFT as i64 - 6 - 8 * label.len() as i64;
            draw_text(&mut img, lx, y as i64 - 4, &label, 1, black);
            let xv = x0 + f * (x1 - x0);
            let x = LEFT + (pw - 1) * i / 4;
            let label = tick(xv);
            let lx = (x as i64 - 4 * label.len() as i64).max(0);
            draw_text(&mut img, lx, bottom as i64 + 6, &label, 1, black);
        }
        let xl = &p.x_label;
        let cx = LEFT as i64 + pw as i64 / 2 - 4 * xl.len() as i64;
        draw_text(&mut img, cx, bottom as i64 + 18, xl, 1, black);
        for (j, s) in p.series.iter().enumerate() {
            let c = PALETTE[j % PALETTE.len()];
            let ly = top + 4 + 14 * j as u32;
            for dy in 0..8 {
                hline(&mut img, right + 10, right + 24, ly + dy, c);
            }
            let name: String = s.name.chars().take(26).collect();
            draw_text(&mut img, right as i64 + 30, ly as i64, &name, 1, black);
        }
    }
    Ok(img)
}

/// Encodes in memory and writes through a temporary name, so a PNG is never half there.
fn save(img: &RgbImage, path: &Path) -> Result<()> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Png)
        .map_err(|e| Error::Invalid(format!("{}: encoding PNG: {e}", path.display())))?;
    crate::bag::out_path::write_atomic(path, bytes.get_ref()).map_err(|e| Error::io(path, e))
}

/// Per-frame latency of each stage and of the whole frame, over the processed-frame index.
pub fn latency_panel(series: &[FrameSample]) -> Panel {
    let mut lines: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for f in series {
        for (stage, ms) in f.latencies() {
            lines.entry(stage).or_default().push((f.index as f64, ms));
        }
    }
    // `total` first: it is the line people look for.
    let mut out: Vec<Series> = Vec::new();
    if let Some(t) = lines.remove("total") {
        out.push(Series {
            name: "total".into(),
            points: t,
        });
    }
    for (name, points) in lines {
        out.push(Series {
            name: name.into(),
            points,
        });
    }
    Panel {
        title: "Latency per frame (ms)".into(),
        x_label: "processed frame (bag order)".into(),
        series: out,
    }
}

/// Window stability per topic: mask stability, flicker and instances per frame.
pub fn stability_panels(series: &[FrameSample]) -> Vec<Panel> {
    let mut per_topic: BTreeMap<&str, Vec<&FrameSample>> = BTreeMap::new();
    for f in series {
        per_topic.entry(&f.topic).or_default().push(f);
    }
    let panel = |title: &str, get: fn(&FrameSample) -> f64| Panel {
        title: title.into(),
        x_label: "frame of the topic".into(),
        series: per_topic
            .iter()
            .map(|(t, fs)| Series {
                name: (*t).into(),
                points: fs.iter().map(|f| (f.topic_index as f64, get(f))).collect(),
            })
            .collect(),
    };
    vec![
        panel("Mask stability (window mean IoU)", |f| f.mask_stability),
        panel("Flicker per 100 track-frames (window)", |f| {
            f.flicker_per_100
        }),
        panel("Instances per frame (window mean)", |f| f.instances_mean),
    ]
}

/// Writes `latency.png` and `stability.png` into `dir`.
pub fn write_plots(series: &[FrameSample], dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let img = render(LATENCY_SIZE, &[latency_panel(series)])?;
    save(&img, &dir.join("latency.png"))?;
    let img = render(STABILITY_SIZE, &stability_panels(series))?;
    save(&img, &dir.join("stability.png"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_pixels_land_where_the_data_says() {
        // One straight line from (0, 0) to (10, 10): the plot's lower-left to upper-right corner.
        let p = Panel {
            title: "t".into(),
            x_label: "x".into(),
            series: vec![Series {
                name: "a".into(),
                points: (0..=10).map(|i| (f64::from(i), f64::from(i))).collect(),
            }],
        };
        let img = render((400, 300), &[p]).unwrap();
        let c = Rgb(PALETTE[0]);
        let count = img.pixels().filter(|p| **p == c).count();
        assert!(count > 100, "line pixels: {count}");
        // With y from -0.5 to 10.5, the line's middle (5, 5) is at 5/10 of the width and
        // 5.5/11 of the height from the top.
        let (pw, ph) = (400 - LEFT - RIGHT, 300 - TOP - BOTTOM);
        let x = LEFT + pw / 2;
        let y = TOP as f64 + (ph - 1) as f64 * (5.5 / 11.0);
        let near = (y as u32 - 4..y as u32 + 4).any(|yy| *img.get_pixel(x, yy) == c);
        assert!(near, "no line pixel near ({x}, {y})");
        // Nothing of the line in the upper-left quadrant of the plot area.
        for yy in TOP + 2..TOP + ph / 3 {
            for xx in LEFT + 2..LEFT + pw / 3 {
                assert_ne!(*img.get_pixel(xx, yy), c);
            }
        }
    }

    #[test]
    fn nan_breaks_the_line_and_empty_panels_render() {
        let p = Panel {
            title: "t".into(),
            x_label: "x".into(),
            series: vec![Series {
                name: "a".into(),
                points: vec![(0.0, 1.0), (1.0, f64::NAN), (2.0, 1.0)],
            }],
        };
        assert!(render((400, 300), &[p]).is_ok());
        let empty = Panel {
            title: "t".into(),
            x_label: "x".into(),
            series: vec![],
        };
        assert!(render((400, 300), &[empty]).is_ok());
        assert!(render((100, 50), &[]).is_err());
    }
}
