//! Operators candle lacks, written as candle custom ops (`cpu_fwd` now; a `cuda_fwd` can be added
//! without touching callers).

pub mod dcn;
pub mod interp;
