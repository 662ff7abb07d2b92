//! `sluice rehearse`: the plan on copies of its targets; exits as `run`
//! would have, or 4 when production changed.

use std::path::{Path, PathBuf};

use crate::engine::EngineOptions;
use crate::progress_bar::ProgressBars;
use crate::rehearse::{self, RehearsalOptions};

use super::CommandError;

/// Rehearses the plan; prints the summary and the report's path.
pub async fn run(
    plan: &Path,
    output: Option<PathBuf>,
    keep: bool,
    bars: Option<ProgressBars>,
) -> Result<i32, CommandError> {
    let plan = super::load_plan(plan)?;
    // The plugins that will run for real are the ones rehearsed: reviewed first.
    super::check_lock(&plan)?;
    let options = RehearsalOptions {
        output,
        keep,
        engine: EngineOptions {
            stop: Some(super::stop_on_signals()),
            progress: bars.as_ref().map(ProgressBars::sink),
            rehearsal: true,
            discard_later_writes: false,
        },
    };
    let result = rehearse::rehearse(&plan, options).await;
    if let Some(bars) = &bars {
        bars.clear();
    }
    let r = result.map_err(|e| CommandError::Coded {
        code: e.exit_code(),
        source: e.into(),
    })?;
    print!("{}", rehearse::report::summary(&r));
    println!("{}", r.output.join("rehearsal.md").display());
    Ok(r.exit_code)
}
