//! SQL access to the step's target through the host's `sql` capability.
//!
//! Rows cross the host boundary in batches: [`Connection::cursor`] streams
//! large results batch by batch and [`Connection::execute_batch`] sends many
//! parameter rows in one call.

use crate::__private::bindings::sluice::plugin::sql as wit;
use crate::Error;

pub use wit::{QueryResult, RowBatch, Value};

/// Rows fetched per host call by [`Cursor`] unless told otherwise: large
/// enough that call overhead vanishes, small enough to bound guest memory.
pub const DEFAULT_BATCH_ROWS: u32 = 2048;

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

    /// Runs a query expected to return one row with one column.
    pub fn query_value(&self, statement: &str, params: &[Value]) -> Result<Value, Error> {
        let rows = self.query(statement, params)?;
        rows.batch.values.into_iter().next().ok_or_else(|| {
            Error::PreconditionFailed(format!("query returned no rows: {statement}"))
        })
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
    /// The rows, row-major.
    pub batch: RowBatch,
}

impl Rows {
    /// Iterates rows as slices of values.
    pub fn iter(&self) -> impl Iterator<Item = &[Value]> {
        rows_of(&self.batch)
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

/// Iterates the rows of a batch as slices.
pub fn rows_of(batch: &RowBatch) -> impl Iterator<Item = &[Value]> {
    let width = (batch.width as usize).max(1);
    batch.values.chunks(width)
}

/// Number of rows in a batch.
pub fn row_count(batch: &RowBatch) -> usize {
    if batch.width == 0 {
        0
    } else {
        batch.values.len() / batch.width as usize
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
        Ok(if batch.values.is_empty() {
            None
        } else {
            Some(batch)
        })
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
