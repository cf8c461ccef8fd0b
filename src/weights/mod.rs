//! Checkpoint loading: the released YOLACT `.pth` files (legacy torch.save), the zip torch.save
//! format and safetensors, read without Python and without executing anything from the file;
//! plus the load-time key rules of the reference `load_weights` (docs/model.md §2.9, §9.14).

mod expected;
pub mod finite;
pub mod hub;
mod keys;
pub mod pickle;
pub mod shipped;
pub mod source;
mod state_dict;
mod store;
pub mod synth;
mod torch_format;

use std::path::Path;

use candle_core::Device;

use crate::config::YolactConfig;
use crate::error::{Error, Result};

pub use expected::{expected_shapes, training_shapes};
pub use keys::prepare;
pub use store::WeightStore;

pub use state_dict::{
    safetensors_metadata, save_safetensors, save_safetensors_with_metadata, Metadata, StateDict,
};

/// The safetensors metadata key under which a trained checkpoint carries its config (JSON of
/// [`YolactConfig`], class names included).
pub const META_CONFIG: &str = "yolact_config";

/// Keys under this prefix are a training checkpoint's optimiser state, not model weights: the
/// loaders for inference drop them (`train::optim::checkpoint` reads them).
pub const TRAIN_STATE_PREFIX: &str = "train_state.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointFormat {
    /// torch.save before PyTorch 1.6 (or `_use_new_zipfile_serialization=False`).
    TorchLegacy,
    /// torch.save's zip format (PyTorch >= 1.6 default).
    TorchZip,
    SafeTensors,
}

/// Tells the format from the first bytes, or None when it is none of the three.
pub fn sniff_format(bytes: &[u8]) -> Option<CheckpointFormat> {
    if bytes.starts_with(b"PK\x03\x04") {
        return Some(CheckpointFormat::TorchZip);
    }
    if bytes.starts_with(&torch_format::LEGACY_PREFIX) {
        return Some(CheckpointFormat::TorchLegacy);
    }
    // safetensors: u64 LE header length, then a JSON object.
    let header_len = bytes
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)?;
    if bytes.get(8) == Some(&b'{') && header_len <= (bytes.len() - 8) as u64 {
        return Some(CheckpointFormat::SafeTensors);
    }
    None
}

/// Loads a checkpoint in any of the three formats.
pub fn load_checkpoint(path: &Path) -> Result<StateDict> {
    let bytes = read_checkpoint_file(path)?;
    load_checkpoint_bytes(&bytes, path)
}

/// [`load_checkpoint`] plus the file's safetensors metadata (empty for `.pth` files and for
/// safetensors without any).
pub fn load_checkpoint_with_metadata(path: &Path) -> Result<(StateDict, Metadata)> {
    let bytes = read_checkpoint_file(path)?;
    let sd = load_checkpoint_bytes(&bytes, path)?;
    let meta = match sniff_format(&bytes) {
        Some(CheckpointFormat::SafeTensors) => safetensors_metadata(&bytes, path)?,
        _ => Metadata::new(),
    };
    Ok((sd, meta))
}

/// The config a trained checkpoint carries in its metadata, if any.
pub fn embedded_config(meta: &Metadata, path: &Path) -> Result<Option<YolactConfig>> {
    meta.get(META_CONFIG)
        .map(|json| {
            YolactConfig::from_json(json)
                .map_err(|e| Error::checkpoint(path, format!("metadata `{META_CONFIG}`: {e}")))
        })
        .transpose()
}

/// A checkpoint for inference with its config, the one rule for every command and the node: a
/// config named by the user (`config`) wins, unless it is the name of the config the checkpoint
/// carries, which is then used whole (class count and names included); else the carried config;
/// else the config detected from the keys and the file name. Training state is dropped.
pub fn load_for_inference(path: &Path, config: Option<&str>) -> Result<(StateDict, YolactConfig)> {
    let bytes = read_checkpoint_file(path)?;
    load_for_inference_bytes(&bytes, path, config)
}

/// [`load_for_inference`] of a checkpoint already in memory; `origin` names it in errors.
pub fn load_for_inference_bytes(
    bytes: &[u8],
    origin: &Path,
    config: Option<&str>,
) -> Result<(StateDict, YolactConfig)> {
    let path = origin;
    let mut sd = load_checkpoint_bytes(bytes, path)?;
    let meta = match sniff_format(bytes) {
        Some(CheckpointFormat::SafeTensors) => safetensors_metadata(bytes, path)?,
        _ => Metadata::new(),
    };
    sd.retain(|k, _| !k.starts_with(TRAIN_STATE_PREFIX));
    let embedded = embedded_config(&meta, path)?;
    let cfg = match (config, embedded) {
        (Some(name), Some(e)) if name.strip_suffix("_config").unwrap_or(name) == e.name => e,
        (Some(name), Some(e)) => {
            log::warn!(
                "{} carries config `{}`; using `{name}` as asked",
                path.display(),
                e.name
            );
            YolactConfig::by_name(name)?
        }
        (Some(name), None) => YolactConfig::by_name(name)?,
        (None, Some(e)) => e,
        (None, None) => detect_config(&sd, Some(path))?,
    };
    Ok((sd, cfg))
}

fn read_checkpoint_file(path: &Path) -> Result<Vec<u8>> {
    // Reading a FIFO or a character device would block or never end; only a regular file (or a
    // link to one) is a checkpoint.
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        let what = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file (a FIFO, socket or device)"
        };
        return Err(Error::checkpoint(
            path,
            format!("{what}, not a checkpoint file"),
        ));
    }
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// As [`load_checkpoint`], from bytes already in memory; `path` is only used in messages. A tensor
/// holding NaN or an infinity is an error naming its key, whatever the format.
pub fn load_checkpoint_bytes(bytes: &[u8], path: &Path) -> Result<StateDict> {
    let sd = read_any_format(bytes, path)?;
    finite::check_finite(&sd, path)?;
    Ok(sd)
}

fn read_any_format(bytes: &[u8], path: &Path) -> Result<StateDict> {
    match sniff_format(bytes) {
        Some(CheckpointFormat::TorchLegacy) => torch_format::read_legacy(path, bytes),
        Some(CheckpointFormat::TorchZip) => torch_format::read_zip(path, bytes),
        Some(CheckpointFormat::SafeTensors) => {
            let m = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)
                .map_err(|e| Error::checkpoint(path, format!("safetensors: {e}")))?;
            Ok(m.into_iter().collect())
        }
        None if bytes.len() <= torch_format::LEGACY_PREFIX.len()
            && torch_format::LEGACY_PREFIX.starts_with(bytes)
            && !bytes.is_empty() =>
        {
            Err(Error::checkpoint(
                path,
                format!(
                    "truncated: the file ends after {} bytes, inside the legacy torch.save header",
                    bytes.len()
                ),
            ))
        }
        None if bytes.first() == Some(&0x80) => Err(Error::checkpoint(
            path,
            "a pickle stream, but with a bad magic number: not a torch.save file this reader knows",
        )),
        None => Err(Error::checkpoint(
            path,
            format!(
                "unrecognised format (first bytes {:02x?}, file size {}): expected a legacy or zip \
                 torch.save file, or safetensors",
                &bytes[..bytes.len().min(8)],
                bytes.len()
            ),
        )),
    }
}

/// Writes `tensors` as torch.save would (each tensor in its own storage, location `cpu`); for
/// tests and fixture tools (feature `test-support`).
#[cfg(feature = "test-support")]
pub fn save_torch(tensors: &StateDict, out: &Path, format: CheckpointFormat) -> Result<()> {
    let bytes = match format {
        CheckpointFormat::TorchLegacy => torch_format::write_legacy(tensors, out)?,
        CheckpointFormat::TorchZip => torch_format::write_zip(tensors, out)?,
        CheckpointFormat::SafeTensors => return save_safetensors(tensors, out),
    };
    std::fs::write(out, bytes).map_err(|e| Error::io(out, e))
}

/// Picks the configuration from the checkpoint's keys (and the file name where keys cannot tell).
pub fn detect_config(sd: &StateDict, path: Option<&Path>) -> Result<YolactConfig> {
    let from_name = path.and_then(YolactConfig::name_from_filename);
    let detected: &str = if sd.keys().any(|k| k.starts_with("backbone._preconv.")) {
        "yolact_darknet53"
    } else {
        let blocks = sd
            .keys()
            .filter_map(|k| k.strip_prefix("backbone.layers.2."))
            .filter_map(|r| r.split('.').next()?.parse::<usize>().ok())
            .max()
            .map(|b| b + 1);
        let plus = sd.keys().any(|k| k.contains(".conv_offset_mask."));
        match (blocks, plus) {
            (Some(23), false) => match from_name {
                Some(n @ ("yolact_base" | "yolact_im700")) => n,
                _ => {
                    if from_name.is_none() {
                        log::info!(
                            "ResNet-101 YOLACT weights: yolact_base and yolact_im700 share keys; \
                             assuming yolact_base (name the file yolact_im700_*.pth to choose im700)"
                        );
                    }
                    "yolact_base"
                }
            },
            (Some(6), false) => "yolact_resnet50",
            (Some(23), true) => "yolact_plus_base",
            (Some(6), true) => "yolact_plus_resnet50",
            (Some(n), _) => {
                return Err(Error::Config(format!(
                    "backbone.layers.2 has {n} blocks; expected 6 (ResNet-50) or 23 (ResNet-101)"
                )))
            }
            (None, _) => {
                return Err(Error::Config(
                    "cannot tell the config: the checkpoint has neither `backbone._preconv` \
                     (DarkNet) nor `backbone.layers.2.*` (ResNet) keys"
                        .into(),
                ))
            }
        }
    };
    if let Some(n) = from_name {
        if n != detected {
            log::warn!(
                "file name suggests config `{n}` but the weights are `{detected}`; using `{detected}`"
            );
        }
    }
    YolactConfig::by_name(detected)
}
