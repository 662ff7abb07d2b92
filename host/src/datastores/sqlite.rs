//! SQLite: connection sessions served by a worker thread, and fingerprints.
//!
//! rusqlite is blocking and a statement borrows its connection, so each
//! session is a thread that owns its connection and serves requests sent over
//! a channel. That lets a cursor stay open across host calls (its statement
//! lives on the worker's stack) and keeps the async runtime free while SQLite
//! works. An `InterruptHandle` stops a long statement when a phase runs out
//! of time.

use std::collections::BTreeMap;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, InterruptHandle, OpenFlags};
use sluice_sdk::checksum::TableChecksum;
use sluice_sdk::row::{Decoder, Encoder, ValueRef as RowValue};
use tokio::sync::oneshot;

use super::{DatastoreError, Fingerprint, Rows, SqlValue, TableFingerprint};
use crate::plan::{Access, SqliteFiles};

/// How long a statement waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// plan attaches to it attached under their schema names. Read-only is
    /// enforced by SQLite itself, for the attached files too: the database
    /// (whose open flags attached files inherit) is opened read-only and
    /// `query_only` is set.
    pub fn open(
        files: &SqliteFiles,
        access: Access,
        scope: Option<TableScope>,
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
        // The table scope is enforced by SQLite as each statement is prepared.
        if let Some(scope) = scope {
            conn.authorizer(Some(move |ctx: AuthContext<'_>| {
                if scope.allows(ctx.database_name, &ctx.action) {
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
            .spawn(move || serve(conn, inbox))
            .map_err(|e| DatastoreError::host("SLUICE_THREAD", e.to_string()))?;
        Ok(Session {
            requests,
            interrupt,
        })
    }

    /// A handle that interrupts this session's running statement.
    pub fn interrupter(&self) -> Interrupter {
        Interrupter(self.interrupt.clone())
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
fn attach(conn: &Connection, files: &SqliteFiles, access: Access) -> Result<(), DatastoreError> {
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
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The tables a connection may touch, checked by SQLite's authorizer for
/// every table a statement reads, writes, creates or drops. A plain name
/// (`clientes`) is a table of the database itself (or a temporary one);
/// `schema.table` (`sqitch.changes`) a table of a file the plan attaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableScope {
    tables: Option<Vec<String>>,
}

/// Pragmas that only describe the schema or set per-connection behaviour a
/// plugin legitimately needs; every other pragma is refused.
const ALLOWED_PRAGMAS: &[&str] = &[
    "table_info",
    "table_xinfo",
    "table_list",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
    "foreign_key_check",
    "defer_foreign_keys",
    "integrity_check",
    "quick_check",
];

impl TableScope {
    /// A scope of `tables`; `None` allows every table.
    pub fn new(tables: Option<Vec<String>>) -> Self {
        TableScope { tables }
    }

    fn table(&self, database: Option<&str>, name: &str) -> bool {
        // The schema catalogue is readable so plugins can describe tables;
        // user SQL cannot write it (writable_schema is refused below).
        if name.starts_with("sqlite_") {
            return true;
        }
        // `SELECT … FROM pragma_table_info('t')`: the pragma's own allowlist.
        if let Some(pragma) = name.strip_prefix("pragma_") {
            return ALLOWED_PRAGMAS
                .iter()
                .any(|p| p.eq_ignore_ascii_case(pragma));
        }
        let database = database.unwrap_or("main");
        let own = database.eq_ignore_ascii_case("main") || database.eq_ignore_ascii_case("temp");
        match &self.tables {
            None => true,
            Some(tables) => tables.iter().any(|t| match t.split_once('.') {
                Some((schema, table)) => {
                    schema.eq_ignore_ascii_case(database) && table.eq_ignore_ascii_case(name)
                }
                None => own && t.eq_ignore_ascii_case(name),
            }),
        }
    }

    /// Whether an action a statement performs on `database` (the schema name
    /// SQLite's authorizer reports: `main`, `temp` or an attached one) is
    /// within the scope.
    pub fn allows(&self, database: Option<&str>, action: &AuthAction<'_>) -> bool {
        use AuthAction as A;
        match action {
            A::Read { table_name, .. }
            | A::Insert { table_name }
            | A::Update { table_name, .. }
            | A::Delete { table_name }
            | A::CreateTable { table_name }
            | A::CreateTempTable { table_name }
            | A::DropTable { table_name }
            | A::DropTempTable { table_name }
            | A::CreateIndex { table_name, .. }
            | A::CreateTempIndex { table_name, .. }
            | A::DropIndex { table_name, .. }
            | A::DropTempIndex { table_name, .. }
            | A::CreateTrigger { table_name, .. }
            | A::CreateTempTrigger { table_name, .. }
            | A::DropTrigger { table_name, .. }
            | A::DropTempTrigger { table_name, .. }
            | A::AlterTable { table_name, .. }
            | A::Analyze { table_name } => self.table(database, table_name),
            // A view is only as wide as the tables it reads, which are checked
            // when it is used.
            A::CreateView { .. }
            | A::CreateTempView { .. }
            | A::DropView { .. }
            | A::DropTempView { .. } => true,
            A::Select
            | A::Recursive
            | A::Transaction { .. }
            | A::Savepoint { .. }
            | A::Function { .. }
            | A::Reindex { .. } => true,
            A::Pragma { pragma_name, .. } => ALLOWED_PRAGMAS
                .iter()
                .any(|p| p.eq_ignore_ascii_case(pragma_name)),
            // Other databases and virtual tables are outside any scope.
            _ => false,
        }
    }
}

/// The worker loop: plain requests, and a nested loop while a cursor is open.
fn serve(conn: Connection, inbox: mpsc::Receiver<Request>) {
    while let Ok(request) = inbox.recv() {
        match request {
            Request::OpenCursor { sql, params, reply } => {
                serve_cursor(&conn, &inbox, sql, params, reply)
            }
            Request::NextBatch { reply, .. } => {
                let _ = reply.send(Err(DatastoreError::host(
                    "SLUICE_NO_CURSOR",
                    "no cursor is open",
                )));
            }
            Request::CloseCursor => {}
            other => serve_plain(&conn, other),
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
fn row_value(v: ValueRef<'_>) -> RowValue<'_> {
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

/// Turns a rusqlite error into a datastore error with SQLite's code name.
pub fn error(e: rusqlite::Error) -> DatastoreError {
    match &e {
        rusqlite::Error::SqliteFailure(failure, message) => DatastoreError {
            code: code_name(failure.extended_code),
            message: message.clone().unwrap_or_else(|| failure.to_string()),
        },
        other => DatastoreError::host("SQLITE_MISUSE", other.to_string()),
    }
}

fn code_name(extended: i32) -> String {
    use rusqlite::ffi;
    let name = match extended {
        ffi::SQLITE_CONSTRAINT_UNIQUE => "SQLITE_CONSTRAINT_UNIQUE",
        ffi::SQLITE_CONSTRAINT_PRIMARYKEY => "SQLITE_CONSTRAINT_PRIMARYKEY",
        ffi::SQLITE_CONSTRAINT_NOTNULL => "SQLITE_CONSTRAINT_NOTNULL",
        ffi::SQLITE_CONSTRAINT_FOREIGNKEY => "SQLITE_CONSTRAINT_FOREIGNKEY",
        ffi::SQLITE_CONSTRAINT_CHECK => "SQLITE_CONSTRAINT_CHECK",
        ffi::SQLITE_READONLY => "SQLITE_READONLY",
        ffi::SQLITE_READONLY_DBMOVED => "SQLITE_READONLY_DBMOVED",
        ffi::SQLITE_INTERRUPT => "SQLITE_INTERRUPT",
        ffi::SQLITE_BUSY => "SQLITE_BUSY",
        ffi::SQLITE_LOCKED => "SQLITE_LOCKED",
        ffi::SQLITE_FULL => "SQLITE_FULL",
        ffi::SQLITE_IOERR => "SQLITE_IOERR",
        ffi::SQLITE_CORRUPT => "SQLITE_CORRUPT",
        ffi::SQLITE_CANTOPEN => "SQLITE_CANTOPEN",
        ffi::SQLITE_ERROR => "SQLITE_ERROR",
        ffi::SQLITE_MISMATCH => "SQLITE_MISMATCH",
        ffi::SQLITE_TOOBIG => "SQLITE_TOOBIG",
        ffi::SQLITE_RANGE => "SQLITE_RANGE",
        ffi::SQLITE_AUTH => "SQLITE_AUTH",
        _ => return format!("SQLITE_{}", extended),
    };
    name.to_string()
}

/// Fingerprints a database: the host's own, plugin-independent measurement,
/// used to check a backup's claims and to prove a rollback restored the
/// pre-step state. The schema (every object's name and SQL) is always
/// covered, with every AUTOINCREMENT counter (`sqlite_sequence`); table
/// contents for `tables` only (all tables when `None`).
/// Attached files are covered alike, their objects and tables named
/// `schema.name`; one that does not exist counts as empty.
pub fn fingerprint(
    files: &SqliteFiles,
    tables: Option<&[String]>,
) -> Result<Fingerprint, DatastoreError> {
    use sha2::Digest;
    let (conn, schemas) = open_read_only(files)?;
    // One read transaction: a consistent view of all tables.
    conn.execute_batch("BEGIN").map_err(error)?;
    let mut schema = sha2::Sha256::default();
    let mut measured = Vec::new();
    // (type, qualified name, sql) of every object, then sorted.
    let mut lines: Vec<(String, String, String)> = Vec::new();
    for db in &schemas {
        let mut stmt = conn
            .prepare(&format!("SELECT type, name, coalesce(sql, '') FROM {}.sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name", quote(db)))
            .map_err(error)?;
        let mut rows = stmt.query([]).map_err(error)?;
        while let Some(row) = rows.next().map_err(error)? {
            let (kind, name, sql): (String, String, String) = (
                row.get(0).map_err(error)?,
                row.get(1).map_err(error)?,
                row.get(2).map_err(error)?,
            );
            let full = qualified(db, &name);
            if kind == "table" && tables.is_none_or(|only| only.contains(&full)) {
                measured.push((full.clone(), format!("{}.{}", quote(db), quote(&name))));
            }
            lines.push((kind, full, sql));
        }
        drop(rows);
        drop(stmt);
        // AUTOINCREMENT counters: what the next row's id will be, as a
        // sequence's value is on PostgreSQL. A restore that brings a table's
        // rows back but not its counter is not the pre-step state.
        let has_sequences: bool = conn
            .query_row(
                &format!(
                    "SELECT count(*) > 0 FROM {}.sqlite_master WHERE name = 'sqlite_sequence'",
                    quote(db)
                ),
                [],
                |r| r.get(0),
            )
            .map_err(error)?;
        if has_sequences {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT name, CAST(seq AS TEXT) FROM {}.sqlite_sequence",
                    quote(db)
                ))
                .map_err(error)?;
            let mut rows = stmt.query([]).map_err(error)?;
            while let Some(row) = rows.next().map_err(error)? {
                let (name, seq): (String, Option<String>) =
                    (row.get(0).map_err(error)?, row.get(1).map_err(error)?);
                lines.push((
                    "autoincrement".to_string(),
                    qualified(db, &name),
                    seq.unwrap_or_default(),
                ));
            }
        }
    }
    lines.sort_unstable();
    for (kind, full, sql) in &lines {
        for part in [kind, full, sql] {
            schema.update((part.len() as u64).to_le_bytes());
            schema.update(part.as_bytes());
        }
    }
    let objects = crate::datastores::postgres::schema_digest::summarize(
        lines
            .iter()
            .map(|(kind, full, sql)| (format!("{kind} {full}"), sql.as_str())),
    );
    let mut out = BTreeMap::new();
    for (table, sql_name) in measured {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM {sql_name}"))
            .map_err(error)?;
        let width = stmt.column_count();
        let mut rows = stmt.query([]).map_err(error)?;
        let mut checksum = TableChecksum::new();
        while let Some(row) = rows.next().map_err(error)? {
            // Text as the plugin sees it (made UTF-8), so both checksums agree.
            let mut texts = Vec::with_capacity(width);
            let mut values = Vec::with_capacity(width);
            for i in 0..width {
                let v = row.get_ref(i).map_err(error)?;
                texts.push(match v {
                    ValueRef::Text(t) => Some(String::from_utf8_lossy(t)),
                    _ => None,
                });
                values.push(v);
            }
            checksum.add_row(values.iter().zip(&texts).map(|(v, t)| match t {
                Some(t) => RowValue::Text(t),
                None => row_value(*v),
            }));
        }
        out.insert(
            table,
            TableFingerprint {
                rows: checksum.rows(),
                checksum: checksum.hex(),
            },
        );
    }
    Ok(Fingerprint {
        schema: hex::encode(schema.finalize()),
        objects,
        tables: out,
    })
}

/// Estimates, read-only, the bytes a backup of `tables` (every table when
/// `None`) will hold: each table's pages as `dbstat` counts them; without
/// `dbstat`, the whole file (`page_count * page_size`) when unscoped, else
/// the stored length of every value. Tables that do not exist count 0.
/// Attached files count alike (tables named `schema.table`).
pub fn estimate_backup(
    files: &SqliteFiles,
    tables: Option<&[String]>,
) -> Result<u64, DatastoreError> {
    let (conn, schemas) = open_read_only(files)?;
    conn.execute_batch("BEGIN").map_err(error)?;
    let mut names: Vec<(String, String)> = Vec::new();
    for db in &schemas {
        let mut stmt = conn
            .prepare(&format!(
                "SELECT name FROM {}.sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
                quote(db)
            ))
            .map_err(error)?;
        let all = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(error)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(error)?;
        names.extend(
            all.into_iter()
                .filter(|t| tables.is_none_or(|only| only.contains(&qualified(db, t))))
                .map(|t| (db.clone(), t)),
        );
    }
    let dbstat = |db: &str, table: &str| -> rusqlite::Result<i64> {
        conn.query_row(
            "SELECT coalesce(sum(pgsize), 0) FROM dbstat(?1) WHERE name = ?2",
            [db, table],
            |r| r.get(0),
        )
    };
    let mut total: u64 = 0;
    for (db, table) in &names {
        let bytes = match dbstat(db, table) {
            Ok(n) => n,
            Err(_) if tables.is_none() => {
                // No dbstat: the whole files are the honest upper bound.
                let mut whole: u64 = 0;
                for db in &schemas {
                    let n = conn
                        .query_row(
                            "SELECT page_count * page_size FROM pragma_page_count(?1), pragma_page_size(?1)",
                            [db],
                            |r| r.get::<_, i64>(0),
                        )
                        .map_err(error)?;
                    whole = whole.saturating_add(n.max(0) as u64);
                }
                return Ok(whole);
            }
            Err(_) => stored_length(&conn, db, table).map_err(error)?,
        };
        total = total.saturating_add(bytes.max(0) as u64);
    }
    Ok(total)
}

/// A read-only connection to the database with its existing attached files
/// attached; returns it and the schema names to read (`main` first).
fn open_read_only(files: &SqliteFiles) -> Result<(Connection, Vec<String>), DatastoreError> {
    let conn = Connection::open_with_flags(
        &files.path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(error)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(error)?;
    let mut schemas = vec!["main".to_string()];
    for (schema, path) in &files.attach {
        // A file not created yet holds nothing: no objects, no tables.
        if path.is_file() {
            conn.execute(
                &format!("ATTACH DATABASE ?1 AS {}", quote(schema)),
                [path.to_string_lossy()],
            )
            .map_err(error)?;
            schemas.push(schema.clone());
        }
    }
    Ok((conn, schemas))
}

/// How a table of schema `db` is named in scopes, manifests and fingerprints:
/// plain in the database itself, `schema.table` in an attached file.
fn qualified(db: &str, table: &str) -> String {
    if db == "main" {
        table.to_string()
    } else {
        format!("{db}.{table}")
    }
}

/// Sum of the stored length of every value of `table` in schema `db`.
fn stored_length(conn: &Connection, db: &str, table: &str) -> rusqlite::Result<i64> {
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info(?1, ?2)")?
        .query_map([table, db], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if columns.is_empty() {
        return Ok(0);
    }
    let lengths: Vec<String> = columns
        .iter()
        .map(|c| format!("coalesce(length(CAST({} AS BLOB)), 0)", quote(c)))
        .collect();
    conn.query_row(
        &format!(
            "SELECT coalesce(sum({}), 0) FROM {}.{}",
            lengths.join(" + "),
            quote(db),
            quote(table)
        ),
        [],
        |r| r.get(0),
    )
}

#[cfg(test)]
mod scope_tests {
    use super::*;
    use rusqlite::hooks::AuthAction as A;

    #[test]
    fn table_scope_allows_only_its_tables() {
        let scoped = TableScope::new(Some(vec!["clientes".into()]));
        let all = TableScope::new(None);
        let cases: Vec<(A<'_>, bool, bool)> = vec![
            (
                A::Read {
                    table_name: "clientes",
                    column_name: "id",
                },
                true,
                true,
            ),
            (
                A::Read {
                    table_name: "customers",
                    column_name: "id",
                },
                false,
                true,
            ),
            (
                A::Insert {
                    table_name: "CLIENTES",
                },
                true,
                true,
            ),
            (
                A::Delete {
                    table_name: "customers",
                },
                false,
                true,
            ),
            (
                A::CreateTable {
                    table_name: "other",
                },
                false,
                true,
            ),
            (
                A::DropTable {
                    table_name: "clientes",
                },
                true,
                true,
            ),
            (
                A::CreateIndex {
                    index_name: "i",
                    table_name: "customers",
                },
                false,
                true,
            ),
            (
                A::Read {
                    table_name: "sqlite_master",
                    column_name: "sql",
                },
                true,
                true,
            ),
            (
                A::Pragma {
                    pragma_name: "table_info",
                    pragma_value: Some("t"),
                },
                true,
                true,
            ),
            (
                A::Pragma {
                    pragma_name: "writable_schema",
                    pragma_value: Some("1"),
                },
                false,
                false,
            ),
            (
                A::Pragma {
                    pragma_name: "query_only",
                    pragma_value: Some("0"),
                },
                false,
                false,
            ),
            (
                A::Attach {
                    filename: "/etc/passwd",
                },
                false,
                false,
            ),
            (A::Select, true, true),
            (
                A::Read {
                    table_name: "pragma_table_info",
                    column_name: "name",
                },
                true,
                true,
            ),
            (
                A::Read {
                    table_name: "pragma_writable_schema",
                    column_name: "x",
                },
                false,
                false,
            ),
        ];
        for (action, in_scope, in_all) in cases {
            assert_eq!(
                scoped.allows(Some("main"), &action),
                in_scope,
                "scoped {action:?}"
            );
            assert_eq!(all.allows(Some("main"), &action), in_all, "all {action:?}");
        }
    }
}

#[cfg(test)]
mod attach_tests {
    use super::*;

    /// `app.db` with a table `t`, and `sqitch.db` with `changes` holding one row.
    fn files(dir: &std::path::Path) -> SqliteFiles {
        let app = dir.join("app.db");
        let reg = dir.join("sqitch.db");
        Connection::open(&app)
            .unwrap()
            .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        Connection::open(&reg)
            .unwrap()
            .execute_batch("CREATE TABLE changes (id TEXT); INSERT INTO changes VALUES ('a');")
            .unwrap();
        let mut files = SqliteFiles::single(app);
        files.attach.insert("sqitch".into(), reg);
        files
    }

    fn scope(tables: &[&str]) -> Option<TableScope> {
        Some(TableScope::new(Some(
            tables.iter().map(|t| t.to_string()).collect(),
        )))
    }

    #[tokio::test]
    async fn declared_files_are_attached_and_nothing_else_can_be() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        let s = Session::open(&files, Access::ReadWrite, Some(TableScope::new(None))).unwrap();
        let rows = s
            .query("SELECT id FROM sqitch.changes".into(), vec![], 10)
            .await
            .unwrap();
        assert_eq!(rows.rows, 1);
        let other = dir.path().join("other.db");
        let err = s
            .script(format!("ATTACH DATABASE '{}' AS other", other.display()))
            .await
            .unwrap_err();
        assert!(err.code.starts_with("SQLITE_"), "{err}");
        assert!(
            !other.exists(),
            "a refused ATTACH created {}",
            other.display()
        );
        let err = s.script("DETACH DATABASE sqitch".into()).await.unwrap_err();
        assert!(err.code.starts_with("SQLITE_"), "{err}");

        // Without the authorizer, the attach slot limit alone refuses it.
        let s = Session::open(&files, Access::ReadWrite, None).unwrap();
        let err = s
            .script(format!("ATTACH DATABASE '{}' AS other", other.display()))
            .await
            .unwrap_err();
        assert!(err.message.contains("too many attached"), "{err}");

        // A target that declares no attachment gets none and may not attach.
        let single = SqliteFiles::single(files.path.clone());
        let s = Session::open(&single, Access::ReadWrite, None).unwrap();
        let err = s
            .query("SELECT id FROM sqitch.changes".into(), vec![], 10)
            .await
            .unwrap_err();
        assert!(err.message.contains("no such table"), "{err}");
        let err = s
            .script(format!(
                "ATTACH DATABASE '{}' AS sqitch",
                files.attach["sqitch"].display()
            ))
            .await
            .unwrap_err();
        assert!(err.message.contains("too many attached"), "{err}");
    }

    #[tokio::test]
    async fn read_only_sessions_cannot_write_attached_files() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        let s = Session::open(&files, Access::ReadOnly, Some(TableScope::new(None))).unwrap();
        for sql in [
            "INSERT INTO sqitch.changes VALUES ('b')",
            "CREATE TABLE sqitch.more (x)",
            "PRAGMA query_only = 0",
        ] {
            assert!(s.script(sql.into()).await.is_err(), "{sql} was allowed");
        }
        let after = fingerprint(&files, None).unwrap();
        assert_eq!(after.tables["sqitch.changes"].rows, 1);

        // A file not created yet: a read-only session sees an empty schema
        // and creates nothing; a read-write one creates the file.
        let mut missing = files.clone();
        let fresh = dir.path().join("fresh.db");
        missing.attach.insert("sqitch".into(), fresh.clone());
        let s = Session::open(&missing, Access::ReadOnly, None).unwrap();
        let rows = s
            .query(
                "SELECT count(*) FROM sqitch.sqlite_master".into(),
                vec![],
                1,
            )
            .await
            .unwrap();
        assert_eq!(rows.rows, 1);
        assert!(s.script("CREATE TABLE sqitch.x (y)".into()).await.is_err());
        assert!(!fresh.exists());
        let s = Session::open(&missing, Access::ReadWrite, None).unwrap();
        s.script("CREATE TABLE sqitch.x (y)".into()).await.unwrap();
        assert!(fresh.is_file());
    }

    #[tokio::test]
    async fn scopes_name_attached_tables_by_schema() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        let s = Session::open(&files, Access::ReadWrite, scope(&["t", "sqitch.changes"])).unwrap();
        s.script("INSERT INTO sqitch.changes VALUES ('b'); INSERT INTO t VALUES (2);".into())
            .await
            .unwrap();
        // `changes` alone is a table of the database itself, not the attached one.
        let s = Session::open(&files, Access::ReadWrite, scope(&["t", "changes"])).unwrap();
        assert!(s
            .script("INSERT INTO sqitch.changes VALUES ('c')".into())
            .await
            .is_err());
        assert!(s
            .script("CREATE TABLE sqitch.tags (x)".into())
            .await
            .is_err());
        // And `sqitch.t` is not the database's `t`.
        let s = Session::open(&files, Access::ReadWrite, scope(&["sqitch.t"])).unwrap();
        assert!(s.script("INSERT INTO t VALUES (3)".into()).await.is_err());
    }

    #[test]
    fn fingerprints_cover_attached_tables() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        let before = fingerprint(&files, None).unwrap();
        assert_eq!(
            before.tables.keys().collect::<Vec<_>>(),
            ["sqitch.changes", "t"]
        );
        // The database alone fingerprints as it always did.
        let alone = fingerprint(&SqliteFiles::single(files.path.clone()), None).unwrap();
        assert_ne!(alone.schema, before.schema);
        Connection::open(&files.attach["sqitch"])
            .unwrap()
            .execute_batch("UPDATE changes SET id = 'z'")
            .unwrap();
        let after = fingerprint(&files, None).unwrap();
        let differences = before.differences(&after);
        assert_eq!(differences.len(), 1, "{differences:?}");
        assert!(differences[0].contains("sqitch.changes"), "{differences:?}");
        let scoped = fingerprint(&files, Some(&["sqitch.changes".to_string()])).unwrap();
        assert_eq!(scoped.tables.keys().collect::<Vec<_>>(), ["sqitch.changes"]);
        assert!(estimate_backup(&files, Some(&["sqitch.changes".to_string()])).unwrap() > 0);
    }
}
