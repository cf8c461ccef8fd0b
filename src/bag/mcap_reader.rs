//! MCAP storage files, read as a stream of records so that a file without summary or footer
//! (recording killed mid-write) still yields every complete message before the cut.

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::{BTreeMap, BinaryHeap};
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

/// How many messages are held back to restore log-time order. MCAP files are streamed in file
/// order; rosbag2 writes in receive order, so log times are almost always already sorted, and
/// a small window fixes the rare local swaps (e.g. chunks from concurrent writers) without
/// buffering the whole file. Messages further out of place keep their file order.
pub const REORDER_WINDOW: usize = 8;

/// A message ordered by (log time, position in the file).
struct Pending {
    seq: u64,
    msg: BagMessage,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (self.msg.log_time_ns, self.seq).cmp(&(other.msg.log_time_ns, other.seq))
    }
}

/// Messages of one MCAP file in log-time order (within [`REORDER_WINDOW`]). A read error is
/// yielded once, after every message read before it, and then the iterator ends.
pub struct McapMessages {
    path: PathBuf,
    reader: mcap::io::MessageReader<Counting<Box<dyn Read + Send>>>,
    bytes_read: Arc<AtomicU64>,
    filter: Option<Vec<String>>,
    window: BinaryHeap<Reverse<Pending>>,
    /// Messages taken from the file (after the topic filter).
    read: u64,
    source_done: bool,
    error: Option<BagError>,
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
            window: BinaryHeap::with_capacity(REORDER_WINDOW + 1),
            read: 0,
            source_done: false,
            error: None,
        }
    }

    /// The next message of the file that passes the filter; records the first error.
    fn pull(&mut self) -> Option<BagMessage> {
        while !self.source_done {
            let msg = match self.reader.next() {
                None => {
                    self.source_done = true;
                    return None;
                }
                Some(Err(e)) => {
                    self.source_done = true;
                    self.error = Some(BagError::Mcap {
                        path: self.path.clone(),
                        msg: format!(
                            "{e} (stopped after {} messages, {} bytes into the file)",
                            self.read,
                            self.bytes_read.load(Ordering::Relaxed)
                        ),
                    });
                    return None;
                }
                Some(Ok(m)) => m,
            };
            let topic = &msg.channel.topic;
            if let Some(f) = &self.filter {
                if !f.iter().any(|t| t == topic) {
                    continue;
                }
            }
            self.read += 1;
            return Some(BagMessage {
                topic: topic.clone(),
                msg_type: msg
                    .channel
                    .schema
                    .as_ref()
                    .map(|s| s.name.clone())
                    .unwrap_or_default(),
                log_time_ns: msg.log_time,
                data: msg.data.into_owned(),
            });
        }
        None
    }
}

impl Iterator for McapMessages {
    type Item = Result<BagMessage, BagError>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.window.len() < REORDER_WINDOW {
            match self.pull() {
                Some(msg) => self.window.push(Reverse(Pending {
                    seq: self.read,
                    msg,
                })),
                None => break,
            }
        }
        match self.window.pop() {
            Some(Reverse(p)) => Some(Ok(p.msg)),
            None => self.error.take().map(Err),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::io::Cursor;

    /// An MCAP written by the `mcap` crate's own writer with the given log times.
    fn mcap_with_times(times: &[u64]) -> Vec<u8> {
        let mut w = mcap::Writer::new(Cursor::new(Vec::new())).unwrap();
        let schema = w
            .add_schema("std_msgs/msg/UInt32", "ros2msg", b"uint32 data")
            .unwrap();
        let chan = w
            .add_channel(schema, "/n", "cdr", &BTreeMap::new())
            .unwrap();
        for (i, &t) in times.iter().enumerate() {
            let header = mcap::records::MessageHeader {
                channel_id: chan,
                sequence: i as u32,
                log_time: t,
                publish_time: t,
            };
            w.write_to_known_channel(&header, &(i as u32).to_le_bytes())
                .unwrap();
        }
        w.finish().unwrap();
        w.into_inner().into_inner()
    }

    fn read_times(data: Vec<u8>) -> Vec<Result<(u64, u32), String>> {
        McapMessages::from_reader(Box::new(Cursor::new(data)), Path::new("t"), None)
            .map(|r| {
                r.map(|m| {
                    let idx = u32::from_le_bytes(m.data[..4].try_into().unwrap());
                    (m.log_time_ns, idx)
                })
                .map_err(|e| e.to_string())
            })
            .collect()
    }

    #[test]
    fn local_swaps_come_out_in_log_time_order_ties_in_file_order() {
        let times = [10, 30, 20, 20, 50, 40, 60, 5 + 55, 70];
        let got: Vec<(u64, u32)> = read_times(mcap_with_times(&times))
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        // Independent reference: a stable sort of (time, index) pairs.
        let mut want: Vec<(u64, u32)> = times
            .iter()
            .enumerate()
            .map(|(i, &t)| (t, i as u32))
            .collect();
        want.sort_by_key(|&(t, _)| t);
        assert_eq!(got, want);
    }

    #[test]
    fn truncated_stream_keeps_every_message_before_the_cut_then_one_error() {
        let times: Vec<u64> = (0..30).map(|i| 1000 - i * 3).collect();
        let full = mcap_with_times(&times);
        let cut = full[..full.len() - 40].to_vec();
        let got = read_times(cut);
        let (oks, errs): (Vec<_>, Vec<_>) = got.iter().partition(|r| r.is_ok());
        assert_eq!(errs.len(), 1);
        assert!(got.last().unwrap().is_err(), "the error comes last");
        // The message data section is intact, only the summary is cut: nothing is lost.
        assert_eq!(oks.len(), times.len());
    }
}
