//! Reading rosbag2 recordings without a ROS installation.
//!
//! A bag is a rosbag2 directory (with `metadata.yaml` naming its storage files), or a single
//! `.mcap` or `.db3` file. [`open_bag`] finds the files; [`BagReader::messages`] streams their
//! messages. A damaged file yields every message that can still be read: an MCAP file gives one
//! error item per damaged region (bad chunk CRC, undecodable chunk, lost framing, cut-off end)
//! and reads on after it; a sqlite3 file stops at its corrupt page with one error item; then the
//! next file's messages follow. Nothing that was readable is lost and nothing panics. A single record that cannot be a message
//! (a sqlite row naming an unknown topic, a negative timestamp, data that is not a blob) is an
//! error item of its own, and reading goes on after it.

pub mod cdr;
pub mod fuzz;
pub mod image_msg;
pub mod mcap_reader;
pub mod mcap_records;
pub mod out_path;
pub mod recover;
pub mod sqlite_reader;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use cdr::{CdrReader, CdrWriter, Header, Time};
pub use image_msg::{decode_image, CompressedImageMsg, DecodedImage, ImageMsg};

/// How every MCAP file this crate writes is written (replay outputs, recovered bags, generated
/// sequences): zstd chunks compressed on the calling thread. The mcap crate's default is
/// multithreaded zstd with a worker per physical core, whose context allocates about 50 MB of job
/// and round buffers (heaptrack, 300-frame replay) and touches a varying part of them: that
/// swing was most of a long replay's RSS peaks, and the extra thread competed with inference for
/// the cores. Single-threaded, the context is a few MB and stays the same size.
pub fn mcap_write_options(profile: &str) -> mcap::WriteOptions {
    mcap::WriteOptions::new()
        .profile(profile)
        .compression_threads(0)
}

/// Everything that can go wrong while reading a bag or decoding one of its messages.
#[derive(Debug, thiserror::Error)]
pub enum BagError {
    // The message already holds the io error's text; not marked #[source] so an error chain
    // printed with anyhow's `{:#}` does not say it twice.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// CDR bytes that do not parse; `offset` counts from the start of the serialized message.
    #[error("CDR at byte {offset}: {msg}")]
    Cdr { offset: usize, msg: String },
    /// An image `encoding` / compressed `format` this crate cannot convert.
    #[error("unsupported image encoding `{0}`")]
    UnknownEncoding(String),
    /// A message type that is not an image.
    #[error("unsupported message type `{0}`")]
    UnsupportedType(String),
    /// Image data that does not fit its own description (size, step, length, decoding).
    #[error("image: {0}")]
    Image(String),
    /// A damaged region of an MCAP file (or a file that is not MCAP); `kind` says why.
    #[error("{}: MCAP: {msg}", path.display())]
    Mcap {
        path: PathBuf,
        kind: mcap_records::Damage,
        msg: String,
    },
    /// An output bag that cannot be written.
    #[error("{}: writing: {msg}", path.display())]
    Write { path: PathBuf, msg: String },
    /// A sqlite3 bag that cannot be read further.
    #[error("{path}: sqlite3: {msg}")]
    Sqlite { path: PathBuf, msg: String },
    /// A bag directory, `metadata.yaml` or file that is not a readable rosbag2 layout.
    #[error("{path}: {msg}")]
    Layout { path: PathBuf, msg: String },
}

impl BagError {
    /// A short, stable name for why a frame could not be used (`unsupported_type`, `encoding`,
    /// `image`, `cdr`, `other`): the key under which the replay and the node count skipped frames.
    pub fn frame_skip_kind(&self) -> &'static str {
        match self {
            BagError::UnsupportedType(_) => "unsupported_type",
            BagError::UnknownEncoding(_) => "encoding",
            BagError::Image(_) => "image",
            BagError::Cdr { .. } => "cdr",
            _ => "other",
        }
    }

    /// A short, stable name for a storage read error (`truncated`, `chunk_crc`, `framing`,
    /// `not_mcap`, ... for MCAP; `sqlite`, `io`, `layout` otherwise): the key under which the
    /// replay counts read errors.
    pub fn read_error_kind(&self) -> &'static str {
        match self {
            BagError::Mcap { kind, .. } => kind.key(),
            BagError::Sqlite { .. } => "sqlite",
            BagError::Io { .. } => "io",
            BagError::Layout { .. } => "layout",
            _ => "other",
        }
    }
}

impl BagError {
    fn layout(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        BagError::Layout {
            path: path.into(),
            msg: msg.into(),
        }
    }
}

impl From<BagError> for crate::Error {
    fn from(e: BagError) -> Self {
        match e {
            BagError::Io { path, source } => crate::Error::Io { path, err: source },
            e @ (BagError::UnknownEncoding(_) | BagError::Image(_)) => {
                crate::Error::Image(e.to_string())
            }
            e => crate::Error::Invalid(e.to_string()),
        }
    }
}

/// One serialized message, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BagMessage {
    pub topic: String,
    /// ROS type name, e.g. `sensor_msgs/msg/Image`.
    pub msg_type: String,
    /// Receive time in nanoseconds since the epoch.
    pub log_time_ns: u64,
    /// CDR bytes, encapsulation header included.
    pub data: Vec<u8>,
}

/// A topic and how many messages it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub msg_type: String,
    pub count: u64,
}

/// Storage back end of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    Mcap,
    Sqlite3,
}

impl Storage {
    fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()? {
            "mcap" => Some(Self::Mcap),
            "db3" => Some(Self::Sqlite3),
            _ => None,
        }
    }
}

/// An opened bag: the ordered list of storage files, plus the topic list from
/// `metadata.yaml` when there is one.
#[derive(Debug, Clone)]
pub struct BagReader {
    path: PathBuf,
    files: Vec<(PathBuf, Storage)>,
    metadata_topics: Option<Vec<TopicInfo>>,
}

/// Opens a rosbag2 directory (reads `metadata.yaml`), or a single `.mcap` / `.db3` file.
/// Only the layout is checked here; file contents are read lazily by [`BagReader::messages`].
pub fn open_bag(path: impl AsRef<Path>) -> Result<BagReader, BagError> {
    let path = path.as_ref();
    let meta = std::fs::metadata(path).map_err(|source| BagError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_dir() {
        return open_dir(path);
    }
    let storage = Storage::from_path(path)
        .ok_or_else(|| BagError::layout(path, "not a .mcap or .db3 file, nor a bag directory"))?;
    Ok(BagReader {
        path: path.to_path_buf(),
        files: vec![(path.to_path_buf(), storage)],
        metadata_topics: None,
    })
}

#[derive(serde::Deserialize)]
struct MetadataFile {
    rosbag2_bagfile_information: BagInfo,
}

#[derive(serde::Deserialize)]
struct BagInfo {
    #[serde(default)]
    storage_identifier: String,
    #[serde(default)]
    relative_file_paths: Vec<String>,
    #[serde(default)]
    compression_mode: String,
    #[serde(default)]
    topics_with_message_count: Vec<TopicWithCount>,
}

#[derive(serde::Deserialize)]
struct TopicWithCount {
    topic_metadata: TopicMetadata,
    #[serde(default)]
    message_count: u64,
}

#[derive(serde::Deserialize)]
struct TopicMetadata {
    name: String,
    #[serde(rename = "type")]
    msg_type: String,
}

fn open_dir(dir: &Path) -> Result<BagReader, BagError> {
    let meta_path = dir.join("metadata.yaml");
    let text = std::fs::read_to_string(&meta_path).map_err(|source| BagError::Io {
        path: meta_path.clone(),
        source,
    })?;
    let info = serde_yaml::from_str::<MetadataFile>(&text)
        .map_err(|e| BagError::layout(&meta_path, e.to_string()))?
        .rosbag2_bagfile_information;
    let mode = info.compression_mode.trim().to_ascii_uppercase();
    if !(mode.is_empty() || mode == "NONE") {
        return Err(BagError::layout(
            &meta_path,
            format!("compression mode {mode} is not supported (only uncompressed bags; MCAP chunk compression is fine)"),
        ));
    }
    let declared = match info.storage_identifier.as_str() {
        "mcap" => Some(Storage::Mcap),
        "sqlite3" => Some(Storage::Sqlite3),
        _ => None,
    };
    let mut files = Vec::new();
    for rel in &info.relative_file_paths {
        // Older rosbag2 versions store paths that include the bag directory's own name.
        let mut p = dir.join(rel);
        if !p.exists() {
            if let Some(name) = Path::new(rel).file_name() {
                p = dir.join(name);
            }
        }
        let storage = Storage::from_path(&p).or(declared).ok_or_else(|| {
            BagError::layout(&meta_path, format!("unknown storage for file `{rel}`"))
        })?;
        files.push((p, storage));
    }
    if files.is_empty() {
        return Err(BagError::layout(&meta_path, "lists no storage files"));
    }
    let topics = info
        .topics_with_message_count
        .into_iter()
        .map(|t| TopicInfo {
            name: t.topic_metadata.name,
            msg_type: t.topic_metadata.msg_type,
            count: t.message_count,
        })
        .collect();
    Ok(BagReader {
        path: dir.to_path_buf(),
        files,
        metadata_topics: Some(topics),
    })
}

impl BagReader {
    /// The path given to [`open_bag`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Storage files in the order they are read.
    pub fn files(&self) -> impl Iterator<Item = (&Path, Storage)> {
        self.files.iter().map(|(p, s)| (p.as_path(), *s))
    }

    /// Topics with their message counts, sorted by name. Taken from `metadata.yaml` when the
    /// bag has one; otherwise counted from the files (a damaged file counts the messages that
    /// can be read).
    pub fn topics(&self) -> Result<Vec<TopicInfo>, BagError> {
        if let Some(t) = &self.metadata_topics {
            let mut t = t.clone();
            t.sort_by(|a, b| a.name.cmp(&b.name));
            return Ok(t);
        }
        let mut acc: BTreeMap<String, TopicInfo> = BTreeMap::new();
        for (path, storage) in &self.files {
            let per_file = match storage {
                Storage::Mcap => mcap_reader::topics(path)?,
                Storage::Sqlite3 => sqlite_reader::topics(path)?,
            };
            for t in per_file {
                acc.entry(t.name.clone())
                    .and_modify(|e| e.count += t.count)
                    .or_insert(t);
            }
        }
        Ok(acc.into_values().collect())
    }

    /// Streams the messages of every file in turn, optionally only those of `topic_filter`.
    /// Each damaged file ends with one error item; reading then goes on with the next file. A
    /// single bad record is one error item and reading goes on within the file.
    pub fn messages(&self, topic_filter: Option<&[String]>) -> Messages {
        Messages {
            files: self.files.clone().into_iter(),
            filter: topic_filter.map(|f| f.to_vec()),
            current: None,
        }
    }
}

enum FileMessages {
    Mcap(Box<mcap_reader::McapMessages>),
    Sqlite(Box<sqlite_reader::SqliteMessages>),
}

/// Iterator returned by [`BagReader::messages`].
pub struct Messages {
    files: std::vec::IntoIter<(PathBuf, Storage)>,
    filter: Option<Vec<String>>,
    current: Option<FileMessages>,
}

impl Iterator for Messages {
    type Item = Result<BagMessage, BagError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let item = match &mut self.current {
                Some(FileMessages::Mcap(m)) => m.next(),
                Some(FileMessages::Sqlite(m)) => m.next(),
                None => {
                    let (path, storage) = self.files.next()?;
                    let filter = self.filter.as_deref();
                    let opened = match storage {
                        Storage::Mcap => mcap_reader::McapMessages::open(&path, filter)
                            .map(|m| FileMessages::Mcap(Box::new(m))),
                        Storage::Sqlite3 => sqlite_reader::SqliteMessages::open(&path, filter)
                            .map(|m| FileMessages::Sqlite(Box::new(m))),
                    };
                    match opened {
                        Ok(m) => {
                            self.current = Some(m);
                            continue;
                        }
                        Err(e) => return Some(Err(e)),
                    }
                }
            };
            match item {
                Some(x) => return Some(x),
                None => self.current = None,
            }
        }
    }
}
