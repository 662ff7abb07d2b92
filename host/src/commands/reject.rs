//! `sluice reject`: a paused step is rolled back from its verified backup
//! (or, paused before it ran, left unchanged); the decision is recorded.

use std::path::Path;

use crate::progress_bar::ProgressBars;

use super::CommandError;

/// Rejects `step`; the exit code is the summary's.
pub async fn run(
    plan: &Path,
    step: &str,
    by: Option<String>,
    reason: Option<&str>,
    bars: Option<ProgressBars>,
) -> Result<i32, CommandError> {
    let plan = super::load_plan(plan)?;
    let mut engine = super::run::open(plan, &bars, false).await?;
    let by = by.unwrap_or_else(crate::approval::default_approver);
    let summary = engine.reject(step, &by, reason).await;
    super::run::finish(summary, &bars)
}
