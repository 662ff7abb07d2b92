//! Copies of a plan's targets for a rehearsal, and the host's measurement of
//! the real targets before and after it. Only what is the same for every
//! kind lives here (which tables or prefixes the plan touches); how a kind
//! is copied and measured is its driver's ([`crate::datastores::Datastore`]:
//! SQLite `VACUUM INTO`, a PostgreSQL scratch database, an empty Redis
//! database number).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::datastores::{self, DatastoreError, Endpoint, RehearsalCopy};
use crate::plan::{Plan, TargetKind};

pub use crate::datastores::TargetState;

use super::RehearsalError;

/// What the plan's steps touch on one target: its tables (or key prefixes),
/// `None` when some step may touch all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope(pub Option<BTreeSet<String>>);

/// The scope of every target some step uses, by target name.
pub fn scopes(plan: &Plan) -> BTreeMap<String, Scope> {
    let mut out: BTreeMap<String, Scope> = BTreeMap::new();
    for step in &plan.steps {
        let named = if plan.targets[&step.target].kind.is_sql() {
            &step.tables
        } else {
            &step.key_prefixes
        };
        let entry = out
            .entry(step.target.clone())
            .or_insert_with(|| Scope(Some(BTreeSet::new())));
        match (&mut entry.0, named) {
            (Some(all), Some(named)) => all.extend(named.iter().cloned()),
            (scope, None) => *scope = None,
            (None, Some(_)) => {}
        }
    }
    out
}

/// Measures a target: everything its steps may touch.
pub async fn measure(
    kind: TargetKind,
    endpoint: &Endpoint,
    scope: &Scope,
) -> Result<TargetState, DatastoreError> {
    datastores::driver(kind)
        .measure(endpoint, scope.0.as_ref())
        .await
}

/// A copy of one target, made for a rehearsal by its driver.
pub struct TargetCopy(Box<dyn RehearsalCopy>);

impl std::fmt::Debug for TargetCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TargetCopy")
            .field(&self.0.describe())
            .finish()
    }
}

impl TargetCopy {
    /// Where the rehearsal's engine reaches it.
    pub fn endpoint(&self) -> Endpoint {
        self.0.endpoint()
    }

    /// What and where it is, without credentials.
    pub fn describe(&self) -> String {
        self.0.describe()
    }

    /// Removes the copy (drops the scratch database, empties the Redis
    /// database, deletes the file).
    pub async fn remove(&self) -> Result<(), DatastoreError> {
        self.0.remove().await
    }
}

/// Copies one target. `label` names the copy (plan and target, sanitized).
pub async fn copy(
    kind: TargetKind,
    endpoint: &Endpoint,
    scope: &Scope,
    dir: &Path,
    label: &str,
) -> Result<TargetCopy, RehearsalError> {
    datastores::driver(kind)
        .copy(endpoint, scope.0.as_ref(), dir, label)
        .await
        .map(TargetCopy)
        .map_err(|e| RehearsalError::Copy {
            target: e.target,
            reason: e.reason,
        })
}
