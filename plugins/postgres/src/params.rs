//! The step params this plugin understands (`[steps.params]`, as JSON).

use serde::Deserialize;
use sluice_sdk::{ChangeKind, Error, StepContext};

use crate::classify::{classify, transaction_control, Change};
use crate::names::TableName;

/// Most runs a `latency` metric may ask for: enough for a stable p95, few
/// enough that validate stays well inside its time limit.
pub const MAX_LATENCY_RUNS: u32 = 1_000;

/// Params of a step run by the PostgreSQL plugin.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Tables the backup saves (`table` or `schema.table`; default schema
    /// `public`). Rollback restores exactly these.
    #[serde(default)]
    pub tables: Vec<String>,
    /// SQL the migrate phase runs: in one transaction when
    /// [`classify`] says it can, else statement by statement.
    #[serde(default)]
    pub migrate: Option<String>,
    /// SQL that undoes `migrate`, run by rollback before it falls back to the
    /// backup. Needed in practice by non-transactional migrations; should be
    /// idempotent (`DROP INDEX CONCURRENTLY IF EXISTS …`).
    #[serde(default)]
    pub compensate: Option<String>,
    /// The operator acknowledges that `migrate` cannot be undone
    /// (`VACUUM FULL`, `CLUSTER`).
    #[serde(default)]
    pub irreversible: bool,
    /// Bulk copies the migrate phase streams through the plugin, after the SQL.
    #[serde(default)]
    pub copy: Vec<CopySpec>,
    /// Metrics the validate phase measures.
    #[serde(default)]
    pub metrics: Vec<MetricSpec>,
}

/// A bulk copy: `COPY (<from>) TO STDOUT` streamed into `COPY <into> FROM STDIN`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopySpec {
    /// Query yielding the rows.
    pub from: String,
    /// Target table, optionally with a column list: `clients (id, name)`.
    pub into: String,
}

/// One metric: a name and exactly one way to measure it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricSpec {
    /// Name used in threshold expressions.
    pub name: String,
    /// `count(*)` of a table.
    pub row_count: Option<String>,
    /// A query returning one number.
    pub query: Option<String>,
    /// Fraction of source rows found in the target (with multiplicity).
    pub match_rate: Option<MatchRate>,
    /// Surplus rows sharing the same key columns.
    pub duplicates: Option<Duplicates>,
    /// 1.0 when the query's plan uses the index, else 0.0.
    pub index_used: Option<IndexUsed>,
    /// Wall time of a query, in milliseconds, at a percentile over runs.
    pub latency: Option<Latency>,
    /// An HTTP health probe the plan grants the step (`ok`, `status` or
    /// `latency_ms`), measured by [`sluice_sdk::probe::ProbeMetric`].
    pub probe: Option<sluice_sdk::probe::ProbeMetric>,
}

/// Match rate between two queries with the same columns.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchRate {
    /// Rows that should be found.
    pub source: String,
    /// Rows found.
    pub target: String,
}

/// Duplicate detection on key columns of a table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Duplicates {
    /// Table to inspect.
    pub table: String,
    /// Key columns.
    pub columns: Vec<String>,
}

/// Whether a query's plan uses an index.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexUsed {
    /// The query to `EXPLAIN`.
    pub query: String,
    /// Index name (schema-qualified or not).
    pub index: String,
}

/// Query latency.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    /// The query; every row is read from the server, as a client would.
    pub query: String,
    /// Times it runs.
    #[serde(default = "Latency::default_runs")]
    pub runs: u32,
    /// Percentile reported (nearest rank), 1 to 100.
    #[serde(default = "Latency::default_percentile")]
    pub percentile: u32,
    /// Also measure it in the backup phase, before the change, and record
    /// it in the backup manifest's metadata as the step's baseline.
    #[serde(default)]
    pub baseline: bool,
}

impl Latency {
    fn default_runs() -> u32 {
        5
    }
    fn default_percentile() -> u32 {
        50
    }
}

/// Whether the params JSON names `tables` at all.
fn given_tables(json: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .is_some_and(|v| v.get("tables").is_some())
}

impl Params {
    /// Parses and checks the step's params.
    pub fn of(ctx: &StepContext) -> Result<Self, Error> {
        Self::parse(ctx.params_json(), &ctx.step_id)
    }

    /// Parses and checks params given as JSON text.
    pub fn parse(json: &str, step_id: &str) -> Result<Self, Error> {
        let params: Params = serde_json::from_str(json)
            .map_err(|e| Error::InvalidParams(format!("step `{step_id}`: {e}")))?;
        // `tables = []` reads like "no table", and an absent list means
        // every table of `public`: refuse the ambiguity instead of widening.
        if params.tables.is_empty() && given_tables(json) {
            return Err(Error::InvalidParams(format!(
                "step `{step_id}`: params.tables is empty: name the tables the backup saves, or remove `tables` to back up every table of schema `public`"
            )));
        }
        params.check()?;
        Ok(params)
    }

    fn check(&self) -> Result<(), Error> {
        let invalid = |m: String| Err(Error::InvalidParams(m));
        for (i, table) in self.tables.iter().enumerate() {
            TableName::parse(table, &format!("params.tables[{i}]"))?;
        }
        if let Some(script) = &self.migrate {
            if let Some(stmt) = transaction_control(script) {
                return invalid(format!(
                    "params.migrate: `{stmt}` controls the transaction itself; sluice runs the \
                     script in one transaction (or statement by statement when it must): remove it"
                ));
            }
            let change = classify(script);
            if change.statements.is_empty() {
                return invalid("params.migrate: the script has no statement".into());
            }
            if change.irreversible && !self.irreversible {
                return invalid(
                    "params.migrate: the script rewrites storage (VACUUM FULL or CLUSTER), which \
                     no rollback can undo; set `irreversible = true` to acknowledge it"
                        .into(),
                );
            }
        }
        if let Some(script) = &self.compensate {
            if self.migrate.is_none() {
                return invalid("params.compensate: there is no `migrate` to compensate".into());
            }
            if let Some(stmt) = transaction_control(script) {
                return invalid(format!(
                    "params.compensate: `{stmt}` controls the transaction itself: remove it"
                ));
            }
        }
        for (i, copy) in self.copy.iter().enumerate() {
            if copy.from.trim().is_empty() {
                return invalid(format!("params.copy[{i}].from: empty query"));
            }
            copy_target(&copy.into, &format!("params.copy[{i}].into"))?;
        }
        let mut names = std::collections::HashSet::new();
        for (i, metric) in self.metrics.iter().enumerate() {
            let at = format!("params.metrics[{i}] (`{}`)", metric.name);
            if metric.name.is_empty() {
                return invalid(format!("params.metrics[{i}]: `name` is empty"));
            }
            if !names.insert(metric.name.as_str()) {
                return invalid(format!("{at}: another metric has the same name"));
            }
            let ways = [
                metric.row_count.is_some(),
                metric.query.is_some(),
                metric.match_rate.is_some(),
                metric.duplicates.is_some(),
                metric.index_used.is_some(),
                metric.latency.is_some(),
                metric.probe.is_some(),
            ];
            if ways.iter().filter(|w| **w).count() != 1 {
                return invalid(format!(
                    "{at}: needs exactly one of row_count, query, match_rate, duplicates, \
                     index_used, latency, probe"
                ));
            }
            if let Some(table) = &metric.row_count {
                TableName::parse(table, &format!("{at}.row_count"))?;
            }
            if let Some(dup) = &metric.duplicates {
                TableName::parse(&dup.table, &format!("{at}.duplicates.table"))?;
                if dup.columns.is_empty() {
                    return invalid(format!("{at}.duplicates.columns: give at least one column"));
                }
            }
            if let Some(latency) = &metric.latency {
                if latency.runs == 0 || latency.runs > MAX_LATENCY_RUNS {
                    return invalid(format!(
                        "{at}.latency.runs: {} is out of range 1..={MAX_LATENCY_RUNS}",
                        latency.runs
                    ));
                }
                if latency.percentile == 0 || latency.percentile > 100 {
                    return invalid(format!(
                        "{at}.latency.percentile: {} is out of range 1..=100",
                        latency.percentile
                    ));
                }
            }
        }
        Ok(())
    }

    /// The tables the backup saves, parsed.
    pub fn table_names(&self) -> Result<Vec<TableName>, Error> {
        self.tables
            .iter()
            .enumerate()
            .map(|(i, t)| TableName::parse(t, &format!("params.tables[{i}]")))
            .collect()
    }

    /// How `migrate` changes the target, as preview and backup declare it.
    /// [`Params::parse`] has checked that an irreversible script is
    /// acknowledged with `irreversible = true`.
    pub fn change_kind(&self) -> ChangeKind {
        match self.change() {
            c if c.irreversible => ChangeKind::Irreversible,
            c if c.transactional => ChangeKind::Transactional,
            _ => ChangeKind::NonTransactional,
        }
    }

    /// How `migrate` must run (a step with only `copy` is transactional).
    pub fn change(&self) -> Change {
        match &self.migrate {
            Some(script) => classify(script),
            None => Change {
                transactional: true,
                irreversible: false,
                statements: Vec::new(),
            },
        }
    }
}

/// `COPY` target text for `into`: a quoted table name, then the column list
/// (each column quoted) when one is given.
pub fn copy_target(into: &str, what: &str) -> Result<String, Error> {
    let (table, columns) = match into.find('(') {
        Some(open) => {
            let rest = into[open + 1..].trim_end();
            let Some(list) = rest.strip_suffix(')') else {
                return Err(Error::InvalidParams(format!(
                    "{what}: `{into}`: the column list needs a closing `)`"
                )));
            };
            (&into[..open], Some(list))
        }
        None => (into, None),
    };
    let table = TableName::parse(table, what)?.quoted();
    let Some(list) = columns else {
        return Ok(table);
    };
    let mut cols = Vec::new();
    for col in list.split(',') {
        let col = col.trim();
        let quoted = if col.starts_with('"') && col.ends_with('"') && col.len() >= 2 {
            col.to_string()
        } else if !col.is_empty()
            && col
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '$')
        {
            crate::names::quote_ident(&col.to_lowercase())
        } else {
            return Err(Error::InvalidParams(format!(
                "{what}: `{col}` is not a column name"
            )));
        };
        cols.push(quoted);
    }
    Ok(format!("{table} ({})", cols.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> String {
        match Params::parse(json, "s1") {
            Err(Error::InvalidParams(m)) => m,
            other => panic!("expected invalid params, got {other:?}"),
        }
    }

    #[test]
    fn an_empty_table_list_is_an_error_naming_the_step() {
        let m = err(r#"{"tables": [], "migrate": "SELECT 1"}"#);
        assert!(
            m.contains("step `s1`") && m.contains("params.tables is empty"),
            "{m}"
        );
        assert!(Params::parse(r#"{"migrate": "SELECT 1"}"#, "s1").is_ok());
    }

    #[test]
    fn a_full_step_parses() {
        let p = Params::parse(
            r#"{"tables": ["orders", "sales.items"],
                "migrate": "CREATE INDEX CONCURRENTLY i ON orders (c)",
                "compensate": "DROP INDEX CONCURRENTLY IF EXISTS i",
                "copy": [{"from": "SELECT id, name FROM a", "into": "b (id, Name)"}],
                "metrics": [
                  {"name": "rows", "row_count": "orders"},
                  {"name": "q", "query": "SELECT 1"},
                  {"name": "m", "match_rate": {"source": "SELECT 1", "target": "SELECT 1"}},
                  {"name": "d", "duplicates": {"table": "orders", "columns": ["email"]}},
                  {"name": "i", "index_used": {"query": "SELECT * FROM orders WHERE c = 1", "index": "i"}},
                  {"name": "l", "latency": {"query": "SELECT 1", "runs": 20, "percentile": 95, "baseline": true}}
                ]}"#,
            "s1",
        )
        .unwrap();
        assert!(!p.change().transactional);
        assert_eq!(p.table_names().unwrap()[1].schema, "sales");
        assert_eq!(
            copy_target(&p.copy[0].into, "x").unwrap(),
            r#""public"."b" ("id", "name")"#
        );
        let l = p.metrics[5].latency.as_ref().unwrap();
        assert_eq!((l.runs, l.percentile, l.baseline), (20, 95, true));
    }

    #[test]
    fn defaults() {
        let p = Params::parse(
            r#"{"metrics": [{"name": "l", "latency": {"query": "SELECT 1"}}]}"#,
            "s",
        )
        .unwrap();
        let l = p.metrics[0].latency.as_ref().unwrap();
        assert_eq!((l.runs, l.percentile, l.baseline), (5, 50, false));
        assert!(p.change().transactional);
    }

    #[test]
    fn bad_params_name_the_param() {
        assert!(err(r#"{"migrat": "x"}"#).contains("unknown field `migrat`"));
        assert!(
            err(r#"{"copy": [{"select": "x", "into": "t"}]}"#).contains("unknown field `select`")
        );
        assert!(err(r#"{"tables": ["a b"]}"#).contains("params.tables[0]"));
        assert!(err(r#"{"migrate": "VACUUM FULL t"}"#).contains("irreversible = true"));
        assert!(
            Params::parse(r#"{"migrate": "VACUUM FULL t", "irreversible": true}"#, "s").is_ok()
        );
        assert!(
            err(r#"{"migrate": "BEGIN; SELECT 1; COMMIT"}"#).contains("params.migrate: `BEGIN`")
        );
        assert!(err(r#"{"migrate": "-- nothing"}"#).contains("no statement"));
        assert!(err(r#"{"compensate": "SELECT 1"}"#).contains("params.compensate"));
        assert!(err(r#"{"metrics": [{"name": "x"}]}"#)
            .contains("params.metrics[0] (`x`): needs exactly one"));
        assert!(
            err(r#"{"metrics": [{"name": "x", "query": "SELECT 1", "row_count": "t"}]}"#)
                .contains("exactly one")
        );
        assert!(
            err(r#"{"metrics": [{"name": "x", "query": "1"}, {"name": "x", "query": "2"}]}"#)
                .contains("same name")
        );
        assert!(err(
            r#"{"metrics": [{"name": "d", "duplicates": {"table": "t", "columns": []}}]}"#
        )
        .contains("duplicates.columns"));
        assert!(err(
            r#"{"metrics": [{"name": "l", "latency": {"query": "SELECT 1", "runs": 0}}]}"#
        )
        .contains("latency.runs"));
        assert!(err(
            r#"{"metrics": [{"name": "l", "latency": {"query": "SELECT 1", "percentile": 101}}]}"#
        )
        .contains("latency.percentile"));
        assert!(err(r#"{"copy": [{"from": "SELECT 1", "into": "t (a"}]}"#)
            .contains("params.copy[0].into"));
        assert!(
            err(r#"{"copy": [{"from": "SELECT 1", "into": "t (a b)"}]}"#)
                .contains("not a column name")
        );
    }
}
