//! The reference's image display (docs/model.md §8.2): blended masks, boxes, "label: score" tags.

use font8x8::UnicodeFonts;
use image::{Rgb, RgbImage};

use crate::output::detection::Detections;
use crate::output::labels::COLORS;

const ALPHA: f32 = 0.45;
const GLYPH: u32 = 8;

/// Colour of the j-th detection (score order), as the reference picks it for still images.
pub fn color_for(j: usize) -> [u8; 3] {
    COLORS[(j * 5) % COLORS.len()]
}

/// Draws `dets` (sorted best first) on a copy of `img`.
///
/// Masks are composited from the last detection to the first so the best one ends on top, in float and
/// truncated to u8 as the reference's `(img * 255).byte()`.
pub fn draw(img: &RgbImage, dets: &Detections) -> RgbImage {
    let (w, h) = img.dimensions();
    let mut out = img.clone();
    let usable: Vec<(usize, &crate::output::detection::Detection)> = dets
        .items
        .iter()
        .enumerate()
        .filter(|(_, d)| d.mask.width == w as usize && d.mask.height == h as usize)
        .collect();
    // Row by row, over the masks whose window meets the row: the cost is the masks' windows,
    // not the image times the detections.
    for (y, row) in out.rows_mut().enumerate() {
        let active: Vec<(usize, &crate::output::detection::Detection)> = usable
            .iter()
            .rev()
            .filter(|(_, d)| d.mask.row(y).is_some())
            .copied()
            .collect();
        if active.is_empty() {
            continue;
        }
        for (x, px) in row.enumerate() {
            let mut v = [
                px[0] as f32 / 255.0,
                px[1] as f32 / 255.0,
                px[2] as f32 / 255.0,
            ];
            let mut touched = false;
            for &(j, d) in &active {
                if d.mask.get(x, y) {
                    let c = color_for(j);
                    for k in 0..3 {
                        v[k] = v[k] * (1.0 - ALPHA) + ALPHA * (c[k] as f32 / 255.0);
                    }
                    touched = true;
                }
            }
            if touched {
                *px = Rgb(v.map(|x| (x * 255.0) as u8));
            }
        }
    }
    // Boxes and text in reverse score order, so the best detection's label is drawn last.
    for (j, d) in dets.items.iter().enumerate().rev() {
        let c = Rgb(color_for(j));
        let [x1, y1, x2, y2] = d.bbox.map(|v| v.max(0.0) as i64);
        draw_rect(&mut out, x1, y1, x2, y2, c);
        let text = format!("{}: {:.2}", dets.label(d.class_id), d.score);
        let tw = GLYPH as i64 * text.chars().count() as i64;
        let th = GLYPH as i64;
        fill_rect(&mut out, x1, y1 - th - 4, x1 + tw, y1, c);
        draw_text(&mut out, x1, y1 - th - 2, &text, Rgb([255, 255, 255]));
    }
    out
}

fn put(img: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, c);
    }
}

fn draw_rect(img: &mut RgbImage, x1: i64, y1: i64, x2: i64, y2: i64, c: Rgb<u8>) {
    for x in x1..=x2 {
        put(img, x, y1, c);
        put(img, x, y2, c);
    }
    for y in y1..=y2 {
        put(img, x1, y, c);
        put(img, x2, y, c);
    }
}

fn fill_rect(img: &mut RgbImage, x1: i64, y1: i64, x2: i64, y2: i64, c: Rgb<u8>) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    for y in y1.max(0)..y2.min(h) {
        for x in x1.max(0)..x2.min(w) {
            img.put_pixel(x as u32, y as u32, c);
        }
    }
}

fn draw_text(img: &mut RgbImage, x: i64, y: i64, text: &str, c: Rgb<u8>) {
    for (i, ch) in text.chars().enumerate() {
        let Some(glyph) = font8x8::BASIC_FONTS.get(ch) else {
            continue;
        };
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) != 0 {
                    put(img, x + (i as i64) * GLYPH as i64 + col, y + row as i64, c);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::detection::{Detection, Mask};

    #[test]
    fn blending_follows_the_reference_formula() {
        let img = RgbImage::from_pixel(20, 20, Rgb([100, 150, 200]));
        let mut data = vec![0u8; 400];
        data[17 * 20 + 10] = 1;
        let d = Detection {
            class_id: 0,
            score: 0.9,
            class_score: 0.9,
            mask_iou: None,
            bbox: [2.0, 14.0, 18.0, 19.0],
            mask: Mask::full(20, 20, data),
        };
        let dets = Detections {
            width: 20,
            height: 20,
            config: "t".into(),
            class_names: None,
            items: vec![d],
        };
        let out = draw(&img, &dets);
        let c = color_for(0);
        let expect: Vec<u8> = (0..3)
            .map(|k| {
                let v = [100f32, 150., 200.][k] / 255.0;
                ((v * (1.0 - ALPHA) + ALPHA * c[k] as f32 / 255.0) * 255.0) as u8
            })
            .collect();
        assert_eq!(out.get_pixel(10, 17).0.to_vec(), expect);
        // outside the mask and the box: untouched
        assert_eq!(out.get_pixel(0, 0), &Rgb([100, 150, 200]));
        // the box outline uses the detection colour
        assert_eq!(out.get_pixel(2, 16), &Rgb(c));
    }

    #[test]
    fn boxes_outside_the_image_do_not_panic() {
        let img = RgbImage::new(5, 5);
        let d = Detection {
            class_id: 79,
            score: 0.5,
            class_score: 0.5,
            mask_iou: Some(1.0),
            bbox: [-50.0, -50.0, 500.0, 500.0],
            mask: Mask::full(3, 3, vec![1; 9]),
        };
        let dets = Detections {
            width: 5,
            height: 5,
            config: "t".into(),
            class_names: None,
            items: vec![d],
        };
        let _ = draw(&img, &dets);
    }
}
