//! The pipeline's output: one instance per detection, in input-image pixels. Their JSON forms are
//! in [`crate::output::json`].

/// A binary mask of the full `width` x `height` input image, stored as the window
/// [x0, x0 + cols) x [y0, y0 + rows) that can hold foreground (0/1 bytes, row-major); every
/// pixel outside the window is background. A detection's window is about its box, so a frame's
/// masks together cost about the area of their boxes, not one full image each.
#[derive(Debug, Clone)]
pub struct Mask {
    pub height: usize,
    pub width: usize,
    pub x0: usize,
    pub y0: usize,
    pub cols: usize,
    pub rows: usize,
    /// `rows * cols` bytes.
    pub data: Vec<u8>,
}

impl Mask {
    /// A mask given as all `height * width` row-major bytes (the window is the whole image).
    pub fn full(height: usize, width: usize, data: Vec<u8>) -> Self {
        Mask {
            height,
            width,
            x0: 0,
            y0: 0,
            cols: width,
            rows: height,
            data,
        }
    }

    /// The window of the full image `height` x `width` at (x0, y0), `data` its rows*cols bytes.
    /// Errors when the window leaves the image or `data` has the wrong length.
    pub fn window(
        height: usize,
        width: usize,
        (x0, y0, cols, rows): (usize, usize, usize, usize),
        data: Vec<u8>,
    ) -> Result<Self, String> {
        if x0 + cols > width || y0 + rows > height || data.len() != rows * cols {
            return Err(format!(
                "mask window {cols}x{rows} at ({x0}, {y0}) with {} bytes does not fit a \
                 {width}x{height} image",
                data.len()
            ));
        }
        Ok(Mask {
            height,
            width,
            x0,
            y0,
            cols,
            rows,
            data,
        })
    }

    /// Whether pixel (x, y) is foreground; false outside the image.
    pub fn get(&self, x: usize, y: usize) -> bool {
        let (Some(c), Some(r)) = (x.checked_sub(self.x0), y.checked_sub(self.y0)) else {
            return false;
        };
        c < self.cols && r < self.rows && self.data.get(r * self.cols + c).is_some_and(|&v| v != 0)
    }

    /// Row `y`'s stored part: (first column, bytes), or None when the row holds no window.
    pub fn row(&self, y: usize) -> Option<(usize, &[u8])> {
        let r = y.checked_sub(self.y0).filter(|&r| r < self.rows)?;
        let bytes = self.data.get(r * self.cols..(r + 1) * self.cols)?;
        Some((self.x0, bytes))
    }

    pub fn area(&self) -> usize {
        self.data.iter().filter(|&&v| v != 0).count()
    }

    /// All `height * width` row-major 0/1 bytes.
    pub fn to_full(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.height * self.width];
        for y in self.y0..self.y0 + self.rows {
            if let Some((x0, bytes)) = self.row(y) {
                let dst = &mut out[y * self.width + x0..][..bytes.len()];
                for (d, &b) in dst.iter_mut().zip(bytes) {
                    *d = u8::from(b != 0);
                }
            }
        }
        out
    }
}

/// Two masks are equal when they cover the same image with the same pixels, however stored.
impl PartialEq for Mask {
    fn eq(&self, other: &Self) -> bool {
        self.height == other.height
            && self.width == other.width
            && self.to_full() == other.to_full()
    }
}

/// One detected instance.
#[derive(Debug, Clone)]
pub struct Detection {
    /// 0-based foreground class (0 = person).
    pub class_id: usize,
    /// Final score: class_score x mask_iou for YOLACT++, class_score for YOLACT.
    pub score: f32,
    /// Softmax probability of the class.
    pub class_score: f32,
    /// Predicted mask IoU (YOLACT++ only).
    pub mask_iou: Option<f32>,
    /// [x1, y1, x2, y2] in input pixels, clamped to the image, not truncated.
    pub bbox: [f32; 4],
    pub mask: Mask,
}

/// Per-image result.
#[derive(Debug, Clone)]
pub struct Detections {
    pub width: usize,
    pub height: usize,
    pub config: String,
    /// The model's own foreground class names (a checkpoint trained on other classes carries
    /// them); None = COCO's.
    pub class_names: Option<std::sync::Arc<[String]>>,
    /// Sorted by `score`, descending.
    pub items: Vec<Detection>,
}

impl Detections {
    /// The display name of 0-based class `class_id` under this model's class names.
    pub fn label(&self, class_id: usize) -> String {
        match &self.class_names {
            Some(names) => names
                .get(class_id)
                .cloned()
                .unwrap_or_else(|| format!("class_{class_id}")),
            None => crate::output::labels::class_name(class_id),
        }
    }
}
