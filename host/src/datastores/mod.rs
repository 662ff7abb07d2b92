//! Native datastore drivers behind the capabilities. They know nothing of
//! WebAssembly: capabilities translate between WIT types and these.

pub mod sqlite;

/// One SQL value, as drivers exchange it.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// NULL.
    Null,
    /// A 64-bit integer.
    Integer(i64),
    /// A 64-bit float.
    Real(f64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

/// Rows in sluice's row encoding (`sluice_sdk::row`), as they cross the
/// plugin boundary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rows {
    /// Column names (for `query`; empty for cursor batches).
    pub columns: Vec<String>,
    /// Values per row.
    pub width: usize,
    /// Number of rows.
    pub rows: usize,
    /// The encoded values.
    pub data: Vec<u8>,
}

/// An error from a datastore, with the driver's code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DatastoreError {
    /// Driver code, such as `SQLITE_CONSTRAINT_UNIQUE`.
    pub code: String,
    /// Driver message.
    pub message: String,
}

impl DatastoreError {
    /// An error that is not the datastore's own (misuse, closed connection).
    pub fn host(code: &str, message: impl Into<String>) -> Self {
        DatastoreError {
            code: code.to_string(),
            message: message.into(),
        }
    }
}
