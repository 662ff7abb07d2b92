//! Rollback: drop what the step created, restore the snapshot, prove it.
//!
//! Everything happens in one transaction that commits only when every
//! restored table's row count and checksum equal the backup's. Running it
//! twice gives the same result.

use std::collections::HashSet;
use std::io::Read;

use sluice_sdk::backup_store;
use sluice_sdk::dump;
use sluice_sdk::sql::{quote_ident, Connection};
use sluice_sdk::{log, progress, BackupManifest, Error, PhaseReached, StepContext, TableState};

use crate::schema::{self, SchemaObject, SchemaSnapshot, TableLayout, SCHEMA_ARTIFACT};
use crate::SqlitePlugin;

impl sluice_sdk::Rollback for SqlitePlugin {
    fn rollback(
        ctx: &StepContext,
        manifest: &BackupManifest,
        reached: PhaseReached,
    ) -> Result<Vec<TableState>, Error> {
        // The restore is the same whatever was reached: it drops what is new
        // and reloads the snapshot, which is also safe after a partial one.
        log::info("rollback", &[("reached", &format!("{reached:?}"))]);
        let snapshot = read_snapshot()?;
        let conn = Connection::open(&ctx.target)?;
        conn.execute("PRAGMA defer_foreign_keys = ON", &[])?;
        conn.transaction(|conn| restore(conn, &snapshot, manifest))
    }
}

fn read_snapshot() -> Result<SchemaSnapshot, Error> {
    let mut bytes = Vec::new();
    backup_store::open(SCHEMA_ARTIFACT)?
        .read_to_end(&mut bytes)
        .map_err(|e| Error::BackupInvalid(format!("{SCHEMA_ARTIFACT}: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::BackupInvalid(format!("{SCHEMA_ARTIFACT} is not a schema snapshot: {e}"))
    })
}

fn restore(
    conn: &Connection,
    snapshot: &SchemaSnapshot,
    manifest: &BackupManifest,
) -> Result<Vec<TableState>, Error> {
    let restored: HashSet<&str> = snapshot.tables.iter().map(|t| t.name.as_str()).collect();
    let before: Vec<&SchemaObject> = snapshot.objects.iter().collect();
    let now = schema::objects(conn)?;

    // A table the step changed but the backup did not save cannot be put back.
    for object in &now {
        if object.kind == "table" && !restored.contains(object.name.as_str()) {
            if let Some(old) = before
                .iter()
                .find(|o| o.kind == "table" && o.name == object.name)
            {
                if old.sql != object.sql {
                    return Err(Error::PreconditionFailed(format!(
                        "table `{}` changed shape but was not backed up; add it to params.tables",
                        object.name
                    )));
                }
            }
        }
    }

    // Drop what is new or changed, dependants first.
    for kind in ["trigger", "view", "index", "table"] {
        for object in now.iter().filter(|o| o.kind == kind) {
            let unchanged = before.iter().any(|o| o == &object);
            let is_restored_table = kind == "table" && restored.contains(object.name.as_str());
            if (!unchanged || is_restored_table) && object.sql.is_some() {
                conn.execute(
                    &format!(
                        "DROP {} IF EXISTS {}",
                        kind.to_uppercase(),
                        quote_ident(&object.name)
                    ),
                    &[],
                )?;
            }
        }
    }

    // Recreate the saved tables with their rows.
    let mut states = Vec::new();
    for layout in &snapshot.tables {
        let create = before
            .iter()
            .find(|o| o.kind == "table" && o.name == layout.name)
            .and_then(|o| o.sql.clone())
            .ok_or_else(|| {
                Error::BackupInvalid(format!("no schema saved for `{}`", layout.name))
            })?;
        conn.execute_script(&create)?;
        states.push(load_table(conn, layout)?);
    }

    // Recreate every object of the snapshot that is missing now.
    let present: HashSet<(String, String)> = schema::objects(conn)?
        .into_iter()
        .map(|o| (o.kind, o.name))
        .collect();
    for kind in ["table", "index", "view", "trigger"] {
        for object in before.iter().filter(|o| o.kind == kind) {
            if let Some(sql) = &object.sql {
                if !present.contains(&(object.kind.clone(), object.name.clone())) {
                    conn.execute_script(sql)?;
                }
            }
        }
    }

    // Prove it before committing.
    for state in &states {
        let expected = manifest
            .tables
            .iter()
            .find(|t| t.name == state.name)
            .ok_or_else(|| {
                Error::BackupInvalid(format!("manifest has no state for table `{}`", state.name))
            })?;
        if expected.rows != state.rows || expected.checksum != state.checksum {
            return Err(Error::BackupInvalid(format!(
                "restored `{}` has {} rows (checksum {}), backup had {} rows (checksum {})",
                state.name, state.rows, state.checksum, expected.rows, expected.checksum
            )));
        }
    }
    log::info("restore verified", &[("tables", &states.len().to_string())]);
    Ok(states)
}

fn load_table(conn: &Connection, layout: &TableLayout) -> Result<TableState, Error> {
    let mut reader = backup_store::open(&layout.artifact)?;
    let insert = schema::insert_rows(layout);
    let mut loaded = 0u64;
    while let Some(batch) = dump::read_batch(&mut reader)? {
        loaded += conn.execute_batch(&insert, &batch)?;
        progress::report(loaded, None, &layout.name);
    }
    // The proof reads the table back from the database, not from the artifact.
    crate::backup::table_state(conn, layout)
}
