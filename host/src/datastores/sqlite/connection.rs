//! A SQLite [`Session`] as the `sql` capability sees it: [`SqlSession`].

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::{Interrupter, Session};
use crate::datastores::{DatastoreError, Interrupt, Rows, SqlCursor, SqlSession, SqlValue};
use crate::plan::Access;

impl Interrupt for Interrupter {
    fn interrupt(&self) {
        Interrupter::interrupt(self);
    }
}

/// The session's one cursor: SQLite keeps the statement on the session's
/// worker, so this only names it (and closes it when dropped).
struct SqliteCursor {
    session: Arc<Session>,
    columns: Vec<String>,
}

impl Drop for SqliteCursor {
    fn drop(&mut self) {
        self.session.close_cursor();
    }
}

impl SqlCursor for SqliteCursor {
    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn next_batch(
        &mut self,
        max_rows: usize,
        max_bytes: usize,
    ) -> BoxFuture<'_, Result<Rows, DatastoreError>> {
        Box::pin(self.session.next_batch(max_rows, max_bytes))
    }
}

impl SqlSession for Session {
    fn interrupter(&self) -> Arc<dyn Interrupt> {
        Arc::new(Session::interrupter(self))
    }

    fn query(
        &self,
        statement: String,
        params: Vec<SqlValue>,
        max_rows: usize,
    ) -> BoxFuture<'_, Result<Rows, DatastoreError>> {
        Box::pin(Session::query(self, statement, params, max_rows))
    }

    fn open_cursor(
        self: Arc<Self>,
        statement: String,
        params: Vec<SqlValue>,
    ) -> BoxFuture<'static, Result<Box<dyn SqlCursor>, DatastoreError>> {
        Box::pin(async move {
            let columns = Session::open_cursor(&self, statement, params).await?;
            Ok(Box::new(SqliteCursor {
                session: self,
                columns,
            }) as Box<dyn SqlCursor>)
        })
    }

    fn execute(
        &self,
        statement: String,
        params: Vec<SqlValue>,
    ) -> BoxFuture<'_, Result<u64, DatastoreError>> {
        Box::pin(Session::execute(self, statement, params))
    }

    fn execute_batch(
        &self,
        statement: String,
        rows: Rows,
    ) -> BoxFuture<'_, Result<u64, DatastoreError>> {
        Box::pin(Session::execute_batch(self, statement, rows))
    }

    fn script(&self, script: String) -> BoxFuture<'_, Result<(), DatastoreError>> {
        Box::pin(Session::script(self, script))
    }

    fn begin(&self) -> BoxFuture<'_, Result<(), DatastoreError>> {
        // Writers take the write lock up front, so a transaction never
        // fails half-way because another connection wrote first.
        let sql = match self.access() {
            Access::ReadWrite => "BEGIN IMMEDIATE",
            Access::ReadOnly => "BEGIN",
        };
        Box::pin(Session::script(self, sql.into()))
    }

    fn commit(&self) -> BoxFuture<'_, Result<(), DatastoreError>> {
        Box::pin(Session::script(self, "COMMIT".into()))
    }

    fn rollback(&self) -> BoxFuture<'_, Result<(), DatastoreError>> {
        Box::pin(Session::script(self, "ROLLBACK".into()))
    }
}
