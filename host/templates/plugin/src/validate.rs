//! Validate: how many rows hold what the expression computes. The host runs
//! this phase with read-only access.

use sluice_sdk::sql::{quote_ident, Connection};
use sluice_sdk::{Error, Metric, StepContext};

use crate::{{Type}};

/// Fraction of rows whose new column equals the fill expression (1.0 for an
/// empty table, 0.0 before the column exists).
pub const FILLED_RATE: &str = "filled_rate";

impl sluice_sdk::Validate for {{Type}} {
    fn validate(ctx: &StepContext) -> Result<Vec<Metric>, Error> {
        let params = crate::Params::of(ctx)?;
        if !ctx.wants_metric(FILLED_RATE) {
            return Ok(Vec::new());
        }
        let conn = Connection::open(&ctx.target)?;
        let table = quote_ident(&params.table);
        let total = conn.query_i64(&format!("SELECT count(*) FROM {table}"), &[])?;
        let filled = if has_column(&conn, &params)? {
            conn.query_i64(
                &format!(
                    "SELECT count(*) FROM {table} WHERE {} IS ({})",
                    quote_ident(&params.column),
                    params.fill
                ),
                &[],
            )?
        } else {
            0
        };
        let value = if total == 0 {
            1.0
        } else {
            filled as f64 / total as f64
        };
        Ok(vec![Metric {
            name: FILLED_RATE.to_string(),
            value,
            detail: format!("{filled} of {total} rows of {} filled", params.table),
        }])
    }
}

/// Whether the table has the step's column already.
pub fn has_column(conn: &Connection, params: &crate::Params) -> Result<bool, Error> {
    let n = conn.query_i64(
        "SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2",
        &[params.table.as_str().into(), params.column.as_str().into()],
    )?;
    Ok(n > 0)
}
