//! A compact, streamable encoding of row batches for backup artifacts.
//!
//! An artifact is a sequence of frames; each frame is a little-endian `u32`
//! length followed by a postcard-encoded [`RowBatch`]. Frames are written and
//! read one batch at a time, so a table of any size is dumped and restored in
//! bounded memory.

use std::io::{self, Read, Write};

use crate::checksum::{Cell, TableChecksum};
use crate::sql::{RowBatch, Value};
use crate::Error;

/// Largest frame accepted when reading, so a corrupt length cannot make the
/// plugin allocate without bound.
pub const MAX_FRAME_BYTES: u32 = 64 * 1024 * 1024;

/// Appends one batch as a frame.
pub fn write_batch(out: &mut impl Write, batch: &RowBatch) -> Result<(), Error> {
    let bytes = postcard::to_allocvec(batch)
        .map_err(|e| Error::Internal(format!("encoding a row batch: {e}")))?;
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|len| *len <= MAX_FRAME_BYTES)
        .ok_or_else(|| {
            Error::Internal(format!("row batch of {} bytes is too large", bytes.len()))
        })?;
    out.write_all(&len.to_le_bytes()).map_err(io_error)?;
    out.write_all(&bytes).map_err(io_error)
}

/// Reads the next frame, or `None` at the end of the artifact.
pub fn read_batch(input: &mut impl Read) -> Result<Option<RowBatch>, Error> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(io_error(e)),
    }
    let len = u32::from_le_bytes(len);
    if len > MAX_FRAME_BYTES {
        return Err(Error::BackupInvalid(format!(
            "frame of {len} bytes exceeds the limit"
        )));
    }
    let mut bytes = vec![0u8; len as usize];
    input.read_exact(&mut bytes).map_err(|e| {
        Error::BackupInvalid(format!("artifact ends inside a frame of {len} bytes: {e}"))
    })?;
    postcard::from_bytes(&bytes)
        .map(Some)
        .map_err(|e| Error::BackupInvalid(format!("undecodable row batch: {e}")))
}

fn io_error(e: io::Error) -> Error {
    Error::Internal(format!("artifact i/o: {e}"))
}

/// The checksum cell of a value.
pub fn cell(value: &Value) -> Cell<'_> {
    match value {
        Value::Null => Cell::Null,
        Value::Integer(i) => Cell::Integer(*i),
        Value::Real(r) => Cell::Real(*r),
        Value::Text(t) => Cell::Text(t.as_bytes()),
        Value::Blob(b) => Cell::Blob(b),
    }
}

/// Adds every row of `batch` to `checksum`.
pub fn add_batch(checksum: &mut TableChecksum, batch: &RowBatch) {
    for row in crate::sql::rows_of(batch) {
        checksum.add_row(row.iter().map(cell));
    }
}
