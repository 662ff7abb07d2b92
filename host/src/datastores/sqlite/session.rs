//! SQLite sessions: connections served by a worker thread.
//!
//! rusqlite is blocking and a statement borrows its connection, so each
//! session is a thread that owns its connection and serves requests sent over
//! a channel. That lets a cursor stay open across host calls (its statement
//! lives on the worker's stack) and keeps the async runtime free while SQLite
//! works. An `InterruptHandle` stops a long statement when a phase runs out
//! of time.

use std::sync::{mpsc, Arc};
use std::time::Duration;

use rusqlite::hooks::{AuthContext, Authorization};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, InterruptHandle, OpenFlags};
use sluice_sdk::row::{Decoder, Encoder, ValueRef as RowValue};
use tokio::sync::oneshot;

use super::{error, TableScope};
use crate::datastores::changes::ChangeCapture;
use crate::datastores::{DatastoreError, Rows, SqlValue};
use crate::plan::{Access, SqliteFiles};

/// How long a statement waits for another connection's lock before failing.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

type Reply<T> = oneshot::Sender<Result<T, DatastoreError>>;

enum Request {
    Query {
        sql: String,
        params: Vec<SqlValue>,
        max_rows: usize,
        reply: Reply<Rows>,
    },
    OpenCursor {
        sql: String,
        params: Vec<SqlValue>,
        reply: Reply<Vec<String>>,
    },
    NextBatch {
        max_rows: usize,
        max_bytes: usize,
        reply: Reply<Rows>,
    },
    CloseCursor,
    Execute {
        sql: String,
        params: Vec<SqlValue>,
        reply: Reply<u64>,
    },
    ExecuteBatch {
        sql: String,
        batch: Rows,
        reply: Reply<u64>,
    },
    Script {
        sql: String,
        reply: Reply<()>,
    },
}

/// An open connection, served by its own thread.
pub struct Session {
    requests: mpsc::Sender<Request>,
    interrupt: Arc<InterruptHandle>,
    access: Access,
}

/// Stops the statement a session is running, from any thread.
#[derive(Clone)]
pub struct Interrupter(Arc<InterruptHandle>);

impl Interrupter {
    /// Interrupts the running statement, if any.
    pub fn interrupt(&self) {
        self.0.interrupt();
    }
}

impl Session {
    /// Opens the target's database file with `access`, with the files the
    /// plan attaches to it attached under their schema names; a read-write
    /// session records the rows it changes into `capture`, when given. Read-only is
    /// enforced by SQLite itself, for the attached files too: the database
    /// (whose open flags attached files inherit) is opened read-only and
    /// `query_only` is set.
    pub fn open(
        files: &SqliteFiles,
        access: Access,
        scope: Option<TableScope>,
        capture: Option<ChangeCapture>,
    ) -> Result<Session, DatastoreError> {
        let path = files.path.as_path();
        if !path.is_file() {
            return Err(DatastoreError::host(
                "SQLITE_CANTOPEN",
                format!("database file {} does not exist", path.display()),
            ));
        }
        let flags = match access {
            Access::ReadOnly => OpenFlags::SQLITE_OPEN_READ_ONLY,
            Access::ReadWrite => OpenFlags::SQLITE_OPEN_READ_WRITE,
        } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(error)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(error)?;
        attach(&conn, files, access)?;
        if access == Access::ReadOnly {
            conn.pragma_update(None, "query_only", true)
                .map_err(error)?;
        }
        // No other database file may be reached from this connection: ATTACH
        // (and VACUUM INTO, which attaches) fail for want of a slot beyond the
        // ones the plan declared, which the host filled above.
        conn.set_limit(
            rusqlite::limits::Limit::SQLITE_LIMIT_ATTACHED,
            files.attach.len() as i32,
        )
        .map_err(error)?;
        // The change log's triggers are the host's: made before the
        // authorizer, which would refuse them to a plugin.
        let recorder = capture
            .filter(|_| access == Access::ReadWrite)
            .and_then(|capture| super::changes::record(&conn, capture, scope.as_ref()));
        // The table scope is enforced by SQLite as each statement is prepared.
        if let Some(scope) = scope {
            conn.authorizer(Some(move |ctx: AuthContext<'_>| {
                if scope.allows(ctx.database_name, &ctx.action)
                    && super::changes::log_untouched(ctx.accessor, &ctx.action)
                {
                    Authorization::Allow
                } else {
                    Authorization::Deny
                }
            }));
        }
        let interrupt = Arc::new(conn.get_interrupt_handle());
        let (requests, inbox) = mpsc::channel();
        std::thread::Builder::new()
            .name("sluice-sqlite".into())
            .spawn(move || {
                serve(&conn, inbox);
                if let Some(recorder) = recorder {
                    recorder.finish(&conn);
                }
            })
            .map_err(|e| DatastoreError::host("SLUICE_THREAD", e.to_string()))?;
        Ok(Session {
            requests,
            interrupt,
            access,
        })
    }

    /// A handle that interrupts this session's running statement.
    pub fn interrupter(&self) -> Interrupter {
        Interrupter(self.interrupt.clone())
    }

    /// The access it was opened with.
    pub fn access(&self) -> Access {
        self.access
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, DatastoreError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(make(reply))
            .map_err(|_| DatastoreError::host("SLUICE_CLOSED", "the connection is closed"))?;
        answer.await.map_err(|_| {
            DatastoreError::host("SLUICE_CLOSED", "the connection closed during the call")
        })?
    }

    /// Runs a query; fails if it yields more than `max_rows` rows.
    pub async fn query(
        &self,
        sql: String,
        params: Vec<SqlValue>,
        max_rows: usize,
    ) -> Result<Rows, DatastoreError> {
        self.ask(|reply| Request::Query {
            sql,
            params,
            max_rows,
            reply,
        })
        .await
    }

    /// Opens the session's cursor; returns its column names.
    pub async fn open_cursor(
        &self,
        sql: String,
        params: Vec<SqlValue>,
    ) -> Result<Vec<String>, DatastoreError> {
        self.ask(|reply| Request::OpenCursor { sql, params, reply })
            .await
    }

    /// The cursor's next rows, bounded by count and bytes; empty at the end.
    pub async fn next_batch(
        &self,
        max_rows: usize,
        max_bytes: usize,
    ) -> Result<Rows, DatastoreError> {
        self.ask(|reply| Request::NextBatch {
            max_rows,
            max_bytes,
            reply,
        })
        .await
    }

    /// Closes the cursor, if one is open.
    pub fn close_cursor(&self) {
        let _ = self.requests.send(Request::CloseCursor);
    }

    /// Runs one statement; returns rows changed.
    pub async fn execute(&self, sql: String, params: Vec<SqlValue>) -> Result<u64, DatastoreError> {
        self.ask(|reply| Request::Execute { sql, params, reply })
            .await
    }

    /// Runs one statement per parameter row; returns rows changed.
    pub async fn execute_batch(&self, sql: String, batch: Rows) -> Result<u64, DatastoreError> {
        self.ask(|reply| Request::ExecuteBatch { sql, batch, reply })
            .await
    }

    /// Runs a `;`-separated script.
    pub async fn script(&self, sql: String) -> Result<(), DatastoreError> {
        self.ask(|reply| Request::Script { sql, reply }).await
    }
}

/// Attaches the plan's files to `conn` under their schema names. A file that
/// does not exist yet is created empty for a read-write session (as SQLite
/// creates the database of `ATTACH`); a read-only session sees an empty
/// in-memory database under that name instead, so nothing is created by a
/// phase that may not write, and `query_only` still refuses writes to it.
pub(super) fn attach(conn: &Connection, files: &SqliteFiles, access: Access) -> Result<(), DatastoreError> {
    for (schema, path) in &files.attach {
        let file = if path.is_file() {
            path.to_string_lossy().into_owned()
        } else if access == Access::ReadWrite {
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(|e| {
                    DatastoreError::host(
                        "SQLITE_CANTOPEN",
                        format!(
                            "creating attached database {schema} = {}: {e}",
                            path.display()
                        ),
                    )
                })?;
            path.to_string_lossy().into_owned()
        } else {
            ":memory:".to_string()
        };
        conn.execute(&format!("ATTACH DATABASE ?1 AS {}", quote(schema)), [file])
            .map_err(|e| {
                let e = error(e);
                DatastoreError::host(
                    &e.code,
                    format!("attaching {schema} = {}: {}", path.display(), e.message),
                )
            })?;
    }
    Ok(())
}

/// `name` as a quoted SQL identifier.
/// A connection holding the write lock of the database and its attached
/// files (an open `BEGIN IMMEDIATE`), rolled back when dropped.
pub(super) fn hold_writers(files: &SqliteFiles) -> Result<Connection, DatastoreError> {
    let path = files.path.as_path();
    if !path.is_file() {
        return Err(DatastoreError::host(
            "SQLITE_CANTOPEN",
            format!("database file {} does not exist", path.display()),
        ));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(error)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(error)?;
    attach(&conn, files, Access::ReadOnly)?;
    conn.execute_batch("BEGIN IMMEDIATE").map_err(error)?;
    Ok(conn)
}

pub(super) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The worker loop: plain requests, and a nested loop while a cursor is open.
fn serve(conn: &Connection, inbox: mpsc::Receiver<Request>) {
    while let Ok(request) = inbox.recv() {
        match request {
            Request::OpenCursor { sql, params, reply } => {
                serve_cursor(conn, &inbox, sql, params, reply)
            }
            Request::NextBatch { reply, .. } => {
                let _ = reply.send(Err(DatastoreError::host(
                    "SLUICE_NO_CURSOR",
                    "no cursor is open",
                )));
            }
            Request::CloseCursor => {}
            other => serve_plain(conn, other),
        }
    }
}

fn serve_cursor(
    conn: &Connection,
    inbox: &mpsc::Receiver<Request>,
    sql: String,
    params: Vec<SqlValue>,
    reply: Reply<Vec<String>>,
) {
    let mut stmt = match conn.prepare(&sql) {
        Ok(stmt) => stmt,
        Err(e) => {
            let _ = reply.send(Err(error(e)));
            return;
        }
    };
    let columns: Vec<String> = stmt.column_names().into_iter().map(String::from).collect();
    let width = columns.len();
    let mut rows = match stmt.query(rusqlite::params_from_iter(params.iter())) {
        Ok(rows) => rows,
        Err(e) => {
            let _ = reply.send(Err(error(e)));
            return;
        }
    };
    let _ = reply.send(Ok(columns));
    let mut finished = false;
    while let Ok(request) = inbox.recv() {
        match request {
            Request::NextBatch {
                max_rows,
                max_bytes,
                reply,
            } => {
                let mut encoder = Encoder::with_capacity(max_bytes.min(1 << 20));
                let mut count = 0;
                let mut result = Ok(());
                while !finished && count < max_rows && encoder.len() < max_bytes {
                    match rows.next() {
                        Ok(Some(row)) => {
                            if let Err(e) = encode_row(&mut encoder, row, width) {
                                result = Err(e);
                                break;
                            }
                            count += 1;
                        }
                        Ok(None) => finished = true,
                        Err(e) => {
                            result = Err(error(e));
                            break;
                        }
                    }
                }
                let batch = Rows {
                    columns: Vec::new(),
                    width,
                    rows: count,
                    data: encoder.finish(),
                };
                let _ = reply.send(result.map(|()| batch));
            }
            Request::CloseCursor => return,
            Request::OpenCursor { reply, .. } => {
                let _ = reply.send(Err(DatastoreError::host(
                    "SLUICE_CURSOR_OPEN",
                    "a cursor is already open on this connection; finish or drop it first",
                )));
            }
            other => serve_plain(conn, other),
        }
    }
}

fn serve_plain(conn: &Connection, request: Request) {
    match request {
        Request::Query {
            sql,
            params,
            max_rows,
            reply,
        } => {
            let _ = reply.send(query(conn, &sql, &params, max_rows));
        }
        Request::Execute { sql, params, reply } => {
            let result = conn
                .prepare_cached(&sql)
                .and_then(|mut stmt| stmt.execute(rusqlite::params_from_iter(params.iter())))
                .map(|n| n as u64)
                .map_err(error);
            let _ = reply.send(result);
        }
        Request::ExecuteBatch { sql, batch, reply } => {
            let _ = reply.send(execute_batch(conn, &sql, &batch));
        }
        Request::Script { sql, reply } => {
            let _ = reply.send(conn.execute_batch(&sql).map_err(error));
        }
        Request::OpenCursor { .. } | Request::NextBatch { .. } | Request::CloseCursor => {
            unreachable!("cursor requests are served by serve/serve_cursor")
        }
    }
}

fn query(
    conn: &Connection,
    sql: &str,
    params: &[SqlValue],
    max_rows: usize,
) -> Result<Rows, DatastoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(error)?;
    let columns: Vec<String> = stmt.column_names().into_iter().map(String::from).collect();
    let width = columns.len();
    let mut rows = stmt
        .query(rusqlite::params_from_iter(params.iter()))
        .map_err(error)?;
    let mut encoder = Encoder::default();
    let mut count = 0;
    while let Some(row) = rows.next().map_err(error)? {
        count += 1;
        if count > max_rows {
            return Err(DatastoreError::host(
                "SLUICE_TOO_MANY_ROWS",
                format!("the query returned more than {max_rows} rows; read it with a cursor"),
            ));
        }
        encode_row(&mut encoder, row, width)?;
    }
    Ok(Rows {
        columns,
        width,
        rows: count,
        data: encoder.finish(),
    })
}

/// Appends one SQLite row to an encoded batch, borrowing SQLite's buffers.
fn encode_row(
    encoder: &mut Encoder,
    row: &rusqlite::Row<'_>,
    width: usize,
) -> Result<(), DatastoreError> {
    for i in 0..width {
        match row.get_ref(i).map_err(error)? {
            // Text that is not UTF-8 (SQLite does not check) is made so.
            ValueRef::Text(t) => encoder.push(RowValue::Text(&String::from_utf8_lossy(t))),
            other => encoder.push(row_value(other)),
        }
    }
    Ok(())
}

/// A SQLite value as a row value; text must be handled by the caller, which
/// has to make it UTF-8 first.
pub(super) fn row_value(v: ValueRef<'_>) -> RowValue<'_> {
    match v {
        ValueRef::Null => RowValue::Null,
        ValueRef::Integer(i) => RowValue::Integer(i),
        ValueRef::Real(r) => RowValue::Real(r),
        ValueRef::Text(t) | ValueRef::Blob(t) => RowValue::Blob(t),
    }
}

fn execute_batch(conn: &Connection, sql: &str, batch: &Rows) -> Result<u64, DatastoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(error)?;
    let width = batch.width;
    if stmt.parameter_count() != width {
        return Err(DatastoreError::host(
            "SLUICE_BAD_BATCH",
            format!(
                "the statement takes {} parameters but the rows have {width} values",
                stmt.parameter_count()
            ),
        ));
    }
    let bad =
        |e: sluice_sdk::row::DecodeError| DatastoreError::host("SLUICE_BAD_BATCH", e.to_string());
    let mut decoder = Decoder::new(&batch.data);
    let mut row = Vec::with_capacity(width);
    let (mut changed, mut rows) = (0u64, 0usize);
    while decoder.next_row(width, &mut row).map_err(bad)? {
        for (i, value) in row.iter().enumerate() {
            stmt.raw_bind_parameter(i + 1, BoundValue(*value))
                .map_err(error)?;
        }
        changed += stmt.raw_execute().map_err(error)? as u64;
        rows += 1;
    }
    if rows != batch.rows {
        return Err(DatastoreError::host(
            "SLUICE_BAD_BATCH",
            format!("the batch says {} rows but holds {rows}", batch.rows),
        ));
    }
    Ok(changed)
}

/// Binds a decoded value without copying it.
struct BoundValue<'a>(RowValue<'a>);

impl rusqlite::ToSql for BoundValue<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::ToSqlOutput::Borrowed;
        Ok(Borrowed(match self.0 {
            RowValue::Null => ValueRef::Null,
            RowValue::Integer(i) => ValueRef::Integer(i),
            RowValue::Real(r) => ValueRef::Real(r),
            RowValue::Text(t) => ValueRef::Text(t.as_bytes()),
            RowValue::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

impl rusqlite::ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::ToSqlOutput::Borrowed;
        Ok(Borrowed(match self {
            SqlValue::Null => ValueRef::Null,
            SqlValue::Integer(i) => ValueRef::Integer(*i),
            SqlValue::Real(r) => ValueRef::Real(*r),
            SqlValue::Text(t) => ValueRef::Text(t.as_bytes()),
            SqlValue::Blob(b) => ValueRef::Blob(b),
        }))
    }
}
