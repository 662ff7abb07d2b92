//! Preview: what a step will do, from its params alone (no datastore).

use sluice_sdk::preview::{count, statement_list, statements};
use sluice_sdk::{ChangeKind, Error, StepContext, StepPreview};

use crate::{Params, PostgresPlugin};

impl sluice_sdk::Preview for PostgresPlugin {
    fn preview(ctx: &StepContext) -> Result<StepPreview, Error> {
        // The same checks backup and migrate make: bad params, an
        // unacknowledged VACUUM FULL, transaction control in the script.
        let params = Params::of(ctx)?;
        // A probe metric naming a probe the step is not granted is a plan
        // error now, not a refusal mid-run.
        sluice_sdk::probe::check_granted(
            params
                .metrics
                .iter()
                .filter_map(|m| Some((m.name.as_str(), m.probe.as_ref()?))),
        )?;
        let tables = params.table_names()?.iter().map(|t| t.display()).collect();
        Ok(StepPreview {
            summary: summary(&params),
            change: params.change_kind(),
            metrics: params.metrics.iter().map(|m| m.name.clone()).collect(),
            tables,
        })
    }
}

fn summary(params: &Params) -> String {
    let change = params.change();
    let mut parts = Vec::new();
    if !change.statements.is_empty() {
        // classify's statements keep their comments and line breaks; the
        // summary wants each on one line.
        let lines: Vec<String> = change
            .statements
            .iter()
            .flat_map(|s| statements(s))
            .collect();
        let how = match params.change_kind() {
            ChangeKind::Transactional => "in one transaction",
            ChangeKind::NonTransactional => "statement by statement (each commits on its own)",
            ChangeKind::Irreversible => "IRREVERSIBLY (acknowledged), statement by statement",
        };
        parts.push(format!(
            "{how}, runs {}: {}",
            count(change.statements.len(), "statement"),
            statement_list(&lines)
        ));
    }
    if !params.copy.is_empty() {
        let into: Vec<&str> = params.copy.iter().map(|c| c.into.trim()).collect();
        parts.push(format!("copies rows with COPY into {}", into.join(", ")));
    }
    if let Some(script) = &params.compensate {
        parts.push(format!(
            "on rollback first runs compensate: {}",
            statement_list(&statements(script))
        ));
    }
    if parts.is_empty() {
        return "changes nothing (no `migrate`, no `copy`)".to_string();
    }
    parts.join("; then ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::Preview;

    fn preview(json: &str) -> Result<StepPreview, Error> {
        PostgresPlugin::preview(&StepContext::new("s", "db", "postgres", json))
    }

    #[test]
    fn change_kinds_follow_classify() {
        let p = preview(
            r#"{"tables": ["orders"], "migrate": "CREATE INDEX CONCURRENTLY i ON orders (c)",
                "compensate": "DROP INDEX CONCURRENTLY IF EXISTS i",
                "metrics": [{"name": "used", "index_used": {"query": "SELECT 1", "index": "i"}},
                            {"name": "latency_p95", "latency": {"query": "SELECT 1", "percentile": 95, "baseline": true}}]}"#,
        )
        .unwrap();
        assert_eq!(p.change, ChangeKind::NonTransactional);
        assert_eq!(p.metrics, ["used", "latency_p95"]);
        assert_eq!(
            p.tables,
            ["orders"],
            "named as the manifest and the host name them"
        );
        assert!(
            p.summary.contains("statement by statement"),
            "{}",
            p.summary
        );
        assert!(
            p.summary.contains("compensate: DROP INDEX"),
            "{}",
            p.summary
        );

        let p = preview(r#"{"migrate": "VACUUM FULL orders", "irreversible": true}"#).unwrap();
        assert_eq!(p.change, ChangeKind::Irreversible);
        let p = preview(r#"{"migrate": "ALTER TABLE t ADD c int; UPDATE t SET c = 1"}"#).unwrap();
        assert_eq!(p.change, ChangeKind::Transactional);
        assert!(
            p.summary
                .starts_with("in one transaction, runs 2 statements"),
            "{}",
            p.summary
        );
    }

    #[test]
    fn bad_params_are_refused_before_anything_runs() {
        for json in [
            r#"{"migrate": "VACUUM FULL orders"}"#,
            r#"{"migrat": "SELECT 1"}"#,
            r#"{"metrics": [{"name": "x"}]}"#,
        ] {
            assert!(
                matches!(preview(json), Err(Error::InvalidParams(_))),
                "{json}"
            );
        }
    }
}
