//! Rollback: rebuild the table from the backup and prove it before
//! committing. Everything happens in one transaction, and the result is the
//! same however often it runs.

use std::io::Read;

use sluice_sdk::checksum::TableChecksum;
use sluice_sdk::sql::{quote_ident, Connection};
use sluice_sdk::{backup_store, dump, log};
use sluice_sdk::{BackupManifest, Error, PhaseReached, StepContext, TableState};

use crate::backup::{column_list, select_rows, SavedSchema, ROWS, SCHEMA};
use crate::{{Type}};

impl sluice_sdk::Rollback for {{Type}} {
    fn rollback(
        ctx: &StepContext,
        manifest: &BackupManifest,
        reached: PhaseReached,
    ) -> Result<Vec<TableState>, Error> {
        // Whatever was reached, rebuilding from the backup is right: it is
        // also correct when migrate never ran or ran halfway.
        log::info("rollback", &[("reached", &format!("{reached:?}"))]);
        let params = crate::Params::of(ctx)?;
        let mut bytes = Vec::new();
        backup_store::open(SCHEMA)?
            .read_to_end(&mut bytes)
            .map_err(|e| Error::BackupInvalid(format!("{SCHEMA}: {e}")))?;
        let schema: SavedSchema = serde_json::from_slice(&bytes)
            .map_err(|e| Error::BackupInvalid(format!("{SCHEMA}: {e}")))?;
        let expected = manifest
            .tables
            .iter()
            .find(|t| t.name == params.table)
            .ok_or_else(|| {
                Error::BackupInvalid(format!("the manifest has no `{}`", params.table))
            })?;
        let conn = Connection::open(&ctx.target)?;
        let state = conn.transaction(|conn| restore(conn, &params.table, &schema, expected))?;
        log::info("restore verified", &[("rows", &state.rows.to_string())]);
        Ok(vec![state])
    }
}

fn restore(
    conn: &Connection,
    table: &str,
    schema: &SavedSchema,
    expected: &TableState,
) -> Result<TableState, Error> {
    // Rows of tables referencing this one are checked at commit, when the
    // table is whole again (SQLite resets this at the end of a transaction).
    conn.execute("PRAGMA defer_foreign_keys = ON", &[])?;
    // Dropping the table drops its indexes and triggers too; the saved
    // statements bring them back exactly as they were.
    conn.execute(&format!("DROP TABLE IF EXISTS {}", quote_ident(table)), &[])?;
    for statement in &schema.statements {
        conn.execute_script(statement)?;
    }
    let marks: Vec<String> = (1..=schema.columns.len() + usize::from(schema.with_rowid))
        .map(|i| format!("?{i}"))
        .collect();
    let insert = format!(
        "INSERT INTO {} ({}) VALUES ({})",
        quote_ident(table),
        column_list(schema),
        marks.join(", ")
    );
    let mut reader = backup_store::open(ROWS)?;
    while let Some(batch) = dump::read_batch(&mut reader)? {
        conn.execute_batch(&insert, &batch)?;
    }
    // The proof reads the table back from the database, not the artifact.
    let mut checksum = TableChecksum::new();
    let mut cursor = conn.cursor(&select_rows(table, schema), &[])?;
    while let Some(batch) = cursor.next_batch()? {
        dump::add_batch(&mut checksum, &batch, usize::from(schema.with_rowid))?;
    }
    if checksum.rows() != expected.rows || checksum.hex() != expected.checksum {
        return Err(Error::BackupInvalid(format!(
            "restored `{table}` has {} rows (checksum {}); the backup had {} rows (checksum {})",
            checksum.rows(),
            checksum.hex(),
            expected.rows,
            expected.checksum
        )));
    }
    Ok(TableState {
        name: table.to_string(),
        rows: checksum.rows(),
        checksum: checksum.hex(),
    })
}
