//! sluice's row encoding: how row batches cross the host boundary.
//!
//! A batch is `width` values per row, row after row, each value a tag byte
//! followed by its payload:
//!
//! | tag | value   | payload                                   |
//! |-----|---------|-------------------------------------------|
//! | 0   | null    | none                                      |
//! | 1   | integer | 8 bytes, little-endian two's complement   |
//! | 2   | real    | 8 bytes, little-endian IEEE-754 bits      |
//! | 3   | text    | 4-byte little-endian length, UTF-8 bytes  |
//! | 4   | blob    | 4-byte little-endian length, bytes        |
//!
//! One byte list crosses the boundary per batch — one copy, instead of an
//! allocation and a guest call per value — and a batch can be forwarded
//! (read from one statement, written by another) without being decoded.
//! This module is plain Rust: the host and plugins share it.

use std::fmt;

/// Tag bytes.
const NULL: u8 = 0;
const INTEGER: u8 = 1;
const REAL: u8 = 2;
const TEXT: u8 = 3;
const BLOB: u8 = 4;

/// A value borrowed from an encoded batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    /// SQL NULL.
    Null,
    /// A 64-bit integer.
    Integer(i64),
    /// A 64-bit float.
    Real(f64),
    /// UTF-8 text.
    Text(&'a str),
    /// Bytes.
    Blob(&'a [u8]),
}

/// An encoded batch does not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Byte offset of the problem.
    pub offset: usize,
    /// What is wrong.
    pub message: &'static str,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "malformed row batch at byte {}: {}",
            self.offset, self.message
        )
    }
}

impl std::error::Error for DecodeError {}

/// Appends values to an encoded batch.
#[derive(Debug, Clone, Default)]
pub struct Encoder {
    data: Vec<u8>,
}

impl Encoder {
    /// An empty batch with room for `bytes`.
    pub fn with_capacity(bytes: usize) -> Self {
        Encoder {
            data: Vec::with_capacity(bytes),
        }
    }

    /// Appends one value.
    pub fn push(&mut self, value: ValueRef<'_>) {
        match value {
            ValueRef::Null => self.data.push(NULL),
            ValueRef::Integer(i) => {
                self.data.push(INTEGER);
                self.data.extend_from_slice(&i.to_le_bytes());
            }
            ValueRef::Real(r) => {
                self.data.push(REAL);
                self.data.extend_from_slice(&r.to_bits().to_le_bytes());
            }
            ValueRef::Text(t) => self.push_bytes(TEXT, t.as_bytes()),
            ValueRef::Blob(b) => self.push_bytes(BLOB, b),
        }
    }

    fn push_bytes(&mut self, tag: u8, bytes: &[u8]) {
        let len = u32::try_from(bytes.len()).expect("a value is smaller than 4 GiB");
        self.data.push(tag);
        self.data.extend_from_slice(&len.to_le_bytes());
        self.data.extend_from_slice(bytes);
    }

    /// Bytes encoded so far.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether nothing was encoded.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The encoded bytes.
    pub fn finish(self) -> Vec<u8> {
        self.data
    }
}

/// Reads values from an encoded batch, in order.
#[derive(Debug, Clone)]
pub struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    /// A decoder over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Decoder { data, pos: 0 }
    }

    /// Whether every value was read.
    pub fn is_done(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.data.len())
            .ok_or(DecodeError {
                offset: self.pos,
                message: "value runs past the end of the batch",
            })?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn eight(&mut self) -> Result<[u8; 8], DecodeError> {
        Ok(self.take(8)?.try_into().expect("took 8 bytes"))
    }

    /// The next value, or `None` at the end.
    pub fn next_value(&mut self) -> Result<Option<ValueRef<'a>>, DecodeError> {
        if self.is_done() {
            return Ok(None);
        }
        let at = self.pos;
        let tag = self.take(1)?[0];
        Ok(Some(match tag {
            NULL => ValueRef::Null,
            INTEGER => ValueRef::Integer(i64::from_le_bytes(self.eight()?)),
            REAL => ValueRef::Real(f64::from_bits(u64::from_le_bytes(self.eight()?))),
            TEXT | BLOB => {
                let len =
                    u32::from_le_bytes(self.take(4)?.try_into().expect("took 4 bytes")) as usize;
                let bytes = self.take(len)?;
                if tag == BLOB {
                    ValueRef::Blob(bytes)
                } else {
                    ValueRef::Text(std::str::from_utf8(bytes).map_err(|_| DecodeError {
                        offset: at,
                        message: "text is not UTF-8",
                    })?)
                }
            }
            _ => {
                return Err(DecodeError {
                    offset: at,
                    message: "unknown value tag",
                })
            }
        }))
    }

    /// Fills `row` with the next `width` values; `false` at the end.
    pub fn next_row(
        &mut self,
        width: usize,
        row: &mut Vec<ValueRef<'a>>,
    ) -> Result<bool, DecodeError> {
        row.clear();
        if self.is_done() {
            return Ok(false);
        }
        for _ in 0..width {
            match self.next_value()? {
                Some(v) => row.push(v),
                None => {
                    return Err(DecodeError {
                        offset: self.pos,
                        message: "the batch ends inside a row",
                    })
                }
            }
        }
        Ok(true)
    }
}

/// Calls `f` with each row of an encoded batch.
pub fn for_each_row<'a>(
    data: &'a [u8],
    width: usize,
    mut f: impl FnMut(&[ValueRef<'a>]),
) -> Result<usize, DecodeError> {
    let mut decoder = Decoder::new(data);
    let mut row = Vec::with_capacity(width);
    let mut rows = 0;
    if width == 0 {
        return Ok(0);
    }
    while decoder.next_row(width, &mut row)? {
        f(&row);
        rows += 1;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let values = [
            ValueRef::Null,
            ValueRef::Integer(-42),
            ValueRef::Integer(i64::MAX),
            ValueRef::Real(0.1),
            ValueRef::Real(f64::NEG_INFINITY),
            ValueRef::Text(""),
            ValueRef::Text("señal ✓"),
            ValueRef::Blob(&[0, 255, 7]),
        ];
        let mut e = Encoder::default();
        for v in values {
            e.push(v);
        }
        let data = e.finish();
        let mut d = Decoder::new(&data);
        for v in values {
            assert_eq!(d.next_value().unwrap(), Some(v));
        }
        assert_eq!(d.next_value().unwrap(), None);
    }

    #[test]
    fn rows_are_split_by_width() {
        let mut e = Encoder::default();
        for i in 0..6 {
            e.push(ValueRef::Integer(i));
        }
        let data = e.finish();
        let mut seen = Vec::new();
        let rows = for_each_row(&data, 3, |row| seen.push(row.to_vec())).unwrap();
        assert_eq!(rows, 2);
        assert_eq!(
            seen[1],
            vec![
                ValueRef::Integer(3),
                ValueRef::Integer(4),
                ValueRef::Integer(5)
            ]
        );
    }

    #[test]
    fn malformed_batches_are_errors_not_panics() {
        let cases: [(&[u8], &str); 4] = [
            (&[9], "unknown value tag"),
            (&[1, 0, 0], "value runs past the end of the batch"),
            (
                &[3, 5, 0, 0, 0, b'a'],
                "value runs past the end of the batch",
            ),
            (&[3, 1, 0, 0, 0, 0xff], "text is not UTF-8"),
        ];
        for (data, message) in cases {
            let err = Decoder::new(data).next_value().unwrap_err();
            assert_eq!(err.message, message, "{data:?}");
        }
        // a row cut short
        let mut e = Encoder::default();
        e.push(ValueRef::Null);
        let data = e.finish();
        let err = for_each_row(&data, 2, |_| {}).unwrap_err();
        assert_eq!(err.message, "the batch ends inside a row");
    }
}
