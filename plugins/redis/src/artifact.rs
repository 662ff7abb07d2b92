//! The backup artifact: the keys' `DUMP` payloads and absolute expiries.
//!
//! Layout: the magic line `SLUICE-KV 1\n`, then one record per key — key
//! length (u32 LE), key bytes, payload length (u32 LE), payload, a flag byte
//! (1 when an expiry follows) and the expiry in Unix ms (u64 LE). Records
//! are written and read one batch at a time, in bounded memory.

use std::io::{self, Read, Write};

use sluice_sdk::kv::Dumped;
use sluice_sdk::Error;

/// Name of the artifact in the backup store.
pub const KEYS_ARTIFACT: &str = "keys.dump";
const MAGIC: &[u8] = b"SLUICE-KV 1\n";
/// Largest key or payload accepted when reading, so a corrupt length cannot
/// make the plugin allocate without bound.
const MAX_FIELD_BYTES: u32 = 512 << 20;

fn io_error(e: io::Error) -> Error {
    Error::Internal(format!("backup artifact `{KEYS_ARTIFACT}`: {e}"))
}

/// Writes the header.
pub fn write_header(out: &mut impl Write) -> Result<(), Error> {
    out.write_all(MAGIC).map_err(io_error)
}

/// Appends one key.
pub fn write_key(out: &mut impl Write, d: &Dumped) -> Result<(), Error> {
    let len = |n: usize| {
        u32::try_from(n)
            .map(u32::to_le_bytes)
            .map_err(|_| Error::Internal(format!("key `{}` is too large to back up", d.key)))
    };
    out.write_all(&len(d.key.len())?).map_err(io_error)?;
    out.write_all(d.key.as_bytes()).map_err(io_error)?;
    out.write_all(&len(d.payload.len())?).map_err(io_error)?;
    out.write_all(&d.payload).map_err(io_error)?;
    match d.expire_at_ms {
        Some(at) => {
            out.write_all(&[1]).map_err(io_error)?;
            out.write_all(&at.to_le_bytes()).map_err(io_error)
        }
        None => out.write_all(&[0]).map_err(io_error),
    }
}

/// Reads keys back, in order.
pub struct KeyReader<R> {
    input: R,
}

impl<R: Read> KeyReader<R> {
    /// Checks the header.
    pub fn new(mut input: R) -> Result<Self, Error> {
        let mut magic = [0u8; MAGIC.len()];
        input.read_exact(&mut magic).map_err(invalid)?;
        if magic != MAGIC {
            return Err(Error::BackupInvalid(format!(
                "`{KEYS_ARTIFACT}` is not a sluice key backup (bad header)"
            )));
        }
        Ok(KeyReader { input })
    }

    /// The next key, or `None` at the end.
    pub fn next_key(&mut self) -> Result<Option<Dumped>, Error> {
        let mut len = [0u8; 4];
        match self.input.read(&mut len[..1]).map_err(invalid)? {
            0 => return Ok(None),
            _ => self.input.read_exact(&mut len[1..]).map_err(invalid)?,
        }
        let key = String::from_utf8(self.field(u32::from_le_bytes(len))?).map_err(|_| {
            Error::BackupInvalid(format!("`{KEYS_ARTIFACT}` holds a key that is not UTF-8"))
        })?;
        self.input.read_exact(&mut len).map_err(invalid)?;
        let payload = self.field(u32::from_le_bytes(len))?;
        let mut flag = [0u8; 1];
        self.input.read_exact(&mut flag).map_err(invalid)?;
        let expire_at_ms = match flag[0] {
            0 => None,
            1 => {
                let mut at = [0u8; 8];
                self.input.read_exact(&mut at).map_err(invalid)?;
                Some(u64::from_le_bytes(at))
            }
            other => {
                return Err(Error::BackupInvalid(format!(
                    "`{KEYS_ARTIFACT}`: expiry flag {other} for key `{key}`"
                )))
            }
        };
        Ok(Some(Dumped {
            key,
            payload,
            expire_at_ms,
        }))
    }

    fn field(&mut self, n: u32) -> Result<Vec<u8>, Error> {
        if n > MAX_FIELD_BYTES {
            return Err(Error::BackupInvalid(format!(
                "`{KEYS_ARTIFACT}`: a field of {n} bytes is implausible"
            )));
        }
        let mut buf = vec![0u8; n as usize];
        self.input.read_exact(&mut buf).map_err(invalid)?;
        Ok(buf)
    }
}

fn invalid(e: io::Error) -> Error {
    Error::BackupInvalid(format!("`{KEYS_ARTIFACT}` is truncated or unreadable: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_truncation_is_caught() {
        let keys = [
            Dumped {
                key: "a".into(),
                payload: vec![1, 2, 3],
                expire_at_ms: None,
            },
            Dumped {
                key: "b:é".into(),
                payload: vec![],
                expire_at_ms: Some(1_900_000_000_000),
            },
        ];
        let mut out = Vec::new();
        write_header(&mut out).unwrap();
        for k in &keys {
            write_key(&mut out, k).unwrap();
        }
        let mut r = KeyReader::new(&out[..]).unwrap();
        assert_eq!(r.next_key().unwrap().as_ref(), Some(&keys[0]));
        assert_eq!(r.next_key().unwrap().as_ref(), Some(&keys[1]));
        assert_eq!(r.next_key().unwrap(), None);
        let mut r = KeyReader::new(&out[..out.len() - 3]).unwrap();
        r.next_key().unwrap();
        assert!(matches!(r.next_key(), Err(Error::BackupInvalid(_))));
        assert!(KeyReader::new(&b"nope"[..]).is_err());
    }
}
