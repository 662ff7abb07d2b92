//! What operators read: the one-screen run summary and `sluice status`
//! (`status.rs`).

pub mod evidence;
pub mod html;
pub mod status;

use std::fmt::Write;
use std::time::Duration;

use crate::journal::outcome::{Phase, RunSummary, StepOutcome, StepSummary, UndoneBy};
use crate::plan::PlanError;

/// A number as operators read it; thresholds own the format (`plan::number`).
pub use crate::plan::number;

fn duration(d: Duration) -> String {
    if d.as_secs() >= 10 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// A size as operators read it: `512 B`, `60.0 KiB`, `1.2 GiB`.
pub fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// The one-screen summary printed at the end of `run` and `rollback`.
pub fn summary(s: &RunSummary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "sluice {} · plan {} · run {}",
        s.command, s.plan, s.run_id
    );
    for step in &s.steps {
        step_lines(&mut out, step);
    }
    let _ = writeln!(out, "{}", verdict(s));
    out
}

fn step_lines(out: &mut String, step: &StepSummary) {
    let (mark, word) = match &step.outcome {
        StepOutcome::Applied => ("✓", "applied"),
        StepOutcome::AlreadyApplied => ("=", "already applied"),
        StepOutcome::Drift { .. } => ("!", "drift"),
        StepOutcome::Interrupted { .. } => ("!", "interrupted"),
        StepOutcome::FailedUnchanged { .. } => ("✗", "failed, unchanged"),
        StepOutcome::RolledBack {
            phase: Phase::Rollback,
            ..
        } => ("↩", "rolled back"),
        StepOutcome::RolledBack { .. } => ("↩", "failed, rolled back"),
        StepOutcome::RollbackFailed { .. } => ("✗", "ROLLBACK FAILED"),
        StepOutcome::RollbackRefused { .. } => ("✋", "ROLLBACK REFUSED"),
        StepOutcome::NotRun => ("·", "not run"),
        StepOutcome::AwaitingApproval { .. } => ("⏸", "AWAITING APPROVAL"),
        StepOutcome::Stopped { rolled_back: true } => ("■", "stopped, rolled back"),
        StepOutcome::Stopped { rolled_back: false } => ("■", "stopped, unchanged"),
    };
    let phases: Vec<String> = step
        .phases
        .iter()
        .map(|(p, d)| format!("{} {}", p.as_str(), duration(*d)))
        .collect();
    let _ = write!(out, "  {mark} {:<24} {word}", step.id);
    if !phases.is_empty() {
        let _ = write!(out, "  [{}]", phases.join(", "));
    }
    let _ = writeln!(out);
    if let Some(resumed) = &step.resumed {
        let _ = writeln!(out, "      resumed: {resumed}");
    }
    if let Some((n, size)) = step.backup {
        let _ = writeln!(
            out,
            "      backup: {n} artifacts, {}, digests verified",
            bytes(size)
        );
    }
    for m in &step.metrics {
        let _ = writeln!(
            out,
            "      metric {} = {}  ({})",
            m.name,
            number(m.value),
            m.detail
        );
    }
    for t in &step.thresholds {
        let verdict = match t.held {
            Some(true) => "met".to_string(),
            Some(false) => "NOT MET".to_string(),
            None => format!("not evaluated: {}", t.error.as_deref().unwrap_or("")),
        };
        let _ = writeln!(out, "      threshold {}: {verdict}", t.source);
    }
    if let Some(band) = &step.band {
        let _ = writeln!(
            out,
            "      band reached: {} → {}",
            band.when
                .as_deref()
                .unwrap_or("none of the bands (default)"),
            band.action.as_str()
        );
    }
    for note in &step.notes {
        let _ = writeln!(out, "      {note}");
    }
    match &step.outcome {
        StepOutcome::Drift { what } => {
            let _ = writeln!(
                out,
                "      completed earlier, but {what}; not re-applied. Restore the plan, or `sluice rollback --to <previous step>` and run again."
            );
        }
        StepOutcome::Interrupted { state } => {
            let _ = writeln!(
                out,
                "      an earlier run left this step `{state}`; `sluice rollback` restores it from its verified backup."
            );
        }
        StepOutcome::FailedUnchanged { reason, .. } | StepOutcome::AwaitingApproval { reason } => {
            let _ = writeln!(out, "      {reason}");
        }
        StepOutcome::RolledBack { reason, undo, .. } => {
            let _ = writeln!(out, "      {reason}");
            let _ = writeln!(out, "      rollback: {}", undo.proof());
        }
        StepOutcome::RollbackFailed {
            reason,
            rollback_error,
            ..
        } => {
            let _ = writeln!(out, "      {reason}");
            let _ = writeln!(out, "      {rollback_error}");
        }
        StepOutcome::RollbackRefused {
            reason,
            later_writes,
            ..
        } => {
            let _ = writeln!(out, "      {reason}");
            let _ = writeln!(
                out,
                "      rollback refused, nothing undone: the target changed after the step"
            );
            for line in later_writes {
                let _ = writeln!(out, "        - {line}");
            }
        }
        _ => {}
    }
}

fn verdict(s: &RunSummary) -> String {
    // The cause first: a step rolled back because a later step's watch
    // window breached is a consequence, not the failure.
    // A rollback that failed on the way back outranks both.
    let attention = s.steps.iter().any(|st| {
        matches!(
            st.outcome,
            StepOutcome::RollbackFailed { .. } | StepOutcome::RollbackRefused { .. }
        )
    });
    let cause = s.steps.iter().find(|st| {
        matches!(
            st.outcome,
            StepOutcome::RolledBack { phase, .. } if phase != Phase::Rollback && phase != Phase::Review
        ) && s.command == "run"
            && !attention
    });
    let failing = cause.or_else(|| {
        s.steps.iter().find(|st| match st.outcome {
            StepOutcome::Applied | StepOutcome::AlreadyApplied | StepOutcome::NotRun => false,
            // For `sluice rollback`, a rolled-back step is the goal, not a failure.
            StepOutcome::RolledBack { .. } => s.command != "rollback" && s.command != "reject",
            StepOutcome::FailedUnchanged {
                phase: Phase::Review,
                ..
            } => false,
            _ => true,
        })
    });
    let Some(step) = failing else {
        let n = s.steps.len();
        return match s.command.as_str() {
            "rollback" if n == 0 => "result: OK — nothing to roll back".into(),
            "rollback" => format!("result: OK — {n} step(s) rolled back and verified"),
            "reject" => "result: OK — rejected; the step is undone".into(),
            _ => format!("result: OK — {n} step(s) applied or already applied"),
        };
    };
    match &step.outcome {
        StepOutcome::FailedUnchanged { phase, reason } => format!(
            "result: FAILED at step `{}` ({}): {reason}. Nothing was changed.",
            step.id,
            phase.as_str()
        ),
        StepOutcome::RolledBack {
            phase,
            reason,
            undo: UndoneBy::Restore,
        } => format!(
            "result: FAILED at step `{}` ({}): {reason}. Rolled back; the target equals its pre-step state.",
            step.id,
            phase.as_str()
        ),
        StepOutcome::RolledBack { phase, reason, .. } => format!(
            "result: FAILED at step `{}` ({}): {reason}. Rolled back: the step's changes are undone, writes made since kept.",
            step.id,
            phase.as_str()
        ),
        StepOutcome::RollbackFailed {
            phase, rollback_error, ..
        } => format!(
            "result: NEEDS ATTENTION at step `{}` ({} failed, then {rollback_error}). The target may be in its post-migrate state.",
            step.id,
            phase.as_str()
        ),
        StepOutcome::RollbackRefused { phase, .. } => format!(
            "result: ROLLBACK REFUSED at step `{}` ({}): the target changed after the step and restoring it would discard those writes; nothing was undone. Keep the step, or discard the writes with `sluice rollback --discard-later-writes <plan>`.",
            step.id,
            phase.as_str()
        ),
        StepOutcome::Drift { what } => format!("result: REFUSED at step `{}`: {what}", step.id),
                StepOutcome::Interrupted { state } => {
            format!("result: REFUSED at step `{}`: left `{state}` by an earlier run", step.id)
        }
        StepOutcome::Stopped { rolled_back } => format!(
            "result: STOPPED by a signal at step `{}`: {}. The journal is consistent; run again to continue.",
            step.id,
            if *rolled_back {
                "it was rolled back to its pre-step state"
            } else {
                "nothing had changed"
            }
        ),
        StepOutcome::AwaitingApproval { .. } => format!(
            "result: PAUSED at step `{}`, awaiting a decision: `sluice approve <plan> {}` then `sluice run` again, or `sluice reject <plan> {}`. `sluice report` shows the evidence.",
            step.id, step.id, step.id
        ),
        _ => "result: ?".into(),
    }
}

/// A plan error with its source line and caret.
pub fn plan_error(e: &PlanError) -> String {
    match e.snippet() {
        Some(snippet) => format!("error: {e}\n{snippet}"),
        None => format!("error: {e}"),
    }
}
