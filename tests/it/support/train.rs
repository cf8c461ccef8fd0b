//! Loaders for the training fixtures of `tests/fixtures/train` (made by
//! `tools/make_train_fixtures.py`; its README says what each file holds).
//!
//! * [`ground_truth`]: the two images' ground truth as the reference's `pull_item` gives it.
//! * [`LossFixture`]: level (a), the reference's loss on its own network outputs.
//! * [`StepFixture`]: level (b), the reference's full train step at 550 (loss terms, per parameter
//!   the gradient norm, the whole gradient of the smaller tensors and a count sketch of every one).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use yolact_ros2::train::data::GroundTruth;
use yolact_ros2::weights::synth::Stream;

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
/// (f64, the L2 norm of its gradient), `grad/<key>` (f32, the whole gradient) for tensors of at
/// most `full_max` elements, and `sketch/<key>` (f64, a count sketch of the gradient, see
/// [`count_sketch`]) for every tensor. Parameters without a gradient (frozen BN) are absent.
pub struct StepFixture {
    pub file: Safetensors,
}

impl StepFixture {
    pub fn load(config: &str) -> Self {
        Self {
            file: Safetensors::load(&format!("step_{config}.safetensors")),
        }
    }

    /// Tensors of at most this many elements are stored whole.
    pub fn full_max(&self) -> usize {
        self.file.meta["full_max"].parse().unwrap()
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

    /// The whole reference gradient (flat), when the fixture stores it.
    pub fn whole(&self, key: &str) -> Option<Tensor> {
        self.file.tensors.get(&format!("grad/{key}")).cloned()
    }

    /// The reference's sketch of the gradient of `key`.
    pub fn sketch(&self, key: &str) -> Vec<f64> {
        self.file
            .get(&format!("sketch/{key}"))
            .to_vec1::<f64>()
            .unwrap()
    }

    /// The same sketch of `values` (a flat gradient of `key`): buckets and signs from the
    /// fixture's salt and seed.
    pub fn sketch_of(&self, key: &str, values: &[f32]) -> Vec<f64> {
        let seed = self.file.meta["sketch_seed"].trim_start_matches("0x");
        let seed = u64::from_str_radix(seed, 16).unwrap();
        let stream = Stream::new(&format!("{}{key}", self.file.meta["sketch_salt"]), seed);
        count_sketch(stream, values, self.sketch(key).len())
    }
}

/// The count sketch of tools/make_train_fixtures.py (`sketch`): with z_i = `stream.bits(i)`,
/// element i goes to bucket ((z_i >> 32) * buckets) >> 32 with sign + if z_i is even, - if odd;
/// f64 sums in index order. Linear, so sketch(ours) - sketch(ref) is the sketch of the
/// difference, whose squared length estimates |ours - ref|^2 without bias (fixture README).
pub fn count_sketch(stream: Stream, values: &[f32], buckets: usize) -> Vec<f64> {
    let mut out = vec![0f64; buckets];
    for (i, &v) in values.iter().enumerate() {
        let z = stream.bits(i as u64);
        let b = ((z >> 32) * buckets as u64) >> 32;
        let v = f64::from(v);
        out[b as usize] += if z & 1 == 0 { v } else { -v };
    }
    out
}

/// How a gradient was judged: exactly (the fixture holds it whole) or through its sketch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    Exact,
    Sketched,
}

impl StepFixture {
    /// The measure for our flat gradient of `key`, |ours - ref| / |ref| over the whole
    /// tensor: exact for the tensors stored whole; for the others the sketch's estimate of
    /// |ours - ref|, raised to the exact lower bound | |ours| - |ref| | where that is larger. A
    /// reference gradient of exactly zero (P7 when nothing on it is selected) needs ours exactly
    /// zero too (0, else infinity).
    pub fn judge(&self, key: &str, ours: &[f32]) -> (f64, Measure) {
        let want = self.norm(key);
        let norm = |v: &[f32]| v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
        let zero_ref = |ours: &[f32]| {
            if ours.iter().all(|&x| x == 0.0) {
                0.0
            } else {
                f64::INFINITY
            }
        };
        if let Some(whole) = self.whole(key) {
            let theirs = whole.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(ours.len(), theirs.len(), "{key}");
            let rel = if want == 0.0 {
                zero_ref(ours)
            } else {
                let d: f64 = ours
                    .iter()
                    .zip(&theirs)
                    .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
                    .sum();
                d.sqrt() / norm(&theirs)
            };
            return (rel, Measure::Exact);
        }
        if want == 0.0 {
            return (zero_ref(ours), Measure::Sketched);
        }
        let lower = (norm(ours) - want).abs() / want;
        (
            self.sketch_estimate(key, ours).max(lower),
            Measure::Sketched,
        )
    }

    /// The sketch's estimate of |ours - ref| / |ref| (for a tensor stored whole, from its small
    /// check sketch: a test of the estimator against the exact value).
    pub fn sketch_estimate(&self, key: &str, ours: &[f32]) -> f64 {
        let d2: f64 = self
            .sketch_of(key, ours)
            .iter()
            .zip(self.sketch(key))
            .map(|(a, b)| (a - b).powi(2))
            .sum();
        d2.sqrt() / self.norm(key)
    }
}
