//! `sluice plan`: what each step will do, before anything runs. Also the
//! previews `check` shares.

use std::path::Path;

use crate::exit;
use crate::plan::Plan;
use crate::preview::{self, Estimate, PreviewError, StepPreview};

use super::CommandError;

/// Prints every step's preview, as text or JSON; backups are estimated by
/// reading the targets.
pub async fn run(plan: &Path, json: bool) -> Result<i32, CommandError> {
    let plan = super::load_plan(plan)?;
    let steps = previews(&plan, Estimate::Measure).await?;
    if json {
        let out = serde_json::json!({ "plan": plan.path, "name": plan.name, "steps": steps });
        println!(
            "{}",
            serde_json::to_string_pretty(&out).expect("serializes")
        );
    } else {
        print!("{}", preview::text(&plan, &steps));
    }
    Ok(exit::OK)
}

/// Loads the plan's plugins and previews every step: params the plugin
/// rejects and thresholds naming metrics it will not report are plan errors.
pub(super) async fn previews(
    plan: &Plan,
    estimate: Estimate,
) -> Result<Vec<StepPreview>, CommandError> {
    let runtime = super::runtime()?;
    let plugins = super::plugins(&runtime, plan).await?;
    let steps = preview::preview(plan, &runtime, plugins.as_map(), estimate)
        .await
        .map_err(|e| match e {
            PreviewError::Plan(e) => CommandError::Plan(e),
            e => CommandError::usage(e),
        })?;
    preview::check_metrics(plan, &steps)?;
    Ok(steps)
}
