//! `sluice report`: the evidence of one run, from the journal.

use std::path::Path;

use crate::cli::ReportFormat;
use crate::exit;
use crate::report::evidence::{self, EvidenceError};

use super::CommandError;

/// Prints (or writes to `output`) the evidence of `run` (default: the
/// latest) in `format`.
pub async fn run(
    plan: &Path,
    run: Option<&str>,
    format: ReportFormat,
    output: Option<&Path>,
) -> Result<i32, CommandError> {
    let plan = super::load_plan(plan)?;
    let journal = crate::journal::open_for(&plan).map_err(CommandError::internal)?;
    let e = evidence::build(&plan, journal.as_ref(), run).map_err(|e| match e {
        e @ (EvidenceError::UnknownRun { .. } | EvidenceError::NoRuns(_)) => CommandError::usage(e),
        e => CommandError::internal(e),
    })?;
    let text = match format {
        ReportFormat::Json => format!("{}\n", evidence::json(&e)),
        ReportFormat::Md => evidence::markdown(&e),
        ReportFormat::Html => crate::report::html::html(&e),
    };
    match output {
        None => print!("{text}"),
        Some(path) => std::fs::write(path, text).map_err(|source| CommandError::Write {
            what: format!("the report to {}", path.display()),
            source,
        })?,
    }
    Ok(exit::OK)
}
