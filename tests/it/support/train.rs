//! Loaders for the training fixtures of `tests/fixtures/train` (made by
//! `tools/make_train_fixtures.py`; its README says what each file holds).
//!
//! * [`ground_truth`]: the two images' ground truth as the reference's `pull_item` gives it.
//! * [`LossFixture`]: level (a), the reference's loss on its own network outputs.
//! * [`StepFixture`]: level (b), the reference's full train step at 550 (loss terms, per parameter
//!   the gradient norm and every `grad_stride`-th flat gradient element), for the trainer's
//!   step-parity test once the whole training pass has a backward.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use yolact_ros2::train::data::GroundTruth;

use super::fixture;

/// The seed of the synthetic weights every fixture was made with.
pub const SEED: u64 = 0x5EED_CAFE;

pub fn path(rel: &str) -> PathBuf {
    fixture(&format!("train/{rel}"))
}

/// A safetensors file's tensors and its `__metadata__` strings.
pub struct Safetensors {
    pub tensors: HashMap<String, Tensor>,
    pub meta: BTreeMap<String, String>,
}

impl Safetensors {
    pub fn load(rel: &str) -> Self {
        let p = path(rel);
        let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        let meta = header
            .get("__metadata__")
            .and_then(|m| m.as_object())
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let tensors = candle_core::safetensors::load(&p, &Device::Cpu).unwrap();
        Self { tensors, meta }
    }

    pub fn get(&self, k: &str) -> &Tensor {
        self.tensors
            .get(k)
            .unwrap_or_else(|| panic!("fixture tensor `{k}` missing"))
    }

    pub fn scalar(&self, k: &str) -> f32 {
        self.get(k)
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()[0]
    }

    pub fn meta_json(&self, k: &str) -> serde_json::Value {
        serde_json::from_str(&self.meta[k]).unwrap()
    }
}

/// Row-major 0/1 runs (zeros first) -> the mask's pixels.
fn decode_runs(runs: &[i64], len: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(len);
    for (i, &r) in runs.iter().enumerate() {
        let v = (i % 2) as f32;
        out.extend(std::iter::repeat_n(v, r as usize));
    }
    assert_eq!(
        out.len(),
        len,
        "mask runs cover {} of {len} pixels",
        out.len()
    );
    out
}

/// The two 550x550 images' ground truth (crowds last, label -1), on `device`.
pub fn ground_truth(device: &Device) -> Vec<GroundTruth> {
    let f = Safetensors::load("gt.safetensors");
    let size: usize = f.meta["size"].parse().unwrap();
    let images: usize = f.meta["images"].parse().unwrap();
    (0..images)
        .map(|i| {
            let boxes = f.get(&format!("boxes_{i}")).to_device(device).unwrap();
            let labels = f.get(&format!("labels_{i}")).to_vec1::<i64>().unwrap();
            let num_crowds =
                f.get(&format!("num_crowds_{i}")).to_vec1::<i64>().unwrap()[0] as usize;
            let runs = f.get(&format!("mask_runs_{i}")).to_vec1::<i64>().unwrap();
            let (mut at, mut masks) = (0, Vec::new());
            for _ in 0..labels.len() {
                let n = runs[at] as usize;
                masks.extend(decode_runs(&runs[at + 1..at + 1 + n], size * size));
                at += 1 + n;
            }
            assert_eq!(at, runs.len());
            let masks = Tensor::from_vec(masks, (labels.len(), size, size), device).unwrap();
            GroundTruth {
                boxes,
                labels,
                masks,
                num_crowds,
            }
        })
        .collect()
}

/// Level (a): `loss_<config>.safetensors`.
pub struct LossFixture {
    pub file: Safetensors,
}

impl LossFixture {
    pub fn load(config: &str) -> Self {
        Self {
            file: Safetensors::load(&format!("loss_{config}.safetensors")),
        }
    }

    /// The max_size the reference network ran at (the priors follow it).
    pub fn max_size(&self) -> usize {
        self.file.meta["max_size"].parse().unwrap()
    }

    /// Loss term names in the reference's dict order.
    pub fn terms(&self) -> Vec<String> {
        self.file.meta["terms"]
            .split(',')
            .map(str::to_owned)
            .collect()
    }

    /// The dense gradient of the total w.r.t. output `name` (loc, conf, coef, proto, segm).
    pub fn grad(&self, name: &str) -> Tensor {
        let shape = self.file.get(name).dims().to_vec();
        if name == "segm" {
            return self.file.get("grad_segm").clone();
        }
        // Stored as the non-zero rows of the (rows, last dim) view.
        let rows = self
            .file
            .get(&format!("grad_{name}_rows"))
            .to_vec1::<i64>()
            .unwrap();
        let vals = self
            .file
            .get(&format!("grad_{name}"))
            .to_vec2::<f32>()
            .unwrap();
        let last = *shape.last().unwrap();
        let mut dense = vec![0f32; shape.iter().product()];
        for (r, v) in rows.iter().zip(vals) {
            let r = *r as usize;
            dense[r * last..(r + 1) * last].copy_from_slice(&v);
        }
        Tensor::from_vec(dense, shape, &Device::Cpu).unwrap()
    }
}

/// Level (b): `step_<config>.safetensors`, the full reference step at 550 on the two images of
/// `images/` with `annotations.json`: loss terms `loss_<T>`, and per parameter key `norm/<key>`
/// (f64, the L2 norm of its gradient) and `sample/<key>` (f32, the gradient's flat elements
/// 0, s, 2s, ... with s = `grad_stride`). Parameters without a gradient (frozen BN) are absent.
pub struct StepFixture {
    pub file: Safetensors,
}

impl StepFixture {
    pub fn load(config: &str) -> Self {
        Self {
            file: Safetensors::load(&format!("step_{config}.safetensors")),
        }
    }

    pub fn grad_stride(&self) -> usize {
        self.file.meta["grad_stride"].parse().unwrap()
    }

    /// The parameter keys that received a gradient, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut k: Vec<String> = self
            .file
            .tensors
            .keys()
            .filter_map(|k| k.strip_prefix("norm/").map(str::to_owned))
            .collect();
        k.sort();
        k
    }

    pub fn norm(&self, key: &str) -> f64 {
        self.file
            .get(&format!("norm/{key}"))
            .to_vec1::<f64>()
            .unwrap()[0]
    }

    pub fn sample(&self, key: &str) -> Vec<f32> {
        self.file
            .get(&format!("sample/{key}"))
            .to_vec1::<f32>()
            .unwrap()
    }
}
