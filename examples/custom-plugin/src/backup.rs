//! Backup: `client_drawers` — its `CREATE` statements and every row with its
//! rowid — read in one transaction. Nothing else is written by this plugin.

use serde::{Deserialize, Serialize};
use sluice_sdk::checksum::TableChecksum;
use sluice_sdk::sql::{quote_ident, Connection};
use sluice_sdk::{backup_store, dump, log};
use sluice_sdk::{BackupManifest, ChangeKind, Error, StepContext, TableState};

use crate::drawer::{rows, text, DRAWERS};
use crate::Drawers;

/// Artifact holding [`SavedTable`].
pub const SCHEMA: &str = "client_drawers.schema.json";
/// Artifact holding the rows (rowid first), as the sdk's row-batch frames.
pub const ROWS: &str = "client_drawers.rows";

/// What rollback needs to rebuild the table.
#[derive(Debug, Serialize, Deserialize)]
pub struct SavedTable {
    /// The table's `CREATE TABLE`, then its indexes and triggers.
    pub statements: Vec<String>,
    /// Column names, in the rows artifact's order after the rowid.
    pub columns: Vec<String>,
}

impl sluice_sdk::Backup for Drawers {
    fn backup(ctx: &StepContext) -> Result<BackupManifest, Error> {
        let conn = Connection::open(&ctx.target)?;
        let state = conn.transaction(save)?;
        log::info("drawers backed up", &[("rows", &state.rows.to_string())]);
        Ok(BackupManifest {
            artifacts: vec![SCHEMA.to_string(), ROWS.to_string()],
            tables: vec![state],
            metadata: String::new(),
            change: ChangeKind::Transactional,
        })
    }
}

fn save(conn: &Connection) -> Result<TableState, Error> {
    let column = |sql: &str| -> Result<Vec<String>, Error> {
        rows(conn, sql, &[DRAWERS.into()])?
            .iter()
            .map(|row| text(&row[0], "a schema entry"))
            .collect()
    };
    let saved = SavedTable {
        statements: column(
            "SELECT sql FROM sqlite_master WHERE tbl_name = ?1 AND sql IS NOT NULL \
             ORDER BY type <> 'table', rowid",
        )?,
        columns: column("SELECT name FROM pragma_table_info(?1)")?,
    };
    if saved.statements.is_empty() {
        return Err(Error::PreconditionFailed(format!(
            "table `{DRAWERS}` does not exist: the dual-write phase creates it"
        )));
    }
    let mut writer = backup_store::create(SCHEMA)?;
    serde_json::to_writer(&mut writer, &saved)
        .map_err(|e| Error::Internal(format!("writing {SCHEMA}: {e}")))?;
    writer.finish()?;

    let mut writer = backup_store::create(ROWS)?;
    let mut cursor = conn.cursor(&select_rows(&saved), &[])?;
    let mut checksum = TableChecksum::new();
    while let Some(batch) = cursor.next_batch()? {
        dump::write_batch(&mut writer, &batch)?;
        // The rowid is carried for restore; the content checksum skips it,
        // as the host's does.
        dump::add_batch(&mut checksum, &batch, 1)?;
    }
    writer.finish()?;
    Ok(TableState {
        name: DRAWERS.to_string(),
        rows: checksum.rows(),
        checksum: checksum.hex(),
    })
}

/// `rowid, c1, c2, …`: the rows artifact's columns.
pub fn column_list(saved: &SavedTable) -> String {
    let cols: Vec<String> = saved.columns.iter().map(|c| quote_ident(c)).collect();
    format!("rowid, {}", cols.join(", "))
}

/// The `SELECT` reading the table in the artifact's column order.
pub fn select_rows(saved: &SavedTable) -> String {
    format!(
        "SELECT {} FROM {}",
        column_list(saved),
        quote_ident(DRAWERS)
    )
}
