//! Rewriting a damaged MCAP file (cut off by a SIGKILL or power cut, or with bad chunks) as a
//! complete one: every message [`super::mcap_records`] can read, with its channel and schema,
//! in file order, then a summary and footer.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use super::mcap_records::{Item, RawMessage, RecordStream};
use super::out_path::{partial_path, refuse_overlap};
use super::BagError;

/// What a recovery kept and what it had to skip.
#[derive(Debug, Default)]
pub struct Recovered {
    pub messages: u64,
    pub per_topic: BTreeMap<String, u64>,
    /// One per damaged region; empty for an intact input.
    pub damage: Vec<BagError>,
}

fn write_err(path: &Path, e: impl std::fmt::Display) -> BagError {
    BagError::Write {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

/// Copies messages into an MCAP writer, adding each channel (and schema) on first use.
pub struct RawCopier<W: Write + Seek> {
    path: PathBuf,
    writer: mcap::Writer<W>,
    schemas: HashMap<(String, String, Vec<u8>), u16>,
    channels: HashMap<(String, u16), u16>,
}

impl<W: Write + Seek> RawCopier<W> {
    pub fn new(out: W, profile: &str, label: &Path) -> Result<Self, BagError> {
        let writer = super::mcap_write_options(profile)
            .create(out)
            .map_err(|e| write_err(label, e))?;
        Ok(RawCopier {
            path: label.to_path_buf(),
            writer,
            schemas: HashMap::new(),
            channels: HashMap::new(),
        })
    }

    pub fn write(&mut self, m: &RawMessage) -> Result<(), BagError> {
        let key = (m.channel.topic.clone(), m.channel.id);
        let id = match self.channels.get(&key) {
            Some(&id) => id,
            None => {
                let schema_id = match &m.channel.schema {
                    Some(s) => {
                        let k = (s.name.clone(), s.encoding.clone(), s.data.clone());
                        match self.schemas.get(&k) {
                            Some(&id) => id,
                            None => {
                                let id = self
                                    .writer
                                    .add_schema(&s.name, &s.encoding, &s.data)
                                    .map_err(|e| write_err(&self.path, e))?;
                                self.schemas.insert(k, id);
                                id
                            }
                        }
                    }
                    None => 0,
                };
                let meta: BTreeMap<String, String> = m.channel.metadata.iter().cloned().collect();
                let id = self
                    .writer
                    .add_channel(
                        schema_id,
                        &m.channel.topic,
                        &m.channel.message_encoding,
                        &meta,
                    )
                    .map_err(|e| write_err(&self.path, e))?;
                self.channels.insert(key, id);
                id
            }
        };
        let header = mcap::records::MessageHeader {
            channel_id: id,
            sequence: m.sequence,
            log_time: m.log_time,
            publish_time: m.publish_time,
        };
        self.writer
            .write_to_known_channel(&header, &m.data)
            .map_err(|e| write_err(&self.path, e))
    }

    pub fn finish(mut self) -> Result<W, BagError> {
        self.writer.finish().map_err(|e| write_err(&self.path, e))?;
        Ok(self.writer.into_inner())
    }
}

/// Reads `src` (labelled `label` in errors) and writes every readable message to `out`.
/// Fails only when `src` is not MCAP or `out` cannot be written.
pub fn recover_stream<R: Read + Seek, W: Write + Seek>(
    src: R,
    label: &Path,
    out: W,
    out_label: &Path,
) -> Result<(Recovered, W), BagError> {
    let mut records = RecordStream::new(src, label)?;
    let mut rec = Recovered::default();
    // The profile is in the header record, read with the first item: take that item before
    // creating the writer.
    let first = records.next_item();
    let profile = if records.profile.is_empty() {
        "ros2".to_string()
    } else {
        records.profile.clone()
    };
    let mut copier = RawCopier::new(out, &profile, out_label)?;
    let mut handle = |item: Item, rec: &mut Recovered| -> Result<(), BagError> {
        match item {
            Item::Message(m) => {
                copier.write(&m)?;
                rec.messages += 1;
                *rec.per_topic.entry(m.channel.topic.clone()).or_default() += 1;
            }
            Item::Damage(kind, msg) => rec.damage.push(BagError::Mcap {
                path: label.to_path_buf(),
                kind,
                msg,
            }),
        }
        Ok(())
    };
    if let Some(i) = first {
        handle(i, &mut rec)?;
    }
    while let Some(i) = records.next_item() {
        handle(i, &mut rec)?;
    }
    let w = copier.finish()?;
    Ok((rec, w))
}

/// `yolact bag-recover IN OUT`: writes `OUT` (through `OUT.partial` and a rename) from every
/// readable message of `IN`. `OUT` may not be `IN`.
pub fn recover_file(input: &Path, output: &Path) -> Result<Recovered, BagError> {
    refuse_overlap(
        &[input.to_path_buf()],
        &[("OUT".into(), output.to_path_buf())],
    )
    .map_err(|e| write_err(output, e))?;
    let src = std::fs::File::open(input).map_err(|source| BagError::Io {
        path: input.to_path_buf(),
        source,
    })?;
    let tmp = partial_path(output);
    let file = std::fs::File::create(&tmp).map_err(|source| BagError::Io {
        path: tmp.clone(),
        source,
    })?;
    let result = recover_stream(
        std::io::BufReader::new(src),
        input,
        std::io::BufWriter::new(file),
        output,
    );
    let (rec, w) = match result {
        Ok(x) => x,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let file = w.into_inner().map_err(|e| write_err(output, e.error()))?;
    file.sync_all().map_err(|e| write_err(output, e))?;
    std::fs::rename(&tmp, output).map_err(|e| write_err(output, e))?;
    Ok(rec)
}
