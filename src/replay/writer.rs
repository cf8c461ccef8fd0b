//! The output bag: one MCAP file, `ros2` profile, `ros2msg` schemas, `cdr` messages.
//!
//! It is written as `OUT.partial.mcap` and renamed to `OUT` by [`BagWriter::finish`], so `OUT` is
//! never a half-written file. [`BagWriter::end_frame`] closes the chunk, hands it to the OS and
//! forces it to the disk once a second, so after a SIGKILL or a power cut `OUT.partial.mcap`
//! holds every complete frame up to the last second or so, readable by our reader and made whole
//! by `yolact bag-recover` or `yolact replay --resume` (which redoes the frames after it).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::bag::out_path::partial_path;
use crate::error::{Error, Result};
use crate::msgs::schema;

/// How often the open chunk is closed and forced to the disk (fsync), bounding what a SIGKILL or
/// a power cut loses. Not every frame: the writer keeps an index entry (~250 B) per chunk for the
/// summary, which at a chunk per frame was 2.5 MB of a 10,000-frame replay's growth.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

pub struct BagWriter {
    path: PathBuf,
    partial: PathBuf,
    writer: mcap::Writer<BufWriter<File>>,
    /// The same open file, for fsync (the mcap writer owns the other handle).
    sync: File,
    last_flush: Instant,
    /// `end_frame` calls so far (a batch of 3D outputs counts as one), for the flush log line.
    frames: u64,
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
        let partial = partial_path(path);
        let file = File::create(&partial).map_err(|e| Error::io(&partial, e))?;
        let sync = file.try_clone().map_err(|e| Error::io(&partial, e))?;
        let writer = crate::bag::mcap_write_options("ros2")
            .create(BufWriter::new(file))
            .map_err(|e| mcap_err(path, e))?;
        Ok(BagWriter {
            path: path.to_path_buf(),
            partial,
            writer,
            sync,
            last_flush: Instant::now(),
            frames: 0,
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

    /// The file being written (`OUT.partial.mcap`) until [`Self::finish`] renames it.
    pub fn partial_path(&self) -> &Path {
        &self.partial
    }

    /// Marks the end of a frame's messages. When the last flush is [`FLUSH_EVERY`] old, closes
    /// the chunk, hands it to the OS (so the frames survive a SIGKILL) and forces it to the disk.
    /// (The mcap writer also closes a chunk that outgrows 1 MiB; a frame cut there by a SIGKILL
    /// is redone by `--resume`.)
    pub fn end_frame(&mut self) -> Result<()> {
        self.frames += 1;
        if self.last_flush.elapsed() < FLUSH_EVERY {
            return Ok(());
        }
        self.writer.flush().map_err(|e| mcap_err(&self.path, e))?;
        self.sync
            .sync_data()
            .map_err(|e| Error::io(&self.partial, e))?;
        self.last_flush = Instant::now();
        log::debug!(
            "{}: flushed, {} frames",
            self.partial.display(),
            self.frames
        );
        Ok(())
    }

    /// Writes the summary and footer, syncs, and renames `OUT.partial.mcap` to `OUT`.
    pub fn finish(mut self) -> Result<()> {
        self.writer.finish().map_err(|e| mcap_err(&self.path, e))?;
        drop(self.writer);
        self.sync
            .sync_all()
            .map_err(|e| Error::io(&self.partial, e))?;
        std::fs::rename(&self.partial, &self.path).map_err(|e| Error::io(&self.path, e))?;
        Ok(())
    }
}
