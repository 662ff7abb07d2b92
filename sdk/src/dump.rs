//! Row batches in backup artifacts, streamable in bounded memory.
//!
//! An artifact is a sequence of frames; each frame is three little-endian
//! `u32`s — width, rows, byte length — followed by the batch's encoded bytes
//! (see [`crate::row`]). A batch read from a cursor is written as it came,
//! without decoding, and read back ready for `execute_batch`.

use std::io::{self, Read, Write};

use crate::checksum::TableChecksum;
use crate::sql::{for_each_row, RowBatch};
use crate::Error;

/// Largest frame accepted when reading, so a corrupt length cannot make the
/// plugin allocate without bound.
pub const MAX_FRAME_BYTES: u32 = 64 * 1024 * 1024;

/// Appends one batch as a frame.
pub fn write_batch(out: &mut impl Write, batch: &RowBatch) -> Result<(), Error> {
    let len = u32::try_from(batch.data.len())
        .ok()
        .filter(|len| *len <= MAX_FRAME_BYTES)
        .ok_or_else(|| {
            Error::Internal(format!(
                "row batch of {} bytes is too large",
                batch.data.len()
            ))
        })?;
    let mut header = [0u8; 12];
    header[..4].copy_from_slice(&batch.width.to_le_bytes());
    header[4..8].copy_from_slice(&batch.rows.to_le_bytes());
    header[8..].copy_from_slice(&len.to_le_bytes());
    out.write_all(&header).map_err(io_error)?;
    out.write_all(&batch.data).map_err(io_error)
}

/// Reads the next frame, or `None` at the end of the artifact.
pub fn read_batch(input: &mut impl Read) -> Result<Option<RowBatch>, Error> {
    let mut header = [0u8; 12];
    match input.read_exact(&mut header[..1]) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(io_error(e)),
    }
    input
        .read_exact(&mut header[1..])
        .map_err(|e| Error::BackupInvalid(format!("artifact ends inside a frame header: {e}")))?;
    let word = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().expect("4 bytes"));
    let (width, rows, len) = (word(0), word(4), word(8));
    if len > MAX_FRAME_BYTES {
        return Err(Error::BackupInvalid(format!(
            "frame of {len} bytes exceeds the limit"
        )));
    }
    let mut data = vec![0u8; len as usize];
    input.read_exact(&mut data).map_err(|e| {
        Error::BackupInvalid(format!("artifact ends inside a frame of {len} bytes: {e}"))
    })?;
    Ok(Some(RowBatch { width, rows, data }))
}

fn io_error(e: io::Error) -> Error {
    Error::Internal(format!("artifact i/o: {e}"))
}

/// Adds every row of `batch` to `checksum`, skipping the first `skip`
/// columns of each row (for example a rowid carried only for restore).
pub fn add_batch(checksum: &mut TableChecksum, batch: &RowBatch, skip: usize) -> Result<(), Error> {
    for_each_row(batch, |row| {
        checksum.add_row(row[skip.min(row.len())..].iter().copied())
    })?;
    Ok(())
}
