//! Mask erosion by a margin, so the depth pixels sampled keep away from the object's outline,
//! where a mask that is a pixel too wide would pick up the background behind the object.
//!
//! The structuring element is the (2r+1) x (2r+1) square: a pixel stays when every pixel within
//! `r` in x and in y is in the mask. It is separable (a row pass, then a column pass), so the cost
//! is linear in the mask's window whatever `r`. The image border is not an object edge: pixels
//! outside the image count as inside the mask, so an object cut by the border is not eroded there.

use crate::output::detection::Mask;

/// A binary mask restricted to the window that holds its pixels (colour-image coordinates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskWindow {
    pub x0: usize,
    pub y0: usize,
    pub width: usize,
    pub height: usize,
    /// Row-major, `width * height`.
    pub on: Vec<bool>,
}

impl MaskWindow {
    /// Whether colour pixel `(u, v)` (image coordinates) is in the mask.
    pub fn contains(&self, u: usize, v: usize) -> bool {
        if u < self.x0 || v < self.y0 {
            return false;
        }
        let (x, y) = (u - self.x0, v - self.y0);
        x < self.width && y < self.height && self.on[y * self.width + x]
    }

    pub fn count(&self) -> usize {
        self.on.iter().filter(|&&b| b).count()
    }
}

/// The mask's pixels in their bounding window; `None` for an empty mask. Reads only the rows the
/// mask stores (its window about the box), so the cost follows the window, not the image.
pub fn window(mask: &Mask) -> Option<MaskWindow> {
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for y in mask.y0..(mask.y0 + mask.rows).min(mask.height) {
        let Some((start, row)) = mask.row(y) else {
            continue;
        };
        let Some(first) = row.iter().position(|&m| m != 0) else {
            continue;
        };
        let last = row.iter().rposition(|&m| m != 0).unwrap_or(first);
        x0 = x0.min(start + first);
        x1 = x1.max(start + last);
        y0 = y0.min(y);
        y1 = y;
    }
    if x0 == usize::MAX || x1 >= mask.width {
        return None;
    }
    let (ww, wh) = (x1 - x0 + 1, y1 - y0 + 1);
    let mut on = Vec::with_capacity(ww * wh);
    for y in y0..=y1 {
        on.extend((x0..=x1).map(|x| mask.get(x, y)));
    }
    Some(MaskWindow {
        x0,
        y0,
        width: ww,
        height: wh,
        on,
    })
}

/// Erodes one line in place. `open_start` / `open_end`: the line touches the image border there
/// (beyond it counts as inside the mask).
fn erode_line(
    line: &mut [bool],
    r: usize,
    open_start: bool,
    open_end: bool,
    scratch: &mut Vec<usize>,
) {
    let n = line.len();
    // Distance from each pixel back to the nearest outside pixel (usize::MAX: none).
    scratch.clear();
    let mut last_off: Option<usize> = if open_start { None } else { Some(0) };
    for (i, &b) in line.iter().enumerate() {
        if !b {
            last_off = Some(i + 1);
        }
        // Positions are shifted by one so that "just before the line" is 0.
        scratch.push(last_off.map_or(usize::MAX, |o| i + 1 - o));
    }
    let mut next_off: Option<usize> = if open_end { None } else { Some(n + 1) };
    for i in (0..n).rev() {
        if !line[i] {
            next_off = Some(i + 1);
        }
        let ahead = next_off.map_or(usize::MAX, |o| o - (i + 1));
        let behind = scratch[i];
        line[i] = line[i] && behind > r && ahead > r;
    }
}

/// `window` eroded by `r` pixels; `r = 0` returns it unchanged. `image_w` / `image_h` place the
/// image border.
pub fn erode(win: &MaskWindow, r: usize, image_w: usize, image_h: usize) -> MaskWindow {
    let mut out = win.clone();
    if r == 0 {
        return out;
    }
    let (w, h) = (win.width, win.height);
    let mut scratch = Vec::with_capacity(w.max(h));
    let left = win.x0 == 0;
    let right = win.x0 + w >= image_w;
    for row in out.on.chunks_exact_mut(w) {
        erode_line(row, r, left, right, &mut scratch);
    }
    let top = win.y0 == 0;
    let bottom = win.y0 + h >= image_h;
    let mut col = vec![false; h];
    for x in 0..w {
        for (y, c) in col.iter_mut().enumerate() {
            *c = out.on[y * w + x];
        }
        erode_line(&mut col, r, top, bottom, &mut scratch);
        for (y, c) in col.iter().enumerate() {
            out.on[y * w + x] = *c;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(w: usize, h: usize, rect: (usize, usize, usize, usize)) -> Mask {
        let mut data = vec![0u8; w * h];
        for y in rect.1..rect.3 {
            for x in rect.0..rect.2 {
                data[y * w + x] = 1;
            }
        }
        Mask::full(h, w, data)
    }

    #[test]
    fn a_mask_stored_as_a_window_reads_as_its_full_image_form() {
        let full = mask(20, 20, (5, 6, 15, 12));
        let fd = &full.data;
        let data: Vec<u8> = (4..13)
            .flat_map(|y| (3..17).map(move |x| fd[y * 20 + x]))
            .collect();
        let stored = Mask::window(20, 20, (3, 4, 14, 9), data).unwrap();
        assert_eq!(window(&stored), window(&full));
        assert_eq!(window(&full).unwrap().count(), 60);
    }

    #[test]
    fn a_rectangle_shrinks_by_r_on_each_side_inside_the_image() {
        let m = mask(20, 20, (5, 6, 15, 12)); // 10 x 6
        let win = window(&m).unwrap();
        assert_eq!((win.x0, win.y0, win.width, win.height), (5, 6, 10, 6));
        let e = erode(&win, 2, 20, 20);
        assert_eq!(e.count(), 6 * 2);
        assert!(e.contains(7, 8) && e.contains(12, 9));
        assert!(!e.contains(6, 8) && !e.contains(13, 9) && !e.contains(7, 10));
        assert_eq!(erode(&win, 3, 20, 20).count(), 0);
        assert_eq!(erode(&win, 0, 20, 20), win);
    }

    #[test]
    fn the_image_border_does_not_erode() {
        let m = mask(10, 10, (0, 0, 4, 10)); // touches left, top and bottom
        let e = erode(&window(&m).unwrap(), 1, 10, 10);
        // Only the right edge (column 3) goes.
        assert_eq!(e.count(), 3 * 10);
        assert!(e.contains(0, 0) && e.contains(2, 9) && !e.contains(3, 5));
    }

    #[test]
    fn a_hole_erodes_around_it() {
        let mut m = mask(11, 11, (0, 0, 11, 11));
        m.data[5 * 11 + 5] = 0;
        let e = erode(&window(&m).unwrap(), 1, 11, 11);
        assert_eq!(e.count(), 121 - 9);
        assert!(window(&mask(4, 4, (0, 0, 0, 0))).is_none());
    }
}
