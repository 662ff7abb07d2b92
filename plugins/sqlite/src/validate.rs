//! Validate: named metrics measured with read-only queries.

use sluice_sdk::sql::{quote_ident, Connection};
use sluice_sdk::{Error, Metric, StepContext};

use crate::params::{Duplicates, MatchRate, MetricSpec};
use crate::{Params, SqlitePlugin};

impl sluice_sdk::Validate for SqlitePlugin {
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

fn measure(conn: &Connection, spec: &MetricSpec) -> Result<Metric, Error> {
    if let Some(probe) = &spec.probe {
        return probe.measure(&spec.name);
    }
    let (value, detail) = if let Some(table) = &spec.row_count {
        let n = conn.query_i64(&format!("SELECT count(*) FROM {}", quote_ident(table)), &[])?;
        (n as f64, format!("rows in {table}"))
    } else if let Some(query) = &spec.query {
        (
            conn.query_f64(trim(query), &[])?,
            format!("value of: {}", trim(query)),
        )
    } else if let Some(dup) = &spec.duplicates {
        duplicates(conn, dup)?
    } else if let Some(rate) = &spec.match_rate {
        match_rate(conn, rate)?
    } else {
        unreachable!("Params::of checks each metric has one way to measure it")
    };
    Ok(Metric {
        name: spec.name.clone(),
        value,
        detail,
    })
}

/// Surplus rows: rows beyond the first of each key that occurs more than once.
fn duplicates(conn: &Connection, dup: &Duplicates) -> Result<(f64, String), Error> {
    if dup.key.is_empty() {
        return Err(Error::InvalidParams(format!(
            "duplicates on `{}` needs at least one key column",
            dup.table
        )));
    }
    let key: Vec<String> = dup.key.iter().map(|k| quote_ident(k)).collect();
    let sql = format!(
        "SELECT coalesce(sum(n - 1), 0) FROM \
         (SELECT count(*) AS n FROM {} GROUP BY {} HAVING count(*) > 1)",
        quote_ident(&dup.table),
        key.join(", ")
    );
    let n = conn.query_i64(&sql, &[])?;
    Ok((
        n as f64,
        format!(
            "surplus rows in {} sharing ({})",
            dup.table,
            dup.key.join(", ")
        ),
    ))
}

/// Fraction of distinct source rows that appear in the target (1.0 when the
/// source is empty: nothing is missing).
fn match_rate(conn: &Connection, rate: &MatchRate) -> Result<(f64, String), Error> {
    let (source, target) = (trim(&rate.source), trim(&rate.target));
    let total = conn.query_i64(
        &format!("SELECT count(*) FROM (SELECT DISTINCT * FROM ({source}))"),
        &[],
    )?;
    let missing = conn.query_i64(
        &format!("SELECT count(*) FROM (SELECT * FROM ({source}) EXCEPT SELECT * FROM ({target}))"),
        &[],
    )?;
    let value = if total == 0 {
        1.0
    } else {
        (total - missing) as f64 / total as f64
    };
    Ok((
        value,
        format!("{} of {total} source rows found in target", total - missing),
    ))
}

/// A query without the trailing `;` so it can be nested.
fn trim(sql: &str) -> &str {
    sql.trim().trim_end_matches(';').trim_end()
}
