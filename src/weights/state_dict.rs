//! The state-dict type, in a file of its own so the format readers and writers import it without
//! importing the loader in `weights/mod.rs` that calls them.

use std::collections::BTreeMap;

use candle_core::Tensor;

/// Tensors by state-dict key, on the CPU, in the dtype the file stores.
pub type StateDict = BTreeMap<String, Tensor>;
