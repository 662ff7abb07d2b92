//! `sluice audit`: per step, requested vs granted, surplus and risky grants;
//! the plan against its lock file (`--accept` writes it).

use std::path::Path;

use crate::audit::{self, Lock, StepAudit};
use crate::exit;

use super::CommandError;

/// Prints the audit; exit 3 when the lock file is missing, unreadable or
/// differs (and was not accepted).
pub async fn run(plan: &Path, accept: bool, json: bool) -> Result<i32, CommandError> {
    let plan = super::load_plan(plan)?;
    let runtime = super::runtime()?;
    let plugins = super::plugins(&runtime, &plan).await?;
    let steps: Vec<StepAudit> = plan
        .steps
        .iter()
        .map(|s| audit::audit_step(s, &plan.targets[&s.target], &plugins[s.plugin.as_str()]))
        .collect();
    let current = Lock::of(&plan);
    let (status, code) = match Lock::read(&plan) {
        Err(e) => (format!("unreadable: {e}"), exit::REFUSED),
        Ok(Some(lock)) if lock == current => ("up to date".to_string(), exit::OK),
        Ok(previous) => {
            let diff = match &previous {
                None => "no lock file yet".to_string(),
                Some(lock) => lock.diff(&current).join("\n  "),
            };
            let path = Lock::path(&plan);
            if accept {
                current.write(&plan).map_err(|source| CommandError::Write {
                    what: path.display().to_string(),
                    source,
                })?;
                (
                    format!("accepted into {}:\n  {diff}", path.display()),
                    exit::OK,
                )
            } else {
                (
                    format!(
                        "DIFFERS from {}:\n  {diff}\n(accept with `sluice audit --accept`)",
                        path.display()
                    ),
                    exit::REFUSED,
                )
            }
        }
    };
    if json {
        let out = serde_json::json!({ "plan": plan.path, "steps": steps, "lock": status });
        println!(
            "{}",
            serde_json::to_string_pretty(&out).expect("serializes")
        );
    } else {
        print!("{}", audit::audit_text(&plan, &steps, &status));
    }
    Ok(code)
}
