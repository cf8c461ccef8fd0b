//! The library's error type. Binaries wrap it with `anyhow` context; library code never panics on
//! input-derived data.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    // The message already holds the io error's text, so the field is not the error's source
    // (thiserror takes a field *named* `source` as one): an error chain printed with anyhow's
    // `{:#}` would say it twice.
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },

    /// A checkpoint that cannot be read: wrong format, truncated, corrupt, or refused by the
    /// restricted unpickler. `msg` says what is wrong and, where known, at which byte offset.
    #[error("checkpoint {path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },

    /// The checkpoint's keys or shapes do not fit the chosen configuration.
    #[error("weights do not match config `{config}`: {msg}")]
    WeightsMismatch { config: String, msg: String },

    /// Unknown config name, or a config that cannot be told from the checkpoint.
    #[error("{0}")]
    Config(String),

    /// An image that cannot be decoded or used (size, encoding, channels).
    #[error("image: {0}")]
    Image(String),

    /// Numerically invalid data (NaN/inf in inputs or outputs, wrong tensor shapes between stages).
    #[error("invalid data: {0}")]
    Invalid(String),

    /// A ROS parameter (file or `-p` override) that is unknown, of the wrong type or out of range.
    #[error("parameter {0}")]
    Parameter(String),

    /// A ROS 2 transport failure (subscribe, advertise, publish).
    #[error("transport: {0}")]
    Transport(#[from] crate::node::transport::TransportError),
}

impl Error {
    pub fn checkpoint(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.into(),
            msg: msg.into(),
        }
    }
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            err: source,
        }
    }
}
