//! `sluice:plugin/sql`: connections to the step's granted targets.

use std::sync::{Arc, Mutex};

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use crate::datastores::changes::ChangeCapture;
use crate::datastores::{
    self, CopyInStream, CopyOutStream, DatastoreError, Endpoint, Interrupt, Rows, SessionOptions,
    SqlCursor, SqlSession, SqlValue,
};
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
    /// Longest a single statement may run (servers enforce it themselves).
    pub statement_timeout: std::time::Duration,
    /// The snapshot read-only sessions read in: the backup's, held by the
    /// engine until it has verified the backup.
    pub snapshot: Option<String>,
    /// Where the sessions record the rows they change (migrate's).
    pub capture: Option<ChangeCapture>,
}

impl SqlGrant {
    /// Whether this grant lets a plugin open `target`.
    pub fn allows(&self, target: &str) -> bool {
        self.target == target
    }
}

/// Interrupters of the sessions a store opened, so a phase that runs out of
/// time can stop the statement the datastore is running on its behalf.
#[derive(Clone, Default)]
pub struct SessionInterrupters(Arc<Mutex<Vec<Arc<dyn Interrupt>>>>);

impl SessionInterrupters {
    /// Interrupts every running statement.
    pub fn interrupt_all(&self) {
        for i in self.0.lock().expect("not poisoned").iter() {
            i.interrupt();
        }
    }

    fn push(&self, i: Arc<dyn Interrupt>) {
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
pub struct ConnectionHandle(Arc<dyn SqlSession>);

/// An open cursor resource.
pub struct CursorHandle(Box<dyn SqlCursor>);

/// An open `COPY … TO STDOUT` stream.
pub struct CopyReaderHandle(Box<dyn CopyOutStream>);

/// An open `COPY … FROM STDIN` stream (aborted if dropped unfinished).
pub struct CopyWriterHandle(Box<dyn CopyInStream>);

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

/// A datastore error as the plugin sees it: the host's refusals are
/// access errors, everything else the datastore's own.
fn datastore(e: DatastoreError) -> Error {
    if e.code == "SLUICE_REFUSED" {
        return Error::AccessDenied(e.message);
    }
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

fn no_copy() -> Error {
    Error::Unsupported("COPY streams need a PostgreSQL target".into())
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
        let options = SessionOptions {
            access: grant.access,
            tables: grant.tables.clone(),
            statement_timeout: grant.statement_timeout,
            authorize: self.authorize,
            snapshot: grant.snapshot.clone(),
            capture: grant.capture.clone(),
        };
        let session = match datastores::driver(grant.kind)
            .open_sql(&grant.endpoint, options)
            .await
        {
            Ok(s) => s,
            Err(e) => return Ok(Err(datastore(e))),
        };
        self.interrupters.push(session.interrupter());
        Ok(Ok(self.table.push(ConnectionHandle(session))?))
    }
}

impl SqlCapability {
    fn session(&self, conn: &Resource<ConnectionHandle>) -> wasmtime::Result<Arc<dyn SqlSession>> {
        Ok(self.table.get(conn)?.0.clone())
    }
}

impl wit::HostConnection for SqlCapability {
    async fn query(
        &mut self,
        conn: Resource<ConnectionHandle>,
        statement: String,
        params: Vec<Value>,
    ) -> wasmtime::Result<Result<QueryResult, Error>> {
        let params: Vec<SqlValue> = params.into_iter().map(to_sql).collect();
        let rows = self
            .session(&conn)?
            .query(statement, params, QUERY_MAX_ROWS)
            .await;
        Ok(rows
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
        let params: Vec<SqlValue> = params.into_iter().map(to_sql).collect();
        let handle = match self.session(&conn)?.open_cursor(statement, params).await {
            Ok(cursor) => CursorHandle(cursor),
            Err(e) => return Ok(Err(datastore(e))),
        };
        Ok(Ok(self.table.push(handle)?))
    }

    async fn execute(
        &mut self,
        conn: Resource<ConnectionHandle>,
        statement: String,
        params: Vec<Value>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        let params: Vec<SqlValue> = params.into_iter().map(to_sql).collect();
        let result = self.session(&conn)?.execute(statement, params).await;
        Ok(result.map_err(datastore))
    }

    async fn execute_batch(
        &mut self,
        conn: Resource<ConnectionHandle>,
        statement: String,
        rows: RowBatch,
    ) -> wasmtime::Result<Result<u64, Error>> {
        let rows = Rows {
            columns: Vec::new(),
            width: rows.width as usize,
            rows: rows.rows as usize,
            data: rows.data,
        };
        let result = self.session(&conn)?.execute_batch(statement, rows).await;
        crate::failpoint!("sql:execute-batch:done");
        Ok(result.map_err(datastore))
    }

    async fn execute_script(
        &mut self,
        conn: Resource<ConnectionHandle>,
        script: String,
    ) -> wasmtime::Result<Result<(), Error>> {
        let result = self.session(&conn)?.script(script).await;
        crate::failpoint!("sql:execute-script:done");
        Ok(result.map_err(datastore))
    }

    async fn begin(
        &mut self,
        conn: Resource<ConnectionHandle>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let result = self.session(&conn)?.begin().await;
        Ok(result.map_err(datastore))
    }

    async fn commit(
        &mut self,
        conn: Resource<ConnectionHandle>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let session = self.session(&conn)?;
        crate::failpoint!("sql:commit:before");
        let result = session.commit().await;
        crate::failpoint!("sql:commit:after");
        Ok(result.map_err(datastore))
    }

    async fn rollback(
        &mut self,
        conn: Resource<ConnectionHandle>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let result = self.session(&conn)?.rollback().await;
        Ok(result.map_err(datastore))
    }

    async fn copy_out(
        &mut self,
        conn: Resource<ConnectionHandle>,
        statement: String,
    ) -> wasmtime::Result<Result<Resource<CopyReaderHandle>, Error>> {
        let s = self.session(&conn)?;
        if !s.supports_copy() {
            return Ok(Err(no_copy()));
        }
        match s.copy_out(statement).await {
            Ok(stream) => Ok(Ok(self.table.push(CopyReaderHandle(stream))?)),
            Err(e) => Ok(Err(datastore(e))),
        }
    }

    async fn copy_in(
        &mut self,
        conn: Resource<ConnectionHandle>,
        statement: String,
    ) -> wasmtime::Result<Result<Resource<CopyWriterHandle>, Error>> {
        let s = self.session(&conn)?;
        if !s.supports_copy() {
            return Ok(Err(no_copy()));
        }
        match s.copy_in(statement).await {
            Ok(sink) => Ok(Ok(self.table.push(CopyWriterHandle(sink))?)),
            Err(e) => Ok(Err(datastore(e))),
        }
    }

    async fn drop(&mut self, conn: Resource<ConnectionHandle>) -> wasmtime::Result<()> {
        self.table.delete(conn)?;
        Ok(())
    }
}

impl wit::HostCursor for SqlCapability {
    async fn columns(&mut self, cursor: Resource<CursorHandle>) -> wasmtime::Result<Vec<String>> {
        Ok(self.table.get(&cursor)?.0.columns().to_vec())
    }

    async fn next_batch(
        &mut self,
        cursor: Resource<CursorHandle>,
        max_rows: u32,
    ) -> wasmtime::Result<Result<RowBatch, Error>> {
        let max_rows = (max_rows as usize).clamp(1, BATCH_MAX_ROWS);
        let result = self
            .table
            .get_mut(&cursor)?
            .0
            .next_batch(max_rows, BATCH_MAX_BYTES)
            .await;
        Ok(result.map(batch).map_err(datastore))
    }

    async fn drop(&mut self, cursor: Resource<CursorHandle>) -> wasmtime::Result<()> {
        self.table.delete(cursor)?;
        Ok(())
    }
}

impl wit::HostCopyReader for SqlCapability {
    async fn read(
        &mut self,
        reader: Resource<CopyReaderHandle>,
        max_bytes: u32,
    ) -> wasmtime::Result<Result<Vec<u8>, Error>> {
        let max_bytes = (max_bytes as usize).clamp(1, BATCH_MAX_BYTES);
        let stream = &mut self.table.get_mut(&reader)?.0;
        Ok(stream.read(max_bytes).await.map_err(datastore))
    }

    async fn drop(&mut self, reader: Resource<CopyReaderHandle>) -> wasmtime::Result<()> {
        self.table.delete(reader)?;
        Ok(())
    }
}

impl wit::HostCopyWriter for SqlCapability {
    async fn write(
        &mut self,
        writer: Resource<CopyWriterHandle>,
        data: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let sink = &mut self.table.get_mut(&writer)?.0;
        Ok(sink.write(data).await.map_err(datastore))
    }

    async fn finish(
        &mut self,
        writer: Resource<CopyWriterHandle>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        let sink = &mut self.table.get_mut(&writer)?.0;
        Ok(sink.finish().await.map_err(datastore))
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
            endpoint: Endpoint::File(crate::plan::SqliteFiles::single("/tmp/shop.db".into())),
            access: Access::ReadOnly,
            tables: None,
            statement_timeout: std::time::Duration::from_secs(1),
            snapshot: None,
            capture: None,
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
