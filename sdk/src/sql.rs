//! SQL access to the step's target through the host's `sql` capability.
//!
//! Rows cross the host boundary in batches, encoded (see [`crate::row`]):
//! [`Connection::cursor`] streams large results batch by batch,
//! [`Connection::execute_batch`] sends many parameter rows in one call, and
//! [`for_each_row`] reads a batch as typed values without copying them.

use crate::__private::bindings::sluice::plugin::sql as wit;
use crate::row::{Encoder, ValueRef};
use crate::Error;

pub use wit::{QueryResult, RowBatch, Value};

/// Rows fetched per host call by [`Cursor`] unless told otherwise: large
/// enough that call overhead vanishes, small enough to bound guest memory.
pub const DEFAULT_BATCH_ROWS: u32 = 8192;

/// A connection to one target, with the access the step was granted for the
/// current phase.
pub struct Connection {
    inner: wit::Connection,
}

impl Connection {
    /// Opens the named target (normally [`StepContext::target`](crate::StepContext)).
    pub fn open(target: &str) -> Result<Self, Error> {
        Ok(Connection {
            inner: wit::open(target)?,
        })
    }

    /// Runs a query and returns all its rows (bounded by the host).
    pub fn query(&self, statement: &str, params: &[Value]) -> Result<Rows, Error> {
        let result = self.inner.query(statement, params)?;
        Ok(Rows {
            columns: result.columns,
            batch: result.rows,
        })
    }

    /// Runs a query expected to return one row; returns its first column.
    pub fn query_value(&self, statement: &str, params: &[Value]) -> Result<Value, Error> {
        let rows = self.query(statement, params)?;
        let mut decoder = crate::row::Decoder::new(&rows.batch.data);
        match decoder.next_value() {
            Ok(Some(v)) => Ok(to_owned(v)),
            Ok(None) => Err(Error::PreconditionFailed(format!(
                "query returned no rows: {statement}"
            ))),
            Err(e) => Err(Error::Internal(format!("row batch from the host: {e}"))),
        }
    }

    /// Runs a query returning one integer (for example `SELECT count(*) …`).
    pub fn query_i64(&self, statement: &str, params: &[Value]) -> Result<i64, Error> {
        match self.query_value(statement, params)? {
            Value::Integer(i) => Ok(i),
            Value::Real(r) => Ok(r as i64),
            Value::Null => Ok(0),
            other => Err(Error::PreconditionFailed(format!(
                "expected an integer from `{statement}`, got {other:?}"
            ))),
        }
    }

    /// Runs a query returning one number as `f64`.
    pub fn query_f64(&self, statement: &str, params: &[Value]) -> Result<f64, Error> {
        match self.query_value(statement, params)? {
            Value::Integer(i) => Ok(i as f64),
            Value::Real(r) => Ok(r),
            Value::Null => Ok(0.0),
            other => Err(Error::PreconditionFailed(format!(
                "expected a number from `{statement}`, got {other:?}"
            ))),
        }
    }

    /// Opens a cursor that yields the query's rows in batches.
    pub fn cursor(&self, statement: &str, params: &[Value]) -> Result<Cursor, Error> {
        let inner = self.inner.open_cursor(statement, params)?;
        let columns = inner.columns();
        Ok(Cursor {
            inner,
            columns,
            batch_rows: DEFAULT_BATCH_ROWS,
        })
    }

    /// Runs one statement; returns the number of rows changed.
    pub fn execute(&self, statement: &str, params: &[Value]) -> Result<u64, Error> {
        self.inner.execute(statement, params)
    }

    /// Runs `statement` once per row of `rows` (prepared once); returns the
    /// number of rows changed.
    pub fn execute_batch(&self, statement: &str, rows: &RowBatch) -> Result<u64, Error> {
        self.inner.execute_batch(statement, rows)
    }

    /// Runs `;`-separated statements without parameters.
    pub fn execute_script(&self, script: &str) -> Result<(), Error> {
        self.inner.execute_script(script)
    }

    /// Starts a bulk read (`COPY … TO STDOUT`, PostgreSQL): the data streams
    /// out as bytes, whole rows per chunk, with no host call per value.
    pub fn copy_out(&self, statement: &str) -> Result<CopyReader, Error> {
        Ok(CopyReader {
            inner: self.inner.copy_out(statement)?,
        })
    }

    /// Starts a bulk write (`COPY … FROM STDIN`, PostgreSQL).
    pub fn copy_in(&self, statement: &str) -> Result<CopyWriter, Error> {
        Ok(CopyWriter {
            inner: self.inner.copy_in(statement)?,
        })
    }

    /// Runs `f` inside a transaction: committed when `f` succeeds, rolled
    /// back when it fails.
    pub fn transaction<T>(&self, f: impl FnOnce(&Self) -> Result<T, Error>) -> Result<T, Error> {
        self.inner.begin()?;
        match f(self) {
            Ok(value) => {
                self.inner.commit()?;
                Ok(value)
            }
            Err(e) => {
                // The original error matters more than a failed rollback.
                let _ = self.inner.rollback();
                Err(e)
            }
        }
    }
}

/// All rows of a small query.
#[derive(Debug, Clone)]
pub struct Rows {
    /// Column names.
    pub columns: Vec<String>,
    /// The rows, encoded.
    pub batch: RowBatch,
}

impl Rows {
    /// The rows as owned values.
    pub fn values(&self) -> Result<Vec<Vec<Value>>, Error> {
        let mut out = Vec::with_capacity(self.len());
        for_each_row(&self.batch, |row| {
            out.push(row.iter().map(|v| to_owned(*v)).collect())
        })?;
        Ok(out)
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        row_count(&self.batch)
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Calls `f` with each row of a batch, borrowed; returns the number of rows.
pub fn for_each_row<'a>(
    batch: &'a RowBatch,
    f: impl FnMut(&[ValueRef<'a>]),
) -> Result<usize, Error> {
    crate::row::for_each_row(&batch.data, batch.width as usize, f)
        .map_err(|e| Error::Internal(format!("row batch from the host: {e}")))
}

/// Number of rows in a batch.
pub fn row_count(batch: &RowBatch) -> usize {
    batch.rows as usize
}

/// Encodes rows of owned values into a batch (for `execute_batch`).
pub fn batch_of(width: usize, rows: &[Vec<Value>]) -> RowBatch {
    let mut encoder = Encoder::default();
    for row in rows {
        debug_assert_eq!(row.len(), width, "every row has `width` values");
        for value in row {
            encoder.push(borrow(value));
        }
    }
    RowBatch {
        width: width as u32,
        rows: rows.len() as u32,
        data: encoder.finish(),
    }
}

/// A borrowed view of an owned value.
pub fn borrow(value: &Value) -> ValueRef<'_> {
    match value {
        Value::Null => ValueRef::Null,
        Value::Integer(i) => ValueRef::Integer(*i),
        Value::Real(r) => ValueRef::Real(*r),
        Value::Text(t) => ValueRef::Text(t),
        Value::Blob(b) => ValueRef::Blob(b),
    }
}

/// An owned copy of a borrowed value.
pub fn to_owned(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(r) => Value::Real(r),
        ValueRef::Text(t) => Value::Text(t.to_string()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

/// Rows of a running query, fetched from the host in batches.
pub struct Cursor {
    inner: wit::Cursor,
    columns: Vec<String>,
    batch_rows: u32,
}

impl Cursor {
    /// Column names.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Sets how many rows each host call fetches.
    pub fn with_batch_rows(mut self, rows: u32) -> Self {
        self.batch_rows = rows.max(1);
        self
    }

    /// The next batch, or `None` at the end.
    pub fn next_batch(&mut self) -> Result<Option<RowBatch>, Error> {
        let batch = self.inner.next_batch(self.batch_rows)?;
        Ok(if batch.rows == 0 { None } else { Some(batch) })
    }
}

/// Bytes fetched per host call by [`CopyReader::next_chunk`].
pub const COPY_CHUNK_BYTES: u32 = 1 << 20;

/// The byte stream of a `COPY … TO STDOUT`.
pub struct CopyReader {
    inner: wit::CopyReader,
}

impl CopyReader {
    /// The next chunk (whole rows), or `None` at the end.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, Error> {
        let chunk = self.inner.read(COPY_CHUNK_BYTES)?;
        Ok((!chunk.is_empty()).then_some(chunk))
    }
}

/// The byte stream of a `COPY … FROM STDIN`; dropping it unfinished aborts
/// the copy.
pub struct CopyWriter {
    inner: wit::CopyWriter,
}

impl CopyWriter {
    /// Sends bytes; rows may span calls.
    pub fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        self.inner.write(data)
    }

    /// Ends the copy; returns the number of rows loaded.
    pub fn finish(self) -> Result<u64, Error> {
        self.inner.finish()
    }
}

/// Quotes an SQL identifier (`"name"`, doubling inner quotes).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Integer(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Blob(v)
    }
}
