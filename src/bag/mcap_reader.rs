//! MCAP storage files as a stream of messages in log-time order (within [`REORDER_WINDOW`]). The
//! records come from [`super::mcap_records`], which reads files without summary or footer and
//! skips damaged chunks; each damaged region is one error item, and reading goes on after it.

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use super::mcap_records::{Damage, Item, RawMessage, ReadSeek, RecordStream};
use super::{BagError, BagMessage, TopicInfo};

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

/// Opens an MCAP file as a record stream; a file that is not MCAP fails here.
pub fn open_records(path: &Path) -> Result<RecordStream<Box<dyn ReadSeek + Send>>, BagError> {
    let file = File::open(path).map_err(|source| BagError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    RecordStream::new(Box::new(BufReader::new(file)) as Box<dyn ReadSeek + Send>, path)
}

fn to_bag_message(m: RawMessage) -> BagMessage {
    BagMessage {
        topic: m.channel.topic.clone(),
        msg_type: m
            .channel
            .schema
            .as_ref()
            .map(|s| s.name.clone())
            .unwrap_or_default(),
        log_time_ns: m.log_time,
        data: m.data,
    }
}

/// Messages of one MCAP file in log-time order (within [`REORDER_WINDOW`]). Each damaged region
/// is one error item, yielded after the messages read before it; reading then goes on.
pub struct McapMessages {
    path: PathBuf,
    records: RecordStream<Box<dyn ReadSeek + Send>>,
    filter: Option<Vec<String>>,
    window: BinaryHeap<Reverse<Pending>>,
    /// Errors met while filling the window, yielded once the messages before them are out.
    errors: VecDeque<BagError>,
    /// Messages taken from the file (after the topic filter).
    read: u64,
    source_done: bool,
}

impl McapMessages {
    pub fn open(path: &Path, topic_filter: Option<&[String]>) -> Result<Self, BagError> {
        Ok(Self::from_records(open_records(path)?, topic_filter))
    }

    /// Reads MCAP bytes from any seekable source; `label` names it in errors.
    pub fn from_reader(
        source: Box<dyn ReadSeek + Send>,
        label: &Path,
        topic_filter: Option<&[String]>,
    ) -> Result<Self, BagError> {
        Ok(Self::from_records(
            RecordStream::new(source, label)?,
            topic_filter,
        ))
    }

    fn from_records(
        records: RecordStream<Box<dyn ReadSeek + Send>>,
        topic_filter: Option<&[String]>,
    ) -> Self {
        Self {
            path: records.path().to_path_buf(),
            records,
            filter: topic_filter.map(|f| f.to_vec()),
            window: BinaryHeap::with_capacity(REORDER_WINDOW + 1),
            errors: VecDeque::new(),
            read: 0,
            source_done: false,
        }
    }

    /// The next message of the file that passes the filter; queues errors met on the way.
    fn pull(&mut self) -> Option<BagMessage> {
        while !self.source_done {
            match self.records.next_item() {
                None => self.source_done = true,
                Some(Item::Damage(kind, msg)) => {
                    self.errors.push_back(BagError::Mcap {
                        path: self.path.clone(),
                        kind,
                        msg,
                    });
                    return None;
                }
                Some(Item::Message(m)) => {
                    if let Some(f) = &self.filter {
                        if !f.iter().any(|t| *t == m.channel.topic) {
                            continue;
                        }
                    }
                    self.read += 1;
                    return Some(to_bag_message(m));
                }
            }
        }
        None
    }
}

impl Iterator for McapMessages {
    type Item = Result<BagMessage, BagError>;

    fn next(&mut self) -> Option<Self::Item> {
        // An error stops the filling so it comes out after the messages read before it.
        while self.errors.is_empty() && self.window.len() < REORDER_WINDOW {
            match self.pull() {
                Some(msg) => self.window.push(Reverse(Pending {
                    seq: self.read,
                    msg,
                })),
                None if self.source_done => break,
                None => {}
            }
        }
        match self.window.pop() {
            Some(Reverse(p)) => Some(Ok(p.msg)),
            None => self.errors.pop_front().map(Err),
        }
    }
}

/// Topics and message counts, from one pass over the messages (the summary section may be
/// missing in exactly the files this reader must handle). A damaged file counts what can be
/// read; a file that cannot be opened, is not MCAP, or yields no message but an error, is an
/// error.
pub fn topics(path: &Path) -> Result<Vec<TopicInfo>, BagError> {
    let mut acc: BTreeMap<String, TopicInfo> = BTreeMap::new();
    let mut first_error = None;
    for item in McapMessages::open(path, None)? {
        let m = match item {
            Ok(m) => m,
            Err(e) => {
                first_error.get_or_insert(e);
                continue;
            }
        };
        acc.entry(m.topic.clone())
            .or_insert_with(|| TopicInfo {
                name: m.topic,
                msg_type: m.msg_type,
                count: 0,
            })
            .count += 1;
    }
    match first_error {
        Some(BagError::Mcap { path, kind, msg }) if acc.is_empty() => Err(BagError::Mcap {
            path,
            kind,
            msg: format!("no message could be read: {msg}"),
        }),
        _ => Ok(acc.into_values().collect()),
    }
}

/// Why an MCAP read error happened (its [`Damage`] key), for counting.
pub fn damage_of(e: &BagError) -> Option<Damage> {
    match e {
        BagError::Mcap { kind, .. } => Some(*kind),
        _ => None,
    }
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
            .unwrap()
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
