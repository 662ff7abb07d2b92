//! The journal: an SQLite file under `.sluice/` recording runs, each step's
//! current state, every state transition with its time, and each backup's
//! manifest, artifact digests and pre-step fingerprint.
//!
//! Writes are durable (`synchronous = FULL`) before the engine goes on, so the
//! journal always knows at least as much as the datastores show.

pub mod lease;
pub mod outcome;
pub mod postgres;
pub mod record;
mod sqlite;

pub use sqlite::SqliteJournal;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::backup::ArtifactRef;
use crate::datastores::Fingerprint;
use record::{BackupManifest, Cause, Metric, Why, FORMAT};

/// Errors of the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// SQLite failed.
    #[error("journal {path}: {source}")]
    Sqlite {
        /// The journal file.
        path: PathBuf,
        /// The error.
        source: rusqlite::Error,
    },
    /// The state directory could not be created.
    #[error("cannot create {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The shared PostgreSQL journal failed; `at` is host:port/dbname and
    /// the plan's namespace, never the URL (it may carry a password).
    #[error("journal {at}: {source}")]
    Postgres {
        /// Where the journal is.
        at: String,
        /// The error.
        source: ::postgres::Error,
    },
    /// The shared PostgreSQL journal cannot be used.
    #[error("journal {at}: {reason}")]
    Unavailable {
        /// Where the journal is.
        at: String,
        /// What is wrong.
        reason: String,
    },
    /// The plan value holding the shared journal's URL cannot be read.
    #[error("shared journal: {0}")]
    Value(#[from] crate::plan::ValueError),
    /// The journal was written by a newer sluice, in a format this one
    /// does not know: it is left untouched.
    #[error(
        "journal {at} is format {found} (written by sluice {written_by}); this sluice {ours} \
         reads formats up to {FORMAT}: use sluice {written_by} or newer"
    )]
    Newer {
        /// Where the journal is.
        at: String,
        /// Its format.
        found: u32,
        /// The sluice version that wrote it.
        written_by: String,
        /// This sluice's version.
        ours: &'static str,
    },
    /// A record could not be decoded.
    #[error("journal {path}: corrupt record for step `{step}`: {reason}")]
    Corrupt {
        /// The journal file.
        path: PathBuf,
        /// The step.
        step: String,
        /// What is wrong.
        reason: String,
    },
}

/// Where a step is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepState {
    /// Never run, or rolled back and ready to run again.
    Pending,
    /// Backup running.
    BackingUp,
    /// Backup written and verified; nothing changed yet.
    BackedUp,
    /// Migrate running.
    Migrating,
    /// Validate running.
    Validating,
    /// Applied, validated, thresholds met.
    Completed,
    /// Rollback running.
    RollingBack,
    /// Rolled back and proven equal to the pre-step state.
    RolledBack,
    /// Failed before changing anything (backup failed).
    Failed,
    /// Paused before the step changes anything, until an operator approves.
    AwaitingApproval,
    /// Migrated and validated; paused until an operator approves (the step
    /// completes) or rejects (it is rolled back).
    AwaitingReview,
    /// Thresholds met; validate re-runs during the step's watch window.
    Watching,
    /// Rollback failed: the target needs attention.
    RollbackFailed,
    /// Rollback not started because the target changed after the step (an
    /// application's later writes would be lost); nothing was undone. Goes
    /// on only with an operator's decision (`--discard-later-writes`).
    RollbackRefused,
}

impl StepState {
    /// The journal spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::BackingUp => "backing-up",
            StepState::BackedUp => "backed-up",
            StepState::Migrating => "migrating",
            StepState::Validating => "validating",
            StepState::Completed => "completed",
            StepState::RollingBack => "rolling-back",
            StepState::RolledBack => "rolled-back",
            StepState::Failed => "failed",
            StepState::RollbackFailed => "rollback-failed",
            StepState::RollbackRefused => "rollback-refused",
            StepState::AwaitingApproval => "awaiting-approval",
            StepState::AwaitingReview => "awaiting-review",
            StepState::Watching => "watching",
        }
    }

    /// States whose transition detail is the step's last failure (`error`).
    pub fn records_error(self) -> bool {
        matches!(
            self,
            StepState::Failed
                | StepState::RollbackFailed
                | StepState::RollbackRefused
                | StepState::RollingBack
        )
    }

    /// States a run may pass through without finishing (a crash leaves them).
    pub fn is_in_flight(self) -> bool {
        matches!(
            self,
            StepState::BackingUp
                | StepState::BackedUp
                | StepState::Migrating
                | StepState::Validating
                | StepState::Watching
                | StepState::RollingBack
        )
    }

    /// States a run leaves while it waits for an operator's decision.
    pub fn is_paused(self) -> bool {
        matches!(
            self,
            StepState::AwaitingApproval | StepState::AwaitingReview
        )
    }
}

impl fmt::Display for StepState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StepState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "pending" => StepState::Pending,
            "backing-up" => StepState::BackingUp,
            "backed-up" => StepState::BackedUp,
            "migrating" => StepState::Migrating,
            "validating" => StepState::Validating,
            "completed" => StepState::Completed,
            "rolling-back" => StepState::RollingBack,
            "rolled-back" => StepState::RolledBack,
            "failed" => StepState::Failed,
            "rollback-failed" => StepState::RollbackFailed,
            "rollback-refused" => StepState::RollbackRefused,
            "awaiting-approval" => StepState::AwaitingApproval,
            "awaiting-review" => StepState::AwaitingReview,
            "watching" => StepState::Watching,
            other => return Err(format!("unknown step state `{other}`")),
        })
    }
}

/// A verified backup, as recorded.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StoredBackup {
    /// The plugin's manifest.
    pub manifest: BackupManifest,
    /// The artifacts with their digests and sizes.
    pub artifacts: Vec<ArtifactRef>,
    /// The host's fingerprint of the target right after backup.
    pub fingerprint: Fingerprint,
    /// Metrics `validate` measured before migrate, for `baseline.` thresholds.
    #[serde(default)]
    pub baseline: Vec<Metric>,
    /// The host's fingerprint of the same tables right after migrate: a
    /// rollback that finds the target different has met writes the step did
    /// not make. `None` until migrate completed (and in journals of sluice
    /// before 0.1's undo contract, whose completed steps are treated as
    /// changed since).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_step: Option<Fingerprint>,
    /// The rows migrate changed, recorded by the host on the step's own
    /// connections and stored as an artifact beside the plugin's: a
    /// rollback undoes exactly those and keeps every other write. `None`
    /// where the datastore records none, where the step changed the schema
    /// or too much to keep, and in journals before change sets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_set: Option<StoredChangeSet>,
}

/// A step's change set in the backup store (see
/// [`crate::datastores::changes`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredChangeSet {
    /// The artifact holding it (JSON), written by the host.
    pub artifact: ArtifactRef,
    /// Rows the step changed, per table.
    pub rows: std::collections::BTreeMap<String, u64>,
    /// Schema objects the step created (`table notebooks`), which the undo
    /// drops; the step changed no object that existed before it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub created: Vec<String>,
}

impl StoredChangeSet {
    /// Rows the step changed, all tables.
    pub fn total(&self) -> u64 {
        self.rows.values().sum()
    }
}

/// An operator's decision on a paused step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Go on.
    Approve,
    /// Roll back.
    Reject,
}

/// An approval or rejection, with what it was given for: it holds only for
/// the same pause (run), plan, plugin and params.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Approval {
    /// The step.
    pub step_id: String,
    /// The run that paused the step and gathered the evidence.
    pub run_id: String,
    /// Approve or reject.
    pub decision: Decision,
    /// Who, as they named themselves, and the OS user that ran the command.
    pub by: String,
    /// When (RFC 3339).
    pub at: String,
    /// sha256 of the plan file the approver saw.
    pub plan_hash: String,
    /// Digest of the step's plugin.
    pub plugin_digest: String,
    /// Hash of the step's params.
    pub params_hash: String,
    /// What was shown: the pause's reason and the metrics.
    pub evidence: serde_json::Value,
    /// Why, in the approver's words.
    pub reason: Option<String>,
}

/// What the journal knows of a step.
#[derive(Debug, Clone)]
pub struct StepRecord {
    /// Step id.
    pub step_id: String,
    /// Current state.
    pub state: StepState,
    /// Run that last changed it.
    pub run_id: String,
    /// Digest of the plugin that ran it.
    pub plugin_digest: String,
    /// Hash of the params it ran with.
    pub params_hash: String,
    /// Its backup, once verified.
    pub backup: Option<StoredBackup>,
    /// Metrics of the last validate.
    pub metrics: Vec<Metric>,
    /// Last failure, in words.
    pub error: Option<String>,
    /// When the state last changed (RFC 3339).
    pub updated_at: String,
}

/// One recorded transition.
#[derive(Debug, Clone)]
pub struct Transition {
    /// Run.
    pub run_id: String,
    /// Step.
    pub step_id: String,
    /// State entered.
    pub state: StepState,
    /// When (RFC 3339).
    pub at: String,
    /// Why, typed: what reports and the engine read.
    pub cause: Cause,
    /// Why, in words: what people read.
    pub detail: String,
}

/// One recorded run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RunRecord {
    /// Run id.
    pub id: String,
    /// The command (`run`, `rollback`).
    pub command: String,
    /// Hash of the plan it ran.
    pub plan_hash: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it finished (RFC 3339); `None` while running or if it died.
    pub finished_at: Option<String>,
    /// How it ended; `None` while running or if it died.
    pub outcome: Option<String>,
}

/// Where the engine records what it does, durably, before doing it. SQLite
/// ([`SqliteJournal`]) is the embedded default; a shared journal for several
/// hosts implements the same trait.
pub trait Journal: Send {
    /// Records the start of a run; returns its id.
    fn begin_run(
        &self,
        command: &str,
        plan_path: &Path,
        plan_hash: &str,
    ) -> Result<String, JournalError>;
    /// The command (`run`, `rollback`) of a recorded run.
    fn run_command(&self, run_id: &str) -> Result<Option<String>, JournalError>;
    /// Records how a run ended.
    fn finish_run(&self, run_id: &str, outcome: &str) -> Result<(), JournalError>;
    /// Every recorded run, oldest first (newest last).
    fn runs(&self) -> Result<Vec<RunRecord>, JournalError>;
    /// Moves a step to `state` and records the transition with its cause,
    /// atomically and durably; `identity` (plugin digest, params hash) when
    /// a step starts.
    fn transition(
        &mut self,
        run_id: &str,
        step_id: &str,
        state: StepState,
        why: &Why,
        identity: Option<(&str, &str)>,
    ) -> Result<(), JournalError>;
    /// Records a step's verified backup.
    fn record_backup(
        &mut self,
        run_id: &str,
        step_id: &str,
        backup: &StoredBackup,
    ) -> Result<(), JournalError>;
    /// Records a step's metrics.
    fn record_metrics(&self, step_id: &str, metrics: &[Metric]) -> Result<(), JournalError>;
    /// What the journal knows of a step.
    fn step(&self, step_id: &str) -> Result<Option<StepRecord>, JournalError>;
    /// Every transition of a step, oldest first.
    fn transitions(&self, step_id: &str) -> Result<Vec<Transition>, JournalError>;
    /// Records an operator's decision, durably.
    fn record_approval(&self, approval: &Approval) -> Result<(), JournalError>;
    /// Every decision recorded for a step, oldest first.
    fn approvals(&self, step_id: &str) -> Result<Vec<Approval>, JournalError>;
    /// Removes a target's lease whoever holds it, recording who and why.
    fn force_unlock(
        &self,
        target: &str,
        reason: &str,
    ) -> Result<Option<lease::LeaseHolder>, JournalError>;
    /// Takes the leases of `targets` for `run_id`; released when the returned
    /// guard drops.
    fn lease(
        &self,
        targets: &[String],
        run_id: &str,
        duration: std::time::Duration,
    ) -> Result<Box<dyn Send>, lease::LeaseError>;
}

/// The journal of `plan`: the shared PostgreSQL journal when the plan names
/// one (`[plan] journal = "<value>"`, the value holding its URL), namespaced
/// by the plan's name; otherwise the embedded SQLite journal in
/// [`Plan::state_dir`](crate::plan::Plan::state_dir).
pub fn open_for(plan: &crate::plan::Plan) -> Result<Box<dyn Journal>, JournalError> {
    Ok(match &plan.journal {
        Some(value) => {
            let url = plan.resolve_value(value)?;
            Box::new(postgres::PgJournal::open(url.expose(), &plan.name)?)
        }
        None => Box::new(SqliteJournal::open(&plan.state_dir())?),
    })
}

/// A step row as both journals store it: state and JSON columns as text.
pub(crate) struct RawStep {
    pub(crate) state: String,
    pub(crate) run_id: String,
    pub(crate) plugin_digest: String,
    pub(crate) params_hash: String,
    pub(crate) backup: Option<String>,
    pub(crate) metrics: Option<String>,
    pub(crate) error: Option<String>,
    pub(crate) updated_at: String,
}

impl RawStep {
    /// Parses the state and the JSON columns; `corrupt` says where.
    pub(crate) fn decode(
        self,
        step_id: String,
        corrupt: impl Fn(String) -> JournalError,
    ) -> Result<StepRecord, JournalError> {
        let state = self.state.parse().map_err(&corrupt)?;
        let backup = self
            .backup
            .map(|b| serde_json::from_str(&b))
            .transpose()
            .map_err(|e| corrupt(format!("backup: {e}")))?;
        let metrics = self
            .metrics
            .map(|m| serde_json::from_str(&m))
            .transpose()
            .map_err(|e| corrupt(format!("metrics: {e}")))?
            .unwrap_or_default();
        Ok(StepRecord {
            step_id,
            state,
            run_id: self.run_id,
            plugin_digest: self.plugin_digest,
            params_hash: self.params_hash,
            backup,
            metrics,
            error: self.error,
            updated_at: self.updated_at,
        })
    }
}

/// The current time, RFC 3339 with milliseconds.
pub fn now() -> String {
    let t = OffsetDateTime::now_utc();
    let t = t
        .replace_nanosecond(t.millisecond() as u32 * 1_000_000)
        .unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_list_oldest_first_with_how_they_ended() {
        let dir = tempfile::tempdir().unwrap();
        let j = SqliteJournal::open(dir.path()).unwrap();
        assert!(j.runs().unwrap().is_empty());
        let a = j.begin_run("run", Path::new("p.toml"), "h1").unwrap();
        j.finish_run(&a, "applied").unwrap();
        let b = j.begin_run("rollback", Path::new("p.toml"), "h2").unwrap();
        let runs = j.runs().unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(
            (
                runs[0].id.as_str(),
                runs[0].command.as_str(),
                runs[0].plan_hash.as_str()
            ),
            (a.as_str(), "run", "h1")
        );
        assert_eq!(runs[0].outcome.as_deref(), Some("applied"));
        assert!(runs[0].finished_at.is_some());
        assert_eq!(
            (runs[1].id.as_str(), runs[1].command.as_str()),
            (b.as_str(), "rollback")
        );
        assert_eq!(
            (runs[1].finished_at.as_ref(), runs[1].outcome.as_ref()),
            (None, None)
        );
        // As times: RFC 3339 text with a variable fraction does not sort as
        // time does (`…:07.5Z` after `…:07.123Z`).
        let at = |s: &str| OffsetDateTime::parse(s, &Rfc3339).unwrap();
        assert!(at(&runs[0].started_at) <= at(&runs[1].started_at));
    }
}
