//! Migrate: add the column (unless present) and fill it, in one transaction.

use sluice_sdk::sql::{quote_ident, Connection};
use sluice_sdk::{log, Error, StepContext};

use crate::{{Type}};

impl sluice_sdk::Migrate for {{Type}} {
    fn migrate(ctx: &StepContext) -> Result<(), Error> {
        let params = crate::Params::of(ctx)?;
        let conn = Connection::open(&ctx.target)?;
        // SQLite DDL is transactional: a failing UPDATE leaves no new column.
        conn.transaction(|conn| {
            let table = quote_ident(&params.table);
            let column = quote_ident(&params.column);
            if !crate::validate::has_column(conn, &params)? {
                conn.execute(
                    &format!(
                        "ALTER TABLE {table} ADD COLUMN {column} {}",
                        params.column_type
                    ),
                    &[],
                )?;
            }
            let rows = conn.execute(
                &format!("UPDATE {table} SET {column} = ({})", params.fill),
                &[],
            )?;
            log::info("column filled", &[("rows", &rows.to_string())]);
            Ok(())
        })
    }
}
