//! Backup: the table's schema (its `CREATE` statement, indexes and triggers)
//! and every row with its rowid, read in one transaction.

use serde::{Deserialize, Serialize};
use sluice_sdk::checksum::TableChecksum;
use sluice_sdk::sql::{quote_ident, Connection, Value};
use sluice_sdk::{backup_store, dump, log};
use sluice_sdk::{BackupManifest, ChangeKind, Error, StepContext, TableState};

use crate::{{Type}};

/// Artifact holding [`SavedSchema`].
pub const SCHEMA: &str = "schema.json";
/// Artifact holding the rows, as the sdk's row-batch frames.
pub const ROWS: &str = "rows.bin";

/// What rollback needs to rebuild the table.
#[derive(Debug, Serialize, Deserialize)]
pub struct SavedSchema {
    /// `CREATE` statements: the table first, then its indexes and triggers.
    pub statements: Vec<String>,
    /// Column names, in the rows artifact's order (after the rowid).
    pub columns: Vec<String>,
    /// Whether each saved row starts with its rowid (not a `WITHOUT ROWID` table).
    pub with_rowid: bool,
}

impl sluice_sdk::Backup for {{Type}} {
    fn backup(ctx: &StepContext) -> Result<BackupManifest, Error> {
        let params = crate::Params::of(ctx)?;
        let conn = Connection::open(&ctx.target)?;
        // One read transaction: schema and rows are read at the same instant.
        let state = conn.transaction(|conn| save(conn, &params.table))?;
        log::info(
            "table backed up",
            &[("table", &state.name), ("rows", &state.rows.to_string())],
        );
        Ok(BackupManifest {
            artifacts: vec![SCHEMA.to_string(), ROWS.to_string()],
            // The host checks these against its own checksums of the table.
            tables: vec![state],
            metadata: String::new(),
            // Migrate runs in one SQLite transaction.
            change: ChangeKind::Transactional,
        })
    }
}

fn save(conn: &Connection, table: &str) -> Result<TableState, Error> {
    let statements: Vec<String> = conn
        .query(
            "SELECT sql FROM sqlite_master WHERE tbl_name = ?1 AND sql IS NOT NULL \
             ORDER BY type <> 'table', rowid",
            &[table.into()],
        )?
        .values()?
        .into_iter()
        .filter_map(|row| match row.into_iter().next() {
            Some(Value::Text(sql)) => Some(sql),
            _ => None,
        })
        .collect();
    if statements.is_empty() {
        return Err(Error::PreconditionFailed(format!(
            "table `{table}` does not exist"
        )));
    }
    let columns: Vec<String> = conn
        .query("SELECT name FROM pragma_table_info(?1)", &[table.into()])?
        .values()?
        .into_iter()
        .filter_map(|row| match row.into_iter().next() {
            Some(Value::Text(name)) => Some(name),
            _ => None,
        })
        .collect();
    // A WITHOUT ROWID table has no rowid to select.
    let with_rowid = conn
        .query(
            &format!("SELECT rowid FROM {} LIMIT 0", quote_ident(table)),
            &[],
        )
        .is_ok();
    let schema = SavedSchema {
        statements,
        columns,
        with_rowid,
    };
    let mut writer = backup_store::create(SCHEMA)?;
    serde_json::to_writer(&mut writer, &schema)
        .map_err(|e| Error::Internal(format!("writing {SCHEMA}: {e}")))?;
    writer.finish()?;

    // Rows stream through in batches: memory stays bounded however big the table.
    let mut writer = backup_store::create(ROWS)?;
    let mut cursor = conn.cursor(&select_rows(table, &schema), &[])?;
    let mut checksum = TableChecksum::new();
    while let Some(batch) = cursor.next_batch()? {
        dump::write_batch(&mut writer, &batch)?;
        // The rowid is carried for restore but is not part of the content.
        dump::add_batch(&mut checksum, &batch, usize::from(schema.with_rowid))?;
    }
    writer.finish()?;
    Ok(TableState {
        name: table.to_string(),
        rows: checksum.rows(),
        checksum: checksum.hex(),
    })
}

/// The column list `[rowid, ]c1, c2, …` of the rows artifact.
pub fn column_list(schema: &SavedSchema) -> String {
    let mut cols: Vec<String> = schema.columns.iter().map(|c| quote_ident(c)).collect();
    if schema.with_rowid {
        cols.insert(0, "rowid".to_string());
    }
    cols.join(", ")
}

/// The `SELECT` that reads the table in the artifact's column order.
pub fn select_rows(table: &str, schema: &SavedSchema) -> String {
    format!("SELECT {} FROM {}", column_list(schema), quote_ident(table))
}
