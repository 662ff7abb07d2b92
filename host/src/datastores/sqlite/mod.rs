//! SQLite: sessions served by a worker thread (`session.rs`), the table
//! scope SQLite's authorizer enforces (`scope.rs`), the host's fingerprints
//! and estimates (`fingerprint.rs`), rehearsal copies (`copy.rs`) and
//! conformance scratch files (`scratch.rs`).

mod changes;
mod connection;
mod copy;
mod fingerprint;
mod scope;
mod scratch;
mod session;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::{
    BackupHold, CopyError, Datastore, DatastoreError, Endpoint, Fingerprint, RehearsalCopy, ScratchSource,
    ScratchTarget, SessionOptions, SqlSession, TargetState,
};
use super::changes::{ChangeSet, UndoOutcome};
use crate::plan::TargetKind;

pub use self::fingerprint::{estimate_backup, fingerprint};
pub use self::scope::TableScope;
pub use self::session::{Interrupter, Session};

/// The SQLite driver.
pub struct Sqlite;

/// Runs blocking SQLite work off the async runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, DatastoreError> + Send + 'static,
) -> Result<T, DatastoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(DatastoreError::host("SLUICE_TASK", e.to_string())))
}

impl Datastore for Sqlite {
    fn kind(&self) -> TargetKind {
        TargetKind::Sqlite
    }

    fn open_sql<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        options: SessionOptions,
    ) -> BoxFuture<'a, Result<Arc<dyn SqlSession>, DatastoreError>> {
        Box::pin(async move {
            let files = endpoint.files(self.kind())?.clone();
            let scope = options
                .authorize
                .then(|| TableScope::new(options.tables.clone()));
            let access = options.access;
            let capture = options.capture;
            let session =
                tokio::task::spawn_blocking(move || Session::open(&files, access, scope, capture))
                .await
                .map_err(|e| DatastoreError::host("SLUICE_TASK", e.to_string()))??;
            Ok(Arc::new(session) as Arc<dyn SqlSession>)
        })
    }

    fn fingerprint<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        scope: Vec<String>,
    ) -> BoxFuture<'a, Result<Fingerprint, DatastoreError>> {
        Box::pin(async move {
            let files = endpoint.files(self.kind())?.clone();
            blocking(move || fingerprint(&files, Some(&scope))).await
        })
    }

    /// Holds the write lock (`BEGIN IMMEDIATE` on the file and every
    /// attached one) while the backup is taken and verified: readers go on,
    /// an application's writes wait (up to their busy timeout) rather than
    /// land between the plugin's read and the host's.
    fn hold_for_backup<'a>(
        &'a self,
        endpoint: &'a Endpoint,
    ) -> BoxFuture<'a, Result<BackupHold, DatastoreError>> {
        Box::pin(async move {
            let files = endpoint.files(self.kind())?.clone();
            match blocking(move || session::hold_writers(&files)).await {
                Ok(held) => Ok(BackupHold::new(None, std::sync::Mutex::new(held))),
                // A file sluice may not write (its permissions, a read-only
                // mount) cannot be held: back up without the hold, as
                // before it existed; a write landing meanwhile fails the
                // verification, and nothing changes.
                Err(e) if e.code.starts_with("SQLITE_READONLY") => {
                    tracing::info!("backup without holding writers: {e}");
                    Ok(BackupHold::none())
                }
                Err(e) => Err(e),
            }
        })
    }

    fn captures_changes(&self) -> bool {
        true
    }

    fn undroppable<'c>(&self, created: &'c [String]) -> Option<&'c str> {
        created
            .iter()
            .map(String::as_str)
            .find(|object| !changes::drops(object))
    }

    fn undo_changes<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        changes: ChangeSet,
        created: Vec<String>,
        discard_later_writes: bool,
    ) -> BoxFuture<'a, Result<UndoOutcome, DatastoreError>> {
        Box::pin(async move {
            let files = endpoint.files(self.kind())?.clone();
            blocking(move || changes::undo(&files, &changes, &created, discard_later_writes))
                .await
        })
    }

    fn estimate_backup<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        scope: Option<Vec<String>>,
    ) -> BoxFuture<'a, Result<u64, DatastoreError>> {
        Box::pin(async move {
            let files = endpoint.files(self.kind())?.clone();
            if !files.path.exists() {
                return Err(DatastoreError::host(
                    "SQLITE_CANTOPEN",
                    format!("{} does not exist", files.path.display()),
                ));
            }
            blocking(move || estimate_backup(&files, scope.as_deref())).await
        })
    }

    fn measure<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        scope: Option<&'a BTreeSet<String>>,
    ) -> BoxFuture<'a, Result<TargetState, DatastoreError>> {
        Box::pin(async move {
            let files = endpoint.files(self.kind())?.clone();
            let tables: Option<Vec<String>> = scope.map(|s| s.iter().cloned().collect());
            blocking(move || {
                let fingerprint = fingerprint(&files, tables.as_deref())?;
                Ok(TargetState {
                    fingerprint,
                    file_sha256: Some(copy::files_sha256(&files)?),
                })
            })
            .await
        })
    }

    fn copy<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        _scope: Option<&'a BTreeSet<String>>,
        dir: &'a Path,
        label: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn RehearsalCopy>, CopyError>> {
        Box::pin(async move {
            let source = endpoint.files(self.kind()).map_err(|e| CopyError {
                target: label.to_string(),
                reason: e.to_string(),
            })?;
            copy::copy(source, dir, label).await
        })
    }

    fn scratch<'a>(
        &'a self,
        source: ScratchSource,
        fixture: Option<String>,
        dir: &'a Path,
    ) -> BoxFuture<'a, Result<Box<dyn ScratchTarget>, String>> {
        Box::pin(async move { scratch::prepare(source, fixture.as_deref(), dir) })
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
