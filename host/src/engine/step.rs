//! One step's state machine: execute (backup → migrate → validate → gates),
//! resume from the journal, and settle a verdict (complete, pause for
//! review, or roll back).

use super::{Engine, EngineError, Phase};
use super::{StepOutcome, StepSummary};
use crate::journal::record::{Cause, FailureKind, StepFailure, Why};
use crate::journal::{StepRecord, StepState};
use crate::plan::Step;
use crate::runtime::{LoadedPlugin, Metric};

impl Engine {
    pub(super) async fn execute(
        &mut self,
        run_id: &str,
        step: &Step,
        plugin: &LoadedPlugin,
    ) -> Result<StepSummary, EngineError> {
        let mut s = StepSummary::new(&step.id, StepOutcome::NotRun);
        let identity = Some((plugin.digest.as_str(), step.params_hash.as_str()));
        self.journal.transition(
            run_id,
            &step.id,
            StepState::BackingUp,
            &Why::new(
                Cause::Started {
                    phase: Phase::Backup,
                },
                "backup started",
            ),
            identity,
        )?;

        // Backup, read-only, then verify it before anything may change.
        let (verified, report) = self.take_backup(step, plugin).await;
        s.phases.push((Phase::Backup, report.elapsed));
        let verified = match verified {
            Ok(backup) if step.needs_baseline() => {
                self.baseline(step, plugin, backup, &mut s).await
            }
            other => other,
        };
        let backup = match verified {
            Ok(backup) => backup,
            Err(failure) => {
                self.journal.transition(
                    run_id,
                    &step.id,
                    StepState::Failed,
                    &Why::failed(&failure),
                    None,
                )?;
                s.outcome = StepOutcome::FailedUnchanged {
                    phase: failure.phase,
                    reason: failure.message,
                };
                return Ok(s);
            }
        };
        s.backup = Some((
            backup.artifacts.len(),
            backup.artifacts.iter().map(|a| a.size).sum(),
        ));
        self.journal.record_backup(run_id, &step.id, &backup)?;
        let detail = format!(
            "backup verified: {} artifacts, {} bytes",
            backup.artifacts.len(),
            backup.artifacts.iter().map(|a| a.size).sum::<u64>()
        );
        self.journal.transition(
            run_id,
            &step.id,
            StepState::BackedUp,
            &Why::new(Cause::BackupVerified, detail),
            None,
        )?;
        let record = self.journal.step(&step.id)?.expect("just written");
        if self.stop_requested() {
            // Nothing has changed yet: leave the step pending.
            self.journal.transition(
                run_id,
                &step.id,
                StepState::Pending,
                &Why::new(
                    Cause::Stopped,
                    "stopped by a signal after backup; nothing changed",
                ),
                None,
            )?;
            s.outcome = StepOutcome::Stopped { rolled_back: false };
            return Ok(s);
        }

        s.outcome = self
            .finish_forward(run_id, step, plugin, &record, &mut s, true)
            .await?;
        Ok(s)
    }

    /// Finishes a step an earlier run left in flight, from the journal alone:
    /// nothing changed yet (backup) → run it afresh; migrate may have run →
    /// restore from the verified backup and run it afresh (or, for a plugin
    /// whose migrate is idempotent, run migrate again); migrate done →
    /// validate and judge; rollback under way → finish the rollback.
    pub(super) async fn resume(
        &mut self,
        run_id: &str,
        step: &Step,
        plugin: &LoadedPlugin,
        record: &StepRecord,
    ) -> Result<StepSummary, EngineError> {
        let was = format!(
            "interrupted while {} (run {}, {})",
            record.state, record.run_id, record.updated_at
        );
        crate::failpoint!("engine:resume");
        let s = match record.state {
            StepState::BackingUp | StepState::BackedUp => {
                // Backup only reads: the target is as it was before the step.
                self.journal.transition(
                    run_id,
                    &step.id,
                    StepState::Pending,
                    &Why::new(
                        Cause::Resumed { from: record.state },
                        format!("resumed: {was}; nothing had changed, running it again"),
                    ),
                    None,
                )?;
                let mut s = self.execute(run_id, step, plugin).await?;
                s.resumed = Some(format!("{was}; nothing had changed: ran it again"));
                s
            }
            StepState::Migrating if plugin.info.idempotent_migrate && record.backup.is_some() => {
                let mut s = StepSummary::new(&step.id, StepOutcome::NotRun);
                self.journal.transition(
                    run_id,
                    &step.id,
                    StepState::BackedUp,
                    &Why::new(
                        Cause::Resumed { from: record.state },
                        format!("resumed: {was}; migrate is idempotent, running it again"),
                    ),
                    None,
                )?;
                s.outcome = self
                    .finish_forward(run_id, step, plugin, record, &mut s, true)
                    .await?;
                s.resumed = Some(format!("{was}; migrate is idempotent: ran it again"));
                s
            }
            StepState::Migrating => {
                // Migrate may or may not have committed: restore, then run afresh.
                let mut s = StepSummary::new(&step.id, StepOutcome::NotRun);
                let failure = StepFailure::new(
                    Phase::Migrate,
                    FailureKind::Interrupted,
                    format!("resumed: {was}"),
                );
                let outcome = self
                    .roll_back(run_id, step, plugin, record, failure, &mut s)
                    .await?;
                if !matches!(
                    outcome,
                    StepOutcome::RolledBack { .. } | StepOutcome::FailedUnchanged { .. }
                ) {
                    s.outcome = outcome;
                    s.resumed = Some(was);
                    return Ok(s);
                }
                let phases = std::mem::take(&mut s.phases);
                let mut s = self.execute(run_id, step, plugin).await?;
                s.phases.splice(0..0, phases);
                s.resumed = Some(format!(
                    "{was}; restored from the verified backup, then ran it again"
                ));
                s
            }
            StepState::Validating | StepState::Watching => {
                let mut s = StepSummary::new(&step.id, StepOutcome::NotRun);
                s.outcome = self
                    .finish_forward(run_id, step, plugin, record, &mut s, false)
                    .await?;
                s.resumed = Some(format!("{was}; migrate had completed: validated it"));
                s
            }
            StepState::RollingBack => {
                let mut s = StepSummary::new(&step.id, StepOutcome::NotRun);
                let failure = self.interrupted_rollback(record)?;
                s.outcome = self
                    .roll_back(run_id, step, plugin, record, failure, &mut s)
                    .await?;
                s.resumed = Some(format!("{was}; finished the rollback"));
                s
            }
            other => unreachable!("{other} is not in flight"),
        };
        Ok(s)
    }

    /// Why the interrupted rollback of a step was started: the failure its
    /// `rolling-back` transition recorded. A format-1 journal did not record
    /// it: a rollback an operator asked for is the goal; one a failing `run`
    /// started means the step failed, in migrate when no metrics were
    /// measured, else at its gates.
    fn interrupted_rollback(&self, record: &StepRecord) -> Result<StepFailure, EngineError> {
        let recorded = self
            .journal
            .transitions(&record.step_id)?
            .into_iter()
            .rev()
            .find(|t| t.state == StepState::RollingBack)
            .and_then(|t| match t.cause {
                Cause::Failed(f) if f.kind != FailureKind::Unrecorded => Some(f),
                _ => None,
            });
        if let Some(failure) = recorded {
            return Ok(failure);
        }
        let message = record.error.clone().unwrap_or_else(|| "rollback".into());
        let phase = match self.journal.run_command(&record.run_id)?.as_deref() {
            Some("rollback") => Phase::Rollback,
            _ if record.metrics.is_empty() => Phase::Migrate,
            _ => Phase::Thresholds,
        };
        Ok(StepFailure::new(phase, FailureKind::Unrecorded, message))
    }

    /// Completes a step from a verified backup: migrate (when `migrate`) then
    /// validate and its gates; rolls back on failure.
    pub(super) async fn finish_forward(
        &mut self,
        run_id: &str,
        step: &Step,
        plugin: &LoadedPlugin,
        record: &StepRecord,
        s: &mut StepSummary,
        migrate: bool,
    ) -> Result<StepOutcome, EngineError> {
        let baseline = baseline_of(record);
        let verdict = if migrate {
            self.apply(run_id, step, plugin, s, &baseline).await?
        } else {
            self.judge(run_id, step, plugin, s, &baseline).await?
        };
        self.settle(run_id, step, plugin, record, s, verdict).await
    }

    /// Acts on a verdict after migrate: advance (through the watch window,
    /// if any) to completed, pause for review, or roll back.
    pub(super) async fn settle(
        &mut self,
        run_id: &str,
        step: &Step,
        plugin: &LoadedPlugin,
        record: &StepRecord,
        s: &mut StepSummary,
        verdict: Verdict,
    ) -> Result<StepOutcome, EngineError> {
        let verdict = match (verdict, step.watch) {
            (Ok(Forward::Advance(detail)), Some(watch)) => {
                let baseline = baseline_of(record);
                self.watch(run_id, step, plugin, s, watch, &baseline)
                    .await?
                    .map(|watched| Forward::Advance(format!("{detail}; {watched}")))
            }
            (verdict, _) => verdict,
        };
        Ok(match verdict {
            Ok(Forward::Advance(detail)) => {
                self.journal.transition(
                    run_id,
                    &step.id,
                    StepState::Completed,
                    &Why::new(Cause::Completed, detail),
                    None,
                )?;
                StepOutcome::Applied
            }
            Ok(Forward::Review(reason)) if self.options.rehearsal => {
                let detail = format!("rehearsal: would pause for review here ({reason}); passed");
                self.journal.transition(
                    run_id,
                    &step.id,
                    StepState::Completed,
                    &Why::new(Cause::Completed, detail.clone()),
                    None,
                )?;
                s.notes.push(detail);
                StepOutcome::Applied
            }
            Ok(Forward::Review(reason)) => {
                let reason = format!(
                    "{reason}; awaiting review: `sluice approve` completes the step, `sluice reject` rolls it back"
                );
                self.journal.transition(
                    run_id,
                    &step.id,
                    StepState::AwaitingReview,
                    &Why::new(Cause::AwaitingReview, reason.clone()),
                    None,
                )?;
                StepOutcome::AwaitingApproval { reason }
            }
            Err(failure) => {
                let stopped = failure.kind == FailureKind::Signal;
                match self
                    .roll_back(run_id, step, plugin, record, failure, s)
                    .await?
                {
                    StepOutcome::RolledBack { .. } if stopped => {
                        StepOutcome::Stopped { rolled_back: true }
                    }
                    other => other,
                }
            }
        })
    }
}

/// Why a step is rolled back when a signal arrives after its migrate.
pub(super) const STOPPED_AFTER_MIGRATE: &str =
    "stopped by a signal after migrate; rolling the step back";

/// What the forward path decided after validate, when it did not fail.
pub(super) enum Forward {
    /// Complete the step; the journal detail.
    Advance(String),
    /// Pause for an operator's review; why.
    Review(String),
}

/// A forward decision, or the failure that stops the step.
pub(super) type Verdict = Result<Forward, StepFailure>;

/// The baseline metrics kept with a step's backup.
pub(super) fn baseline_of(record: &StepRecord) -> Vec<Metric> {
    record
        .backup
        .as_ref()
        .map(|b| b.baseline.clone())
        .unwrap_or_default()
}
