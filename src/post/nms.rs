//! Traditional greedy NMS (the reference's Cython path, `--fast_nms=False`; docs/model.md §6.4).

use crate::post::rank::{merge_top, stable_desc_order};
use crate::post::types::{Candidates, Kept, NmsOptions};

/// Greedy NMS over pixel boxes with the "+1 pixel" area convention; suppresses IoU >= thresh.
/// Returns the kept indices in ascending index order, as the reference does.
pub fn greedy_nms(boxes_px: &[[f32; 4]], scores: &[f32], iou_thresh: f32) -> Vec<usize> {
    let n = boxes_px.len().min(scores.len());
    let area = |b: &[f32; 4]| (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0);
    let mut suppressed = vec![false; n];
    let order = stable_desc_order(&scores[..n]);
    for (pos, &i) in order.iter().enumerate() {
        if suppressed[i] {
            continue;
        }
        let bi = &boxes_px[i];
        let ai = area(bi);
        for &j in &order[pos + 1..] {
            if suppressed[j] {
                continue;
            }
            let bj = &boxes_px[j];
            let w = (bi[2].min(bj[2]) - bi[0].max(bj[0]) + 1.0).max(0.0);
            let h = (bi[3].min(bj[3]) - bi[1].max(bj[1]) + 1.0).max(0.0);
            let inter = w * h;
            if inter / (ai + area(bj) - inter) >= iou_thresh {
                suppressed[j] = true;
            }
        }
    }
    (0..n).filter(|&i| !suppressed[i]).collect()
}

/// Per class: entries with score > conf_thresh, greedy NMS on boxes x max_size; then all classes
/// merged, sorted by score descending and capped at `max_num_detections`.
pub fn traditional_nms(cands: &Candidates, boxes: &[[f32; 4]], opts: &NmsOptions) -> Vec<Kept> {
    let s = opts.max_size as f32;
    let px: Vec<[f32; 4]> = boxes.iter().map(|b| b.map(|x| x * s)).collect();
    let mut per_class = Vec::with_capacity(cands.num_classes);
    for c in 0..cands.num_classes {
        let cs = cands.class_scores(c);
        let idx: Vec<usize> = (0..cs.len())
            .filter(|&i| cs[i] > opts.conf_thresh)
            .collect();
        if idx.is_empty() {
            continue;
        }
        let b: Vec<[f32; 4]> = idx.iter().map(|&i| px[i]).collect();
        let sc: Vec<f32> = idx.iter().map(|&i| cs[i]).collect();
        per_class.push(
            greedy_nms(&b, &sc, opts.iou_thresh)
                .into_iter()
                .map(|k| Kept {
                    cand: idx[k],
                    class: c as u32,
                    score: sc[k],
                })
                .collect(),
        );
    }
    merge_top(per_class, opts.max_num_detections)
}
