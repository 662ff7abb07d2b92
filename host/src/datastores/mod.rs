//! Native datastore drivers behind the capabilities. They know nothing of
//! WebAssembly: capabilities translate between WIT types and these.
//!
//! Each driver is one folder (`sqlite/`, `postgres/`, `redis/`) that
//! implements [`Datastore`] (and [`SqlSession`] for SQL datastores), and one
//! line in `registry.rs`; everything else reaches it through [`driver`].

mod driver;
mod kv_session;
pub mod postgres;
pub mod redis;
mod registry;
mod sql_session;
pub mod sqlite;
mod urls;

pub use driver::{CopyError, Datastore, RehearsalCopy, ScratchSource, ScratchTarget, TargetState};
pub use kv_session::{DumpedKey, KvResult, KvSession};
pub use registry::driver;
pub use sql_session::{
    CopyInStream, CopyOutStream, Interrupt, SessionOptions, SqlCursor, SqlSession,
};

use std::collections::BTreeMap;

use crate::plan::{SqliteFiles, TargetKind};
use crate::secret::Secret;

/// Where a target is reached, resolved from the plan (secrets read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A database file, with the files attached to it.
    File(SqliteFiles),
    /// A server URL.
    Url(Secret),
}

/// The host's own, plugin-independent measurement of a target: the schema
/// and the content of `scope` (tables, or key prefixes for key-value
/// targets). Used to check a backup's claims and to prove a rollback.
pub async fn fingerprint(
    kind: TargetKind,
    endpoint: &Endpoint,
    scope: Vec<String>,
) -> Result<Fingerprint, DatastoreError> {
    driver(kind).fingerprint(endpoint, scope).await
}

/// Estimates, read-only, how many bytes a backup of `scope` will hold:
/// tables of SQL targets, key prefixes of key-value targets; `None` (or an
/// empty scope) means the whole target. Measured by the host, never by a
/// plugin, for `sluice plan`.
pub async fn estimate_backup(
    kind: TargetKind,
    endpoint: &Endpoint,
    scope: Option<Vec<String>>,
) -> Result<u64, DatastoreError> {
    let scope = scope.filter(|s| !s.is_empty());
    driver(kind).estimate_backup(endpoint, scope).await
}

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

/// Row count and checksum of one table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableFingerprint {
    /// Rows.
    pub rows: u64,
    /// Order-independent checksum of the rows (see `sluice_sdk::checksum`).
    pub checksum: String,
}

/// The state of a whole database: schema and every table's content.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fingerprint {
    /// sha256 over every schema object (type, name, sql), sorted by name.
    pub schema: String,
    /// Every user table.
    pub tables: BTreeMap<String, TableFingerprint>,
}

impl Fingerprint {
    /// What differs from `other`, one line per difference.
    pub fn differences(&self, other: &Fingerprint) -> Vec<String> {
        let mut out = Vec::new();
        if self.schema != other.schema {
            out.push("schema differs".to_string());
        }
        for (name, t) in &self.tables {
            match other.tables.get(name) {
                None => out.push(format!("table `{name}` is missing")),
                Some(o) if o != t => out.push(format!(
                    "table `{name}`: {} rows (checksum {}) instead of {} rows (checksum {})",
                    o.rows, o.checksum, t.rows, t.checksum
                )),
                Some(_) => {}
            }
        }
        for name in other
            .tables
            .keys()
            .filter(|n| !self.tables.contains_key(*n))
        {
            out.push(format!("table `{name}` exists but did not before"));
        }
        out
    }
}
