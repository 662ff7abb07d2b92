//! Rollback, cheapest sound path first:
//!
//! 1. the backed-up tables and the schema already equal the backup — a
//!    transactional migrate that failed was undone by PostgreSQL, or an
//!    earlier rollback finished — so there is nothing to do;
//! 2. the step's `compensate` script, then the same check;
//! 3. a restore from the backup in one transaction: reshaped tables dropped,
//!    missing ones recreated from their DDL, rows truncated and reloaded with
//!    `COPY … FROM STDIN` with the tables' user triggers off (and put back as
//!    they were enabled), indexes and constraints put back, and the commit
//!    only after every restored table's checksum equals the backup's.
//!
//! Every path then puts the backed-up tables' sequences back to their
//! `last_value` and `is_called` at backup (`setval`; inside the restore's
//! transaction, after its verification, while the truncated tables are
//! still locked): `nextval` is not transactional, so rows the step inserted
//! leave their sequence advanced even when PostgreSQL undid the insert.
//!
//! Each path ends in the same state, so running rollback twice is safe.

use std::io::Read;

use sluice_sdk::backup_store;
use sluice_sdk::sql::Connection;
use sluice_sdk::{log, progress, BackupManifest, Error, PhaseReached, StepContext, TableState};

use crate::backup::table_state;
use crate::names::{quote_ident, TableName};
use crate::schema::{self, SchemaSnapshot, TableDdl, SCHEMA_ARTIFACT};
use crate::{BackupMetadata, Params, PostgresPlugin};

/// Bytes read from an artifact per `COPY … FROM STDIN` write.
const RESTORE_CHUNK: usize = 1 << 20;

impl sluice_sdk::Rollback for PostgresPlugin {
    fn rollback(
        ctx: &StepContext,
        manifest: &BackupManifest,
        reached: PhaseReached,
    ) -> Result<Vec<TableState>, Error> {
        let params = Params::of(ctx)?;
        let metadata: BackupMetadata = serde_json::from_str(&manifest.metadata).map_err(|e| {
            Error::BackupInvalid(format!("the manifest's metadata is not this plugin's: {e}"))
        })?;
        let conn = Connection::open(&ctx.target)?;
        let reached_name = format!("{reached:?}");

        if let Some(states) = unchanged(&conn, manifest, &metadata)? {
            let path = if metadata.transactional
                && matches!(reached, PhaseReached::BackedUp | PhaseReached::Migrating)
            {
                "transaction already undone"
            } else {
                "nothing to undo"
            };
            log::info(
                &format!("rollback: {path}: tables and schema equal the backup"),
                &[("path", path), ("reached", &reached_name)],
            );
            restore_sequences(&conn, &metadata)?;
            return Ok(states);
        }

        if let Some(script) = &params.compensate {
            log::info(
                "rollback: running the compensating script",
                &[("path", "compensate"), ("reached", &reached_name)],
            );
            crate::migrate::run_script(&conn, script)?;
            if let Some(states) = unchanged(&conn, manifest, &metadata)? {
                log::info(
                    "rollback: compensated: tables and schema equal the backup",
                    &[("path", "compensate")],
                );
                restore_sequences(&conn, &metadata)?;
                return Ok(states);
            }
            log::warn(
                "rollback: the compensating script did not bring back the backed-up state; restoring from the backup",
                &[],
            );
        }

        log::info(
            "rollback: restoring from the backup",
            &[("path", "restore"), ("reached", &reached_name)],
        );
        let snapshot = read_snapshot()?;
        let states = conn.transaction(|conn| {
            let states = restore(conn, &snapshot, manifest)?;
            restore_sequences(conn, &metadata)?;
            Ok(states)
        })?;
        if schema::schema_digest(&conn, &metadata.schemas)? != metadata.schema_digest {
            log::warn(
                "rollback: the backed-up tables are restored, but the schema still differs (objects the step created outside them?)",
                &[],
            );
        }
        Ok(states)
    }
}

/// Puts every sequence the backup saved back to its value then. A sequence
/// that no longer exists (a table the restore could not recreate it for) is
/// logged and left to the host's proof, which names it.
fn restore_sequences(conn: &Connection, metadata: &BackupMetadata) -> Result<(), Error> {
    for seq in &metadata.sequences {
        let set = conn.query(&seq.setval_statement(), &[])?;
        if set.values()?.is_empty() {
            log::warn(
                "sequence missing: its value cannot be put back",
                &[("sequence", &seq.display())],
            );
            continue;
        }
        log::info(
            "sequence restored",
            &[
                ("sequence", &seq.display()),
                ("last_value", &seq.last_value.to_string()),
                ("is_called", &seq.is_called.to_string()),
            ],
        );
    }
    Ok(())
}

/// The tables' states when every backed-up table and the schema equal the
/// backup; `None` when anything differs.
fn unchanged(
    conn: &Connection,
    manifest: &BackupManifest,
    metadata: &BackupMetadata,
) -> Result<Option<Vec<TableState>>, Error> {
    if schema::schema_digest(conn, &metadata.schemas)? != metadata.schema_digest {
        return Ok(None);
    }
    let mut states = Vec::new();
    for saved in &manifest.tables {
        let name = TableName::from_manifest(&saved.name);
        match table_state(conn, &name)? {
            Some(now) if now.rows == saved.rows && now.checksum == saved.checksum => {
                states.push(now)
            }
            _ => return Ok(None),
        }
    }
    Ok(Some(states))
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
    // Columns the step appended are dropped (the table, and every foreign
    // key pointing at it, stays); tables it reshaped otherwise are
    // recreated from their DDL.
    for ddl in snapshot.tables.iter().rev() {
        let name = ddl.table_name();
        if !schema::exists(conn, &name)? {
            continue;
        }
        let now = schema::columns(conn, &name)?;
        if now == ddl.columns {
            continue;
        }
        if now.len() > ddl.columns.len() && now[..ddl.columns.len()] == ddl.columns[..] {
            for extra in &now[ddl.columns.len()..] {
                log::info(
                    "dropping added column",
                    &[("table", &ddl.name), ("column", &extra.name)],
                );
                conn.execute_script(&format!(
                    "ALTER TABLE {} DROP COLUMN {}",
                    name.quoted(),
                    quote_ident(&extra.name)
                ))?;
            }
        } else {
            log::info("dropping reshaped table", &[("table", &ddl.name)]);
            conn.execute_script(&format!("DROP TABLE {}", name.quoted()))?;
        }
    }
    let mut recreated = Vec::new();
    for ddl in &snapshot.tables {
        let name = ddl.table_name();
        if !schema::exists(conn, &name)? {
            log::info("recreating table", &[("table", &ddl.name)]);
            for statement in ddl.create_statements() {
                conn.execute_script(&statement)?;
            }
            recreated.push(ddl.name.clone());
        }
    }

    // Constraints and indexes the step added or changed go first, so the
    // saved rows load against the saved shape.
    for ddl in &snapshot.tables {
        let name = ddl.table_name();
        for now in schema::constraints(conn, &name)? {
            if !ddl.constraints.contains(&now) {
                conn.execute_script(&format!(
                    "ALTER TABLE {} DROP CONSTRAINT {}",
                    name.quoted(),
                    quote_ident(&now.name)
                ))?;
            }
        }
        for now in schema::indexes(conn, &name)? {
            if !ddl.indexes.contains(&now) {
                conn.execute_script(&format!(
                    "DROP INDEX {}.{}",
                    quote_ident(&ddl.schema),
                    quote_ident(&now.name)
                ))?;
            }
        }
    }

    // Tables that tables outside the backup reference by foreign key
    // cannot be truncated: their rows are merged back by primary key. The
    // rest are truncated together (foreign keys among them allow it) and
    // reloaded.
    let disabled = disable_user_triggers(conn, snapshot)?;
    let mut truncated = Vec::new();
    let mut merged = Vec::new();
    for ddl in &snapshot.tables {
        if referenced_from_outside(conn, ddl, snapshot)? {
            merged.push(ddl);
        } else {
            truncated.push(ddl);
        }
    }
    if !truncated.is_empty() {
        let all: Vec<String> = truncated.iter().map(|t| t.table_name().quoted()).collect();
        conn.execute_script(&format!("TRUNCATE {}", all.join(", ")))?;
    }
    for ddl in &truncated {
        load_table(conn, ddl)?;
    }
    for ddl in &merged {
        merge_table(conn, ddl)?;
    }
    reenable_user_triggers(conn, &disabled)?;

    // Then the saved constraints and indexes that are missing (foreign keys
    // last: the rows they check are all back).
    for foreign in [false, true] {
        for ddl in &snapshot.tables {
            let present = schema::constraints(conn, &ddl.table_name())?;
            for c in ddl
                .constraints
                .iter()
                .filter(|c| (c.kind == "f") == foreign)
            {
                if !present.contains(c) {
                    conn.execute_script(&ddl.add_constraint(c))?;
                }
            }
        }
    }
    for ddl in &snapshot.tables {
        let present = schema::indexes(conn, &ddl.table_name())?;
        for index in &ddl.indexes {
            if !present.contains(index) {
                conn.execute_script(&index.definition)?;
            }
        }
        if recreated.contains(&ddl.name) {
            reset_sequences(conn, ddl)?;
        }
    }

    // Prove it before committing: the rows read back from the database.
    let mut states = Vec::new();
    for ddl in &snapshot.tables {
        let state = table_state(conn, &ddl.table_name())?.ok_or_else(|| {
            Error::Internal(format!("table `{}` is missing after its restore", ddl.name))
        })?;
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
        states.push(state);
    }
    log::info("restore verified", &[("tables", &states.len().to_string())]);
    Ok(states)
}

/// Whether a table not in the backup has a foreign key to `ddl`'s table.
fn referenced_from_outside(
    conn: &Connection,
    ddl: &TableDdl,
    snapshot: &SchemaSnapshot,
) -> Result<bool, Error> {
    let referencing = conn.query(
        "SELECT n.nspname, c.relname FROM pg_catalog.pg_constraint k \
         JOIN pg_catalog.pg_class c ON c.oid = k.conrelid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE k.contype = 'f' AND k.confrelid = to_regclass($1)",
        &[ddl.table_name().quoted().into()],
    )?;
    let mut outside = false;
    sluice_sdk::sql::for_each_row(&referencing.batch, |row| {
        if let [schema, table] = row {
            let (schema, table) = (text(schema), text(table));
            outside |= !snapshot
                .tables
                .iter()
                .any(|t| t.schema == schema && t.table == table);
        }
    })?;
    Ok(outside)
}

fn text(v: &sluice_sdk::row::ValueRef<'_>) -> String {
    match v {
        sluice_sdk::row::ValueRef::Text(t) => t.to_string(),
        _ => String::new(),
    }
}

/// Restores a table other tables reference, without removing rows they
/// still point at: the saved rows are loaded into a staging table, rows the
/// step added (keys absent from the backup) are deleted, and every saved row
/// is upserted by primary key.
fn merge_table(conn: &Connection, ddl: &TableDdl) -> Result<(), Error> {
    let name = ddl.table_name();
    let key: Vec<String> = conn
        .query(
            "SELECT a.attname FROM pg_catalog.pg_index i \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) \
             WHERE i.indrelid = to_regclass($1) AND i.indisprimary ORDER BY a.attnum",
            &[name.quoted().into()],
        )?
        .values()?
        .into_iter()
        .filter_map(|row| match row.into_iter().next() {
            Some(sluice_sdk::sql::Value::Text(t)) => Some(quote_ident(&t)),
            _ => None,
        })
        .collect();
    if key.is_empty() {
        return Err(Error::PreconditionFailed(format!(
            "table `{}` is referenced by tables outside the backup and has no primary key: it cannot be restored without touching them; add those tables to the step's `tables`",
            ddl.name
        )));
    }
    let stage = stage_table(ddl);
    conn.execute_script(&format!(
        "CREATE TEMP TABLE {stage} ON COMMIT DROP AS SELECT * FROM {} WITH NO DATA",
        name.quoted()
    ))?;
    let mut reader = backup_store::open(&ddl.artifact)?;
    stream_in(
        conn,
        &mut reader,
        &format!("COPY {stage} FROM STDIN"),
        &ddl.name,
    )?;
    let key_list = key.join(", ");
    let matches = key
        .iter()
        .map(|k| format!("s.{k} = t.{k}"))
        .collect::<Vec<_>>()
        .join(" AND ");
    let removed = conn.execute(
        &format!(
            "DELETE FROM {} t WHERE NOT EXISTS (SELECT 1 FROM {stage} s WHERE {matches})",
            name.quoted()
        ),
        &[],
    )?;
    let writable: Vec<String> = ddl
        .columns
        .iter()
        .filter(|c| !c.generated)
        .map(|c| quote_ident(&c.name))
        .collect();
    let updates: Vec<String> = writable
        .iter()
        .filter(|c| !key.contains(c))
        .map(|c| format!("{c} = EXCLUDED.{c}"))
        .collect();
    let on_conflict = if updates.is_empty() {
        format!("ON CONFLICT ({key_list}) DO NOTHING")
    } else {
        format!(
            "ON CONFLICT ({key_list}) DO UPDATE SET {}",
            updates.join(", ")
        )
    };
    let cols = writable.join(", ");
    let upserted = conn.execute(
        &format!(
            "INSERT INTO {} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM {stage} {on_conflict}",
            name.quoted()
        ),
        &[],
    )?;
    conn.execute_script(&format!("DROP TABLE {stage}"))?;
    log::info(
        "table merged back by primary key (other tables reference it)",
        &[
            ("table", &ddl.name),
            ("removed", &removed.to_string()),
            ("restored", &upserted.to_string()),
        ],
    );
    Ok(())
}

/// The staging table a restore loads a table's saved rows into: a
/// temporary table named `pg_temp.…`, the one name a step scoped to tables
/// may give its own scratch tables (it is private to this session, and the
/// prefix keeps it from shadowing the table it stages).
fn stage_table(ddl: &TableDdl) -> String {
    format!(
        "pg_temp.{}",
        quote_ident(&format!("sluice_restore_{}", ddl.table))
    )
}

/// How one user trigger was enabled before the restore (`pg_trigger.tgenabled`).
struct TriggerState {
    name: String,
    enabled: String,
}

/// Turns off the user triggers of the tables about to be reloaded, so the
/// restore writes exactly the saved rows: a `BEFORE UPDATE … updated_at :=
/// now()` would rewrite them, an `AFTER INSERT` notify or audit trigger would
/// act as if the application wrote them. Done per table with
/// `ALTER TABLE … DISABLE TRIGGER USER` inside the restore's transaction
/// (so a failed restore leaves them as they were), which needs the table's
/// ownership — as the step's own `ALTER TABLE`s do — and keeps the internal
/// foreign-key triggers checking the restored rows.
/// (`session_replication_role = replica` would need a superuser and would
/// also stop the foreign-key checks.) Returns each table's triggers and how
/// they were enabled, for [`reenable_user_triggers`].
fn disable_user_triggers(
    conn: &Connection,
    snapshot: &SchemaSnapshot,
) -> Result<Vec<(TableName, Vec<TriggerState>)>, Error> {
    let mut disabled = Vec::new();
    for ddl in &snapshot.tables {
        let name = ddl.table_name();
        let rows = conn.query(
            "SELECT t.tgname::text, t.tgenabled::text FROM pg_catalog.pg_trigger t \
             WHERE t.tgrelid = to_regclass($1) AND NOT t.tgisinternal ORDER BY 1",
            &[name.quoted().into()],
        )?;
        let triggers: Vec<TriggerState> = rows
            .values()?
            .iter()
            .filter_map(|r| match (&r[0], &r[1]) {
                (sluice_sdk::sql::Value::Text(n), sluice_sdk::sql::Value::Text(e)) => {
                    Some(TriggerState {
                        name: n.clone(),
                        enabled: e.clone(),
                    })
                }
                _ => None,
            })
            .collect();
        if triggers.iter().all(|t| t.enabled == "D") {
            continue;
        }
        conn.execute_script(&format!("ALTER TABLE {} DISABLE TRIGGER USER", name.quoted()))
            .map_err(|e| {
                Error::PreconditionFailed(format!(
                    "cannot restore `{}` without firing its triggers ({}): disabling them needs the table's ownership (ALTER TABLE … DISABLE TRIGGER USER); connect the step as the table's owner: {e}",
                    ddl.name,
                    triggers.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
                ))
            })?;
        log::info(
            "user triggers disabled for the restore",
            &[
                ("table", &ddl.name),
                ("triggers", &triggers.len().to_string()),
            ],
        );
        disabled.push((name, triggers));
    }
    Ok(disabled)
}

/// Puts every trigger [`disable_user_triggers`] turned off back exactly as
/// it was enabled (`O` origin, `R` replica, `A` always, `D` disabled).
fn reenable_user_triggers(
    conn: &Connection,
    disabled: &[(TableName, Vec<TriggerState>)],
) -> Result<(), Error> {
    for (table, triggers) in disabled {
        for t in triggers {
            let how = match t.enabled.as_str() {
                "O" => "ENABLE TRIGGER",
                "R" => "ENABLE REPLICA TRIGGER",
                "A" => "ENABLE ALWAYS TRIGGER",
                _ => continue, // was disabled: stays disabled
            };
            conn.execute_script(&format!(
                "ALTER TABLE {} {how} {}",
                table.quoted(),
                quote_ident(&t.name)
            ))?;
        }
    }
    Ok(())
}

/// Streams a table's artifact into `COPY … FROM STDIN`.
fn load_table(conn: &Connection, ddl: &TableDdl) -> Result<(), Error> {
    let name = ddl.table_name();
    let mut reader = backup_store::open(&ddl.artifact)?;
    let loaded = if ddl.columns.iter().any(|c| c.generated) {
        // Generated columns cannot be written: the saved rows (every column)
        // go to a staging table first, then everything else is inserted.
        let stage = stage_table(ddl);
        conn.execute_script(&format!(
            "CREATE TEMP TABLE {stage} ON COMMIT DROP AS SELECT * FROM {} WITH NO DATA",
            name.quoted()
        ))?;
        stream_in(
            conn,
            &mut reader,
            &format!("COPY {stage} FROM STDIN"),
            &ddl.name,
        )?;
        let cols: Vec<String> = ddl
            .columns
            .iter()
            .filter(|c| !c.generated)
            .map(|c| quote_ident(&c.name))
            .collect();
        let cols = cols.join(", ");
        let n = conn.execute(
            &format!(
                "INSERT INTO {} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM {stage}",
                name.quoted()
            ),
            &[],
        )?;
        conn.execute_script(&format!("DROP TABLE {stage}"))?;
        n
    } else {
        stream_in(
            conn,
            &mut reader,
            &format!("COPY {} FROM STDIN", name.quoted()),
            &ddl.name,
        )?
    };
    log::info(
        "table restored",
        &[("table", &ddl.name), ("rows", &loaded.to_string())],
    );
    Ok(())
}

fn stream_in(
    conn: &Connection,
    reader: &mut impl Read,
    statement: &str,
    label: &str,
) -> Result<u64, Error> {
    let mut writer = conn.copy_in(statement)?;
    let mut buffer = vec![0u8; RESTORE_CHUNK];
    let mut rows = 0u64;
    loop {
        let n = reader
            .read(&mut buffer)
            .map_err(|e| Error::BackupInvalid(format!("reading the backup of `{label}`: {e}")))?;
        if n == 0 {
            break;
        }
        writer.write(&buffer[..n])?;
        rows += buffer[..n].iter().filter(|b| **b == b'\n').count() as u64;
        progress::report(rows, None, label);
    }
    writer.finish()
}

/// Moves the sequences of a recreated table past its restored rows.
fn reset_sequences(conn: &Connection, ddl: &TableDdl) -> Result<(), Error> {
    let name = ddl.table_name();
    for c in ddl
        .columns
        .iter()
        .filter(|c| c.identity.is_some() || c.sequence.is_some())
    {
        conn.query(
            &format!(
                "SELECT pg_catalog.setval(pg_catalog.pg_get_serial_sequence($1, $2), \
                 coalesce(max({col}), 0) + 1, false) FROM {table}",
                col = quote_ident(&c.name),
                table = name.quoted()
            ),
            &[name.quoted().into(), c.name.as_str().into()],
        )?;
    }
    Ok(())
}
