//! sqitch projects on SQLite targets (sqitch's `sqlite` engine). The
//! registry is sqitch's own file, attached by the host under the registry's
//! name (`attach = { sqitch = "sqitch.db" }` on the target); scripts run
//! with sqlite3-CLI semantics ([`crate::sqlite_script`]).
//!
//! - backup: the SQLite plugin's backup (reused as a library) of `tables`
//!   (default: every table of the database), plus the registry's state
//!   tables (`sqitch.changes`, `sqitch.tags`, `sqitch.dependencies`) when
//!   the registry exists, so the host's proof covers them;
//! - migrate: dependencies checked in the registry, then the deploy script
//!   and the registry rows in one transaction (spanning both files);
//! - validate: the verify script, read-only, as `verified`;
//! - rollback: nothing when the change was already deployed before the
//!   step (its migrate applied nothing); otherwise the revert script and
//!   the registry rows removed (a `revert` event), in one transaction (the
//!   registry's tables dropped instead when the step created it); then the
//!   SQLite plugin's verified restore of the database's tables, and the
//!   registry rows put back from the backup if they still differ from it.

use std::io::Read;

use serde::{Deserialize, Serialize};
use sluice_plugin_sqlite::SqlitePlugin;
use sluice_sdk::checksum::TableChecksum;
use sluice_sdk::sql::{quote_ident, Connection};
use sluice_sdk::{
    backup_store, dump, log, BackupManifest, ChangeKind, Error, ErrorExt, Metric, PhaseReached,
    StepContext, TableState,
};

use crate::project::Project;
use crate::registry::Committer;
use crate::sqlite_registry as registry;
use crate::sqlite_script::{self as script, Statements};
use crate::{sha1, Params};

/// Whether the step's target is SQLite.
pub fn applies(ctx: &StepContext) -> bool {
    ctx.target_kind == "sqlite"
}

/// What the backup records for rollback.
#[derive(Debug, Serialize, Deserialize)]
struct SqliteMetadata {
    format: u32,
    /// The SQLite plugin's own metadata.
    sqlite: String,
    /// The database tables the SQLite plugin saved (empty: all).
    tables: Vec<String>,
    /// Whether the registry existed before the step.
    registry_existed: bool,
    /// The change's sqitch id.
    change_id: String,
    /// Whether the registry already listed the change at backup time (see
    /// [`crate::BackupMetadata::already_deployed`]).
    #[serde(default)]
    already_deployed: bool,
}

/// The context the SQLite plugin's logic runs with.
fn sqlite_context(ctx: &StepContext, tables: &[String]) -> StepContext {
    let params = serde_json::json!({ "tables": tables });
    StepContext::new(
        &ctx.step_id,
        &ctx.target,
        &ctx.target_kind,
        &params.to_string(),
    )
}

fn registry_artifact(table: &str) -> String {
    format!("sqitch-registry-{table}.rows")
}

/// The project, refused when sqitch.conf names another engine than `sqlite`.
fn load(params: &Params) -> Result<Project, Error> {
    let project = Project::load(params)?;
    match project.conf.engine.as_deref() {
        None | Some("sqlite") => Ok(project),
        Some(other) => Err(Error::PreconditionFailed(format!(
            "{}/sqitch.conf: core.engine = {other}, but the step's target is SQLite (sqitch's `sqlite` engine)",
            project.root
        ))),
    }
}

/// A script read as text, split as sqlite3 would run it.
fn script(project: &Project, path: &str) -> Result<(String, Statements), Error> {
    let file = format!("{}/{path}", project.root);
    let bytes = project.read_bytes(path)?;
    let text = String::from_utf8(bytes)
        .map_err(|e| Error::PreconditionFailed(format!("{file}: not UTF-8: {e}")))?;
    let parsed = script::statements(&text, &file)?;
    Ok((file, parsed))
}

/// Runs statements one by one; an error names the script and statement.
fn run(conn: &Connection, file: &str, statements: &[String]) -> Result<(), Error> {
    crate::script::run(conn, file, statements)
}

/// Backup: the SQLite plugin's snapshot plus the registry's state tables.
pub fn backup(ctx: &StepContext) -> Result<BackupManifest, Error> {
    let params = Params::of(ctx)?;
    let project = load(&params)?;
    let change = project.change(&params.change)?;
    let conn = Connection::open(&ctx.target)?;
    let reg = project.conf.registry.clone();
    let registry_existed = registry::exists(&conn, &reg)?;
    let mut manifest =
        <SqlitePlugin as sluice_sdk::Backup>::backup(&sqlite_context(ctx, &params.tables))?;
    let mut already_deployed = false;
    if registry_existed {
        // One read transaction for the registry's tables and whether they
        // list the change already (then migrate applies nothing).
        let (deployed, states) = conn.transaction(|conn| {
            let deployed = registry::is_deployed(conn, &reg, &change.id)?;
            let states = registry::STATE_TABLES
                .iter()
                .map(|t| dump_registry_table(conn, &reg, t))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((deployed, states))
        })?;
        already_deployed = deployed;
        for (table, state) in registry::STATE_TABLES.iter().zip(states) {
            manifest.artifacts.push(registry_artifact(table));
            manifest.tables.push(state);
        }
    }
    manifest.change = ChangeKind::Transactional;
    let metadata = SqliteMetadata {
        format: 1,
        sqlite: std::mem::take(&mut manifest.metadata),
        tables: params.tables.clone(),
        registry_existed,
        change_id: change.id.clone(),
        already_deployed,
    };
    manifest.metadata = serde_json::to_string(&metadata)
        .map_err(|e| Error::Internal(format!("encoding the backup metadata: {e}")))?;
    Ok(manifest)
}

fn select_all(reg: &str, table: &str) -> String {
    format!("SELECT * FROM {}.{}", quote_ident(reg), quote_ident(table))
}

fn dump_registry_table(conn: &Connection, reg: &str, table: &str) -> Result<TableState, Error> {
    let mut writer = backup_store::create(&registry_artifact(table))?;
    let mut cursor = conn.cursor(&select_all(reg, table), &[])?;
    let mut checksum = TableChecksum::new();
    while let Some(batch) = cursor.next_batch()? {
        dump::write_batch(&mut writer, &batch)?;
        dump::add_batch(&mut checksum, &batch, 0)?;
    }
    writer.finish()?;
    Ok(TableState {
        name: format!("{reg}.{table}"),
        rows: checksum.rows(),
        checksum: checksum.hex(),
    })
}

fn registry_table_state(conn: &Connection, reg: &str, table: &str) -> Result<TableState, Error> {
    let mut cursor = conn.cursor(&select_all(reg, table), &[])?;
    let mut checksum = TableChecksum::new();
    while let Some(batch) = cursor.next_batch()? {
        dump::add_batch(&mut checksum, &batch, 0)?;
    }
    Ok(TableState {
        name: format!("{reg}.{table}"),
        rows: checksum.rows(),
        checksum: checksum.hex(),
    })
}

/// Migrate: sqitch's deploy of one change.
pub fn migrate(ctx: &StepContext) -> Result<(), Error> {
    let params = Params::of(ctx)?;
    let project = load(&params)?;
    let change = project.change(&params.change)?;
    let conn = Connection::open(&ctx.target)?;
    let reg = project.conf.registry.clone();
    if registry::is_deployed(&conn, &reg, &change.id)? {
        log::info(
            "change already deployed (sqitch registry): nothing to do",
            &[("change", &change.name), ("change_id", &change.id)],
        );
        return Ok(());
    }
    let required =
        crate::migrate::check_dependencies::<registry::SqliteRegistry>(&conn, &project, change)?;
    let deploy = project.script_path(change, "deploy");
    let script_hash = sha1::hex(&project.read_bytes(&deploy)?);
    let (file, parsed) = script(&project, &deploy)?;
    if parsed.rolls_back {
        return Err(Error::Unsupported(format!(
            "{file}: the deploy script ends its transaction with ROLLBACK, so it deploys nothing"
        )));
    }
    let who = Committer {
        name: params.committer_name.clone(),
        email: params.committer_email.clone(),
    };
    let create = if registry::exists(&conn, &reg)? {
        String::new()
    } else {
        registry::create_sql(&reg, &project.plan, &who)
    };
    let rows = registry::deploy_sql(&reg, &project.plan, change, &script_hash, &required, &who);
    // sqlite3 -bail stops at the first error and the script's open
    // transaction is rolled back: one transaction gives the same, with the
    // registry rows inside it.
    conn.transaction(|conn| {
        run(conn, &file, &parsed.statements)?;
        if !create.is_empty() {
            conn.execute_script(&create)?;
        }
        conn.execute_script(&rows)
    })?;
    log::info(
        "change deployed with its registry rows in one transaction",
        &[("change", &change.name), ("change_id", &change.id)],
    );
    Ok(())
}

/// Validate: the verify script, read-only.
pub fn validate(ctx: &StepContext) -> Result<Vec<Metric>, Error> {
    if !ctx.wants_metric("verified") {
        return Ok(Vec::new());
    }
    let params = Params::of(ctx)?;
    let project = load(&params)?;
    let change = project.change(&params.change)?;
    let verify = project.script_path(change, "verify");
    if !project.exists(&verify) {
        return Ok(vec![Metric {
            name: "verified".into(),
            value: 1.0,
            detail: format!(
                "{}/{verify}: no verify script; nothing to check",
                project.root
            ),
        }]);
    }
    let (file, parsed) = script(&project, &verify)?;
    let conn = Connection::open(&ctx.target)?;
    let (value, detail) = match run(&conn, &file, &parsed.statements) {
        Ok(()) => (1.0, format!("{file} ran cleanly")),
        Err(e) => (0.0, format!("{file} failed: {}", e.describe())),
    };
    Ok(vec![Metric {
        name: "verified".into(),
        value,
        detail,
    }])
}

/// Rollback: sqitch's revert, then the SQLite plugin's verified restore and
/// the registry rows checked (and put back) against the backup.
pub fn rollback(
    ctx: &StepContext,
    manifest: &BackupManifest,
    reached: PhaseReached,
) -> Result<Vec<TableState>, Error> {
    let params = Params::of(ctx)?;
    let metadata: SqliteMetadata = serde_json::from_str(&manifest.metadata).map_err(|e| {
        Error::BackupInvalid(format!("the manifest's metadata is not this plugin's: {e}"))
    })?;
    let project = load(&params)?;
    let change = project.change(&params.change)?;
    if change.id != metadata.change_id {
        return Err(Error::BackupInvalid(format!(
            "the backup was taken for change id {}, the plan now gives `{}` id {}: the sqitch plan changed since",
            metadata.change_id, change.name, change.id
        )));
    }
    if metadata.already_deployed {
        log::info(
            crate::NOTHING_TO_UNDO,
            &[
                ("change", &change.name),
                ("change_id", &change.id),
                ("reached", &format!("{reached:?}")),
            ],
        );
        return Ok(Vec::new());
    }
    let conn = Connection::open(&ctx.target)?;
    let reg = project.conf.registry.clone();
    if registry::is_deployed(&conn, &reg, &change.id)? {
        let revert = project.script_path(change, "revert");
        let (file, parsed) = script(&project, &revert)?;
        let who = Committer {
            name: params.committer_name.clone(),
            email: params.committer_email.clone(),
        };
        let registry_sql = if metadata.registry_existed {
            registry::revert_sql(&reg, &project.plan, change, &who)
        } else {
            registry::drop_sql(&reg)
        };
        log::info(
            "rollback: running the revert script and removing the registry rows",
            &[("script", &file), ("reached", &format!("{reached:?}"))],
        );
        conn.transaction(|conn| {
            run(conn, &file, &parsed.statements)?;
            conn.execute_script(&registry_sql)
        })?;
    } else {
        log::info(
            "rollback: the change is not in sqitch's registry (its deploy did not commit): no revert",
            &[("reached", &format!("{reached:?}"))],
        );
    }
    let inner = BackupManifest {
        metadata: metadata.sqlite.clone(),
        ..manifest.clone()
    };
    let mut states = <SqlitePlugin as sluice_sdk::Rollback>::rollback(
        &sqlite_context(ctx, &metadata.tables),
        &inner,
        reached,
    )?;
    if metadata.registry_existed {
        states.extend(restore_registry(&conn, &reg, manifest)?);
    }
    Ok(states)
}

fn same(a: &TableState, b: &TableState) -> bool {
    a.name == b.name && a.rows == b.rows && a.checksum == b.checksum
}

/// The registry's state tables as the backup saw them: checked, and
/// reloaded from the backup in one transaction when they differ.
fn restore_registry(
    conn: &Connection,
    reg: &str,
    manifest: &BackupManifest,
) -> Result<Vec<TableState>, Error> {
    let expected = |table: &str| {
        let name = format!("{reg}.{table}");
        manifest
            .tables
            .iter()
            .find(|t| t.name == name)
            .cloned()
            .ok_or_else(|| Error::BackupInvalid(format!("manifest has no state for `{name}`")))
    };
    let mut differs = false;
    for table in registry::STATE_TABLES {
        let now = registry_table_state(conn, reg, table)?;
        differs |= !same(&now, &expected(table)?);
    }
    if !differs {
        return registry::STATE_TABLES.iter().map(|t| expected(t)).collect();
    }
    log::warn(
        "rollback: sqitch's registry differs from the backup after the revert: reloading its rows",
        &[],
    );
    conn.execute("PRAGMA defer_foreign_keys = ON", &[])?;
    conn.transaction(|conn| {
        // Dependants first when deleting, referenced first when loading.
        for table in ["dependencies", "tags", "changes"] {
            conn.execute(
                &format!("DELETE FROM {}.{}", quote_ident(reg), quote_ident(table)),
                &[],
            )?;
        }
        let mut states = Vec::new();
        for table in ["changes", "tags", "dependencies"] {
            let mut reader = backup_store::open(&registry_artifact(table))?;
            let mut bytes = Vec::new();
            reader
                .read_to_end(&mut bytes)
                .map_err(|e| Error::BackupInvalid(format!("{}: {e}", registry_artifact(table))))?;
            let mut input = bytes.as_slice();
            while let Some(batch) = dump::read_batch(&mut input)? {
                let width = batch.width as usize;
                let marks: Vec<String> = (1..=width).map(|i| format!("?{i}")).collect();
                conn.execute_batch(
                    &format!(
                        "INSERT INTO {}.{} VALUES ({})",
                        quote_ident(reg),
                        quote_ident(table),
                        marks.join(", ")
                    ),
                    &batch,
                )?;
            }
            let state = registry_table_state(conn, reg, table)?;
            let want = expected(table)?;
            if !same(&state, &want) {
                return Err(Error::BackupInvalid(format!(
                    "restored `{}` has {} rows (checksum {}), backup had {} rows (checksum {})",
                    state.name, state.rows, state.checksum, want.rows, want.checksum
                )));
            }
            states.push(state);
        }
        Ok(states)
    })
}
