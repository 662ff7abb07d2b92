//! The seam every datastore driver implements: what the host needs of a
//! kind of datastore, apart from what plugins do with it. The engine, the
//! preview, rehearsals and conformance checks reach a driver only through
//! [`Datastore`], chosen by [`super::driver`] from the target's kind.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::Serialize;

use super::changes::{ChangeSet, UndoOutcome};
use super::kv_session::KvSession;
use super::sql_session::{SessionOptions, SqlSession};
use super::{DatastoreError, Endpoint, Fingerprint};
use crate::plan::{SqliteFiles, TargetKind};
use crate::secret::Secret;

/// A target held still for one backup and the host's verification of it,
/// so both see one state whatever an application writes meanwhile; let go
/// when dropped.
pub struct BackupHold {
    /// A snapshot the plugin's read-only sessions and the host's fingerprint
    /// read in (PostgreSQL's exported snapshot), when the datastore has one.
    pub snapshot: Option<String>,
    _held: Option<Box<dyn std::any::Any + Send>>,
}

impl BackupHold {
    /// Nothing held: the datastore offers no way to (or needs none).
    pub fn none() -> Self {
        BackupHold {
            snapshot: None,
            _held: None,
        }
    }

    /// Holds `held` (a connection, a lock) until dropped.
    pub fn new(snapshot: Option<String>, held: impl std::any::Any + Send) -> Self {
        BackupHold {
            snapshot,
            _held: Some(Box::new(held)),
        }
    }
}

/// One kind of datastore, as the host sees it.
pub trait Datastore: Send + Sync {
    /// The plan's name for it.
    fn kind(&self) -> TargetKind;

    /// Opens a session through which a plugin's `sql` calls reach the
    /// target. Only SQL datastores have one.
    fn open_sql<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        options: SessionOptions,
    ) -> BoxFuture<'a, Result<Arc<dyn SqlSession>, DatastoreError>> {
        let _ = (endpoint, options);
        let kind = self.kind();
        Box::pin(async move {
            Err(DatastoreError::host(
                "SLUICE_UNSUPPORTED",
                format!("{} targets are not reached through `sql`", kind.as_str()),
            ))
        })
    }

    /// Opens a session through which a plugin's `kv` calls reach the
    /// target. Only key-value datastores have one.
    fn open_kv<'a>(
        &'a self,
        endpoint: &'a Endpoint,
    ) -> BoxFuture<'a, Result<Arc<dyn KvSession>, DatastoreError>> {
        let _ = endpoint;
        let kind = self.kind();
        Box::pin(async move {
            Err(DatastoreError::host(
                "SLUICE_UNSUPPORTED",
                format!("{} targets are not reached through `kv`", kind.as_str()),
            ))
        })
    }

    /// The host's own, plugin-independent measurement of the target: the
    /// schema and the content of `scope` (tables, or key prefixes).
    fn fingerprint<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        scope: Vec<String>,
    ) -> BoxFuture<'a, Result<Fingerprint, DatastoreError>>;

    /// Holds the target still for a backup and its verification (see
    /// [`BackupHold`]). Without an override nothing is held, and a write
    /// landing between the plugin's read and the host's fails verification.
    fn hold_for_backup<'a>(
        &'a self,
        endpoint: &'a Endpoint,
    ) -> BoxFuture<'a, Result<BackupHold, DatastoreError>> {
        let _ = endpoint;
        Box::pin(async { Ok(BackupHold::none()) })
    }

    /// [`Datastore::fingerprint`] in a held backup's snapshot, when it has
    /// one.
    fn fingerprint_in<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        scope: Vec<String>,
        snapshot: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Fingerprint, DatastoreError>> {
        let _ = snapshot;
        self.fingerprint(endpoint, scope)
    }

    /// Whether read-write sessions record the rows they change into
    /// [`SessionOptions::capture`], so a rollback can undo exactly the
    /// step's changes ([`Datastore::undo_changes`]).
    fn captures_changes(&self) -> bool {
        false
    }

    /// The first of the schema objects a step `created` (`table notebooks`,
    /// as fingerprints name objects) that [`Datastore::undo_changes`]
    /// cannot drop; a step that created one is rolled back by restore.
    fn undroppable<'c>(&self, created: &'c [String]) -> Option<&'c str> {
        created.first().map(String::as_str)
    }

    /// Undoes a step's change set (see [`super::changes`]): every row back
    /// to its pre-step image and the schema objects the step `created`
    /// (`table notebooks`) dropped, in one transaction, unless a row changed
    /// since the step and `discard_later_writes` is off.
    fn undo_changes<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        changes: ChangeSet,
        created: Vec<String>,
        discard_later_writes: bool,
    ) -> BoxFuture<'a, Result<UndoOutcome, DatastoreError>> {
        let _ = (endpoint, changes, created, discard_later_writes);
        let kind = self.kind();
        Box::pin(async move {
            Ok(UndoOutcome::Unusable(format!(
                "{} targets are not undone by change set",
                kind.as_str()
            )))
        })
    }

    /// Estimates, read-only, how many bytes a backup of `scope` will hold;
    /// `None` means the whole target.
    fn estimate_backup<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        scope: Option<Vec<String>>,
    ) -> BoxFuture<'a, Result<u64, DatastoreError>>;

    /// Measures everything a plan's steps may touch (`None`: the whole
    /// target), for a rehearsal's before/after comparison.
    fn measure<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        scope: Option<&'a BTreeSet<String>>,
    ) -> BoxFuture<'a, Result<TargetState, DatastoreError>>;

    /// Makes a rehearsal copy of the target (`scope` as for `measure`),
    /// files in `dir`, named after `label`.
    fn copy<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        scope: Option<&'a BTreeSet<String>>,
        dir: &'a Path,
        label: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn RehearsalCopy>, CopyError>>;

    /// Prepares a conformance scratch target in `dir` and loads `fixture`
    /// once, so a bad fixture is an input error before any check runs.
    fn scratch<'a>(
        &'a self,
        source: ScratchSource,
        fixture: Option<String>,
        dir: &'a Path,
    ) -> BoxFuture<'a, Result<Box<dyn ScratchTarget>, String>>;
}

/// The host's view of one real target: its fingerprint over the plan's
/// scope and, for a SQLite file, the sha256 of the file's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetState {
    /// Schema digest and each table's (or prefix's) rows and checksum.
    pub fingerprint: Fingerprint,
    /// sha256 of the database file (SQLite only).
    pub file_sha256: Option<String>,
}

/// A copy of one target, made for a rehearsal.
pub trait RehearsalCopy: Send + Sync {
    /// Where the rehearsal's engine reaches it.
    fn endpoint(&self) -> Endpoint;
    /// What and where it is, without credentials.
    fn describe(&self) -> String;
    /// Removes it (drops the scratch database, empties the database
    /// number, deletes the files).
    fn remove(&self) -> BoxFuture<'_, Result<(), DatastoreError>>;
}

/// Why a rehearsal copy could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot copy target {target}: {reason}")]
pub struct CopyError {
    /// The target (name or redacted location).
    pub target: String,
    /// Why, and what the operator can do.
    pub reason: String,
}

/// What a conformance scratch target starts from, as the author gave it.
#[derive(Debug, Clone)]
pub enum ScratchSource {
    /// Nothing: a fresh, empty file-based database.
    Empty,
    /// A copy of this database file (the file itself is never written).
    CopyOf(PathBuf),
    /// A server database, which the checks change.
    Server(Secret),
}

/// A prepared conformance scratch target.
pub trait ScratchTarget: Send + Sync {
    /// A fresh state for check sequence `n`.
    fn fresh(&self, n: usize) -> BoxFuture<'_, Result<Endpoint, String>>;
}

impl Endpoint {
    /// The files of a file-based target; an error for a `kind` target
    /// reached another way.
    pub fn files(&self, kind: TargetKind) -> Result<&SqliteFiles, DatastoreError> {
        match self {
            Endpoint::File(files) => Ok(files),
            Endpoint::Url(_) => Err(unreachable_by(kind)),
        }
    }

    /// The URL of a server target; an error for a `kind` target reached
    /// another way.
    pub fn url(&self, kind: TargetKind) -> Result<&Secret, DatastoreError> {
        match self {
            Endpoint::Url(url) => Ok(url),
            Endpoint::File(_) => Err(unreachable_by(kind)),
        }
    }
}

fn unreachable_by(kind: TargetKind) -> DatastoreError {
    DatastoreError::host(
        "SLUICE_UNSUPPORTED",
        format!("a {} target is not reached that way", kind.as_str()),
    )
}
