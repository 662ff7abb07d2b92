//! What the engine reports of a run, step by step, in types the reports
//! (`report/`, `rehearse/`) and the commands share: the phases, each step's
//! outcome and summary, and what `sluice status` shows of a step. They live
//! with the journal because they describe what it records; the engine fills
//! them in (`engine/outcome.rs`: exit codes).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::journal::record::Metric;
use crate::journal::StepState;
use crate::plan::gate::{BandReached, ConditionResult, BASELINE};

/// The phase a step was in when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Backup or its verification.
    Backup,
    /// Migrate.
    Migrate,
    /// Validate.
    Validate,
    /// Threshold evaluation.
    Thresholds,
    /// Validate before migrate, for `baseline.` metrics.
    Baseline,
    /// The watch window after the step.
    Watch,
    /// An operator's review of a paused step.
    Review,
    /// Rollback.
    Rollback,
}

impl Phase {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Backup => "backup",
            Phase::Migrate => "migrate",
            Phase::Validate => "validate",
            Phase::Thresholds => "thresholds",
            Phase::Baseline => "baseline",
            Phase::Watch => "watch",
            Phase::Review => "review",
            Phase::Rollback => "rollback",
        }
    }
}

/// What happened to one step in this invocation.
#[derive(Debug, Clone)]
pub enum StepOutcome {
    /// Applied and validated.
    Applied,
    /// Already completed with the same plugin and params.
    AlreadyApplied,
    /// Completed earlier with another plugin digest or other params.
    Drift {
        /// What changed.
        what: String,
    },
    /// Left in an unfinished state by an earlier run.
    Interrupted {
        /// The state found.
        state: StepState,
    },
    /// Failed before changing anything.
    FailedUnchanged {
        /// Phase.
        phase: Phase,
        /// Why.
        reason: String,
    },
    /// Failed, rolled back and proven restored.
    RolledBack {
        /// Phase that failed (for `sluice rollback`: `Rollback`).
        phase: Phase,
        /// Why.
        reason: String,
        /// How it was undone.
        undo: UndoneBy,
    },
    /// Failed and could not be rolled back: needs attention.
    RollbackFailed {
        /// Phase that failed first.
        phase: Phase,
        /// Why it failed.
        reason: String,
        /// Why the rollback failed or was refused.
        rollback_error: String,
    },
    /// Rollback refused before anything was undone: the target changed after
    /// the step (writes the step did not make would be lost). The step waits
    /// in `rollback-refused` for an operator's decision.
    RollbackRefused {
        /// Phase that failed first (for `sluice rollback`: `Rollback`).
        phase: Phase,
        /// Why the step was being rolled back.
        reason: String,
        /// What changed since the step, one line per table (or why the
        /// journal cannot tell).
        later_writes: Vec<String>,
    },
    /// Not reached because an earlier step stopped the run.
    NotRun,
    /// Paused until an operator approves or rejects it.
    AwaitingApproval {
        /// Why it waits, with the evidence in words.
        reason: String,
    },
    /// Stopped by a signal at a phase boundary; `rolled_back` when migrate
    /// had run and was undone (else nothing had changed).
    Stopped {
        /// Whether the step was rolled back.
        rolled_back: bool,
    },
}

/// One step's part of the summary.
#[derive(Debug, Clone)]
pub struct StepSummary {
    /// Step id.
    pub id: String,
    /// Outcome.
    pub outcome: StepOutcome,
    /// Wall time of each phase run.
    pub phases: Vec<(Phase, Duration)>,
    /// Metrics reported by validate.
    pub metrics: Vec<Metric>,
    /// Threshold results.
    pub thresholds: Vec<ConditionResult>,
    /// The band the metrics reached, when the step has bands.
    pub band: Option<BandReached>,
    /// What else happened to the step worth a line: refused approvals,
    /// watch windows, rollbacks caused by a later step.
    pub notes: Vec<String>,
    /// Artifacts and bytes of the verified backup.
    pub backup: Option<(usize, u64)>,
    /// How an interrupted run of this step was resumed, if it was.
    pub resumed: Option<String>,
}

/// The result of `run` or `rollback`.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Command (`run`, `rollback`).
    pub command: String,
    /// Plan name.
    pub plan: String,
    /// Run id in the journal.
    pub run_id: String,
    /// Per step, in plan order.
    pub steps: Vec<StepSummary>,
}

/// Metric values by name, the baseline ones under `baseline.<name>`.
pub fn metric_values(metrics: &[Metric], baseline: &[Metric]) -> BTreeMap<String, f64> {
    metrics
        .iter()
        .map(|m| (m.name.clone(), m.value))
        .chain(
            baseline
                .iter()
                .map(|m| (format!("{BASELINE}{}", m.name), m.value)),
        )
        .collect()
}

/// How a rolled-back step was undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UndoneBy {
    /// The backup was restored: every backed-up table equals its pre-step
    /// state.
    Restore,
    /// The rows the step changed were put back (`rows` of them); other
    /// writes made since were kept.
    ChangeSet {
        /// Rows put back.
        rows: u64,
        /// Objects the step had created, dropped.
        dropped: usize,
        /// Rows the dropped tables held (the step's, and any the
        /// application wrote into them since): they went with them.
        dropped_rows: u64,
    },
}

impl UndoneBy {
    /// The report's line for it, after `rollback: `.
    pub fn proof(&self) -> String {
        match self {
            UndoneBy::Restore => {
                "restored; schema and table checksums equal the pre-step state".into()
            }
            UndoneBy::ChangeSet {
                rows,
                dropped,
                dropped_rows,
            } => format!(
                "undone by change set: the {rows} row{} the step changed hold their pre-step values again{}{}, and the schema equals the pre-step state; writes made since to other rows were kept",
                if *rows == 1 { "" } else { "s" },
                match dropped {
                    0 => String::new(),
                    1 => ", the object it created is dropped".into(),
                    n => format!(", the {n} objects it created are dropped"),
                },
                match dropped_rows {
                    0 => String::new(),
                    1 => " with the 1 row its tables held".into(),
                    n => format!(" with the {n} rows its tables held"),
                }
            ),
        }
    }
}
