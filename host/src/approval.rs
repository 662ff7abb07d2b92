//! Approval points: what an operator's decision on a paused step is worth.
//!
//! A decision is recorded against the pause it answers (the run that paused
//! the step and gathered the evidence) and the plan, plugin and params the
//! operator saw. It holds only while all of them are unchanged: an approval
//! given before a plan edit is refused after it, and the step is judged
//! afresh so the operator approves what will actually run.

use crate::journal::{Approval, Decision, Journal, JournalError, StepRecord, StepState};
use crate::plan::{Plan, Step};

/// Why a decision cannot be recorded.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// The plan has no such step.
    #[error("step `{0}` is not in the plan")]
    UnknownStep(String),
    /// The step is not waiting for a decision.
    #[error("step `{step}` is not awaiting a decision: it is {state}")]
    NotPaused {
        /// The step.
        step: String,
        /// Its state (`pending` when it never ran).
        state: String,
    },
    /// `--run` names another run than the one that paused the step.
    #[error("step `{step}` was paused by run {paused}, not {given}: approve what you reviewed")]
    WrongRun {
        /// The step.
        step: String,
        /// The run given.
        given: String,
        /// The run that paused it.
        paused: String,
    },
    /// The plan or plugin changed since the pause: its evidence is stale.
    #[error(
        "step `{step}`: {why}; run `sluice run` again to gather evidence for the plan as it is now"
    )]
    Stale {
        /// The step.
        step: String,
        /// What changed.
        why: String,
    },
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// Where a paused step stands with its decisions.
#[derive(Debug, Clone)]
pub enum Standing {
    /// No decision for this pause.
    None,
    /// Approved, for the plan, plugin and params as they are now.
    Valid(Approval),
    /// Approved for something that has since changed; why it no longer holds.
    Stale(String),
    /// Rejected (the rejection already rolled the step back).
    Rejected(Approval),
}

/// The latest decision on the pause `record` is in, judged against the plan
/// and plugin digest as they are now.
pub fn standing(
    journal: &dyn Journal,
    plan: &Plan,
    step: &Step,
    record: &StepRecord,
    plugin_digest: &str,
) -> Result<Standing, JournalError> {
    let Some(latest) = journal
        .approvals(&step.id)?
        .into_iter()
        .rev()
        .find(|a| a.run_id == record.run_id)
    else {
        return Ok(Standing::None);
    };
    if latest.decision == Decision::Reject {
        return Ok(Standing::Rejected(latest));
    }
    Ok(match changed(&latest, plan, step, plugin_digest) {
        Some(why) => Standing::Stale(format!(
            "the approval by {} at {} {why}",
            latest.by, latest.at
        )),
        None => Standing::Valid(latest),
    })
}

/// What differs between what an approval was given for and now.
fn changed(a: &Approval, plan: &Plan, step: &Step, plugin_digest: &str) -> Option<String> {
    let mut what = Vec::new();
    if a.plan_hash != plan.hash {
        what.push(format!(
            "was given for plan {} and the plan is now {}",
            short(&a.plan_hash),
            short(&plan.hash)
        ));
    }
    if a.plugin_digest != plugin_digest {
        what.push(format!(
            "was given for plugin {} and it is now {}",
            short(&a.plugin_digest),
            short(plugin_digest)
        ));
    }
    if a.params_hash != step.params_hash {
        what.push("was given for other params".to_string());
    }
    (!what.is_empty()).then(|| what.join("; "))
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

/// Why the step in `record` is paused: the detail of the transition that
/// paused it.
pub fn pause_reason(
    journal: &dyn Journal,
    record: &StepRecord,
) -> Result<Option<String>, JournalError> {
    Ok(journal
        .transitions(&record.step_id)?
        .into_iter()
        .rev()
        .find(|t| t.run_id == record.run_id && t.state == record.state)
        .map(|t| t.detail))
}

/// The step's record, if it is paused for a decision.
pub fn paused(journal: &dyn Journal, step_id: &str) -> Result<StepRecord, ApprovalError> {
    match journal.step(step_id)? {
        Some(r) if r.state.is_paused() => Ok(r),
        other => Err(ApprovalError::NotPaused {
            step: step_id.to_string(),
            state: other.map_or(StepState::Pending, |r| r.state).to_string(),
        }),
    }
}

/// Records an approval of the paused `step_id`; `run`, when given, must be
/// the run that paused it. The next `sluice run` acts on it.
pub fn approve(
    journal: &dyn Journal,
    plan: &Plan,
    step_id: &str,
    run: Option<&str>,
    by: &str,
    reason: Option<&str>,
) -> Result<Approval, ApprovalError> {
    let step = plan
        .step(step_id)
        .ok_or_else(|| ApprovalError::UnknownStep(step_id.to_string()))?;
    let record = paused(journal, step_id)?;
    if let Some(given) = run.filter(|r| *r != record.run_id) {
        return Err(ApprovalError::WrongRun {
            step: step_id.to_string(),
            given: given.to_string(),
            paused: record.run_id,
        });
    }
    let plan_then = journal
        .runs()?
        .into_iter()
        .find(|r| r.id == record.run_id)
        .map(|r| r.plan_hash);
    if plan_then.as_deref().is_some_and(|then| then != plan.hash) {
        return Err(ApprovalError::Stale {
            step: step_id.to_string(),
            why: format!(
                "the plan changed since run {} paused it ({} → {})",
                record.run_id,
                short(plan_then.as_deref().unwrap_or_default()),
                short(&plan.hash)
            ),
        });
    }
    let digest = &plan.plugins[&step.plugin].digest;
    if record.plugin_digest != *digest || record.params_hash != step.params_hash {
        return Err(ApprovalError::Stale {
            step: step_id.to_string(),
            why: "its plugin or params changed since it was paused".into(),
        });
    }
    decide(journal, plan, step, &record, Decision::Approve, by, reason)
}

/// Records `decision` on the pause `record` is in, with the evidence shown.
pub fn decide(
    journal: &dyn Journal,
    plan: &Plan,
    step: &Step,
    record: &StepRecord,
    decision: Decision,
    by: &str,
    reason: Option<&str>,
) -> Result<Approval, ApprovalError> {
    let pause = pause_reason(journal, record)?;
    let approval = Approval {
        step_id: step.id.clone(),
        run_id: record.run_id.clone(),
        decision,
        by: format!(
            "{by} ({}@{})",
            os_user(),
            crate::journal::lease::host_name()
        ),
        at: crate::journal::now(),
        plan_hash: plan.hash.clone(),
        plugin_digest: plan.plugins[&step.plugin].digest.clone(),
        params_hash: step.params_hash.clone(),
        evidence: serde_json::json!({
            "state": record.state.as_str(),
            "pause": pause,
            "metrics": record.metrics,
            "baseline": record.backup.as_ref().map(|b| &b.baseline),
        }),
        reason: reason.map(str::to_string),
    };
    journal.record_approval(&approval)?;
    Ok(approval)
}

/// The login of whoever runs the command, for the audit trail.
fn os_user() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

/// Who decides, when `--by` is not given: `SLUICE_APPROVER`, else the login.
pub fn default_approver() -> String {
    std::env::var("SLUICE_APPROVER")
        .ok()
        .filter(|a| !a.is_empty())
        .unwrap_or_else(os_user)
}
