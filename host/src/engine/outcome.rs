//! What a run or rollback did, step by step: the summaries (types in
//! `journal/outcome.rs`) the engine builds, and the exit code they map to.

use super::exit;
use crate::journal::outcome::{Phase, RunSummary, StepOutcome, StepSummary};

impl StepSummary {
    pub(super) fn new(id: &str, outcome: StepOutcome) -> Self {
        StepSummary {
            id: id.to_string(),
            outcome,
            phases: Vec::new(),
            metrics: Vec::new(),
            thresholds: Vec::new(),
            band: None,
            notes: Vec::new(),
            backup: None,
            resumed: None,
        }
    }
}

impl RunSummary {
    /// The exit code this summary maps to.
    pub fn exit_code(&self) -> i32 {
        let mut code = exit::OK;
        for s in &self.steps {
            let c = match s.outcome {
                StepOutcome::RollbackFailed { .. } => exit::NEEDS_ATTENTION,
                StepOutcome::RollbackRefused { .. } => exit::ROLLBACK_REFUSED,
                StepOutcome::Drift { .. } | StepOutcome::Interrupted { .. } => exit::REFUSED,
                StepOutcome::Stopped { .. } => exit::STOPPED,
                StepOutcome::AwaitingApproval { .. } => exit::AWAITING_APPROVAL,
                // A rejection undoing what it was asked to is its goal.
                StepOutcome::FailedUnchanged {
                    phase: Phase::Review,
                    ..
                } => exit::OK,
                StepOutcome::FailedUnchanged { .. } => exit::STEP_FAILED,
                StepOutcome::RolledBack { phase, .. }
                    if !matches!(phase, Phase::Rollback | Phase::Review) =>
                {
                    exit::STEP_FAILED
                }
                _ => exit::OK,
            };
            code = code.max(c);
        }
        code
    }

    pub(super) fn outcome_word(&self) -> &'static str {
        match self.exit_code() {
            exit::OK => "ok",
            exit::STEP_FAILED => "step-failed",
            exit::REFUSED => "refused",
            exit::STOPPED => "stopped",
            exit::AWAITING_APPROVAL => "awaiting-approval",
            exit::ROLLBACK_REFUSED => "rollback-refused",
            _ => "needs-attention",
        }
    }
}
