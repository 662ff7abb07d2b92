//! Order-independent table checksums.
//!
//! Each row is hashed (SHA-256 over a canonical encoding of its cells) and the
//! first 128 bits of the row hashes are summed modulo 2^128. The sum does not
//! depend on row order, so a table restored in another physical order has the
//! same checksum, while any changed, missing or extra row changes it. The host
//! uses the same code to fingerprint targets independently of plugins.

use sha2::{Digest, Sha256};

use crate::row::ValueRef;

/// Accumulates the checksum of a table, row by row.
#[derive(Debug, Clone, Default)]
pub struct TableChecksum {
    rows: u64,
    sum: u128,
    scratch: Vec<u8>,
}

impl TableChecksum {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one row.
    pub fn add_row<'a>(&mut self, cells: impl IntoIterator<Item = ValueRef<'a>>) {
        self.scratch.clear();
        for cell in cells {
            match cell {
                ValueRef::Null => self.scratch.push(0),
                ValueRef::Integer(i) => {
                    self.scratch.push(1);
                    self.scratch.extend_from_slice(&i.to_le_bytes());
                }
                ValueRef::Real(r) => {
                    self.scratch.push(2);
                    self.scratch.extend_from_slice(&r.to_bits().to_le_bytes());
                }
                ValueRef::Text(t) => {
                    self.scratch.push(3);
                    self.scratch
                        .extend_from_slice(&(t.len() as u64).to_le_bytes());
                    self.scratch.extend_from_slice(t.as_bytes());
                }
                ValueRef::Blob(b) => {
                    self.scratch.push(4);
                    self.scratch
                        .extend_from_slice(&(b.len() as u64).to_le_bytes());
                    self.scratch.extend_from_slice(b);
                }
            }
        }
        self.add_scratch();
    }

    /// Adds one row given as bytes in a datastore's own canonical text form
    /// (a line of PostgreSQL `COPY` text output, without its newline).
    pub fn add_encoded_row(&mut self, bytes: &[u8]) {
        self.scratch.clear();
        self.scratch.push(5);
        self.scratch.extend_from_slice(bytes);
        self.add_scratch();
    }

    /// Adds every row of a chunk of `COPY` text output: whole lines, each
    /// ending in a newline (an empty line is a row of one empty string).
    pub fn add_copy_lines(&mut self, chunk: &[u8]) {
        let Some(body) = chunk.strip_suffix(b"\n") else {
            debug_assert!(chunk.is_empty(), "COPY chunks end at a row boundary");
            return;
        };
        for line in body.split(|b| *b == b'\n') {
            self.add_encoded_row(line);
        }
    }

    fn add_scratch(&mut self) {
        let digest = Sha256::digest(&self.scratch);
        let mut head = [0u8; 16];
        head.copy_from_slice(&digest[..16]);
        self.sum = self.sum.wrapping_add(u128::from_le_bytes(head));
        self.rows += 1;
    }

    /// Rows added so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The sum of the row hashes: the checksum as a number, so the
    /// checksums of two states can be subtracted (modulo 2^128).
    pub fn sum(&self) -> u128 {
        self.sum
    }

    /// The checksum as 32 hex digits.
    pub fn hex(&self) -> String {
        format!("{:032x}", self.sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum(rows: &[&[ValueRef<'_>]]) -> String {
        let mut c = TableChecksum::new();
        for row in rows {
            c.add_row(row.iter().copied());
        }
        c.hex()
    }

    #[test]
    fn order_does_not_matter_but_content_does() {
        let a: &[ValueRef] = &[ValueRef::Integer(1), ValueRef::Text("ana")];
        let b: &[ValueRef] = &[ValueRef::Integer(2), ValueRef::Text("bob")];
        let b2: &[ValueRef] = &[ValueRef::Integer(2), ValueRef::Text("bo")];
        assert_eq!(checksum(&[a, b]), checksum(&[b, a]));
        assert_ne!(checksum(&[a, b]), checksum(&[a, b2]));
        assert_ne!(checksum(&[a, b]), checksum(&[a]));
        assert_ne!(checksum(&[a, b]), checksum(&[a, b, b]));
    }

    #[test]
    fn cell_types_are_distinguished() {
        assert_ne!(
            checksum(&[&[ValueRef::Integer(1)]]),
            checksum(&[&[ValueRef::Real(1.0)]])
        );
        assert_ne!(
            checksum(&[&[ValueRef::Text("x")]]),
            checksum(&[&[ValueRef::Blob(b"x")]])
        );
        assert_ne!(checksum(&[&[ValueRef::Null]]), checksum(&[&[]]));
        assert_ne!(
            checksum(&[&[ValueRef::Text("ab"), ValueRef::Text("c")]]),
            checksum(&[&[ValueRef::Text("a"), ValueRef::Text("bc")]])
        );
    }
}
