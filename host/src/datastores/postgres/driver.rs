//! The PostgreSQL driver: [`Datastore`] over this folder's sessions,
//! fingerprints, rehearsal copies and scratch databases, and a [`Session`]
//! as the `sql` capability sees it ([`SqlSession`]).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::{copy, scratch, Canceller, CopyIn, CopyOut, PgCursor, Session};
use crate::datastores::changes::{ChangeSet, UndoOutcome};
use crate::datastores::{
    BackupHold, CopyError, CopyInStream, CopyOutStream, Datastore, DatastoreError, Endpoint, Fingerprint,
    Interrupt, RehearsalCopy, Rows, ScratchSource, ScratchTarget, SessionOptions, SqlCursor,
    SqlSession, SqlValue, TargetState,
};
use crate::plan::TargetKind;

/// The PostgreSQL driver.
pub struct Postgres;

impl Datastore for Postgres {
    fn kind(&self) -> TargetKind {
        TargetKind::Postgres
    }

    fn open_sql<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        options: SessionOptions,
    ) -> BoxFuture<'a, Result<Arc<dyn SqlSession>, DatastoreError>> {
        Box::pin(async move {
            let url = endpoint.url(self.kind())?;
            let session = Session::open(
                url,
                options.access,
                options.tables.as_deref(),
                options.statement_timeout,
                options.snapshot,
                options.capture,
            )
            .await?;
            Ok(Arc::new(session) as Arc<dyn SqlSession>)
        })
    }

    fn captures_changes(&self) -> bool {
        true
    }

    fn undroppable<'c>(&self, created: &'c [String]) -> Option<&'c str> {
        super::created::undroppable(created)
    }

    fn undo_changes<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        changes: ChangeSet,
        created: Vec<String>,
        discard_later_writes: bool,
    ) -> BoxFuture<'a, Result<UndoOutcome, DatastoreError>> {
        Box::pin(async move {
            super::changes::undo(
                endpoint.url(self.kind())?,
                &changes,
                &created,
                discard_later_writes,
            )
            .await
        })
    }

    fn fingerprint<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        scope: Vec<String>,
    ) -> BoxFuture<'a, Result<Fingerprint, DatastoreError>> {
        Box::pin(async move { super::fingerprint(endpoint.url(self.kind())?, &scope).await })
    }

    fn hold_for_backup<'a>(
        &'a self,
        endpoint: &'a Endpoint,
    ) -> BoxFuture<'a, Result<BackupHold, DatastoreError>> {
        Box::pin(async move { super::hold_for_backup(endpoint.url(self.kind())?).await })
    }

    fn fingerprint_in<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        scope: Vec<String>,
        snapshot: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Fingerprint, DatastoreError>> {
        Box::pin(async move {
            super::fingerprint_in(endpoint.url(self.kind())?, &scope, snapshot).await
        })
    }

    fn estimate_backup<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        scope: Option<Vec<String>>,
    ) -> BoxFuture<'a, Result<u64, DatastoreError>> {
        Box::pin(async move {
            super::estimate_backup(endpoint.url(self.kind())?, scope.as_deref()).await
        })
    }

    fn measure<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        scope: Option<&'a BTreeSet<String>>,
    ) -> BoxFuture<'a, Result<TargetState, DatastoreError>> {
        Box::pin(async move {
            let url = endpoint.url(self.kind())?;
            let tables = match scope {
                Some(tables) => tables.iter().cloned().collect(),
                None => copy::all_tables(url).await?,
            };
            Ok(TargetState {
                fingerprint: super::fingerprint(url, &tables).await?,
                file_sha256: None,
            })
        })
    }

    fn copy<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        _scope: Option<&'a BTreeSet<String>>,
        _dir: &'a Path,
        label: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn RehearsalCopy>, CopyError>> {
        Box::pin(async move {
            let url = endpoint.url(self.kind()).map_err(|e| CopyError {
                target: label.to_string(),
                reason: e.to_string(),
            })?;
            copy::copy(url, label).await
        })
    }

    fn scratch<'a>(
        &'a self,
        source: ScratchSource,
        fixture: Option<String>,
        _dir: &'a Path,
    ) -> BoxFuture<'a, Result<Box<dyn ScratchTarget>, String>> {
        Box::pin(scratch::prepare(source, fixture))
    }
}

impl Interrupt for Canceller {
    fn interrupt(&self) {
        self.cancel();
    }
}

/// The rows of a portal, streamed through its session.
struct Cursor {
    session: Arc<Session>,
    cursor: PgCursor,
    columns: Vec<String>,
}

impl SqlCursor for Cursor {
    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn next_batch(
        &mut self,
        max_rows: usize,
        max_bytes: usize,
    ) -> BoxFuture<'_, Result<Rows, DatastoreError>> {
        Box::pin(self.session.fetch(&mut self.cursor, max_rows, max_bytes))
    }
}

impl CopyOutStream for CopyOut {
    fn read(&mut self, max_bytes: usize) -> BoxFuture<'_, Result<Vec<u8>, DatastoreError>> {
        Box::pin(CopyOut::read(self, max_bytes))
    }
}

impl CopyInStream for CopyIn {
    fn write(&mut self, data: Vec<u8>) -> BoxFuture<'_, Result<(), DatastoreError>> {
        Box::pin(CopyIn::write(self, data))
    }

    fn finish(&mut self) -> BoxFuture<'_, Result<u64, DatastoreError>> {
        Box::pin(CopyIn::finish(self))
    }
}

impl SqlSession for Session {
    fn interrupter(&self) -> Arc<dyn Interrupt> {
        Arc::new(self.canceller())
    }

    fn query(
        &self,
        statement: String,
        params: Vec<SqlValue>,
        max_rows: usize,
    ) -> BoxFuture<'_, Result<Rows, DatastoreError>> {
        Box::pin(async move { Session::query(self, &statement, &params, max_rows).await })
    }

    fn open_cursor(
        self: Arc<Self>,
        statement: String,
        params: Vec<SqlValue>,
    ) -> BoxFuture<'static, Result<Box<dyn SqlCursor>, DatastoreError>> {
        Box::pin(async move {
            let (cursor, columns) = Session::open_cursor(&self, &statement, &params).await?;
            Ok(Box::new(Cursor {
                session: self,
                cursor,
                columns,
            }) as Box<dyn SqlCursor>)
        })
    }

    fn execute(
        &self,
        statement: String,
        params: Vec<SqlValue>,
    ) -> BoxFuture<'_, Result<u64, DatastoreError>> {
        Box::pin(async move { Session::execute(self, &statement, &params).await })
    }

    fn execute_batch(
        &self,
        statement: String,
        rows: Rows,
    ) -> BoxFuture<'_, Result<u64, DatastoreError>> {
        Box::pin(async move { Session::execute_batch(self, &statement, &rows).await })
    }

    fn script(&self, script: String) -> BoxFuture<'_, Result<(), DatastoreError>> {
        Box::pin(async move { Session::script(self, &script).await })
    }

    fn begin(&self) -> BoxFuture<'_, Result<(), DatastoreError>> {
        Box::pin(self.transaction("BEGIN"))
    }

    fn commit(&self) -> BoxFuture<'_, Result<(), DatastoreError>> {
        Box::pin(self.transaction("COMMIT"))
    }

    fn rollback(&self) -> BoxFuture<'_, Result<(), DatastoreError>> {
        Box::pin(self.transaction("ROLLBACK"))
    }

    fn supports_copy(&self) -> bool {
        true
    }

    fn copy_out(
        &self,
        statement: String,
    ) -> BoxFuture<'_, Result<Box<dyn CopyOutStream>, DatastoreError>> {
        Box::pin(async move {
            let stream = Session::copy_out(self, &statement).await?;
            Ok(Box::new(stream) as Box<dyn CopyOutStream>)
        })
    }

    fn copy_in(
        &self,
        statement: String,
    ) -> BoxFuture<'_, Result<Box<dyn CopyInStream>, DatastoreError>> {
        Box::pin(async move {
            let sink = Session::copy_in(self, &statement).await?;
            Ok(Box::new(sink) as Box<dyn CopyInStream>)
        })
    }
}
