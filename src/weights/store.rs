//! The trainable weight store: a checkpoint's tensors as `candle_nn::VarMap` variables under their
//! state-dict keys, so a model built from [`WeightStore::vb`] shares storage with them and an
//! optimiser's updates reach the model; and the writer that saves them back, unfolded, under the
//! same keys.
//!
//! Keys the model never requests (`num_batches_tracked`, the keys the reference's `load_weights`
//! drops) ride along untouched, so a checkpoint saved without training is the one loaded.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Var};
use candle_nn::{VarBuilder, VarMap};

use super::keys::{is_ignored, prepare};
use super::StateDict;
use crate::config::YolactConfig;
use crate::error::{Error, Result};

const SEMANTIC_SEG: &str = "semantic_seg_conv.";

pub struct WeightStore {
    vars: VarMap,
    /// The file's dtype of each variable, restored on save (the model computes in f32).
    dtypes: BTreeMap<String, DType>,
    /// Tensors the model does not use, saved back as they were read.
    passthrough: StateDict,
    device: Device,
}

impl WeightStore {
    /// Checks `sd` against `cfg` as inference loading does, then holds every model tensor (and
    /// `semantic_seg_conv.*` when present; [`crate::model::Yolact::load_train`] initialises it
    /// otherwise) as an f32 variable on `device`.
    pub fn from_state_dict(sd: StateDict, cfg: &YolactConfig, device: &Device) -> Result<Self> {
        let mut dtypes = BTreeMap::new();
        let mut model = StateDict::new();
        let mut semantic = StateDict::new();
        let mut passthrough = StateDict::new();
        for (k, t) in sd {
            if k.starts_with(SEMANTIC_SEG) && !k.ends_with(".num_batches_tracked") {
                dtypes.insert(k.clone(), t.dtype());
                semantic.insert(k, t);
            } else if is_ignored(&k) {
                passthrough.insert(k, t);
            } else {
                dtypes.insert(k.clone(), t.dtype());
                model.insert(k, t);
            }
        }
        check_semantic_seg(&semantic, cfg)?;
        let vars = VarMap::new();
        {
            let mut data = vars
                .data()
                .lock()
                .map_err(|_| Error::Invalid("weight store lock poisoned".into()))?;
            for (k, t) in prepare(model, cfg)?.into_iter().chain(semantic) {
                let t = t.to_dtype(DType::F32)?.to_device(device)?;
                data.insert(k, Var::from_tensor(&t)?);
            }
        }
        Ok(Self {
            vars,
            dtypes,
            passthrough,
            device: device.clone(),
        })
    }

    /// Holds `sd`'s tensors as they are, without the strict key check of
    /// [`WeightStore::from_state_dict`]: for initialisation (`train::init`), which checks the
    /// shapes itself and lets the model's initialiser create every key `sd` lacks when the model
    /// is built on [`WeightStore::vb`]. Keys the model never uses ride along as in
    /// `from_state_dict`.
    pub fn from_partial(sd: StateDict, device: &Device) -> Result<Self> {
        let mut dtypes = BTreeMap::new();
        let mut passthrough = StateDict::new();
        let vars = VarMap::new();
        {
            let mut data = vars
                .data()
                .lock()
                .map_err(|_| Error::Invalid("weight store lock poisoned".into()))?;
            for (k, t) in sd {
                if is_ignored(&k) && !k.starts_with(SEMANTIC_SEG) {
                    passthrough.insert(k, t);
                    continue;
                }
                dtypes.insert(k.clone(), t.dtype());
                let t = t.to_dtype(DType::F32)?.to_device(device)?;
                data.insert(k, Var::from_tensor(&t)?);
            }
        }
        Ok(Self {
            vars,
            dtypes,
            passthrough,
            device: device.clone(),
        })
    }

    /// Every variable under its key, sorted by key.
    pub fn vars(&self) -> Result<Vec<(String, Var)>> {
        let data = self
            .vars
            .data()
            .lock()
            .map_err(|_| Error::Invalid("weight store lock poisoned".into()))?;
        let mut out: Vec<(String, Var)> =
            data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The device the variables live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A builder over the variables, for `Yolact::load` / `Yolact::load_train`. A key the model
    /// asks for that the store lacks is created with the model's initialiser and saved with the
    /// rest.
    pub fn vb(&self) -> VarBuilder<'_> {
        VarBuilder::from_varmap(&self.vars, DType::F32, &self.device)
    }

    /// The variables an optimiser updates: all but the batch norms' running statistics (which
    /// batch-statistics passes move themselves); with `frozen_bn` the norms' weight and bias too.
    /// Sorted by key, so an optimiser's state lines up across runs.
    pub fn trainable(&self, frozen_bn: bool) -> Result<Vec<(String, Var)>> {
        let data = self
            .vars
            .data()
            .lock()
            .map_err(|_| Error::Invalid("weight store lock poisoned".into()))?;
        let mut out: Vec<(String, Var)> = data
            .iter()
            .filter(|(k, v)| {
                let stat = k.ends_with(".running_mean") || k.ends_with(".running_var");
                // Batch-norm weights and biases are the (C,) tensors next to running statistics.
                let bn_param = v.rank() == 1 && {
                    let base = k.rsplit_once('.').map_or(k.as_str(), |(b, _)| b);
                    data.contains_key(&format!("{base}.running_mean"))
                };
                !(stat || (frozen_bn && bn_param))
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Every tensor under its key, unfolded, on the CPU, in the dtype the file had.
    pub fn to_state_dict(&self) -> Result<StateDict> {
        let data = self
            .vars
            .data()
            .lock()
            .map_err(|_| Error::Invalid("weight store lock poisoned".into()))?;
        let mut sd = self.passthrough.clone();
        for (k, v) in data.iter() {
            let dtype = self.dtypes.get(k).copied().unwrap_or(DType::F32);
            let t = v
                .as_tensor()
                .detach()
                .to_device(&Device::Cpu)?
                .to_dtype(dtype)?;
            sd.insert(k.clone(), t);
        }
        Ok(sd)
    }

    /// Writes the checkpoint as safetensors.
    pub fn save_safetensors(&self, out: &Path) -> Result<()> {
        super::state_dict::save_safetensors(&self.to_state_dict()?, out)
    }
}

/// `semantic_seg_conv` maps P3's channels to the foreground classes with a 1x1 conv.
fn check_semantic_seg(sd: &StateDict, cfg: &YolactConfig) -> Result<()> {
    let (c, f) = (cfg.num_fg_classes(), cfg.fpn_channels);
    for (k, t) in sd {
        let want: Vec<usize> = match &k[SEMANTIC_SEG.len()..] {
            "weight" => vec![c, f, 1, 1],
            "bias" => vec![c],
            _ => {
                return Err(Error::WeightsMismatch {
                    config: cfg.name.to_owned(),
                    msg: format!("unexpected key `{k}`"),
                })
            }
        };
        if t.dims() != want.as_slice() || !t.dtype().is_float() {
            return Err(Error::WeightsMismatch {
                config: cfg.name.to_owned(),
                msg: format!(
                    "key `{k}`: expected a float tensor of shape {want:?}, found {:?} {:?}",
                    t.dtype(),
                    t.dims()
                ),
            });
        }
    }
    Ok(())
}
