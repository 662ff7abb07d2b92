//! The forward phases after a verified backup: migrate with the step's
//! access, validate read-only, and the judgement of the step's gates.

use std::time::Duration;

use super::step::{Forward, Verdict, STOPPED_AFTER_MIGRATE};
use super::StepSummary;
use super::{Engine, EngineError, Phase};
use crate::capabilities::backup_store::BackupAccess;
use crate::datastores::changes::ChangeCapture;
use crate::journal::outcome::metric_values;
use crate::journal::record::{Cause, FailureKind, StepFailure, Why};
use crate::journal::StepState;
use crate::plan::{Access, Action, ApprovalPoint, Step};
use crate::runtime::context::check_metrics;
use crate::runtime::{CallReport, LoadedPlugin, Metric, PhaseInput, PhaseOutput};

impl Engine {
    /// Runs validate read-only; returns the metrics and how long it took,
    /// or why they cannot be used.
    pub(crate) async fn measure(
        &self,
        step: &Step,
        plugin: &LoadedPlugin,
        wanted: Vec<String>,
    ) -> Result<(Vec<Metric>, Duration), StepFailure> {
        let grants = self.grants(step, Some(Access::ReadOnly), BackupAccess::None);
        let mut context = self.context(step);
        context.metrics = wanted;
        let (result, report) = self
            .caller
            .call(plugin, grants, PhaseInput::Validate(context))
            .await;
        let metrics = match result {
            Ok(PhaseOutput::Validate(metrics)) => metrics,
            Ok(_) => unreachable!("validate returns metrics"),
            Err(e) => {
                return Err(StepFailure::new(
                    Phase::Validate,
                    e.kind(),
                    format!("validate failed: {e}"),
                ))
            }
        };
        check_metrics(&metrics).map_err(|reason| {
            StepFailure::new(
                Phase::Validate,
                FailureKind::UnusableMetrics,
                format!("validate returned unusable metrics: {reason}"),
            )
        })?;
        Ok((metrics, report.elapsed))
    }

    /// Migrate with the step's access; the capture holds the rows it
    /// changed, on datastores that record them.
    pub(crate) async fn call_migrate(
        &self,
        step: &Step,
        plugin: &LoadedPlugin,
    ) -> (Result<(), StepFailure>, CallReport, Option<ChangeCapture>) {
        let mut grants = self.grants(step, Some(step.access), BackupAccess::None);
        let capture = self.change_capture(step);
        if let Some(sql) = grants.sql.as_mut() {
            sql.capture = capture.clone();
        }
        let (result, report) = self
            .caller
            .call(plugin, grants, PhaseInput::Migrate(self.context(step)))
            .await;
        if let Some(capture) = capture.clone() {
            // The sessions hand their changes over as they close, on their
            // own tasks; past this point none of them touches the target.
            super::undo::sessions_closed(capture).await;
        }
        (
            result.map(|_| ()).map_err(|e| {
                StepFailure::new(Phase::Migrate, e.kind(), format!("migrate failed: {e}"))
            }),
            report,
            capture,
        )
    }

    /// The forward path after a verified backup: migrate (the step's access),
    /// validate (read-only), thresholds. Returns the completion detail, or
    /// the phase that failed first and why.
    pub(super) async fn apply(
        &mut self,
        run_id: &str,
        step: &Step,
        plugin: &LoadedPlugin,
        s: &mut StepSummary,
        baseline: &[Metric],
    ) -> Result<Verdict, EngineError> {
        self.journal.transition(
            run_id,
            &step.id,
            StepState::Migrating,
            &Why::new(
                Cause::Started {
                    phase: Phase::Migrate,
                },
                "migrate started",
            ),
            None,
        )?;
        let (result, report, capture) = self.call_migrate(step, plugin).await;
        s.phases.push((Phase::Migrate, report.elapsed));
        if let Err(failure) = result {
            return Ok(Err(failure));
        }
        if let Err(e) = self.record_post_step(run_id, step, capture).await? {
            return Ok(Err(StepFailure::new(Phase::Migrate, FailureKind::Host, e)));
        }
        if self.stop_requested() {
            return Ok(Err(StepFailure::new(
                Phase::Migrate,
                FailureKind::Signal,
                STOPPED_AFTER_MIGRATE,
            )));
        }
        self.judge(run_id, step, plugin, s, baseline).await
    }

    /// Validate (read-only) and the step's gates, after migrate completed.
    pub(super) async fn judge(
        &mut self,
        run_id: &str,
        step: &Step,
        plugin: &LoadedPlugin,
        s: &mut StepSummary,
        baseline: &[Metric],
    ) -> Result<Verdict, EngineError> {
        self.journal.transition(
            run_id,
            &step.id,
            StepState::Validating,
            &Why::new(
                Cause::Started {
                    phase: Phase::Validate,
                },
                "migrate done; validate started",
            ),
            None,
        )?;
        let (metrics, elapsed) = match self.measure(step, plugin, Vec::new()).await {
            Ok(measured) => measured,
            Err(failure) => return Ok(Err(failure)),
        };
        s.phases.push((Phase::Validate, elapsed));
        self.journal.record_metrics(&step.id, &metrics)?;
        let judgement = step.judge(&metric_values(&metrics, baseline));
        s.metrics = metrics;
        s.thresholds = judgement.thresholds;
        s.band = judgement.band;
        Ok(match judgement.action {
            Action::Rollback => Err(StepFailure::new(
                Phase::Thresholds,
                FailureKind::Thresholds,
                judgement.reason,
            )),
            Action::Review => Ok(Forward::Review(judgement.reason)),
            Action::Advance if step.approval == Some(ApprovalPoint::After) => {
                Ok(Forward::Review(format!(
                    "{}; the plan asks for approval after this step",
                    judgement.reason
                )))
            }
            Action::Advance => Ok(Forward::Advance(judgement.reason)),
        })
    }
}
