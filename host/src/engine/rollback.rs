//! Rolling a step back from its verified backup, and the host's proof that
//! the target equals its pre-step state.

use super::{Engine, EngineError, Phase};
use super::{StepOutcome, StepSummary};
use crate::capabilities::backup_store::BackupAccess;
use crate::datastores;
use crate::datastores::changes::ChangeCapture;
use crate::journal::outcome::UndoneBy;
use crate::journal::record::{Cause, FailureKind, StepFailure, Why};
use crate::journal::{StepRecord, StepState, StoredBackup};
use crate::plan::{Access, Step};
use crate::runtime::{CallReport, LoadedPlugin, PhaseInput, PhaseReached};

/// How a step is undone, decided from the plan and the journal before
/// anything is touched.
#[derive(Debug)]
pub(crate) enum Undo {
    /// Nothing to undo from: the rollback is refused, with why.
    Refuse(String),
    /// The step could not write: prove the target equals the backup's
    /// fingerprint instead of restoring.
    ProveUnchanged(StoredBackup),
    /// Restore from the verified backup, then prove the pre-step state.
    Restore(StoredBackup),
}

/// The undo of `step`, as `record` stands.
pub(crate) fn undo_for(step: &Step, record: &StepRecord) -> Undo {
    match (&record.backup, step.access) {
        (None, _) => Undo::Refuse("no verified backup is recorded for this step".into()),
        (Some(backup), Access::ReadOnly) => Undo::ProveUnchanged(backup.clone()),
        (Some(backup), _) => Undo::Restore(backup.clone()),
    }
}

impl Engine {
    /// Rolls a step back from its verified backup and proves the result.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn roll_back(
        &mut self,
        run_id: &str,
        step: &Step,
        plugin: &LoadedPlugin,
        record: &StepRecord,
        failure: StepFailure,
        s: &mut StepSummary,
    ) -> Result<StepOutcome, EngineError> {
        let phase = failure.phase;
        // The step as the journal has it now, before it says rolling-back:
        // how far it got, and its backup with the post-step fingerprint
        // (the caller's `record` may predate migrate's end).
        let current = self.journal.step(&step.id)?;
        let record = current.as_ref().unwrap_or(record);
        let reached = match current.as_ref().map(|r| r.state) {
            Some(StepState::Migrating) => PhaseReached::Migrating,
            Some(StepState::Validating | StepState::Watching | StepState::AwaitingReview) => {
                PhaseReached::Migrated
            }
            Some(StepState::Completed) => PhaseReached::Completed,
            Some(StepState::RollingBack | StepState::RollbackFailed) => PhaseReached::RollingBack,
            Some(StepState::RollbackRefused) => PhaseReached::Completed,
            _ => PhaseReached::BackedUp,
        };
        // A step that changed only rows, recorded as a change set, is
        // undone row by row: the application's other writes stay.
        if let Some(backup) = record
            .backup
            .as_ref()
            .filter(|_| step.access != Access::ReadOnly)
        {
            if let Some(outcome) = self
                .undo_change_set(run_id, step, backup, &failure, s)
                .await?
            {
                return Ok(outcome);
            }
        }
        // Before anything is undone: writes made after the step would be
        // lost by a restore. Refuse, unless the operator decided otherwise.
        // An interrupted rollback (rolling-back) passed this check already.
        let mut failure = failure;
        if step.access != Access::ReadOnly && !matches!(reached, PhaseReached::RollingBack) {
            if let Some(backup) = &record.backup {
                let later_writes = self.later_writes(step, backup, reached).await;
                if !later_writes.is_empty() {
                    if !self.options.discard_later_writes {
                        let detail = format!(
                            "{failure}; rollback refused, nothing undone: the target changed after the step ({}); \
                             restoring would discard those writes",
                            later_writes.join("; ")
                        );
                        self.journal.transition(
                            run_id,
                            &step.id,
                            StepState::RollbackRefused,
                            &Why::new(
                                Cause::LaterWrites {
                                    changed: later_writes.clone(),
                                },
                                detail,
                            ),
                            None,
                        )?;
                        return Ok(StepOutcome::RollbackRefused {
                            phase,
                            reason: failure.message,
                            later_writes,
                        });
                    }
                    failure = failure.map_message(|reason| format!(
                        "{reason}; discarding writes made after the step, as the operator decided (--discard-later-writes): {}",
                        later_writes.join("; ")
                    ));
                }
            }
        }
        self.journal.transition(
            run_id,
            &step.id,
            StepState::RollingBack,
            &Why::failed(&failure),
            None,
        )?;
        let reason = failure.message.clone();
        let fail = |engine: &mut Self, kind: FailureKind, rollback_error: String| {
            engine.rollback_failed(run_id, step, phase, &reason, kind, rollback_error)
        };
        let backup = match undo_for(step, record) {
            Undo::Refuse(why) => return fail(self, FailureKind::BackupUnverified, why),
            Undo::ProveUnchanged(backup) => {
                // The datastore refused every write: prove nothing changed
                // instead of asking the plugin to undo what it could not do.
                if let Err(e) = self.prove_pre_step_state(step, &backup).await {
                    return fail(self, FailureKind::Unproven, format!("read-only step: {e}"));
                }
                let detail = format!("{reason} (read-only step: target verified unchanged)");
                self.journal.transition(
                    run_id,
                    &step.id,
                    StepState::Failed,
                    &Why::new(Cause::VerifiedUnchanged(failure), detail),
                    None,
                )?;
                return Ok(StepOutcome::FailedUnchanged { phase, reason });
            }
            Undo::Restore(backup) => backup,
        };
        let (result, report) = match self.call_rollback(step, plugin, &backup, reached).await {
            Ok(called) => called,
            Err(refused) => return fail(self, refused.kind, refused.message),
        };
        s.phases.push((Phase::Rollback, report.elapsed));
        if let Err(e) = result {
            return fail(self, e.kind, e.message);
        }
        // The host's own proof: schema and backed-up tables equal the pre-step state.
        if let Err(e) = self.prove_pre_step_state(step, &backup).await {
            return fail(self, FailureKind::Unproven, format!("rollback: {e}"));
        }
        let detail = format!(
            "restored and verified: schema and {} table checksums equal the pre-step state",
            backup.fingerprint.tables.len()
        );
        self.journal.transition(
            run_id,
            &step.id,
            StepState::RolledBack,
            &Why::new(Cause::RolledBack, detail),
            None,
        )?;
        Ok(StepOutcome::RolledBack {
            phase,
            reason,
            undo: UndoneBy::Restore,
        })
    }

    /// Records that rolling `step` back failed (`kind`, `message`) after the
    /// step itself failed in `phase` for `reason`: `rollback-failed`.
    pub(super) fn rollback_failed(
        &mut self,
        run_id: &str,
        step: &Step,
        phase: Phase,
        reason: &str,
        kind: FailureKind,
        message: String,
    ) -> Result<StepOutcome, EngineError> {
        let why = StepFailure::new(Phase::Rollback, kind, message);
        self.journal.transition(
            run_id,
            &step.id,
            StepState::RollbackFailed,
            &Why::failed(&why),
            None,
        )?;
        Ok(StepOutcome::RollbackFailed {
            phase,
            reason: reason.to_string(),
            rollback_error: why.message,
        })
    }

    /// Fingerprints what the step backed up right after its migrate and
    /// records it with the backup: the state a later rollback must find for
    /// a restore to lose nothing. `Err` (inner): the step cannot go on.
    pub(super) async fn record_post_step(
        &mut self,
        run_id: &str,
        step: &Step,
        capture: Option<ChangeCapture>,
    ) -> Result<Result<(), String>, EngineError> {
        if step.access == Access::ReadOnly {
            return Ok(Ok(()));
        }
        let Some(mut backup) = self.journal.step(&step.id)?.and_then(|r| r.backup) else {
            return Ok(Ok(()));
        };
        let target = &self.plan.targets[&step.target];
        let tables: Vec<String> = backup.fingerprint.tables.keys().cloned().collect();
        match datastores::fingerprint(target.kind, &self.endpoints[&target.name], tables).await {
            Ok(after) => {
                if let Some(capture) = capture {
                    backup.change_set = self
                        .store_change_set(step, &backup, &after, capture)
                        .await?;
                }
                backup.post_step = Some(after);
                self.journal.record_backup(run_id, &step.id, &backup)?;
                Ok(Ok(()))
            }
            Err(e) => Ok(Err(format!(
                "cannot fingerprint target `{}` after migrate: {e}",
                target.name
            ))),
        }
    }

    /// What changed in the step's backed-up tables since its migrate, one
    /// line per table; empty when a restore loses nothing. A step that
    /// reached migrate's end without a recorded post-step fingerprint (an
    /// earlier sluice completed it) is treated as changed since.
    async fn later_writes(
        &self,
        step: &Step,
        backup: &StoredBackup,
        reached: PhaseReached,
    ) -> Vec<String> {
        let Some(post_step) = &backup.post_step else {
            return match reached {
                PhaseReached::Completed => vec![
                    "no post-step fingerprint is recorded (the step was completed by an earlier sluice), so later writes cannot be ruled out".into(),
                ],
                // Migrate did not finish: there is no post-step state to compare with.
                _ => Vec::new(),
            };
        };
        let target = &self.plan.targets[&step.target];
        let tables: Vec<String> = post_step.tables.keys().cloned().collect();
        match datastores::fingerprint(target.kind, &self.endpoints[&target.name], tables).await {
            Ok(now) => later_write_lines(&backup.fingerprint, post_step, &now),
            Err(e) => vec![format!(
                "cannot fingerprint target `{}` to rule out later writes: {e}",
                target.name
            )],
        }
    }

    /// The plugin's rollback from a verified backup, with read access to
    /// exactly its artifacts; refused when the stored artifacts no longer
    /// match what was verified (the outer `Err`: the plugin was not called).
    /// The caller proves the result.
    pub(crate) async fn call_rollback(
        &self,
        step: &Step,
        plugin: &LoadedPlugin,
        backup: &StoredBackup,
        reached: PhaseReached,
    ) -> Result<(Result<(), StepFailure>, CallReport), StepFailure> {
        // The backup must still be exactly what was verified.
        for artifact in &backup.artifacts {
            self.backups.verify(artifact).map_err(|e| {
                StepFailure::new(
                    Phase::Rollback,
                    FailureKind::BackupUnverified,
                    format!("rollback refused: {e}"),
                )
            })?;
        }
        let artifacts = backup
            .artifacts
            .iter()
            .map(|a| (a.name.clone(), a.clone()))
            .collect();
        let grants = self.grants(
            step,
            Some(step.access),
            BackupAccess::Read {
                store: self.backups.clone(),
                artifacts,
            },
        );
        let input = PhaseInput::Rollback(self.context(step), backup.manifest.clone(), reached);
        let (result, report) = self.caller.call(plugin, grants, input).await;
        Ok((
            result.map(|_| ()).map_err(|e| {
                StepFailure::new(Phase::Rollback, e.kind(), format!("rollback failed: {e}"))
            }),
            report,
        ))
    }

    /// The host's own check that the target's schema and backed-up tables
    /// equal the fingerprint taken at backup.
    pub(crate) async fn prove_pre_step_state(
        &self,
        step: &Step,
        backup: &StoredBackup,
    ) -> Result<(), String> {
        self.prove_equal(step, &backup.fingerprint).await
    }

    /// The host's own check that the target equals `expected`: its schema,
    /// and the tables (and their sequences) `expected` measured.
    pub(super) async fn prove_equal(
        &self,
        step: &Step,
        expected: &datastores::Fingerprint,
    ) -> Result<(), String> {
        let target = &self.plan.targets[&step.target];
        let tables: Vec<String> = expected.tables.keys().cloned().collect();
        let after = datastores::fingerprint(target.kind, &self.endpoints[&target.name], tables)
            .await
            .map_err(|e| format!("cannot fingerprint target `{}`: {e}", target.name))?;
        let differences = expected.differences(&after);
        if differences.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the target does not equal its pre-step state: {}",
                differences.join("; ")
            ))
        }
    }
}

/// One line per table that changed between the post-step fingerprint and now
/// (saying when the step itself had not changed that table, so a restore of
/// it could only lose the application's writes).
fn later_write_lines(
    pre_step: &datastores::Fingerprint,
    post_step: &datastores::Fingerprint,
    now: &datastores::Fingerprint,
) -> Vec<String> {
    let mut out = Vec::new();
    if post_step.schema != now.schema {
        out.push("the schema changed".to_string());
    }
    for (name, then) in &post_step.tables {
        match now.tables.get(name) {
            None => out.push(format!("table `{name}` was dropped")),
            Some(t) if t != then => out.push(format!(
                "table `{name}`: {} rows now, {} right after the step ({:+} rows, contents changed{})",
                t.rows,
                then.rows,
                t.rows as i64 - then.rows as i64,
                if pre_step.tables.get(name) == Some(then) {
                    "; the step itself did not change this table"
                } else {
                    ""
                }
            )),
            Some(_) => {}
        }
    }
    out
}
