//! `sluice status`: each step's state from the journal.

use std::path::Path;

use crate::exit;
use crate::report::status;

use super::CommandError;

/// Prints the plan's steps as the journal knows them.
pub async fn run(plan: &Path) -> Result<i32, CommandError> {
    let plan = super::load_plan(plan)?;
    let steps = status::read(&plan).map_err(CommandError::internal)?;
    print!("{}", status::text(&plan.name, &steps));
    Ok(exit::OK)
}
