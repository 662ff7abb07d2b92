//! Validate: named metrics, measured with read-only queries (the host runs
//! this phase in one REPEATABLE READ READ ONLY transaction).

use std::collections::BTreeMap;
use std::time::Instant;

use sluice_sdk::sql::{Connection, Value};
use sluice_sdk::{Error, Metric, StepContext};

use crate::names::{quote_ident, TableName};
use crate::params::{Duplicates, IndexUsed, Latency, MatchRate, MetricSpec};
use crate::{Params, PostgresPlugin};

impl sluice_sdk::Validate for PostgresPlugin {
    fn validate(ctx: &StepContext) -> Result<Vec<Metric>, Error> {
        let params = Params::of(ctx)?;
        let conn = Connection::open(&ctx.target)?;
        params
            .metrics
            .iter()
            .filter(|spec| ctx.wants_metric(&spec.name))
            .map(|spec| measure(&conn, spec))
            .collect()
    }
}

/// The `latency` metrics marked `baseline`, measured now (in backup, before
/// the change), by name.
pub(crate) fn baselines(
    conn: &Connection,
    params: &Params,
) -> Result<BTreeMap<String, f64>, Error> {
    let mut out = BTreeMap::new();
    for spec in &params.metrics {
        if let Some(latency) = spec.latency.as_ref().filter(|l| l.baseline) {
            out.insert(spec.name.clone(), self::latency(conn, latency)?.0);
        }
    }
    Ok(out)
}

fn measure(conn: &Connection, spec: &MetricSpec) -> Result<Metric, Error> {
    if let Some(probe) = &spec.probe {
        return probe.measure(&spec.name);
    }
    let (value, detail) = if let Some(table) = &spec.row_count {
        let name = TableName::parse(table, "row_count")?;
        let n = number(conn, &format!("SELECT count(*) FROM {}", name.quoted()))?;
        (n, format!("rows in {}", name.display()))
    } else if let Some(query) = &spec.query {
        (
            number(conn, trim(query))?,
            format!("value of: {}", trim(query)),
        )
    } else if let Some(rate) = &spec.match_rate {
        match_rate(conn, rate)?
    } else if let Some(dup) = &spec.duplicates {
        duplicates(conn, dup)?
    } else if let Some(used) = &spec.index_used {
        index_used(conn, used)?
    } else if let Some(latency) = &spec.latency {
        self::latency(conn, latency)?
    } else {
        unreachable!("Params::of checks each metric has one way to measure it")
    };
    Ok(Metric {
        name: spec.name.clone(),
        value,
        detail,
    })
}

/// A query's single value as a number: numeric and other exact types
/// arrive as text and are parsed; NULL counts as 0.
fn number(conn: &Connection, query: &str) -> Result<f64, Error> {
    match conn.query_value(query, &[])? {
        Value::Integer(i) => Ok(i as f64),
        Value::Real(r) => Ok(r),
        Value::Null => Ok(0.0),
        Value::Text(t) => t.trim().parse().map_err(|_| {
            Error::PreconditionFailed(format!("expected a number from `{query}`, got `{t}`"))
        }),
        Value::Blob(_) => Err(Error::PreconditionFailed(format!(
            "expected a number from `{query}`, got bytes"
        ))),
    }
}

/// Fraction of source rows found in the target, counted with multiplicity
/// by PostgreSQL (`INTERSECT ALL`), never pulled into the plugin. An empty
/// source matches fully.
fn match_rate(conn: &Connection, rate: &MatchRate) -> Result<(f64, String), Error> {
    let (source, target) = (trim(&rate.source), trim(&rate.target));
    let rows = conn.query(
        &format!(
            "SELECT (SELECT count(*) FROM ({source}) s), \
                    (SELECT count(*) FROM (({source}) INTERSECT ALL ({target})) m)"
        ),
        &[],
    )?;
    let values = rows.values()?;
    let count = |v: &Value| match v {
        Value::Integer(i) => *i,
        _ => 0,
    };
    let (total, found) = values
        .first()
        .map(|r| (count(&r[0]), count(&r[1])))
        .unwrap_or_default();
    let value = if total == 0 {
        1.0
    } else {
        found as f64 / total as f64
    };
    Ok((
        value,
        format!("{found} of {total} source rows found in target"),
    ))
}

/// Surplus rows: rows beyond the first of each key that occurs more than once.
fn duplicates(conn: &Connection, dup: &Duplicates) -> Result<(f64, String), Error> {
    let table = TableName::parse(&dup.table, "duplicates.table")?;
    let key: Vec<String> = dup.columns.iter().map(|k| quote_ident(k)).collect();
    let sql = format!(
        "SELECT coalesce(sum(n - 1), 0)::bigint FROM \
         (SELECT count(*) AS n FROM {} GROUP BY {} HAVING count(*) > 1) d",
        table.quoted(),
        key.join(", ")
    );
    Ok((
        number(conn, &sql)?,
        format!(
            "surplus rows in {} sharing ({})",
            table.display(),
            dup.columns.join(", ")
        ),
    ))
}

/// 1.0 when the plan PostgreSQL picks for the query scans the index.
fn index_used(conn: &Connection, used: &IndexUsed) -> Result<(f64, String), Error> {
    let index = TableName::parse(&used.index, "index_used.index")?.table;
    let plan =
        match conn.query_value(&format!("EXPLAIN (FORMAT JSON) {}", trim(&used.query)), &[])? {
            Value::Text(t) => t,
            other => {
                return Err(Error::Internal(format!(
                    "EXPLAIN (FORMAT JSON) returned {other:?}, not text"
                )))
            }
        };
    let plan: serde_json::Value = serde_json::from_str(&plan)
        .map_err(|e| Error::Internal(format!("EXPLAIN output is not JSON: {e}")))?;
    let used_it = uses_index(&plan, &index);
    Ok((
        if used_it { 1.0 } else { 0.0 },
        format!(
            "the plan of `{}` {} index {index}",
            trim(&used.query),
            if used_it { "uses" } else { "does not use" }
        ),
    ))
}

/// Whether any node of an `EXPLAIN (FORMAT JSON)` plan names the index.
fn uses_index(plan: &serde_json::Value, index: &str) -> bool {
    match plan {
        serde_json::Value::Object(map) => map
            .iter()
            .any(|(k, v)| (k == "Index Name" && v.as_str() == Some(index)) || uses_index(v, index)),
        serde_json::Value::Array(items) => items.iter().any(|v| uses_index(v, index)),
        _ => false,
    }
}

/// Wall time of `runs` executions, every row read, at the percentile
/// (nearest rank), in milliseconds.
fn latency(conn: &Connection, latency: &Latency) -> Result<(f64, String), Error> {
    let query = trim(&latency.query);
    let mut times = Vec::with_capacity(latency.runs as usize);
    for _ in 0..latency.runs {
        // `execute` runs the query to its end and the host reads every row
        // from the server, without shipping them into the plugin: the time
        // is the server's and the wire's, not the sandbox's.
        let start = Instant::now();
        conn.execute(query, &[])?;
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    let value = percentile(&mut times, latency.percentile);
    Ok((
        value,
        format!(
            "p{} of {} runs of `{query}`, in ms",
            latency.percentile, latency.runs
        ),
    ))
}

/// Nearest-rank percentile of the samples (sorted in place).
fn percentile(samples: &mut [f64], pct: u32) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_by(f64::total_cmp);
    let rank = ((pct as f64 / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

/// A query without the trailing `;` so it can be nested.
fn trim(sql: &str) -> &str {
    sql.trim().trim_end_matches(';').trim_end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut s = vec![5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(percentile(&mut s, 50), 3.0);
        assert_eq!(percentile(&mut s, 95), 5.0);
        assert_eq!(percentile(&mut s, 1), 1.0);
        assert_eq!(percentile(&mut [7.0], 95), 7.0);
    }

    #[test]
    fn index_names_are_found_anywhere_in_the_plan() {
        let plan: serde_json::Value = serde_json::from_str(
            r#"[{"Plan": {"Node Type": "Bitmap Heap Scan", "Plans": [
                 {"Node Type": "Bitmap Index Scan", "Index Name": "orders_email"}]}}]"#,
        )
        .unwrap();
        assert!(uses_index(&plan, "orders_email"));
        assert!(!uses_index(&plan, "orders_pkey"));
    }
}
