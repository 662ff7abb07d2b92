//! Backup artifacts: write them as byte streams during backup and read them
//! back during rollback. The host stores them content-addressed and verifies
//! their digests; a plugin never sees a host path.

use std::io;

use crate::__private::bindings::sluice::plugin::backup_store as wit;
use crate::{Error, ErrorExt};

/// Bytes buffered before each host call: big writes amortise the call cost.
const CHUNK: usize = 256 * 1024;

/// A new artifact being written; implements [`io::Write`].
pub struct ArtifactWriter {
    name: String,
    inner: wit::ArtifactWriter,
    buffer: Vec<u8>,
    written: u64,
}

/// Starts a new artifact of this step's backup.
pub fn create(name: &str) -> Result<ArtifactWriter, Error> {
    Ok(ArtifactWriter {
        name: name.to_string(),
        inner: wit::create(name)?,
        buffer: Vec::with_capacity(CHUNK),
        written: 0,
    })
}

/// Opens an artifact of this step's backup for reading.
pub fn open(name: &str) -> Result<ArtifactReader, Error> {
    Ok(ArtifactReader {
        inner: wit::open(name)?,
        buffer: Vec::new(),
        pos: 0,
        done: false,
    })
}

impl ArtifactWriter {
    /// The artifact's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    fn flush_buffer(&mut self) -> Result<(), Error> {
        if !self.buffer.is_empty() {
            self.inner.write(&self.buffer)?;
            self.buffer.clear();
        }
        Ok(())
    }

    /// Makes the artifact durable; returns its sha256 digest (hex).
    pub fn finish(mut self) -> Result<String, Error> {
        self.flush_buffer()?;
        self.inner.finish()
    }
}

fn to_io(e: Error) -> io::Error {
    io::Error::other(e.describe())
}

impl io::Write for ArtifactWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        self.written += bytes.len() as u64;
        if self.buffer.len() >= CHUNK {
            self.flush_buffer().map_err(to_io)?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_buffer().map_err(to_io)
    }
}

/// An artifact being read back; implements [`io::Read`]. The host checks the
/// digest when the end is reached.
pub struct ArtifactReader {
    inner: wit::ArtifactReader,
    buffer: Vec<u8>,
    pos: usize,
    done: bool,
}

impl io::Read for ArtifactReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.buffer.len() {
            if self.done {
                return Ok(0);
            }
            self.buffer = self.inner.read(CHUNK as u32).map_err(to_io)?;
            self.pos = 0;
            if self.buffer.is_empty() {
                self.done = true;
                return Ok(0);
            }
        }
        let n = out.len().min(self.buffer.len() - self.pos);
        out[..n].copy_from_slice(&self.buffer[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
