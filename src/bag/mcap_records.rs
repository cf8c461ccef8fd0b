//! The MCAP record stream, parsed here rather than by the `mcap` crate so that damage costs only
//! what it touches: every record is framed (opcode, length) against the file's real size, chunk
//! CRCs are checked before any of a chunk's messages is handed out, a bad chunk is skipped with a
//! counted reason, and lost framing is regained on the next chunk (found through the summary's
//! chunk index when the file has one, else by scanning). A file without summary or footer (a
//! recording killed mid-write) reads up to its last complete record.
//!
//! Lengths declared inside a record are checked against the record before anything is
//! allocated, so a corrupt length costs an error, never a huge allocation.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::BagError;

/// `\x89MCAP0\r\n`: the first and last 8 bytes of every MCAP file.
pub const MAGIC: [u8; 8] = [0x89, b'M', b'C', b'A', b'P', b'0', b'\r', b'\n'];

/// Upper bound on one record (or one decompressed chunk). A corrupt length beyond this fails
/// instead of asking for that much memory; real camera chunks are a few tens of MiB.
pub const MAX_RECORD_LEN: u64 = 1 << 30;

mod op {
    pub const HEADER: u8 = 0x01;
    pub const FOOTER: u8 = 0x02;
    pub const SCHEMA: u8 = 0x03;
    pub const CHANNEL: u8 = 0x04;
    pub const MESSAGE: u8 = 0x05;
    pub const CHUNK: u8 = 0x06;
    pub const CHUNK_INDEX: u8 = 0x08;
    pub const DATA_END: u8 = 0x0F;
    /// Opcodes 0x01..=0x0F are defined by the spec, 0x80.. are private (skipped); the rest
    /// cannot start a record, so meeting one means the framing is lost.
    pub fn valid(op: u8) -> bool {
        (0x01..=0x0F).contains(&op) || op >= 0x80
    }
}

/// Why part of a file could not be read; the key under which damage is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Damage {
    /// Not an MCAP file at all (no magic).
    NotMcap,
    /// The file ends inside a record (a recording cut off, e.g. by SIGKILL).
    Truncated,
    /// A chunk whose decompressed records do not match its stored CRC.
    ChunkCrc,
    /// The data section's CRC (in DataEnd) does not match the bytes read.
    DataCrc,
    /// A chunk that cannot be decompressed or whose records do not parse.
    Chunk,
    /// Bytes that are not a record; reading went on at the next chunk found.
    Framing,
    /// A single record that does not parse (or a message on an unknown channel).
    Record,
}

impl Damage {
    pub fn key(self) -> &'static str {
        match self {
            Damage::NotMcap => "not_mcap",
            Damage::Truncated => "truncated",
            Damage::ChunkCrc => "chunk_crc",
            Damage::DataCrc => "data_crc",
            Damage::Chunk => "chunk",
            Damage::Framing => "framing",
            Damage::Record => "record",
        }
    }
}

#[derive(Debug)]
pub struct SchemaInfo {
    pub id: u16,
    pub name: String,
    pub encoding: String,
    pub data: Vec<u8>,
}

#[derive(Debug)]
pub struct ChannelInfo {
    pub id: u16,
    pub topic: String,
    pub message_encoding: String,
    pub metadata: Vec<(String, String)>,
    pub schema: Option<Arc<SchemaInfo>>,
}

/// One message with its channel, as stored.
#[derive(Debug, Clone)]
pub struct RawMessage {
    pub channel: Arc<ChannelInfo>,
    pub sequence: u32,
    pub log_time: u64,
    pub publish_time: u64,
    pub data: Vec<u8>,
}

/// A little-endian cursor over one record body; every read is bounds-checked.
struct Cur<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cur<'a> {
    fn new(b: &'a [u8]) -> Self {
        Cur { b, at: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| {
                format!(
                    "field of {n} bytes at byte {} of a {}-byte record",
                    self.at,
                    self.b.len()
                )
            })?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u16(&mut self) -> Result<u16, String> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }
    fn bytes32(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, String> {
        let s = self.bytes32()?;
        std::str::from_utf8(s)
            .map(str::to_string)
            .map_err(|_| "string is not UTF-8".to_string())
    }
    fn rest(&mut self) -> &'a [u8] {
        let s = &self.b[self.at..];
        self.at = self.b.len();
        s
    }
}

fn parse_schema(body: &[u8]) -> Result<SchemaInfo, String> {
    let mut c = Cur::new(body);
    Ok(SchemaInfo {
        id: c.u16()?,
        name: c.string()?,
        encoding: c.string()?,
        data: c.bytes32()?.to_vec(),
    })
}

struct ChannelRecord {
    id: u16,
    schema_id: u16,
    topic: String,
    message_encoding: String,
    metadata: Vec<(String, String)>,
}

fn parse_channel(body: &[u8]) -> Result<ChannelRecord, String> {
    let mut c = Cur::new(body);
    let id = c.u16()?;
    let schema_id = c.u16()?;
    let topic = c.string()?;
    let message_encoding = c.string()?;
    let mut m = Cur::new(c.bytes32()?);
    let mut metadata = Vec::new();
    while m.at < m.b.len() {
        metadata.push((m.string()?, m.string()?));
    }
    Ok(ChannelRecord {
        id,
        schema_id,
        topic,
        message_encoding,
        metadata,
    })
}

struct ChunkRecord<'a> {
    start: u64,
    end: u64,
    uncompressed_size: u64,
    uncompressed_crc: u32,
    compression: String,
    records: &'a [u8],
}

fn parse_chunk(body: &[u8]) -> Result<ChunkRecord<'_>, String> {
    let mut c = Cur::new(body);
    let start = c.u64()?;
    let end = c.u64()?;
    let uncompressed_size = c.u64()?;
    let uncompressed_crc = c.u32()?;
    let compression = c.string()?;
    let len = c.u64()?;
    let records = c.rest();
    if len != records.len() as u64 {
        return Err(format!(
            "chunk declares {len} bytes of records but holds {}",
            records.len()
        ));
    }
    if uncompressed_size > MAX_RECORD_LEN {
        return Err(format!(
            "chunk declares {uncompressed_size} uncompressed bytes (limit {MAX_RECORD_LEN})"
        ));
    }
    if !matches!(compression.as_str(), "" | "zstd" | "lz4") {
        return Err(format!("unknown chunk compression `{compression}`"));
    }
    Ok(ChunkRecord {
        start,
        end,
        uncompressed_size,
        uncompressed_crc,
        compression,
        records,
    })
}

/// The chunk's records, decompressed and checked against the declared size.
fn decompress(c: &ChunkRecord<'_>) -> Result<Vec<u8>, String> {
    let limit = c.uncompressed_size;
    let out = match c.compression.as_str() {
        "" => c.records.to_vec(),
        "zstd" => {
            let dec = zstd::stream::read::Decoder::new(c.records).map_err(|e| e.to_string())?;
            read_bounded(dec, limit).map_err(|e| format!("zstd: {e}"))?
        }
        _ => {
            let dec = lz4::Decoder::new(c.records).map_err(|e| e.to_string())?;
            read_bounded(dec, limit).map_err(|e| format!("lz4: {e}"))?
        }
    };
    if out.len() as u64 != limit {
        return Err(format!(
            "chunk decompresses to {} bytes, declares {limit}",
            out.len()
        ));
    }
    Ok(out)
}

/// Reads at most `limit + 1` bytes, so a lying size cannot make the buffer grow without bound.
fn read_bounded(r: impl Read, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    r.take(limit + 1).read_to_end(&mut out)?;
    Ok(out)
}

/// Splits records (opcode, u64 length, body) out of `buf`.
fn split_records(buf: &[u8]) -> Result<Vec<(u8, &[u8])>, String> {
    let mut c = Cur::new(buf);
    let mut out = Vec::new();
    while c.at < buf.len() {
        let at = c.at;
        let opcode = c.take(1)?[0];
        if !op::valid(opcode) {
            return Err(format!("byte {at}: 0x{opcode:02x} is not a record opcode"));
        }
        let len = c.u64()?;
        let len = usize::try_from(len).map_err(|_| format!("record length {len}"))?;
        out.push((opcode, c.take(len)?));
    }
    Ok(out)
}

/// What reading produced next.
pub enum Item {
    Message(RawMessage),
    Damage(Damage, String),
}

/// The records of one MCAP file in file order, with damage reported as items.
pub struct RecordStream<R> {
    src: R,
    path: PathBuf,
    len: u64,
    pos: u64,
    schemas: HashMap<u16, Arc<SchemaInfo>>,
    /// Channels as declared, resolved against `schemas` when a message needs them (a schema may
    /// come after its channel in a damaged file).
    channel_records: HashMap<u16, ChannelRecord>,
    channels: HashMap<u16, Arc<ChannelInfo>>,
    /// Chunk start offsets from the summary's chunk index (empty without a readable summary).
    chunk_index: Vec<u64>,
    queue: VecDeque<Item>,
    /// CRC of every byte from the start up to `pos`; `None` once a byte was skipped.
    data_crc: Option<crc32fast::Hasher>,
    damaged: bool,
    /// Past DataEnd: records are only framed up to the footer and end magic.
    in_summary: bool,
    done: bool,
    pub profile: String,
    /// Messages handed out so far (for the position in error messages).
    pub messages: u64,
}

pub trait ReadSeek: Read + Seek {}
impl<T: Read + Seek> ReadSeek for T {}

impl<R: Read + Seek> RecordStream<R> {
    /// Checks the magic and reads the summary when there is one; a file that does not start
    /// with the MCAP magic is an error here, before any record is read.
    pub fn new(mut src: R, label: &Path) -> Result<Self, BagError> {
        let err = |kind: Damage, msg: String| BagError::Mcap {
            path: label.to_path_buf(),
            kind,
            msg,
        };
        let io = |e: std::io::Error| err(Damage::NotMcap, format!("reading: {e}"));
        let len = src.seek(SeekFrom::End(0)).map_err(io)?;
        src.seek(SeekFrom::Start(0)).map_err(io)?;
        let mut magic = [0u8; 8];
        let got = read_full(&mut src, &mut magic).map_err(io)?;
        if got < 8 || magic != MAGIC {
            return Err(err(
                Damage::NotMcap,
                format!("not an MCAP file ({len} bytes, no MCAP magic at the start)"),
            ));
        }
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&magic);
        let mut s = RecordStream {
            src,
            path: label.to_path_buf(),
            len,
            pos: 8,
            schemas: HashMap::new(),
            channel_records: HashMap::new(),
            channels: HashMap::new(),
            chunk_index: Vec::new(),
            queue: VecDeque::new(),
            data_crc: Some(hasher),
            damaged: false,
            in_summary: false,
            done: false,
            profile: String::new(),
            messages: 0,
        };
        // Without a summary (or with a damaged one) the file is read as a stream all the same.
        let _ = s.read_summary();
        s.src.seek(SeekFrom::Start(8)).map_err(io)?;
        Ok(s)
    }

    /// Schemas, channels and the chunk index from the summary section, when the footer and
    /// end magic are intact: a chunk that carried a channel definition may be the damaged one.
    fn read_summary(&mut self) -> Result<(), String> {
        const TAIL: u64 = 1 + 8 + 20 + 8;
        if self.len < 8 + TAIL {
            return Err("too short".into());
        }
        self.src
            .seek(SeekFrom::Start(self.len - TAIL))
            .map_err(|e| e.to_string())?;
        let mut tail = [0u8; TAIL as usize];
        self.src.read_exact(&mut tail).map_err(|e| e.to_string())?;
        if tail[29..] != MAGIC || tail[0] != op::FOOTER {
            return Err("no footer".into());
        }
        let mut c = Cur::new(&tail[9..29]);
        let start = c.u64()?;
        let footer_at = self.len - TAIL;
        if start == 0 || start < 8 || start >= footer_at {
            return Err("no summary".into());
        }
        self.src
            .seek(SeekFrom::Start(start))
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; (footer_at - start) as usize];
        self.src.read_exact(&mut buf).map_err(|e| e.to_string())?;
        let mut index = Vec::new();
        for (opcode, body) in split_records(&buf)? {
            match opcode {
                op::SCHEMA => {
                    let s = parse_schema(body)?;
                    self.schemas.entry(s.id).or_insert_with(|| Arc::new(s));
                }
                op::CHANNEL => {
                    let ch = parse_channel(body)?;
                    self.channel_records.entry(ch.id).or_insert(ch);
                }
                op::CHUNK_INDEX => {
                    let mut c = Cur::new(body);
                    c.take(16)?;
                    index.push(c.u64()?);
                }
                _ => {}
            }
        }
        index.sort_unstable();
        self.chunk_index = index;
        Ok(())
    }

    fn damage(&mut self, kind: Damage, msg: String) {
        self.damaged = true;
        self.queue.push_back(Item::Damage(
            kind,
            format!(
                "{msg} (after {} messages, at byte {} of {})",
                self.messages, self.pos, self.len
            ),
        ));
    }

    /// The next message or damage report; `None` at the end of the data section or the file.
    pub fn next_item(&mut self) -> Option<Item> {
        while self.queue.is_empty() && !self.done {
            self.step();
        }
        let item = self.queue.pop_front()?;
        if let Item::Message(_) = item {
            self.messages += 1;
        }
        Some(item)
    }

    /// Reads one record at `pos` and queues what it yields.
    fn step(&mut self) {
        let at = self.pos;
        if at >= self.len {
            if self.in_summary {
                self.damage(
                    Damage::Truncated,
                    "the summary section is cut off before its footer (every message was read)"
                        .into(),
                );
            } else {
                self.damage(
                    Damage::Truncated,
                    "the file ends after its last complete record, without DataEnd, summary or footer (cut off while being written)".into(),
                );
            }
            self.done = true;
            return;
        }
        let mut head = [0u8; 9];
        let got = read_full(&mut self.src, &mut head).unwrap_or(0);
        if got < 9 {
            self.pos = self.len;
            self.damage(
                Damage::Truncated,
                format!("the file ends inside a record header at byte {at}"),
            );
            self.done = true;
            return;
        }
        let opcode = head[0];
        let mut l = [0u8; 8];
        l.copy_from_slice(&head[1..]);
        let len = u64::from_le_bytes(l);
        let room = self.len - at - 9;
        if self.in_summary {
            self.summary_record(at, opcode, len, room);
            return;
        }
        if !op::valid(opcode) || len > MAX_RECORD_LEN || (len > room && opcode != op::CHUNK) {
            let what = if op::valid(opcode) {
                format!("record 0x{opcode:02x} at byte {at} declares {len} bytes, {room} remain")
            } else {
                format!("byte {at}: 0x{opcode:02x} is not a record opcode")
            };
            self.resync(at, Damage::Framing, what);
            return;
        }
        if len > room {
            // A chunk cut off: the usual end of a recording killed mid-write. A later chunk can
            // only exist if this length is corrupt, which the resync finds out.
            self.resync(
                at,
                Damage::Truncated,
                format!("the file ends inside the chunk at byte {at} ({len} bytes declared, {room} remain)"),
            );
            return;
        }
        let mut body = vec![0u8; len as usize];
        if let Err(e) = self.src.read_exact(&mut body) {
            self.pos = self.len;
            self.damage(Damage::Truncated, format!("reading at byte {at}: {e}"));
            self.done = true;
            return;
        }
        self.pos = at + 9 + len;
        if let Some(h) = self.data_crc.as_mut() {
            if opcode != op::DATA_END {
                h.update(&head);
                h.update(&body);
            }
        }
        match opcode {
            op::HEADER => {
                if let Ok(p) = Cur::new(&body).string() {
                    self.profile = p;
                }
            }
            op::SCHEMA | op::CHANNEL | op::MESSAGE => {
                if let Err(e) = self.record(opcode, &body, true) {
                    self.damage(Damage::Record, format!("record at byte {at}: {e}"));
                }
            }
            op::CHUNK => self.chunk(at, &body),
            op::DATA_END => {
                self.data_end(&body);
                self.in_summary = true;
            }
            op::FOOTER => self.done = true,
            _ => {}
        }
    }

    /// Frames one summary record; only a footer followed by the end magic ends the file cleanly.
    fn summary_record(&mut self, at: u64, opcode: u8, len: u64, room: u64) {
        if !op::valid(opcode) || len > room {
            self.damage(
                Damage::Truncated,
                format!("the summary section is cut off or damaged at byte {at} (every message was read)"),
            );
            self.done = true;
            return;
        }
        self.pos = at + 9 + len;
        if opcode == op::FOOTER {
            let mut magic = [0u8; 8];
            let ok = self.src.seek(SeekFrom::Start(self.pos)).is_ok()
                && read_full(&mut self.src, &mut magic).ok() == Some(8)
                && magic == MAGIC;
            if !ok {
                self.damage(
                    Damage::Truncated,
                    "the file ends without the closing MCAP magic (every message was read)".into(),
                );
            }
            self.done = true;
        } else if self.src.seek(SeekFrom::Start(self.pos)).is_err() {
            self.done = true;
        }
    }

    fn data_end(&mut self, body: &[u8]) {
        let Some(h) = self.data_crc.take() else {
            return;
        };
        let stored = Cur::new(body).u32().unwrap_or(0);
        let computed = h.finalize();
        // A CRC of 0 means "not computed"; after other damage the mismatch says nothing new.
        if stored != 0 && stored != computed && !self.damaged {
            self.damage(
                Damage::DataCrc,
                format!("data section CRC mismatch (stored {stored:08x}, computed {computed:08x})"),
            );
        }
    }

    /// Handles a Schema, Channel or Message record; a message is queued when `emit`.
    fn record(&mut self, opcode: u8, body: &[u8], emit: bool) -> Result<(), String> {
        match opcode {
            op::SCHEMA => {
                let s = parse_schema(body)?;
                self.schemas.entry(s.id).or_insert_with(|| Arc::new(s));
            }
            op::CHANNEL => {
                let ch = parse_channel(body)?;
                self.channel_records.entry(ch.id).or_insert(ch);
            }
            op::MESSAGE => {
                let m = self.message(body)?;
                if emit {
                    self.queue.push_back(Item::Message(m));
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn message(&mut self, body: &[u8]) -> Result<RawMessage, String> {
        let mut c = Cur::new(body);
        let channel_id = c.u16()?;
        let sequence = c.u32()?;
        let log_time = c.u64()?;
        let publish_time = c.u64()?;
        let data = c.rest().to_vec();
        let channel = self
            .channel(channel_id)
            .ok_or_else(|| format!("message on unknown channel {channel_id}"))?;
        Ok(RawMessage {
            channel,
            sequence,
            log_time,
            publish_time,
            data,
        })
    }

    fn channel(&mut self, id: u16) -> Option<Arc<ChannelInfo>> {
        if let Some(c) = self.channels.get(&id) {
            return Some(c.clone());
        }
        let r = self.channel_records.get(&id)?;
        let info = Arc::new(ChannelInfo {
            id,
            topic: r.topic.clone(),
            message_encoding: r.message_encoding.clone(),
            metadata: r.metadata.clone(),
            schema: self.schemas.get(&r.schema_id).cloned(),
        });
        self.channels.insert(id, info.clone());
        Some(info)
    }

    /// A chunk's messages are queued only when the whole chunk checks out.
    fn chunk(&mut self, at: u64, body: &[u8]) {
        let c = match parse_chunk(body) {
            Ok(c) => c,
            Err(e) => {
                self.damage(Damage::Chunk, format!("chunk at byte {at}: {e}"));
                return;
            }
        };
        let span = format!("chunk at byte {at} (log times {}..={})", c.start, c.end);
        let data = match decompress(&c) {
            Ok(d) => d,
            Err(e) => {
                self.damage(Damage::Chunk, format!("{span}: {e}; its messages are skipped"));
                return;
            }
        };
        if c.uncompressed_crc != 0 {
            let computed = crc32fast::hash(&data);
            if computed != c.uncompressed_crc {
                self.damage(
                    Damage::ChunkCrc,
                    format!(
                        "{span}: CRC mismatch (stored {:08x}, computed {computed:08x}); its messages are skipped",
                        c.uncompressed_crc
                    ),
                );
                return;
            }
        }
        let records = match split_records(&data) {
            Ok(r) => r,
            Err(e) => {
                self.damage(Damage::Chunk, format!("{span}: {e}; its messages are skipped"));
                return;
            }
        };
        // Definitions first, so a message before its channel in the same chunk still resolves.
        let mut bad = Vec::new();
        for &(opcode, b) in &records {
            if opcode != op::MESSAGE {
                if let Err(e) = self.record(opcode, b, false) {
                    bad.push(e);
                }
            }
        }
        let mut msgs = Vec::new();
        for &(opcode, b) in &records {
            if opcode == op::MESSAGE {
                match self.message(b) {
                    Ok(m) => msgs.push(m),
                    Err(e) => bad.push(e),
                }
            }
        }
        self.queue.extend(msgs.into_iter().map(Item::Message));
        if let Some(first) = bad.first() {
            let n = bad.len();
            self.damage(
                Damage::Record,
                format!("{span}: {n} records skipped, the first: {first}"),
            );
        }
    }

    /// Reports `what` and goes on at the next chunk after `at` that checks out (header plausible,
    /// records decompress to the stored CRC); ends the file when there is none.
    fn resync(&mut self, at: u64, kind: Damage, what: String) {
        self.data_crc = None;
        let next = self.find_chunk_after(at);
        match next {
            Some(n) => {
                self.pos = at;
                self.damage(
                    Damage::Framing,
                    format!("{what}; {} bytes skipped, reading goes on at the chunk at byte {n}", n - at),
                );
                self.pos = n;
                if self.src.seek(SeekFrom::Start(n)).is_err() {
                    self.done = true;
                }
            }
            None => {
                self.pos = at;
                self.damage(kind, what);
                self.done = true;
            }
        }
    }

    fn find_chunk_after(&mut self, at: u64) -> Option<u64> {
        let from_index: Vec<u64> = self
            .chunk_index
            .iter()
            .copied()
            .filter(|&o| o > at)
            .collect();
        for o in from_index {
            if self.chunk_checks_out(o) {
                return Some(o);
            }
        }
        // Scan for the chunk opcode in windows; each candidate is verified in full.
        const WIN: usize = 64 * 1024;
        let mut base = at + 1;
        let mut buf = vec![0u8; WIN];
        while base < self.len {
            if self.src.seek(SeekFrom::Start(base)).is_err() {
                return None;
            }
            let n = read_full(&mut self.src, &mut buf).ok()?;
            if n == 0 {
                return None;
            }
            for i in 0..n {
                if buf[i] == op::CHUNK && self.chunk_checks_out(base + i as u64) {
                    return Some(base + i as u64);
                }
            }
            base += n as u64;
        }
        None
    }

    fn chunk_checks_out(&mut self, at: u64) -> bool {
        let mut head = [0u8; 9];
        if at + 9 > self.len
            || self.src.seek(SeekFrom::Start(at)).is_err()
            || read_full(&mut self.src, &mut head).ok() != Some(9)
            || head[0] != op::CHUNK
        {
            return false;
        }
        let mut l = [0u8; 8];
        l.copy_from_slice(&head[1..]);
        let len = u64::from_le_bytes(l);
        if len > MAX_RECORD_LEN || len > self.len - at - 9 || len < 8 * 4 + 4 + 4 {
            return false;
        }
        let mut body = vec![0u8; len as usize];
        if self.src.read_exact(&mut body).is_err() {
            return false;
        }
        let Ok(c) = parse_chunk(&body) else {
            return false;
        };
        match decompress(&c) {
            Ok(d) => c.uncompressed_crc == 0 || crc32fast::hash(&d) == c.uncompressed_crc,
            Err(_) => false,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Like `read_exact`, but returns how many bytes were read when the source ends first.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
