//! COCO class names, category-id map and the reference's display colours (docs/model.md App. A).

pub const CLASS_NAMES: [&str; 80] = [
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
];

/// COCO category ids, indexed by 0-based detection class (the inverse of the reference's
/// `COCO_LABEL_MAP`).
pub const CATEGORY_IDS: [u32; 80] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
    31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
    56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
    85, 86, 87, 88, 89, 90,
];

/// The reference's 19 display colours, RGB.
pub const COLORS: [[u8; 3]; 19] = [
    [244, 67, 54],
    [233, 30, 99],
    [156, 39, 176],
    [103, 58, 183],
    [63, 81, 181],
    [33, 150, 243],
    [3, 169, 244],
    [0, 188, 212],
    [0, 150, 136],
    [76, 175, 80],
    [139, 195, 74],
    [205, 220, 57],
    [255, 235, 59],
    [255, 193, 7],
    [255, 152, 0],
    [255, 87, 34],
    [121, 85, 72],
    [158, 158, 158],
    [96, 125, 139],
];

/// Name of a 0-based class, or `"class_<id>"` for ids beyond COCO's 80.
pub fn class_name(class_id: usize) -> String {
    CLASS_NAMES
        .get(class_id)
        .map_or_else(|| format!("class_{class_id}"), |s| s.to_string())
}

/// 0-based class of a COCO category id.
pub fn class_of_category(category_id: u32) -> Option<usize> {
    CATEGORY_IDS.iter().position(|&c| c == category_id)
}

/// Class index for a name, as used by class allow-lists.
pub fn class_by_name(name: &str) -> Option<usize> {
    CLASS_NAMES.iter().position(|&n| n == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_map_runs() {
        assert_eq!(CATEGORY_IDS[11], 13);
        assert_eq!(CATEGORY_IDS[79], 90);
        assert!(CATEGORY_IDS.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(class_of_category(13), Some(11));
        assert_eq!(class_of_category(12), None);
        assert_eq!(class_by_name("stop sign"), Some(11));
        assert_eq!(class_name(80), "class_80");
    }
}
