//! The loops over a plan's steps: `run` forward, `rollback` in reverse, and
//! the run bookkeeping (journal run record, leases) they share.

use super::{Engine, EngineError, Phase};
use super::{RunSummary, StepOutcome, StepSummary};
use crate::journal::record::{FailureKind, StepFailure};
use crate::journal::{StepRecord, StepState};
use crate::plan::{BreachScope, Step};
use crate::runtime::LoadedPlugin;
use std::sync::atomic::Ordering;

impl Engine {
    /// Records a new run and takes its leases (held until the guard drops).
    pub(super) fn begin(&self, command: &str) -> Result<(RunSummary, Box<dyn Send>), EngineError> {
        let run_id = self
            .journal
            .begin_run(command, &self.plan.path, &self.plan.hash)?;
        let lease = self.lease(&run_id)?;
        let summary = RunSummary {
            command: command.into(),
            plan: self.plan.name.clone(),
            run_id,
            steps: Vec::new(),
        };
        Ok((summary, lease))
    }

    /// Runs every pending step in order; stops at the first failure or
    /// pause.
    pub async fn run(&mut self) -> Result<RunSummary, EngineError> {
        // Params and metric names, from the plugins' previews, before anything
        // runs. Only here: a rollback must stay possible whatever the plan says.
        crate::preview::check(&self.plan, self.caller.as_ref(), &self.plugins).await?;
        let (mut summary, _lease) = self.begin("run")?;
        let run_id = summary.run_id.clone();
        let steps = self.plan.steps.clone();
        let mut stopped = false;
        for step in &steps {
            if stopped || self.stop_requested() {
                summary
                    .steps
                    .push(StepSummary::new(&step.id, StepOutcome::NotRun));
                stopped = true;
                continue;
            }
            let plugin = self.plugins[&step.plugin].clone();
            let record = self.journal.step(&step.id)?;
            let step_summary = match record.as_ref().map(|r| r.state) {
                Some(StepState::Completed) => {
                    let record = record.as_ref().expect("matched Some");
                    match drift(record, &plugin, step) {
                        Some(what) => StepSummary::new(&step.id, StepOutcome::Drift { what }),
                        None => {
                            let mut s = StepSummary::new(&step.id, StepOutcome::AlreadyApplied);
                            s.metrics = record.metrics.clone();
                            s
                        }
                    }
                }
                Some(state @ (StepState::RollbackFailed | StepState::RollbackRefused)) => {
                    StepSummary::new(&step.id, StepOutcome::Interrupted { state })
                }
                Some(state) if state.is_in_flight() => {
                    let record = record.expect("matched Some");
                    self.resume(&run_id, step, &plugin, &record).await?
                }
                Some(StepState::AwaitingReview) => {
                    let record = record.expect("matched Some");
                    self.review(&run_id, step, &plugin, &record).await?
                }
                _ => match self.gate_before(&run_id, step, &plugin, record.as_ref())? {
                    Some(paused) => paused,
                    None => self.execute(&run_id, step, &plugin).await?,
                },
            };
            stopped = !matches!(
                step_summary.outcome,
                StepOutcome::Applied | StepOutcome::AlreadyApplied
            );
            let breached_plan = matches!(
                step_summary.outcome,
                StepOutcome::RolledBack {
                    phase: Phase::Watch,
                    ..
                }
            ) && step.watch.is_some_and(|w| w.on_breach == BreachScope::Plan);
            summary.steps.push(step_summary);
            if breached_plan {
                self.roll_back_applied(&run_id, &step.id, &mut summary)
                    .await?;
            }
        }
        self.journal.finish_run(&run_id, summary.outcome_word())?;
        Ok(summary)
    }

    /// After `breached`'s watch window rolled it back, rolls back every
    /// earlier step this run applied, newest first, as the plan asks.
    pub(super) async fn roll_back_applied(
        &mut self,
        run_id: &str,
        breached: &str,
        summary: &mut RunSummary,
    ) -> Result<(), EngineError> {
        let applied: Vec<usize> = (0..summary.steps.len())
            .rev()
            .filter(|&i| matches!(summary.steps[i].outcome, StepOutcome::Applied))
            .collect();
        for i in applied {
            let step = self
                .plan
                .step(&summary.steps[i].id)
                .expect("summarized steps are in the plan")
                .clone();
            let plugin = self.plugins[&step.plugin].clone();
            let Some(record) = self.journal.step(&step.id)? else {
                continue;
            };
            let failure = StepFailure::new(
                Phase::Rollback,
                FailureKind::Requested,
                format!("the watch window of step `{breached}` breached; the plan rolls back every step of the run"),
            );
            let s = &mut summary.steps[i];
            s.outcome = self
                .roll_back(run_id, &step, &plugin, &record, failure, s)
                .await?;
            if matches!(
                s.outcome,
                StepOutcome::RollbackFailed { .. } | StepOutcome::RollbackRefused { .. }
            ) {
                break;
            }
        }
        Ok(())
    }

    /// Rolls back completed (or stranded) steps in reverse order; with `to`,
    /// stops after the step following `to`, which stays applied.
    pub async fn rollback(&mut self, to: Option<&str>) -> Result<RunSummary, EngineError> {
        if let Some(to) = to {
            if self.plan.step(to).is_none() {
                return Err(EngineError::UnknownStep(to.to_string()));
            }
        }
        let (mut summary, _lease) = self.begin("rollback")?;
        let run_id = summary.run_id.clone();
        let steps = self.plan.steps.clone();
        for step in steps.iter().rev() {
            if Some(step.id.as_str()) == to {
                break;
            }
            let Some(record) = self.journal.step(&step.id)? else {
                continue;
            };
            let reversible = matches!(
                record.state,
                StepState::Completed
                    | StepState::BackedUp
                    | StepState::Migrating
                    | StepState::Validating
                    | StepState::Watching
                    | StepState::AwaitingReview
                    | StepState::RollingBack
                    | StepState::RollbackFailed
                    | StepState::RollbackRefused
            );
            if !reversible {
                continue;
            }
            let plugin = self.plugins[&step.plugin].clone();
            let mut s = StepSummary::new(&step.id, StepOutcome::NotRun);
            let failure = StepFailure::new(
                Phase::Rollback,
                FailureKind::Requested,
                format!("operator rollback (step was {})", record.state),
            );
            s.outcome = self
                .roll_back(&run_id, step, &plugin, &record, failure, &mut s)
                .await?;
            let failed = matches!(
                s.outcome,
                StepOutcome::RollbackFailed { .. } | StepOutcome::RollbackRefused { .. }
            );
            summary.steps.push(s);
            if failed {
                break;
            }
        }
        self.journal.finish_run(&run_id, summary.outcome_word())?;
        Ok(summary)
    }

    /// Takes the leases of every target the plan changes, for this run.
    pub(super) fn lease(&self, run_id: &str) -> Result<Box<dyn Send>, EngineError> {
        let mut targets: Vec<String> = self
            .plan
            .steps
            .iter()
            .map(|s| self.plan.lease_keys(&self.plan.targets[&s.target]))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect();
        targets.sort();
        targets.dedup();
        let lease = self.journal.lease(&targets, run_id, self.plan.lease);
        if let Err(e) = &lease {
            let _ = self.journal.finish_run(run_id, "refused: lease held");
            tracing::debug!("lease refused: {e}");
        }
        Ok(lease?)
    }

    pub(super) fn stop_requested(&self) -> bool {
        self.options
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::SeqCst))
    }
}

pub(super) fn drift(record: &StepRecord, plugin: &LoadedPlugin, step: &Step) -> Option<String> {
    let mut what = Vec::new();
    if record.plugin_digest != plugin.digest {
        what.push(format!(
            "plugin `{}` was {} and is now {}",
            step.plugin,
            short(&record.plugin_digest),
            short(&plugin.digest)
        ));
    }
    if record.params_hash != step.params_hash {
        what.push("its params changed".to_string());
    }
    (!what.is_empty()).then(|| what.join("; "))
}

pub(super) fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}
