//! `sluice approve`: records the decision; the next `sluice run` acts on it.

use std::path::Path;

use crate::approval::ApprovalError;
use crate::exit;

use super::CommandError;

/// Approves `step` as paused by `run` (default: the run the journal names).
pub async fn run(
    plan: &Path,
    step: &str,
    run: Option<&str>,
    by: Option<String>,
    reason: Option<&str>,
) -> Result<i32, CommandError> {
    let plan = super::load_plan(plan)?;
    let journal = crate::journal::open_for(&plan).map_err(CommandError::internal)?;
    let by = by.unwrap_or_else(crate::approval::default_approver);
    let a =
        crate::approval::approve(journal.as_ref(), &plan, step, run, &by, reason).map_err(|e| {
            match e {
                ApprovalError::Journal(e) => CommandError::internal(e),
                e @ ApprovalError::UnknownStep(_) => CommandError::usage(e),
                e => CommandError::refused(e),
            }
        })?;
    println!(
        "approved step `{step}` (paused by run {}) by {} at {}, for plan {}; `sluice run {}` goes on",
        a.run_id,
        a.by,
        a.at,
        &a.plan_hash[..12.min(a.plan_hash.len())],
        plan.path.display()
    );
    Ok(exit::OK)
}
