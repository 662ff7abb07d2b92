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

impl SqlValue {
    /// Bytes this value occupies, for batch size limits.
    pub fn weight(&self) -> usize {
        match self {
            SqlValue::Text(t) => 16 + t.len(),
            SqlValue::Blob(b) => 16 + b.len(),
            _ => 16,
        }
    }
}

/// Rows in row-major order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rows {
    /// Column names.
    pub columns: Vec<String>,
    /// Values per row.
    pub width: usize,
    /// All values, row after row.
    pub values: Vec<SqlValue>,
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
