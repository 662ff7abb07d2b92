//! Validate: runbook 003's gates, measured read-only from the documents.

use std::collections::{BTreeMap, BTreeSet};

use sluice_sdk::sql::{Connection, Value};
use sluice_sdk::{Error, Metric, StepContext};

use crate::drawer::{document, followup_ids, rows, text, DRAWERS};
use crate::{Drawers, Params};

/// The metrics validate reports.
pub const METRICS: [&str; 3] = ["match_rate", "duplicates", "drawers"];

impl sluice_sdk::Validate for Drawers {
    fn validate(ctx: &StepContext) -> Result<Vec<Metric>, Error> {
        let params = Params::of(ctx)?;
        let conn = Connection::open(&ctx.target)?;
        // How often each follow-up id occurs across all drawers.
        let mut seen: BTreeMap<String, u64> = BTreeMap::new();
        let mut drawers = 0u64;
        for row in rows(
            &conn,
            &format!("SELECT user_id, drawer FROM {DRAWERS}"),
            &[],
        )? {
            let user = text(&row[0], "client_drawers.user_id")?;
            let doc = document(&row[1], &format!("the drawer of user {user}"))?;
            for id in followup_ids(&doc) {
                *seen.entry(id.to_string()).or_default() += 1;
            }
            drawers += 1;
        }
        let legacy: BTreeSet<String> = rows(
            &conn,
            "SELECT followup_id FROM followup_submissions WHERE submitted_at < ?1",
            &[Value::from(params.cutoff.as_str())],
        )?
        .iter()
        .map(|row| text(&row[0], "followup_submissions.followup_id"))
        .collect::<Result<_, _>>()?;
        let found = legacy.iter().filter(|id| seen.contains_key(*id)).count();
        let duplicates: u64 = seen.values().map(|n| n - 1).sum();
        let rate = if legacy.is_empty() {
            1.0
        } else {
            found as f64 / legacy.len() as f64
        };
        let metric = |name: &str, value: f64, detail: String| Metric {
            name: name.to_string(),
            value,
            detail,
        };
        Ok([
            metric(
                "match_rate",
                rate,
                format!(
                    "{found} of {} legacy follow-ups before {} are in a drawer",
                    legacy.len(),
                    params.cutoff
                ),
            ),
            metric(
                "duplicates",
                duplicates as f64,
                "follow-ups held more than once across drawers".to_string(),
            ),
            metric("drawers", drawers as f64, format!("rows in {DRAWERS}")),
        ]
        .into_iter()
        .filter(|m| ctx.wants_metric(&m.name))
        .collect())
    }
}
