//! Preview: what a step will do, from its params alone (no datastore).

use sluice_sdk::preview::{count, statement_list, statements};
use sluice_sdk::{ChangeKind, Error, StepContext, StepPreview};

use crate::{Params, SqlitePlugin};

impl sluice_sdk::Preview for SqlitePlugin {
    fn preview(ctx: &StepContext) -> Result<StepPreview, Error> {
        let params = Params::of(ctx)?;
        // A probe metric naming a probe the step is not granted is a plan
        // error now, not a refusal mid-run.
        sluice_sdk::probe::check_granted(
            params
                .metrics
                .iter()
                .filter_map(|m| Some((m.name.as_str(), m.probe.as_ref()?))),
        )?;
        Ok(StepPreview {
            summary: summary(&params),
            // Migrate runs the SQL and the copies in one SQLite transaction.
            change: ChangeKind::Transactional,
            metrics: params.metrics.iter().map(|m| m.name.clone()).collect(),
            tables: params.tables.clone(),
        })
    }
}

fn summary(params: &Params) -> String {
    let sql = params
        .migrate
        .as_deref()
        .map(statements)
        .unwrap_or_default();
    let mut parts = Vec::new();
    if !sql.is_empty() {
        parts.push(format!(
            "runs {}: {}",
            count(sql.len(), "statement"),
            statement_list(&sql)
        ));
    }
    if !params.copy.is_empty() {
        parts.push(format!(
            "copies rows ({})",
            count(params.copy.len(), "SELECT → INSERT pair")
        ));
    }
    if parts.is_empty() {
        return "changes nothing (no `migrate`, no `copy`)".to_string();
    }
    format!("in one transaction, {}", parts.join("; then "))
}
