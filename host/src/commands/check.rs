//! `sluice check`: the plan, its plugins, each step's params and threshold
//! metrics, without running anything.

use std::path::Path;

use crate::exit;
use crate::preview::Estimate;

use super::CommandError;

/// Checks the plan; prints one line when it is valid.
pub async fn run(plan: &Path) -> Result<i32, CommandError> {
    let plan = super::load_plan(plan)?;
    super::plan::previews(&plan, Estimate::Skip).await?;
    println!(
        "plan {} is valid: {} steps, {} plugins, {} targets",
        plan.name,
        plan.steps.len(),
        plan.plugins.len(),
        plan.targets.len()
    );
    Ok(exit::OK)
}
