//! What every phase call of a step is given (its `step-context`), and the
//! bounds on what `validate` may return: the runtime's side of a call,
//! shared by the engine and `sluice plan`.

use crate::plan::{Plan, Step};
use crate::runtime::{Metric, StepContext};

/// Metrics `validate` may return: far more than any plan's thresholds read,
/// few enough that a plugin cannot bloat the journal and reports.
pub const MAX_METRICS: usize = 1_000;
/// Longest metric name and detail kept.
pub const MAX_METRIC_TEXT: usize = 4_096;

/// The context every phase call of `step` gets: every metric wanted.
pub fn step_context(plan: &Plan, step: &Step) -> StepContext {
    let target = &plan.targets[&step.target];
    StepContext {
        step_id: step.id.clone(),
        target: target.name.clone(),
        target_kind: target.kind.as_str().to_string(),
        params: step.params_json.clone(),
        metrics: Vec::new(),
    }
}

/// Whether metrics returned by `validate` are within [`MAX_METRICS`] and
/// [`MAX_METRIC_TEXT`]; why not, otherwise.
pub fn check_metrics(metrics: &[Metric]) -> Result<(), String> {
    if metrics.len() > MAX_METRICS {
        return Err(format!(
            "{} metrics; the limit is {MAX_METRICS}",
            metrics.len()
        ));
    }
    if let Some(m) = metrics
        .iter()
        .find(|m| m.name.len() > MAX_METRIC_TEXT || m.detail.len() > MAX_METRIC_TEXT)
    {
        return Err(format!(
            "metric `{}…` has a name or detail over {MAX_METRIC_TEXT} bytes",
            m.name.chars().take(40).collect::<String>()
        ));
    }
    Ok(())
}
