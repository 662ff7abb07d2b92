//! The step params this plugin understands.

use serde::Deserialize;
use sluice_sdk::{Error, StepContext};

/// Params of a step run by the SQLite plugin.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Tables the backup snapshots; empty means every table.
    #[serde(default)]
    pub tables: Vec<String>,
    /// SQL the migrate phase runs, in one transaction.
    #[serde(default)]
    pub migrate: Option<String>,
    /// Row copies the migrate phase streams through the plugin after the SQL,
    /// in the same transaction.
    #[serde(default)]
    pub copy: Vec<Copy>,
    /// Metrics the validate phase measures.
    #[serde(default)]
    pub metrics: Vec<MetricSpec>,
}

/// One metric: a name and exactly one way to measure it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricSpec {
    /// Name used in threshold expressions.
    pub name: String,
    /// `SELECT count(*)` of a table.
    pub row_count: Option<String>,
    /// A query returning one number.
    pub query: Option<String>,
    /// Surplus rows sharing the same key columns.
    pub duplicates: Option<Duplicates>,
    /// Fraction of distinct source rows present in the target.
    pub match_rate: Option<MatchRate>,
    /// An HTTP health probe the plan grants the step (`ok`, `status` or
    /// `latency_ms`), measured by [`sluice_sdk::probe::ProbeMetric`].
    pub probe: Option<sluice_sdk::probe::ProbeMetric>,
}

/// A copy: every row of `select` is bound to the parameters of `insert`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Copy {
    /// Query yielding the rows.
    pub select: String,
    /// Statement run once per row, with one parameter per selected column.
    pub insert: String,
}

/// Duplicate detection on key columns of a table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Duplicates {
    /// Table to inspect.
    pub table: String,
    /// Key columns.
    pub key: Vec<String>,
}

/// Match rate between two queries with the same columns.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchRate {
    /// Query yielding the rows that should be found.
    pub source: String,
    /// Query yielding the rows found.
    pub target: String,
}

impl Params {
    /// Parses and checks the step's params.
    pub fn of(ctx: &StepContext) -> Result<Self, Error> {
        let params: Params = ctx.params()?;
        for metric in &params.metrics {
            let ways = [
                metric.row_count.is_some(),
                metric.query.is_some(),
                metric.duplicates.is_some(),
                metric.match_rate.is_some(),
                metric.probe.is_some(),
            ];
            if ways.iter().filter(|w| **w).count() != 1 {
                return Err(Error::InvalidParams(format!(
                    "metric `{}` needs exactly one of row_count, query, duplicates, match_rate, probe",
                    metric.name
                )));
            }
        }
        Ok(params)
    }
}
