//! The session trait the `sql` capability talks to: one open connection of
//! a SQL datastore, whatever the driver.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::changes::ChangeCapture;
use super::{DatastoreError, Rows, SqlValue};
use crate::plan::Access;

/// How a session is opened for one phase of one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOptions {
    /// Access mode, enforced by the datastore.
    pub access: Access,
    /// Tables the plugin may touch (`None`: all), enforced by the datastore.
    pub tables: Option<Vec<String>>,
    /// Longest a single statement may run (servers enforce it themselves).
    pub statement_timeout: Duration,
    /// Whether SQLite's authorizer enforces the table scope and schema rules
    /// (off only in tests of what the other layers catch alone).
    pub authorize: bool,
    /// The snapshot a read-only session reads in (a held backup's).
    pub snapshot: Option<String>,
    /// Where a read-write session records the rows it changes (migrate's,
    /// on datastores that [capture changes](super::Datastore::captures_changes)).
    pub capture: Option<ChangeCapture>,
}

/// Stops the statement a session is running, from any thread.
pub trait Interrupt: Send + Sync {
    /// Interrupts the running statement, if any (best effort).
    fn interrupt(&self);
}

/// One open connection of a SQL datastore.
pub trait SqlSession: Send + Sync {
    /// A handle that stops this session's running statement.
    fn interrupter(&self) -> Arc<dyn Interrupt>;

    /// Runs a query; fails if it yields more than `max_rows` rows.
    fn query(
        &self,
        statement: String,
        params: Vec<SqlValue>,
        max_rows: usize,
    ) -> BoxFuture<'_, Result<Rows, DatastoreError>>;

    /// Opens a cursor over a query's rows.
    fn open_cursor(
        self: Arc<Self>,
        statement: String,
        params: Vec<SqlValue>,
    ) -> BoxFuture<'static, Result<Box<dyn SqlCursor>, DatastoreError>>;

    /// Runs one statement; returns rows changed.
    fn execute(
        &self,
        statement: String,
        params: Vec<SqlValue>,
    ) -> BoxFuture<'_, Result<u64, DatastoreError>>;

    /// Runs one statement per parameter row; returns rows changed.
    fn execute_batch(
        &self,
        statement: String,
        rows: Rows,
    ) -> BoxFuture<'_, Result<u64, DatastoreError>>;

    /// Runs a `;`-separated script.
    fn script(&self, script: String) -> BoxFuture<'_, Result<(), DatastoreError>>;

    /// Starts a transaction.
    fn begin(&self) -> BoxFuture<'_, Result<(), DatastoreError>>;

    /// Commits the transaction.
    fn commit(&self) -> BoxFuture<'_, Result<(), DatastoreError>>;

    /// Rolls the transaction back.
    fn rollback(&self) -> BoxFuture<'_, Result<(), DatastoreError>>;

    /// Whether `copy_out` and `copy_in` are served (bulk `COPY` streams).
    fn supports_copy(&self) -> bool {
        false
    }

    /// Starts a `COPY … TO STDOUT` stream.
    fn copy_out(
        &self,
        statement: String,
    ) -> BoxFuture<'_, Result<Box<dyn CopyOutStream>, DatastoreError>> {
        let _ = statement;
        Box::pin(async { Err(no_copy()) })
    }

    /// Starts a `COPY … FROM STDIN` stream (aborted if dropped unfinished).
    fn copy_in(
        &self,
        statement: String,
    ) -> BoxFuture<'_, Result<Box<dyn CopyInStream>, DatastoreError>> {
        let _ = statement;
        Box::pin(async { Err(no_copy()) })
    }
}

fn no_copy() -> DatastoreError {
    DatastoreError::host("SLUICE_UNSUPPORTED", "this datastore has no COPY streams")
}

/// An open cursor (closed when dropped).
pub trait SqlCursor: Send {
    /// Its column names.
    fn columns(&self) -> &[String];

    /// The next rows, bounded by count and bytes; empty at the end.
    fn next_batch(
        &mut self,
        max_rows: usize,
        max_bytes: usize,
    ) -> BoxFuture<'_, Result<Rows, DatastoreError>>;
}

/// A running `COPY … TO STDOUT`.
pub trait CopyOutStream: Send {
    /// The next bytes, at most `max_bytes`; empty at the end.
    fn read(&mut self, max_bytes: usize) -> BoxFuture<'_, Result<Vec<u8>, DatastoreError>>;
}

/// A running `COPY … FROM STDIN`.
pub trait CopyInStream: Send {
    /// Sends bytes.
    fn write(&mut self, data: Vec<u8>) -> BoxFuture<'_, Result<(), DatastoreError>>;
    /// Ends the stream; returns rows copied.
    fn finish(&mut self) -> BoxFuture<'_, Result<u64, DatastoreError>>;
}
