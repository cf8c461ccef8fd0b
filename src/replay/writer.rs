//! The output bag: one MCAP file, `ros2` profile, `ros2msg` schemas, `cdr` messages.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::msgs::schema;

pub struct BagWriter {
    path: PathBuf,
    writer: mcap::Writer<BufWriter<File>>,
    schemas: BTreeMap<String, u16>,
    channels: BTreeMap<String, u16>,
    sequence: u32,
}

fn mcap_err(path: &Path, e: mcap::McapError) -> Error {
    Error::Invalid(format!("{}: writing MCAP: {e}", path.display()))
}

impl BagWriter {
    pub fn create(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        let writer = mcap::WriteOptions::new()
            .profile("ros2")
            .create(BufWriter::new(file))
            .map_err(|e| mcap_err(path, e))?;
        Ok(BagWriter {
            path: path.to_path_buf(),
            writer,
            schemas: BTreeMap::new(),
            channels: BTreeMap::new(),
            sequence: 0,
        })
    }

    fn channel(&mut self, topic: &str, msg_type: &str) -> Result<u16> {
        if let Some(&id) = self.channels.get(topic) {
            return Ok(id);
        }
        let schema_id = match self.schemas.get(msg_type) {
            Some(&id) => id,
            None => {
                let text = schema::schema_text(msg_type).map_err(Error::from)?;
                let id = self
                    .writer
                    .add_schema(msg_type, "ros2msg", text.as_bytes())
                    .map_err(|e| mcap_err(&self.path, e))?;
                self.schemas.insert(msg_type.to_string(), id);
                id
            }
        };
        let id = self
            .writer
            .add_channel(schema_id, topic, "cdr", &BTreeMap::new())
            .map_err(|e| mcap_err(&self.path, e))?;
        self.channels.insert(topic.to_string(), id);
        Ok(id)
    }

    /// Writes one message; a channel (and schema) is added on first use of `topic`.
    pub fn write(&mut self, topic: &str, msg_type: &str, time_ns: u64, cdr: &[u8]) -> Result<()> {
        let channel_id = self.channel(topic, msg_type)?;
        self.sequence = self.sequence.wrapping_add(1);
        let header = mcap::records::MessageHeader {
            channel_id,
            sequence: self.sequence,
            log_time: time_ns,
            publish_time: time_ns,
        };
        self.writer
            .write_to_known_channel(&header, cdr)
            .map_err(|e| mcap_err(&self.path, e))
    }

    /// Writes the summary and footer; without it the file is only readable as a damaged one.
    pub fn finish(mut self) -> Result<()> {
        self.writer.finish().map_err(|e| mcap_err(&self.path, e))?;
        Ok(())
    }
}
