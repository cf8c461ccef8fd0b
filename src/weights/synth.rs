//! Counter-based synthetic weights, bit-identical to `tools/synth_weights.py`.
//!
//! Real checkpoints are 120-210 MB and not redistributable in the test suite, so parity with the
//! reference runs on synthetic full-size weights that both sides regenerate from (seed, key,
//! index) alone. Element i of key K is
//!
//! ```text
//! k   = fnv1a64(K) ^ (seed * GOLDEN)                 (wrapping u64)
//! z_i = splitmix64_mix(k + (i + 1) * GOLDEN)
//! u_i = (z_i >> 40) * 2^-24                          (exact in f64, in [0, 1))
//! v_i = (lo + (hi - lo) * u_i) as f32                (f64 maths, rounded once)
//! ```
//!
//! `(lo, hi)` depends on the kind of parameter (see [`ranges`]); the scales keep activations
//! O(1) at full depth, give DCN offsets of a few pixels and leave the heads with tens of
//! detections above 0.1-0.15 on the parity test image (numbers in
//! `tests/fixtures/parity/README.md`). Every constant is a decimal literal or an IEEE-exact
//! operation, so Rust and NumPy round identically.

use candle_core::{Device, Tensor};

use crate::config::YolactConfig;
use crate::weights::{expected_shapes, training_shapes};

pub use crate::weights::StateDict;

/// The seed the committed parity fixtures were made with.
pub const DEFAULT_SEED: u64 = 0x5EED_CAFE;

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

const BN_GAMMA: (f64, f64) = (0.8, 1.2);
/// Last BN of a residual branch (bn3; DarkNet conv2.1): keeps the residual stream from growing
/// over 23 blocks.
const BN_GAMMA_LAST: (f64, f64) = (0.15, 0.35);
/// DarkNet stage-entry BN (`backbone.layers.L.0.1`): its residual stream has no BN on the
/// shortcut and no activation after the add, so it grows faster than ResNet's.
const BN_GAMMA_DARKNET_ENTRY: (f64, f64) = (0.8, 1.0);
const BN_BETA: (f64, f64) = (-0.1, 0.1);
const BN_MEAN: (f64, f64) = (-0.1, 0.1);
const BN_VAR: (f64, f64) = (0.5, 1.5);
const BIAS: (f64, f64) = (-0.1, 0.1);
/// Pixels: sampling is fractional and partly outside the feature map.
const DCN_OFFSET_BIAS: (f64, f64) = (-2.0, 2.0);
/// Modulation logits: sigmoid gives 0.62..0.92, keeping YOLACT++ activations near v1's.
const DCN_MOD_BIAS: (f64, f64) = (0.5, 2.5);
const DCN_OFFSET_GAIN: f64 = 1.0;
const LOC_GAIN: f64 = 0.1;
const LOC_BIAS: (f64, f64) = (-0.5, 0.5);
const CONF_GAIN: f64 = 0.2;
const CONF_BG_BIAS: (f64, f64) = (3.0, 4.0);
const CONF_FG_BIAS: (f64, f64) = (-1.5, 1.5);
const COEF_GAIN: f64 = 0.3;
/// Prototypes are >= 0, so a positive lean gives non-empty masks.
const COEF_BIAS: (f64, f64) = (-0.2, 0.6);
const PROTO_OUT_GAIN: f64 = 0.3;
const FPN_LAT_GAIN: f64 = 0.5;
const MASKIOU_LAST_GAIN: f64 = 0.7;
const MASKIOU_LAST_BIAS: (f64, f64) = (0.4, 0.9);

fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xCBF2_9CE4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// The splitmix64 output function.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The generator's raw stream of one (key, seed): element i's 64 bits `z_i` (module docs). The
/// weights use their top 24 bits; the train-step fixtures' gradient sketches draw buckets and
/// signs from the stream of a salted key (tests/fixtures/train/README.md). Python:
/// `counter_bits` in tools/synth_weights.py.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stream(u64);

impl Stream {
    pub fn new(key: &str, seed: u64) -> Self {
        Stream(fnv1a64(key.as_bytes()) ^ seed.wrapping_mul(GOLDEN))
    }

    /// z_i.
    pub fn bits(self, i: u64) -> u64 {
        mix(self.0.wrapping_add(i.wrapping_add(1).wrapping_mul(GOLDEN)))
    }

    /// u_i: a multiple of 2^-24 in [0, 1).
    fn uniform01(self, i: u64) -> f64 {
        (self.bits(i) >> 40) as f64 * (1.0 / 16_777_216.0)
    }
}

/// Value ranges of one key: element i uses `table[select[i % select.len()]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranges {
    pub table: Vec<(f64, f64)>,
    pub select: Vec<usize>,
}

impl Ranges {
    fn one(r: (f64, f64)) -> Self {
        Ranges {
            table: vec![r],
            select: vec![0],
        }
    }
}

fn fan_in(shape: &[usize]) -> f64 {
    shape.iter().skip(1).product::<usize>().max(1) as f64
}

/// U(-a, a) has variance a^2/3: gain * sqrt(6 / fan_in) is He-uniform (a ReLU follows),
/// gain * sqrt(3 / fan_in) keeps the variance of a linear layer.
fn he(shape: &[usize], gain: f64) -> (f64, f64) {
    let a = gain * (6.0 / fan_in(shape)).sqrt();
    (-a, a)
}

fn lin(shape: &[usize], gain: f64) -> (f64, f64) {
    let a = gain * (3.0 / fan_in(shape)).sqrt();
    (-a, a)
}

/// `bnD` with one digit.
fn is_bn_segment(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 3 && s.starts_with("bn") && b[2].is_ascii_digit()
}

/// `convD` with one digit.
fn is_conv_segment(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 5 && s.starts_with("conv") && b[4].is_ascii_digit()
}

/// Whether segments `a`, `b` occur consecutively with at least one segment after them.
fn has_pair(segs: &[&str], a: impl Fn(&str) -> bool, b: &str) -> bool {
    segs.windows(3).any(|w| a(w[0]) && w[1] == b)
}

/// `backbone.layers.L.0.1.*`: the BN of a DarkNet stage's strided entry conv.
fn is_darknet_entry_bn(segs: &[&str]) -> bool {
    segs.len() > 5
        && segs[0] == "backbone"
        && segs[1] == "layers"
        && !segs[2].is_empty()
        && segs[2].bytes().all(|c| c.is_ascii_digit())
        && segs[3] == "0"
        && segs[4] == "1"
}

fn is_bn_key(segs: &[&str]) -> bool {
    let n = segs.len();
    // Module-name segments only (the leaf is the parameter name).
    let inner = &segs[..n.saturating_sub(1)];
    inner.iter().any(|s| is_bn_segment(s))
        || has_pair(segs, |s| s == "downsample", "1")
        || has_pair(segs, is_conv_segment, "1")
        || (n > 3 && segs[0] == "backbone" && segs[1] == "_preconv" && segs[2] == "1")
        || is_darknet_entry_bn(segs)
}

/// The value ranges for a key (mirrors `ranges` in tools/synth_weights.py).
pub fn ranges(key: &str, shape: &[usize]) -> Ranges {
    let segs: Vec<&str> = key.split('.').collect();
    let leaf = segs.last().copied().unwrap_or("");
    if is_bn_key(&segs) {
        let inner = &segs[..segs.len() - 1];
        return Ranges::one(match leaf {
            "weight" => {
                if inner.contains(&"bn3") || has_pair(&segs, |s| s == "conv2", "1") {
                    BN_GAMMA_LAST
                } else if is_darknet_entry_bn(&segs) {
                    BN_GAMMA_DARKNET_ENTRY
                } else {
                    BN_GAMMA
                }
            }
            "bias" => BN_BETA,
            "running_mean" => BN_MEAN,
            "running_var" => BN_VAR,
            _ => BIAS,
        });
    }
    let is_weight = leaf == "weight";
    if key.contains("conv_offset_mask") {
        if is_weight {
            return Ranges::one(lin(shape, DCN_OFFSET_GAIN));
        }
        // 27 channels: 0..17 interleaved (dy, dx) offsets, 18..26 modulation logits.
        let mut select = vec![0; 18];
        select.extend([1; 9]);
        return Ranges {
            table: vec![DCN_OFFSET_BIAS, DCN_MOD_BIAS],
            select,
        };
    }
    if key.starts_with("prediction_layers.0.bbox_layer.") {
        return Ranges::one(if is_weight {
            lin(shape, LOC_GAIN)
        } else {
            LOC_BIAS
        });
    }
    if key.starts_with("prediction_layers.0.conf_layer.") {
        if is_weight {
            return Ranges::one(lin(shape, CONF_GAIN));
        }
        // Channel = anchor * 81 + class; class 0 is the background.
        let mut select = vec![0];
        select.extend([1; 80]);
        return Ranges {
            table: vec![CONF_BG_BIAS, CONF_FG_BIAS],
            select,
        };
    }
    if key.starts_with("prediction_layers.0.mask_layer.") {
        return Ranges::one(if is_weight {
            lin(shape, COEF_GAIN)
        } else {
            COEF_BIAS
        });
    }
    if key.starts_with("maskiou_net.maskiou_net.10.") {
        return Ranges::one(if is_weight {
            lin(shape, MASKIOU_LAST_GAIN)
        } else {
            MASKIOU_LAST_BIAS
        });
    }
    if is_weight && shape.len() == 4 {
        if key.starts_with("fpn.lat_layers.") {
            return Ranges::one(lin(shape, FPN_LAT_GAIN));
        }
        if key.starts_with("proto_net.10.") {
            return Ranges::one(lin(shape, PROTO_OUT_GAIN));
        }
        return Ranges::one(he(shape, 1.0));
    }
    Ranges::one(BIAS)
}

/// The row-major f32 values of one key.
pub fn synth_tensor(key: &str, shape: &[usize], seed: u64) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let stream = Stream::new(key, seed);
    let r = ranges(key, shape);
    let period = r.select.len().max(1);
    (0..n)
        .map(|i| {
            let (lo, hi) = r
                .select
                .get(i % period)
                .and_then(|&s| r.table.get(s))
                .copied()
                .unwrap_or(BIAS);
            (lo + (hi - lo) * stream.uniform01(i as u64)) as f32
        })
        .collect()
}

/// The synthetic state dict of `cfg`: every inference key, f32, on the CPU.
pub fn synth_state_dict(cfg: &YolactConfig, seed: u64) -> crate::Result<StateDict> {
    synth_keys(expected_shapes(cfg), seed)
}

/// [`synth_state_dict`] plus the training-only `semantic_seg_conv.*`, as the reference's state
/// dict (and a released file) has them: what a training step on synthetic weights needs. The
/// extra keys follow the same rule as every other (tools/synth_weights.py loads them into the
/// reference from its own key list).
pub fn synth_train_state_dict(cfg: &YolactConfig, seed: u64) -> crate::Result<StateDict> {
    synth_keys(training_shapes(cfg), seed)
}

fn synth_keys(keys: Vec<(String, Vec<usize>)>, seed: u64) -> crate::Result<StateDict> {
    let mut sd = StateDict::new();
    for (key, shape) in keys {
        let data = synth_tensor(&key, &shape, seed);
        let t = Tensor::from_vec(data, shape.as_slice(), &Device::Cpu)?;
        sd.insert(key, t);
    }
    Ok(sd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::Path;

    #[derive(serde::Deserialize)]
    struct Entry {
        key: String,
        shape: Vec<usize>,
        samples: Vec<(usize, u32)>,
        sum: f64,
        sum_sq: f64,
        min: f64,
        max: f64,
    }

    #[derive(serde::Deserialize)]
    struct SynthValues {
        seed: u64,
        configs: BTreeMap<String, Vec<Entry>>,
    }

    fn read_values(rel: &str) -> SynthValues {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{rel}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    fn fixture() -> SynthValues {
        read_values("tests/fixtures/parity/synth_values.json")
    }

    /// The entry's samples bit for bit, its sums within the summation-order error, min and max.
    fn check_entry(e: &Entry, v: &[f32]) {
        assert_eq!(v.len(), e.shape.iter().product::<usize>(), "{}", e.key);
        for &(i, bits) in &e.samples {
            assert_eq!(v[i].to_bits(), bits, "{}[{i}]: {} vs python", e.key, v[i]);
        }
        let (mut s, mut s2, mut lo, mut hi) = (0f64, 0f64, f64::INFINITY, f64::NEG_INFINITY);
        for &x in v {
            let x = x as f64;
            s += x;
            s2 += x * x;
            lo = lo.min(x);
            hi = hi.max(x);
        }
        // Summation order differs (NumPy is pairwise); the scale bounds that effect.
        let tol = 1e-11 * (s2 * v.len() as f64).sqrt().max(1.0);
        assert!((s - e.sum).abs() <= tol, "{} sum {s} vs {}", e.key, e.sum);
        assert!(
            (s2 - e.sum_sq).abs() <= 1e-11 * s2.max(1.0),
            "{} sum_sq",
            e.key
        );
        // serde_json parses floats to within an ulp of f64; the values are f32 anyway.
        assert_eq!(
            (lo as f32, hi as f32),
            (e.min as f32, e.max as f32),
            "{} min/max",
            e.key
        );
    }

    #[test]
    fn splitmix_matches_published_sequence() {
        // splitmix64 from state 0: the first outputs of the reference C implementation.
        assert_eq!(mix(GOLDEN), 0xE220_A839_7B1D_CDAF);
        assert_eq!(mix(GOLDEN.wrapping_mul(2)), 0x6E78_9E6A_A1B9_65F4);
        // FNV-1a 64 test vectors.
        assert_eq!(fnv1a64(b""), 0xCBF2_9CE4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xAF63_DC4C_8601_EC8C);
    }

    #[test]
    fn values_match_python_bit_for_bit() {
        let fx = fixture();
        assert_eq!(fx.seed, DEFAULT_SEED);
        let mut checked = 0;
        for entries in fx.configs.values() {
            for e in entries {
                check_entry(e, &synth_tensor(&e.key, &e.shape, fx.seed));
                checked += 1;
            }
        }
        assert!(checked > 1000, "only {checked} keys in the fixture");
    }

    /// The training state dict is the inference one plus exactly the two `semantic_seg_conv` keys,
    /// with the values the reference loaded for them (tests/fixtures/train/synth_train_only.json,
    /// written by tools/make_train_fixtures.py from the state dict the reference ran with).
    #[test]
    fn train_state_dict_adds_the_semantic_head_as_python_does() {
        let fx = read_values("tests/fixtures/train/synth_train_only.json");
        assert_eq!(fx.seed, DEFAULT_SEED);
        assert_eq!(fx.configs.len(), 2);
        for (name, entries) in &fx.configs {
            let cfg = YolactConfig::by_name(name).unwrap();
            let inference = synth_state_dict(&cfg, fx.seed).unwrap();
            let train = synth_train_state_dict(&cfg, fx.seed).unwrap();
            let mut extra: Vec<&str> = train
                .keys()
                .filter(|k| !inference.contains_key(*k))
                .map(String::as_str)
                .collect();
            extra.sort();
            let mut theirs: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
            theirs.sort();
            assert_eq!(extra, theirs, "{name}");
            assert_eq!(train.len(), inference.len() + 2, "{name}");
            for (k, t) in &inference {
                assert_eq!(
                    train[k].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    "{name}: {k}"
                );
            }
            for e in entries {
                let t = &train[&e.key];
                assert_eq!(t.dims(), e.shape.as_slice(), "{name}: {}", e.key);
                check_entry(e, &t.flatten_all().unwrap().to_vec1::<f32>().unwrap());
            }
        }
    }

    #[test]
    fn model_keys_match_reference_key_lists() {
        let fx = fixture();
        for (name, entries) in &fx.configs {
            let cfg = YolactConfig::by_name(name).unwrap();
            let mut ours: Vec<(String, Vec<usize>)> = expected_shapes(&cfg);
            let mut theirs: Vec<(String, Vec<usize>)> = entries
                .iter()
                .map(|e| (e.key.clone(), e.shape.clone()))
                .collect();
            ours.sort();
            theirs.sort();
            assert_eq!(ours, theirs, "{name}");
        }
    }

    #[test]
    fn ranges_are_sane_per_kind() {
        let cfg = YolactConfig::by_name("yolact_plus_base").unwrap();
        for (key, shape) in expected_shapes(&cfg) {
            let r = ranges(&key, &shape);
            for &(lo, hi) in &r.table {
                assert!(lo < hi && lo.is_finite() && hi.is_finite(), "{key}");
            }
            if key.ends_with("running_var") {
                assert!(
                    r.table.iter().all(|&(lo, _)| lo > 0.0),
                    "{key} must stay positive"
                );
            }
        }
        let conf = ranges("prediction_layers.0.conf_layer.bias", &[729]);
        assert_eq!(conf.select.len(), 81);
        assert_eq!(conf.table[conf.select[0]], CONF_BG_BIAS);
        assert_eq!(conf.table[conf.select[1]], CONF_FG_BIAS);
        let off = ranges("backbone.layers.1.0.conv2.conv_offset_mask.bias", &[27]);
        assert_eq!(off.table[off.select[17]], DCN_OFFSET_BIAS);
        assert_eq!(off.table[off.select[18]], DCN_MOD_BIAS);
        assert_eq!(
            ranges("backbone.layers.2.5.bn3.weight", &[1024]).table,
            vec![BN_GAMMA_LAST]
        );
        assert_eq!(
            ranges("backbone.layers.2.5.bn2.weight", &[256]).table,
            vec![BN_GAMMA]
        );
        assert_eq!(
            ranges("backbone.layers.3.1.conv2.1.weight", &[512]).table,
            vec![BN_GAMMA_LAST]
        );
        assert_eq!(
            ranges("backbone.layers.3.0.1.running_var", &[512]).table,
            vec![BN_VAR]
        );
    }

    #[test]
    fn values_stay_in_range_and_are_uniform() {
        // Independent of the fixture: mean and spread of a large key match U(lo, hi).
        let shape = [256usize, 256, 3, 3];
        let v = synth_tensor("fpn.pred_layers.0.weight", &shape, 7);
        let (lo, hi) = he(&shape, 1.0);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(v
            .iter()
            .all(|&x| (x as f64) >= lo - 1e-7 && (x as f64) < hi + 1e-7));
        assert!(mean.abs() < 0.01 * hi, "mean {mean}");
        let expect = (hi - lo).powi(2) / 12.0;
        assert!((var / expect - 1.0).abs() < 0.01, "var {var} vs {expect}");
        // A different seed or key gives different values.
        assert_ne!(
            v[..8],
            synth_tensor("fpn.pred_layers.0.weight", &shape, 8)[..8]
        );
        assert_ne!(
            v[..8],
            synth_tensor("fpn.pred_layers.1.weight", &shape, 7)[..8]
        );
    }

    #[test]
    fn state_dict_has_every_key_with_its_shape() {
        let cfg = YolactConfig::by_name("yolact_plus_resnet50").unwrap();
        let sd = synth_state_dict(&cfg, DEFAULT_SEED).unwrap();
        let keys = expected_shapes(&cfg);
        assert_eq!(sd.len(), keys.len());
        let total: usize = keys.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
        // docs/model.md §2: 33,819,580 parameters incl. running stats,
        // minus semantic_seg_conv (80*256+80).
        assert_eq!(total, 33_819_580 - 80 * 256 - 80);
        for (k, s) in keys {
            assert_eq!(sd[&k].dims(), s.as_slice(), "{k}");
        }
    }
}
