//! Backup: each table's DDL and its rows, streamed with `COPY`.

use std::io::Write;

use sluice_sdk::backup_store;
use sluice_sdk::checksum::TableChecksum;
use sluice_sdk::sql::Connection;
use sluice_sdk::{log, progress, BackupManifest, Error, StepContext, TableState};

use crate::names::TableName;
use crate::schema::{self, SchemaSnapshot, SCHEMA_ARTIFACT};
use crate::{BackupMetadata, Params, PostgresPlugin};

impl sluice_sdk::Backup for PostgresPlugin {
    fn backup(ctx: &StepContext) -> Result<BackupManifest, Error> {
        let params = Params::of(ctx)?;
        let conn = Connection::open(&ctx.target)?;
        // The host runs this phase in one REPEATABLE READ READ ONLY
        // transaction: every table is read at the same instant.
        snapshot(&conn, &params)
    }
}

fn snapshot(conn: &Connection, params: &Params) -> Result<BackupManifest, Error> {
    let mut names = params.table_names()?;
    if names.is_empty() {
        names = schema::tables_of(conn, "public")?;
    }
    let mut ddls = Vec::new();
    let mut states = Vec::new();
    let mut artifacts = Vec::new();
    for (i, name) in names.iter().enumerate() {
        if !schema::exists(conn, name)? {
            return Err(Error::PreconditionFailed(format!(
                "table `{}` named in params.tables does not exist",
                name.display()
            )));
        }
        let ddl = schema::table_ddl(conn, name, format!("table-{i}.copy"))?;
        let state = dump_table(conn, name, &ddl.artifact)?;
        log::info(
            "table backed up",
            &[("table", &state.name), ("rows", &state.rows.to_string())],
        );
        artifacts.push(ddl.artifact.clone());
        states.push(state);
        ddls.push(ddl);
    }

    let snapshot = SchemaSnapshot {
        format: 1,
        tables: schema::load_order(ddls),
    };
    let mut writer = backup_store::create(SCHEMA_ARTIFACT)?;
    serde_json::to_writer(&mut writer, &snapshot)
        .map_err(|e| Error::Internal(format!("writing the schema snapshot: {e}")))?;
    writer.finish()?;
    artifacts.push(SCHEMA_ARTIFACT.to_string());

    let mut schemas: Vec<String> = names.iter().map(|n| n.schema.clone()).collect();
    schemas.sort();
    schemas.dedup();
    let metadata = BackupMetadata {
        format: 1,
        transactional: params.change().transactional,
        schema_digest: schema::schema_digest(conn, &schemas)?,
        schemas,
        baselines: crate::validate::baselines(conn, params)?,
        sequences: schema::sequence_values(conn, &names)?,
    };
    for seq in &metadata.sequences {
        log::info(
            "sequence saved",
            &[
                ("sequence", &seq.display()),
                ("last_value", &seq.last_value.to_string()),
                ("is_called", &seq.is_called.to_string()),
            ],
        );
    }
    Ok(BackupManifest {
        artifacts,
        tables: states,
        metadata: serde_json::to_string(&metadata)
            .map_err(|e| Error::Internal(format!("encoding the backup metadata: {e}")))?,
        change: params.change_kind(),
    })
}

/// `COPY` of every column of a table, exactly as the host reads it to check
/// the plugin's checksums.
pub(crate) fn copy_out_statement(name: &TableName) -> String {
    format!("COPY (SELECT * FROM {}) TO STDOUT", name.quoted())
}

/// Streams a table into an artifact chunk by chunk (whole rows per chunk),
/// checksumming the same bytes.
fn dump_table(conn: &Connection, name: &TableName, artifact: &str) -> Result<TableState, Error> {
    let mut writer = backup_store::create(artifact)?;
    let mut reader = conn.copy_out(&copy_out_statement(name))?;
    let mut checksum = TableChecksum::new();
    let display = name.display();
    while let Some(chunk) = reader.next_chunk()? {
        checksum.add_copy_lines(&chunk);
        writer
            .write_all(&chunk)
            .map_err(|e| Error::Internal(format!("writing artifact {artifact}: {e}")))?;
        progress::report(checksum.rows(), None, &display);
    }
    writer.finish()?;
    Ok(TableState {
        name: display,
        rows: checksum.rows(),
        checksum: checksum.hex(),
    })
}

/// Row count and checksum of a table as it is now, or `None` when it does
/// not exist.
pub(crate) fn table_state(
    conn: &Connection,
    name: &TableName,
) -> Result<Option<TableState>, Error> {
    if !crate::schema::exists(conn, name)? {
        return Ok(None);
    }
    let mut reader = conn.copy_out(&copy_out_statement(name))?;
    let mut checksum = TableChecksum::new();
    while let Some(chunk) = reader.next_chunk()? {
        checksum.add_copy_lines(&chunk);
    }
    Ok(Some(TableState {
        name: name.display(),
        rows: checksum.rows(),
        checksum: checksum.hex(),
    }))
}
