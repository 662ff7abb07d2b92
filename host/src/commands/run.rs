//! `sluice run`: every pending step of the plan. Also the engine plumbing
//! `rollback` and `reject` share: open the engine, print the summary, map
//! its errors.

use std::path::Path;

use crate::engine::{Engine, EngineError, EngineOptions, RunSummary};
use crate::journal::lease::LeaseError;
use crate::plan::Plan;
use crate::preview::PreviewError;
use crate::progress_bar::ProgressBars;

use super::CommandError;

/// Runs the plan; the exit code is the summary's.
pub async fn run(plan: &Path, bars: Option<ProgressBars>) -> Result<i32, CommandError> {
    let plan = super::load_plan(plan)?;
    let mut engine = open(plan, &bars, false).await?;
    let summary = engine.run().await;
    finish(summary, &bars)
}

/// Checks the lock, then opens the engine on the plan, stopping on signals
/// and drawing progress bars; `discard_later_writes` is the operator's
/// decision for rollbacks that meet writes made after a step.
pub(super) async fn open(
    plan: Plan,
    bars: &Option<ProgressBars>,
    discard_later_writes: bool,
) -> Result<Engine, CommandError> {
    super::check_lock(&plan)?;
    let options = EngineOptions {
        stop: Some(super::stop_on_signals()),
        progress: bars.as_ref().map(ProgressBars::sink),
        rehearsal: false,
        discard_later_writes,
    };
    Engine::open(plan, options).await.map_err(|e| match e {
        e @ (EngineError::Load(_) | EngineError::Ungranted(_)) => CommandError::usage(e),
        e => CommandError::internal(e),
    })
}

/// Prints the run's summary and returns its exit code, or maps the engine's
/// error to the command's.
pub(super) fn finish(
    summary: Result<RunSummary, EngineError>,
    bars: &Option<ProgressBars>,
) -> Result<i32, CommandError> {
    if let Some(bars) = bars {
        bars.clear();
    }
    match summary {
        Ok(summary) => {
            print!("{}", crate::report::summary(&summary));
            Ok(summary.exit_code())
        }
        Err(e @ EngineError::UnknownStep(_)) => Err(CommandError::usage(e)),
        Err(EngineError::Preview(PreviewError::Plan(e))) => Err(CommandError::Plan(e)),
        Err(e @ EngineError::Preview(_)) => Err(CommandError::usage(e)),
        Err(EngineError::Approval(e)) => Err(CommandError::refused(e)),
        Err(e @ EngineError::Lease(LeaseError::Held { .. })) => Err(CommandError::refused(e)),
        Err(e) => Err(CommandError::internal(e)),
    }
}
