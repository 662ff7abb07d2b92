//! Rollback: rebuild `client_drawers` from the backup in one transaction
//! that commits only when the restored rows match the backup's checksum.
//! Running it again gives the same table.

use std::io::Read;

use sluice_sdk::checksum::TableChecksum;
use sluice_sdk::sql::{quote_ident, Connection};
use sluice_sdk::{backup_store, dump, log};
use sluice_sdk::{BackupManifest, Error, PhaseReached, StepContext, TableState};

use crate::backup::{column_list, select_rows, SavedTable, ROWS, SCHEMA};
use crate::drawer::DRAWERS;
use crate::Drawers;

impl sluice_sdk::Rollback for Drawers {
    fn rollback(
        ctx: &StepContext,
        manifest: &BackupManifest,
        reached: PhaseReached,
    ) -> Result<Vec<TableState>, Error> {
        // The rebuild is right whatever was reached, also after no migrate.
        log::info("rollback", &[("reached", &format!("{reached:?}"))]);
        let mut bytes = Vec::new();
        backup_store::open(SCHEMA)?
            .read_to_end(&mut bytes)
            .map_err(|e| Error::BackupInvalid(format!("{SCHEMA}: {e}")))?;
        let saved: SavedTable = serde_json::from_slice(&bytes)
            .map_err(|e| Error::BackupInvalid(format!("{SCHEMA}: {e}")))?;
        let expected = manifest
            .tables
            .iter()
            .find(|t| t.name == DRAWERS)
            .ok_or_else(|| Error::BackupInvalid(format!("the manifest has no `{DRAWERS}`")))?;
        let conn = Connection::open(&ctx.target)?;
        let state = conn.transaction(|conn| restore(conn, &saved, expected))?;
        log::info("drawers restored", &[("rows", &state.rows.to_string())]);
        Ok(vec![state])
    }
}

fn restore(
    conn: &Connection,
    saved: &SavedTable,
    expected: &TableState,
) -> Result<TableState, Error> {
    conn.execute(
        &format!("DROP TABLE IF EXISTS {}", quote_ident(DRAWERS)),
        &[],
    )?;
    for statement in &saved.statements {
        conn.execute_script(statement)?;
    }
    let marks: Vec<String> = (1..=saved.columns.len() + 1)
        .map(|i| format!("?{i}"))
        .collect();
    let insert = format!(
        "INSERT INTO {} ({}) VALUES ({})",
        quote_ident(DRAWERS),
        column_list(saved),
        marks.join(", ")
    );
    let mut reader = backup_store::open(ROWS)?;
    while let Some(batch) = dump::read_batch(&mut reader)? {
        conn.execute_batch(&insert, &batch)?;
    }
    // Proven from the database, not from the artifact.
    let mut checksum = TableChecksum::new();
    let mut cursor = conn.cursor(&select_rows(saved), &[])?;
    while let Some(batch) = cursor.next_batch()? {
        dump::add_batch(&mut checksum, &batch, 1)?;
    }
    if checksum.rows() != expected.rows || checksum.hex() != expected.checksum {
        return Err(Error::BackupInvalid(format!(
            "restored `{DRAWERS}` has {} rows (checksum {}); the backup had {} ({})",
            checksum.rows(),
            checksum.hex(),
            expected.rows,
            expected.checksum
        )));
    }
    Ok(TableState {
        name: DRAWERS.to_string(),
        rows: checksum.rows(),
        checksum: checksum.hex(),
    })
}
