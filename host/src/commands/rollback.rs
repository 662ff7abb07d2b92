//! `sluice rollback`: completed steps in reverse order, down to `--to`.

use std::path::Path;

use crate::progress_bar::ProgressBars;

use super::CommandError;

/// Rolls back; the exit code is the summary's.
pub async fn run(
    plan: &Path,
    to: Option<&str>,
    discard_later_writes: bool,
    bars: Option<ProgressBars>,
) -> Result<i32, CommandError> {
    let plan = super::load_plan(plan)?;
    let mut engine = super::run::open(plan, &bars, discard_later_writes).await?;
    let summary = engine.rollback(to).await;
    super::run::finish(summary, &bars)
}
