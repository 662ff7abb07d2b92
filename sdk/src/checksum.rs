//! Order-independent table checksums.
//!
//! Each row is hashed (SHA-256 over a canonical encoding of its cells) and the
//! first 128 bits of the row hashes are summed modulo 2^128. The sum does not
//! depend on row order, so a table restored in another physical order has the
//! same checksum, while any changed, missing or extra row changes it. The host
//! uses the same code to fingerprint targets independently of plugins.

use sha2::{Digest, Sha256};

/// One cell of a row, borrowed.
#[derive(Debug, Clone, Copy)]
pub enum Cell<'a> {
    /// SQL NULL.
    Null,
    /// An integer.
    Integer(i64),
    /// A float (hashed by its bits).
    Real(f64),
    /// UTF-8 text, as bytes.
    Text(&'a [u8]),
    /// Raw bytes.
    Blob(&'a [u8]),
}

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
    pub fn add_row<'a>(&mut self, cells: impl IntoIterator<Item = Cell<'a>>) {
        self.scratch.clear();
        for cell in cells {
            match cell {
                Cell::Null => self.scratch.push(0),
                Cell::Integer(i) => {
                    self.scratch.push(1);
                    self.scratch.extend_from_slice(&i.to_le_bytes());
                }
                Cell::Real(r) => {
                    self.scratch.push(2);
                    self.scratch.extend_from_slice(&r.to_bits().to_le_bytes());
                }
                Cell::Text(t) => {
                    self.scratch.push(3);
                    self.scratch
                        .extend_from_slice(&(t.len() as u64).to_le_bytes());
                    self.scratch.extend_from_slice(t);
                }
                Cell::Blob(b) => {
                    self.scratch.push(4);
                    self.scratch
                        .extend_from_slice(&(b.len() as u64).to_le_bytes());
                    self.scratch.extend_from_slice(b);
                }
            }
        }
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

    /// The checksum as 32 hex digits.
    pub fn hex(&self) -> String {
        format!("{:032x}", self.sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum(rows: &[&[Cell<'_>]]) -> String {
        let mut c = TableChecksum::new();
        for row in rows {
            c.add_row(row.iter().copied());
        }
        c.hex()
    }

    #[test]
    fn order_does_not_matter_but_content_does() {
        let a: &[Cell] = &[Cell::Integer(1), Cell::Text(b"ana")];
        let b: &[Cell] = &[Cell::Integer(2), Cell::Text(b"bob")];
        let b2: &[Cell] = &[Cell::Integer(2), Cell::Text(b"bo")];
        assert_eq!(checksum(&[a, b]), checksum(&[b, a]));
        assert_ne!(checksum(&[a, b]), checksum(&[a, b2]));
        assert_ne!(checksum(&[a, b]), checksum(&[a]));
        assert_ne!(checksum(&[a, b]), checksum(&[a, b, b]));
    }

    #[test]
    fn cell_types_are_distinguished() {
        assert_ne!(
            checksum(&[&[Cell::Integer(1)]]),
            checksum(&[&[Cell::Real(1.0)]])
        );
        assert_ne!(
            checksum(&[&[Cell::Text(b"x")]]),
            checksum(&[&[Cell::Blob(b"x")]])
        );
        assert_ne!(checksum(&[&[Cell::Null]]), checksum(&[&[]]));
        assert_ne!(
            checksum(&[&[Cell::Text(b"ab"), Cell::Text(b"c")]]),
            checksum(&[&[Cell::Text(b"a"), Cell::Text(b"bc")]])
        );
    }
}
