//! Backup: a consistent snapshot of the touched tables and the whole schema.

use sluice_sdk::backup_store;
use sluice_sdk::checksum::TableChecksum;
use sluice_sdk::dump;
use sluice_sdk::sql::Connection;
use sluice_sdk::{log, progress, BackupManifest, ChangeKind, Error, StepContext, TableState};

use crate::schema::{self, SchemaSnapshot, TableLayout, SCHEMA_ARTIFACT};
use crate::{Params, SqlitePlugin};

impl sluice_sdk::Backup for SqlitePlugin {
    fn backup(ctx: &StepContext) -> Result<BackupManifest, Error> {
        let params = Params::of(ctx)?;
        let conn = Connection::open(&ctx.target)?;
        // One read transaction: every table is read at the same instant.
        conn.transaction(|conn| snapshot(conn, &params))
    }
}

fn snapshot(conn: &Connection, params: &Params) -> Result<BackupManifest, Error> {
    let objects = schema::objects(conn)?;
    let all_tables: Vec<&str> = objects
        .iter()
        .filter(|o| o.kind == "table")
        .map(|o| o.name.as_str())
        .collect();
    let tables: Vec<String> = if params.tables.is_empty() {
        all_tables.iter().map(|t| t.to_string()).collect()
    } else {
        for table in &params.tables {
            if !all_tables.contains(&table.as_str()) {
                return Err(Error::PreconditionFailed(format!(
                    "table `{table}` named in params.tables does not exist"
                )));
            }
        }
        params.tables.clone()
    };

    let mut layouts = Vec::new();
    let mut states = Vec::new();
    let mut artifacts = Vec::new();
    for (i, table) in tables.iter().enumerate() {
        let layout = TableLayout {
            name: table.clone(),
            artifact: format!("table-{i}.rows"),
            with_rowid: schema::needs_rowid(conn, table)?,
            columns: schema::columns(conn, table)?,
        };
        let state = dump_table(conn, &layout)?;
        log::info(
            "table backed up",
            &[("table", table), ("rows", &state.rows.to_string())],
        );
        artifacts.push(layout.artifact.clone());
        states.push(state);
        layouts.push(layout);
    }

    let snapshot = SchemaSnapshot {
        format: 1,
        objects,
        tables: layouts,
    };
    let mut writer = backup_store::create(SCHEMA_ARTIFACT)?;
    serde_json::to_writer(&mut writer, &snapshot)
        .map_err(|e| Error::Internal(format!("writing the schema snapshot: {e}")))?;
    writer.finish()?;
    artifacts.push(SCHEMA_ARTIFACT.to_string());

    Ok(BackupManifest {
        artifacts,
        tables: states,
        metadata: String::new(),
        // Migrations run in one SQLite transaction.
        change: ChangeKind::Transactional,
    })
}

fn dump_table(conn: &Connection, layout: &TableLayout) -> Result<TableState, Error> {
    let total = conn.query_i64(
        &format!(
            "SELECT count(*) FROM {}",
            sluice_sdk::sql::quote_ident(&layout.name)
        ),
        &[],
    )? as u64;
    let mut writer = backup_store::create(&layout.artifact)?;
    let mut cursor = conn.cursor(&schema::select_rows(layout), &[])?;
    let mut checksum = TableChecksum::new();
    let skip = usize::from(layout.with_rowid);
    while let Some(batch) = cursor.next_batch()? {
        dump::write_batch(&mut writer, &batch)?;
        dump::add_batch(&mut checksum, &batch, skip)?;
        progress::report(checksum.rows(), Some(total), &layout.name);
    }
    writer.finish()?;
    Ok(TableState {
        name: layout.name.clone(),
        rows: checksum.rows(),
        checksum: checksum.hex(),
    })
}

/// Row count and checksum of a table as it is in the database now.
pub(crate) fn table_state(conn: &Connection, layout: &TableLayout) -> Result<TableState, Error> {
    let mut cursor = conn.cursor(&schema::select_rows(layout), &[])?;
    let mut checksum = TableChecksum::new();
    let skip = usize::from(layout.with_rowid);
    while let Some(batch) = cursor.next_batch()? {
        dump::add_batch(&mut checksum, &batch, skip)?;
    }
    Ok(TableState {
        name: layout.name.clone(),
        rows: checksum.rows(),
        checksum: checksum.hex(),
    })
}
