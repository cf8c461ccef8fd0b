//! MCAP storage files, read as a stream of records so that a file without summary or footer
//! (recording killed mid-write) still yields every complete message before the cut.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mcap::sans_io::LinearReaderOptions;

use super::{BagError, BagMessage, TopicInfo};

/// Upper bound on one record (or one decompressed chunk). A corrupt length field beyond this
/// fails instead of asking for that much memory; real camera chunks are a few tens of MiB.
const MAX_RECORD_LEN: usize = 1 << 30;

/// Counts the bytes handed to the MCAP parser, so an error can say where the file stopped
/// being readable.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Messages of one MCAP file in file order (rosbag2 writes them in receive order, which is
/// log-time order). After the first error it yields that error once and then ends.
pub struct McapMessages {
    path: PathBuf,
    reader: mcap::io::MessageReader<Counting<Box<dyn Read + Send>>>,
    bytes_read: Arc<AtomicU64>,
    filter: Option<Vec<String>>,
    yielded: u64,
    done: bool,
}

impl McapMessages {
    pub fn open(path: &Path, topic_filter: Option<&[String]>) -> Result<Self, BagError> {
        let file = File::open(path).map_err(|source| BagError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self::from_reader(
            Box::new(BufReader::new(file)),
            path,
            topic_filter,
        ))
    }

    /// Reads MCAP bytes from any source; `label` names it in errors.
    pub fn from_reader(
        source: Box<dyn Read + Send>,
        label: &Path,
        topic_filter: Option<&[String]>,
    ) -> Self {
        let bytes_read = Arc::new(AtomicU64::new(0));
        let source = Counting {
            inner: source,
            read: bytes_read.clone(),
        };
        let options = LinearReaderOptions::default().with_record_length_limit(MAX_RECORD_LEN);
        Self {
            path: label.to_path_buf(),
            reader: mcap::io::MessageReader::new_with_options(source, options),
            bytes_read,
            filter: topic_filter.map(|f| f.to_vec()),
            yielded: 0,
            done: false,
        }
    }

    fn stop(&mut self, e: mcap::McapError) -> BagError {
        self.done = true;
        BagError::Mcap {
            path: self.path.clone(),
            msg: format!(
                "{e} (stopped after {} messages, {} bytes into the file)",
                self.yielded,
                self.bytes_read.load(Ordering::Relaxed)
            ),
        }
    }
}

impl Iterator for McapMessages {
    type Item = Result<BagMessage, BagError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        loop {
            let msg = match self.reader.next() {
                None => {
                    self.done = true;
                    return None;
                }
                Some(Err(e)) => return Some(Err(self.stop(e))),
                Some(Ok(m)) => m,
            };
            let topic = &msg.channel.topic;
            if let Some(f) = &self.filter {
                if !f.iter().any(|t| t == topic) {
                    continue;
                }
            }
            self.yielded += 1;
            return Some(Ok(BagMessage {
                topic: topic.clone(),
                msg_type: msg
                    .channel
                    .schema
                    .as_ref()
                    .map(|s| s.name.clone())
                    .unwrap_or_default(),
                log_time_ns: msg.log_time,
                data: msg.data.into_owned(),
            }));
        }
    }
}

/// Topics and message counts, from one pass over the messages (the summary section may be
/// missing in exactly the files this reader must handle). A damaged file counts what can be
/// read; only a file that cannot be opened is an error.
pub fn topics(path: &Path) -> Result<Vec<TopicInfo>, BagError> {
    let mut acc: BTreeMap<String, TopicInfo> = BTreeMap::new();
    for m in McapMessages::open(path, None)?.flatten() {
        acc.entry(m.topic.clone())
            .or_insert_with(|| TopicInfo {
                name: m.topic,
                msg_type: m.msg_type,
                count: 0,
            })
            .count += 1;
    }
    Ok(acc.into_values().collect())
}
