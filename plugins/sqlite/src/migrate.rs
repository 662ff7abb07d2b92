//! Migrate: the step's SQL and row copies, in one transaction.

use sluice_sdk::sql::{row_count, Connection};
use sluice_sdk::{log, progress, Error, StepContext};

use crate::params::Copy;
use crate::{Params, SqlitePlugin};

impl sluice_sdk::Migrate for SqlitePlugin {
    fn migrate(ctx: &StepContext) -> Result<(), Error> {
        let params = Params::of(ctx)?;
        if params.migrate.is_none() && params.copy.is_empty() {
            return Err(Error::InvalidParams(
                "nothing to do: give `migrate` (SQL) or `copy` (row copies)".into(),
            ));
        }
        let conn = Connection::open(&ctx.target)?;
        // SQLite DDL is transactional: a failing statement leaves nothing behind.
        conn.transaction(|conn| {
            if let Some(script) = &params.migrate {
                conn.execute_script(script)?;
                log::info("migration applied", &[("bytes", &script.len().to_string())]);
            }
            for copy in &params.copy {
                let rows = copy_rows(conn, copy)?;
                log::info("rows copied", &[("rows", &rows.to_string())]);
            }
            Ok(())
        })
    }
}

/// Streams rows from a cursor into batched inserts: one host call per batch
/// in each direction, never one per value.
fn copy_rows(conn: &Connection, copy: &Copy) -> Result<u64, Error> {
    let mut cursor = conn.cursor(&copy.select, &[])?;
    let mut copied = 0u64;
    while let Some(batch) = cursor.next_batch()? {
        conn.execute_batch(&copy.insert, &batch)?;
        copied += row_count(&batch) as u64;
        progress::report(copied, None, "copy");
    }
    Ok(copied)
}
