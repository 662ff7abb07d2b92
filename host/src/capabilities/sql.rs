//! `sluice:plugin/sql`: connections to the step's granted targets.

use std::sync::{Arc, Mutex};

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use crate::datastores::sqlite::{Interrupter, Session, TableScope};
use crate::datastores::{DatastoreError, Endpoint, Rows, SqlValue};
use crate::plan::{Access, TargetKind};
use crate::runtime::bindings::sluice::plugin::sql::{self as wit, QueryResult, RowBatch, Value};
use crate::runtime::bindings::sluice::plugin::types::{DatastoreError as WitDatastoreError, Error};

/// Rows `query` may return at once: larger results must use a cursor, so a
/// plugin cannot make the host buffer a whole table.
pub const QUERY_MAX_ROWS: usize = 10_000;
/// Rows one `next-batch` call may return, whatever the plugin asks.
pub const BATCH_MAX_ROWS: usize = 65_536;
/// Encoded bytes one `next-batch` call may return (a batch stops after the
/// row that crosses it), so a batch of wide rows cannot exhaust guest memory.
pub const BATCH_MAX_BYTES: usize = 16 << 20;

/// Access to one target, granted to one phase of one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlGrant {
    /// Target name in the plan.
    pub target: String,
    /// Its kind.
    pub kind: TargetKind,
    /// Where it is reached.
    pub endpoint: Endpoint,
    /// Access mode, enforced by the datastore.
    pub access: Access,
    /// Tables the plugin may touch (`None`: all), enforced by the datastore.
    pub tables: Option<Vec<String>>,
}

impl SqlGrant {
    /// Whether this grant lets a plugin open `target`.
    pub fn allows(&self, target: &str) -> bool {
        self.target == target
    }
}

/// Interrupters of the sessions a store opened, so a phase that runs out of
/// time can stop the statement SQLite is running on its behalf.
#[derive(Clone, Default)]
pub struct SessionInterrupters(Arc<Mutex<Vec<Interrupter>>>);

impl SessionInterrupters {
    /// Interrupts every running statement.
    pub fn interrupt_all(&self) {
        for i in self.0.lock().expect("not poisoned").iter() {
            i.interrupt();
        }
    }

    fn push(&self, i: Interrupter) {
        self.0.lock().expect("not poisoned").push(i);
    }
}

/// State of the `sql` capability in one store.
pub struct SqlCapability {
    grant: Option<SqlGrant>,
    table: ResourceTable,
    interrupters: SessionInterrupters,
    authorize: bool,
}

impl SqlCapability {
    /// A capability serving `grant` (nothing when `None`).
    pub fn new(
        grant: Option<SqlGrant>,
        interrupters: SessionInterrupters,
        authorize: bool,
    ) -> Self {
        SqlCapability {
            grant,
            table: ResourceTable::new(),
            interrupters,
            authorize,
        }
    }
}

/// An open connection resource.
pub struct ConnectionHandle {
    session: Arc<Session>,
    access: Access,
}

/// An open cursor resource.
pub struct CursorHandle {
    session: Arc<Session>,
    columns: Vec<String>,
}

/// An open `COPY … TO STDOUT` stream.
pub struct CopyReaderHandle;

/// An open `COPY … FROM STDIN` stream.
pub struct CopyWriterHandle;

impl Drop for CursorHandle {
    fn drop(&mut self) {
        self.session.close_cursor();
    }
}

struct Sql;

impl HasData for Sql {
    type Data<'a> = &'a mut SqlCapability;
}

/// Adds `sql` to a linker.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut SqlCapability,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, Sql>(linker, get)
}

fn datastore(e: DatastoreError) -> Error {
    Error::Datastore(WitDatastoreError {
        code: e.code,
        message: e.message,
    })
}

fn to_sql(v: Value) -> SqlValue {
    match v {
        Value::Null => SqlValue::Null,
        Value::Integer(i) => SqlValue::Integer(i),
        Value::Real(r) => SqlValue::Real(r),
        Value::Text(t) => SqlValue::Text(t),
        Value::Blob(b) => SqlValue::Blob(b),
    }
}

fn batch(rows: Rows) -> RowBatch {
    RowBatch {
        width: rows.width as u32,
        rows: rows.rows as u32,
        data: rows.data,
    }
}

impl wit::Host for SqlCapability {
    async fn open(
        &mut self,
        target: String,
    ) -> wasmtime::Result<Result<Resource<ConnectionHandle>, Error>> {
        let Some(grant) = self.grant.as_ref().filter(|g| g.allows(&target)) else {
            return Ok(Err(Error::AccessDenied(format!(
                "this step is not granted target `{target}`{}",
                match &self.grant {
                    Some(g) => format!(" (it is granted `{}`)", g.target),
                    None => " (this phase has no datastore access)".into(),
                }
            ))));
        };
        let Endpoint::File(path) = &grant.endpoint else {
            return Ok(Err(Error::Unsupported(format!("{} targets are not wired yet", grant.kind.as_str()))));
        };
        let (path, access, scope) = (
            path.clone(),
            grant.access,
            self.authorize
                .then(|| TableScope::new(grant.tables.clone())),
        );
        let opened =
            tokio::task::spawn_blocking(move || Session::open(&path, access, scope)).await?;
        let session = match opened {
            Ok(s) => s,
            Err(e) => return Ok(Err(datastore(e))),
        };
        self.interrupters.push(session.interrupter());
        let handle = ConnectionHandle {
            session: Arc::new(session),
            access,
        };
        Ok(Ok(self.table.push(handle)?))
    }
}

impl wit::HostConnection for SqlCapability {
    async fn query(
        &mut self,
        conn: Resource<ConnectionHandle>,
        statement: String,
        params: Vec<Value>,
    ) -> wasmtime::Result<Result<QueryResult, Error>> {
        let session = self.table.get(&conn)?.session.clone();
        let params = params.into_iter().map(to_sql).collect();
        Ok(session
            .query(statement, params, QUERY_MAX_ROWS)
            .await
            .map(|rows| QueryResult {
                columns: rows.columns.clone(),
                rows: batch(rows),
            })
            .map_err(datastore))
    }

    async fn open_cursor(
        &mut self,
        conn: Resource<ConnectionHandle>,
        statement: String,
        params: Vec<Value>,
    ) -> wasmtime::Result<Result<Resource<CursorHandle>, Error>> {
        let session = self.table.get(&conn)?.session.clone();
        let params = params.into_iter().map(to_sql).collect();
        match session.open_cursor(statement, params).await {
            Ok(columns) => Ok(Ok(self.table.push(CursorHandle { session, columns })?)),
            Err(e) => Ok(Err(datastore(e))),
        }
    }

    async fn execute(
        &mut self,
        conn: Resource<ConnectionHandle>,
        statement: String,
        params: Vec<Value>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        let session = self.table.get(&conn)?.session.clone();
        let params = params.into_iter().map(to_sql).collect();
        Ok(session.execute(statement, params).await.map_err(datastore))
    }

    async fn execute_batch(
        &mut self,
        conn: Resource<ConnectionHandle>,
        statement: String,
        rows: RowBatch,
    ) -> wasmtime::Result<Result<u64, Error>> {
        let session = self.table.get(&conn)?.session.clone();
        let rows = Rows {
            columns: Vec::new(),
            width: rows.width as usize,
            rows: rows.rows as usize,
            data: rows.data,
        };
        let result = session
            .execute_batch(statement, rows)
            .await
            .map_err(datastore);
        crate::failpoint!("sql:execute-batch:done");
        Ok(result)
    }

    async fn execute_script(
        &mut self,
        conn: Resource<ConnectionHandle>,
        script: String,
    ) -> wasmtime::Result<Result<(), Error>> {
        let session = self.table.get(&conn)?.session.clone();
        let result = session.script(script).await.map_err(datastore);
        crate::failpoint!("sql:execute-script:done");
        Ok(result)
    }

    async fn begin(
        &mut self,
        conn: Resource<ConnectionHandle>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let handle = self.table.get(&conn)?;
        // Writers take the write lock up front, so a transaction never fails
        // half-way because another connection wrote first.
        let sql = match handle.access {
            Access::ReadWrite => "BEGIN IMMEDIATE",
            Access::ReadOnly => "BEGIN",
        };
        let session = handle.session.clone();
        Ok(session.script(sql.into()).await.map_err(datastore))
    }

    async fn commit(
        &mut self,
        conn: Resource<ConnectionHandle>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let session = self.table.get(&conn)?.session.clone();
        crate::failpoint!("sql:commit:before");
        let result = session.script("COMMIT".into()).await.map_err(datastore);
        crate::failpoint!("sql:commit:after");
        Ok(result)
    }

    async fn rollback(
        &mut self,
        conn: Resource<ConnectionHandle>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let session = self.table.get(&conn)?.session.clone();
        Ok(session.script("ROLLBACK".into()).await.map_err(datastore))
    }

    async fn copy_out(
        &mut self,
        _conn: Resource<ConnectionHandle>,
        _statement: String,
    ) -> wasmtime::Result<Result<Resource<CopyReaderHandle>, Error>> {
        Ok(Err(Error::Unsupported(
            "COPY streams need a PostgreSQL target".into(),
        )))
    }

    async fn copy_in(
        &mut self,
        _conn: Resource<ConnectionHandle>,
        _statement: String,
    ) -> wasmtime::Result<Result<Resource<CopyWriterHandle>, Error>> {
        Ok(Err(Error::Unsupported(
            "COPY streams need a PostgreSQL target".into(),
        )))
    }

    async fn drop(&mut self, conn: Resource<ConnectionHandle>) -> wasmtime::Result<()> {
        self.table.delete(conn)?;
        Ok(())
    }
}

impl wit::HostCursor for SqlCapability {
    async fn columns(&mut self, cursor: Resource<CursorHandle>) -> wasmtime::Result<Vec<String>> {
        Ok(self.table.get(&cursor)?.columns.clone())
    }

    async fn next_batch(
        &mut self,
        cursor: Resource<CursorHandle>,
        max_rows: u32,
    ) -> wasmtime::Result<Result<RowBatch, Error>> {
        let session = self.table.get(&cursor)?.session.clone();
        let max_rows = (max_rows as usize).clamp(1, BATCH_MAX_ROWS);
        Ok(session
            .next_batch(max_rows, BATCH_MAX_BYTES)
            .await
            .map(batch)
            .map_err(datastore))
    }

    async fn drop(&mut self, cursor: Resource<CursorHandle>) -> wasmtime::Result<()> {
        self.table.delete(cursor)?;
        Ok(())
    }
}

impl wit::HostCopyReader for SqlCapability {
    async fn read(
        &mut self,
        _reader: Resource<CopyReaderHandle>,
        _max_bytes: u32,
    ) -> wasmtime::Result<Result<Vec<u8>, Error>> {
        Ok(Err(Error::Unsupported(
            "COPY streams need a PostgreSQL target".into(),
        )))
    }

    async fn drop(&mut self, reader: Resource<CopyReaderHandle>) -> wasmtime::Result<()> {
        self.table.delete(reader)?;
        Ok(())
    }
}

impl wit::HostCopyWriter for SqlCapability {
    async fn write(
        &mut self,
        _writer: Resource<CopyWriterHandle>,
        _data: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        Ok(Err(Error::Unsupported(
            "COPY streams need a PostgreSQL target".into(),
        )))
    }

    async fn finish(
        &mut self,
        _writer: Resource<CopyWriterHandle>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        Ok(Err(Error::Unsupported(
            "COPY streams need a PostgreSQL target".into(),
        )))
    }

    async fn drop(&mut self, writer: Resource<CopyWriterHandle>) -> wasmtime::Result<()> {
        self.table.delete(writer)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_allows_only_its_target() {
        let grant = SqlGrant {
            target: "shop".into(),
            kind: TargetKind::Sqlite,
            endpoint: Endpoint::File("/tmp/shop.db".into()),
            access: Access::ReadOnly,
            tables: None,
        };
        let cases = [
            ("shop", true),
            ("Shop", false),
            ("shop2", false),
            ("", false),
        ];
        for (target, want) in cases {
            assert_eq!(grant.allows(target), want, "{target}");
        }
    }
}
