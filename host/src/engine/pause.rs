//! Approval points and reviews: a step paused before it runs or after its
//! gates, and an operator's rejection of a paused step.

use super::run::drift;
use super::step::{baseline_of, Forward};
use super::{Engine, EngineError, Phase};
use super::{RunSummary, StepOutcome, StepSummary};
use crate::approval::{self, Standing};
use crate::journal::record::{Cause, FailureKind, StepFailure, Why};
use crate::journal::{Decision, StepRecord, StepState};
use crate::plan::{ApprovalPoint, Step};
use crate::runtime::LoadedPlugin;

impl Engine {
    /// The approval point before a step (`approval = "before"`): `None` when
    /// the step may run (no such point, or a valid approval of this pause);
    /// otherwise the pause, recorded in the journal.
    pub(super) fn gate_before(
        &mut self,
        run_id: &str,
        step: &Step,
        plugin: &LoadedPlugin,
        record: Option<&StepRecord>,
    ) -> Result<Option<StepSummary>, EngineError> {
        if step.approval != Some(ApprovalPoint::Before) {
            return Ok(None);
        }
        if self.options.rehearsal {
            self.journal.transition(
                run_id,
                &step.id,
                StepState::Pending,
                &Why::new(
                    Cause::ApprovalWaived,
                    "rehearsal: the approval point before this step is passed without a decision",
                ),
                Some((plugin.digest.as_str(), step.params_hash.as_str())),
            )?;
            return Ok(None);
        }
        let identity = Some((plugin.digest.as_str(), step.params_hash.as_str()));
        let mut s = StepSummary::new(&step.id, StepOutcome::NotRun);
        let reason = match record.filter(|r| r.state == StepState::AwaitingApproval) {
            Some(record) => {
                match approval::standing(
                    self.journal.as_ref(),
                    &self.plan,
                    step,
                    record,
                    &plugin.digest,
                )? {
                    Standing::Valid(a) => {
                        self.journal.transition(
                            run_id,
                            &step.id,
                            StepState::Pending,
                            &Why::new(
                                Cause::Approved {
                                    by: a.by.clone(),
                                    at: a.at.clone(),
                                },
                                format!("approved by {} at {}", a.by, a.at),
                            ),
                            identity,
                        )?;
                        return Ok(None);
                    }
                    Standing::Stale(why) => {
                        s.notes.push(format!("approval refused: {why}"));
                        format!("approval required before this step runs (again: {why})")
                    }
                    Standing::None | Standing::Rejected(_) => {
                        s.outcome = StepOutcome::AwaitingApproval {
                            reason: approval::pause_reason(self.journal.as_ref(), record)?
                                .unwrap_or_else(|| {
                                    "approval required before this step runs".into()
                                }),
                        };
                        return Ok(Some(s));
                    }
                }
            }
            None => "approval required before this step runs; nothing has changed".to_string(),
        };
        self.journal.transition(
            run_id,
            &step.id,
            StepState::AwaitingApproval,
            &Why::new(Cause::ApprovalRequired, reason.clone()),
            identity,
        )?;
        s.outcome = StepOutcome::AwaitingApproval { reason };
        Ok(Some(s))
    }

    /// A step paused for review: an approval of this pause for the plan,
    /// plugin and params as they are now completes it; an approval given for
    /// something else is refused and the step judged afresh; none keeps it
    /// paused.
    pub(super) async fn review(
        &mut self,
        run_id: &str,
        step: &Step,
        plugin: &LoadedPlugin,
        record: &StepRecord,
    ) -> Result<StepSummary, EngineError> {
        let mut s = StepSummary::new(&step.id, StepOutcome::NotRun);
        s.metrics = record.metrics.clone();
        if let Some(what) = drift(record, plugin, step) {
            s.outcome = StepOutcome::Drift {
                what: format!("{what} while it awaited review; `sluice reject` rolls it back"),
            };
            return Ok(s);
        }
        let verdict = match approval::standing(
            self.journal.as_ref(),
            &self.plan,
            step,
            record,
            &plugin.digest,
        )? {
            Standing::Valid(a) => Ok(Forward::Advance(format!(
                "approved by {} at {}",
                a.by, a.at
            ))),
            Standing::Stale(why) => {
                s.notes.push(format!("approval refused: {why}"));
                let baseline = baseline_of(record);
                self.judge(run_id, step, plugin, &mut s, &baseline).await?
            }
            Standing::None | Standing::Rejected(_) => {
                s.outcome = StepOutcome::AwaitingApproval {
                    reason: approval::pause_reason(self.journal.as_ref(), record)?
                        .unwrap_or_else(|| "awaiting review".into()),
                };
                return Ok(s);
            }
        };
        s.outcome = self
            .settle(run_id, step, plugin, record, &mut s, verdict)
            .await?;
        Ok(s)
    }

    /// Records an operator's rejection of a paused step and undoes it: a step
    /// paused after migrate is rolled back from its verified backup; one
    /// paused before it ran is left pending, unchanged.
    pub async fn reject(
        &mut self,
        step_id: &str,
        by: &str,
        reason: Option<&str>,
    ) -> Result<RunSummary, EngineError> {
        let step = self
            .plan
            .step(step_id)
            .cloned()
            .ok_or_else(|| EngineError::UnknownStep(step_id.to_string()))?;
        let plugin = self.plugins[&step.plugin].clone();
        let (mut summary, _lease) = self.begin("reject")?;
        let run_id = summary.run_id.clone();
        let record = approval::paused(self.journal.as_ref(), &step.id)?;
        let decision = approval::decide(
            self.journal.as_ref(),
            &self.plan,
            &step,
            &record,
            Decision::Reject,
            by,
            reason,
        )?;
        let why = format!(
            "rejected by {}{}",
            decision.by,
            reason.map(|r| format!(": {r}")).unwrap_or_default()
        );
        let mut s = StepSummary::new(&step.id, StepOutcome::NotRun);
        s.outcome = if record.state == StepState::AwaitingReview {
            let failure = StepFailure::new(Phase::Review, FailureKind::Rejected, why);
            self.roll_back(&run_id, &step, &plugin, &record, failure, &mut s)
                .await?
        } else {
            self.journal.transition(
                &run_id,
                &step.id,
                StepState::Pending,
                &Why::new(
                    Cause::Failed(StepFailure::new(
                        Phase::Review,
                        FailureKind::Rejected,
                        why.clone(),
                    )),
                    format!("{why}; nothing had changed"),
                ),
                None,
            )?;
            StepOutcome::FailedUnchanged {
                phase: Phase::Review,
                reason: format!("{why} before it ran; nothing had changed"),
            }
        };
        summary.steps.push(s);
        self.journal.finish_run(&run_id, summary.outcome_word())?;
        Ok(summary)
    }
}
