//! golang-migrate projects: a directory of `N_name.up.sql` /
//! `N_name.down.sql` files (the down file optional) run on PostgreSQL with
//! golang-migrate's own record, `schema_migrations (version bigint primary
//! key, dirty boolean)`: one row, the current version, `dirty` while a
//! migration runs. One sluice step per migration (`params = { format =
//! "golang-migrate", migrations = "<grant>", version = N }`); the script
//! runner ([`crate::script`]) and the PostgreSQL plugin's backup and
//! verified restore are the ones sqitch changes use.
//!
//! - migrate: refuses a dirty record naming its version (as golang-migrate
//!   does), checks the record is at the migration before this one, marks
//!   `(N, dirty)` and commits it, then runs the up script and clears the
//!   flag in one transaction when the script allows: a failing script
//!   leaves `(N, dirty)`, exactly what golang-migrate leaves;
//! - validate: metrics `version` (-1 when nothing is applied, golang-
//!   migrate's nil version) and `dirty` (0/1), read-only;
//! - rollback: nothing when the backup saw `N` already applied (the record
//!   clean at `N` or past it: migrate applied nothing, so there is nothing
//!   of the step's to undo). Otherwise, when `N` was applied, the down
//!   script and the record set back to what the backup saw (the table
//!   dropped if the step created it), in one transaction when the script
//!   allows; when `N` is dirty only the record is set back; then the
//!   PostgreSQL plugin's rollback confirms the backed-up tables (the record
//!   among them) or restores them.

use serde::{Deserialize, Serialize};
use sluice_plugin_postgres::PostgresPlugin;
use sluice_sdk::sql::Connection;
use sluice_sdk::{
    log, BackupManifest, ChangeKind, Error, Metric, PhaseReached, StepContext, StepPreview,
    TableState,
};

use crate::script;

/// The `format` param value selecting this module.
pub const FORMAT: &str = "golang-migrate";

/// golang-migrate's record table, as its PostgreSQL driver creates it in
/// the default search path.
pub const TABLE: &str = "public.schema_migrations";

/// Whether a step's params are a golang-migrate step: `format =
/// "golang-migrate"`, or a `migrations` grant without a `format`.
pub fn applies(ctx: &StepContext) -> bool {
    let params: serde_json::Map<String, serde_json::Value> = ctx.params().unwrap_or_default();
    match params.get("format").and_then(|f| f.as_str()) {
        Some(format) => format == FORMAT,
        None => params.contains_key("migrations"),
    }
}

/// Params of a golang-migrate step: one step runs one migration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// `"golang-migrate"` (optional when `migrations` is given).
    #[serde(default)]
    pub format: Option<String>,
    /// Name of the step's file grant holding the migration files.
    pub migrations: String,
    /// The migration this step runs (the `N` of `N_name.up.sql`).
    pub version: u64,
    /// Tables the backup saves; default the existing tables the up and
    /// down scripts can write ([`crate::touched`]), every table of
    /// `public` when that cannot be bounded. `schema_migrations` is always
    /// added when it exists.
    #[serde(default)]
    pub tables: Vec<String>,
}

impl Params {
    /// Parses and checks the step's params.
    pub fn of(ctx: &StepContext) -> Result<Params, Error> {
        let params: Params = ctx.params()?;
        let invalid = |m: String| Err(Error::InvalidParams(format!("step `{}`: {m}", ctx.step_id)));
        if let Some(format) = &params.format {
            if format != FORMAT {
                return invalid(format!(
                    "params.format: `{format}` is not a known format (`{FORMAT}`, or leave it out for a sqitch project)"
                ));
            }
        }
        if params.migrations.is_empty() || params.migrations.contains(['/', '\\']) {
            return invalid(format!(
                "params.migrations: `{}` must name the step's file grant holding the migration files (`files = [{{ name = \"…\", path = \"…\", access = \"read-only\" }}]`)",
                params.migrations
            ));
        }
        if i64::try_from(params.version).is_err() {
            return invalid(format!(
                "params.version: {} does not fit golang-migrate's bigint version",
                params.version
            ));
        }
        for (i, t) in params.tables.iter().enumerate() {
            sluice_plugin_postgres::names::TableName::parse(t, &format!("params.tables[{i}]"))?;
        }
        Ok(params)
    }
}

/// Which way a migration file goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `N_name.up.<ext>`.
    Up,
    /// `N_name.down.<ext>`.
    Down,
}

/// One migration: its version, name and files (relative to the grant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// The version `N`.
    pub version: u64,
    /// The name after `N_`.
    pub name: String,
    /// The up file.
    pub up: Option<String>,
    /// The down file.
    pub down: Option<String>,
}

/// A migration directory golang-migrate would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {message}")]
pub struct LayoutError {
    /// The offending file.
    pub file: String,
    /// What is wrong.
    pub message: String,
}

/// Parses a file name as golang-migrate does (`^([0-9]+)_(.*)\.(up|down)\.(.*)$`):
/// `None` for a file that is not a migration (golang-migrate skips those),
/// an error for a version that is not a number it can hold.
pub fn parse_file_name(file: &str) -> Result<Option<(u64, String, Direction)>, LayoutError> {
    let Some((digits, rest)) = file.split_once('_') else {
        return Ok(None);
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    // The direction is the last `.up.`/`.down.` followed by a non-empty
    // extension (the regex's greedy `(.*)` name).
    let found = [(".up.", Direction::Up), (".down.", Direction::Down)]
        .into_iter()
        .filter_map(|(marker, dir)| {
            rest.rfind(marker)
                .filter(|at| at + marker.len() < rest.len())
                .map(|at| (at, dir))
        })
        .max_by_key(|(at, _)| *at);
    let Some((at, direction)) = found else {
        return Ok(None);
    };
    let version = digits.parse::<u64>().map_err(|_| LayoutError {
        file: file.to_string(),
        message: format!("version `{digits}` is too large"),
    })?;
    Ok(Some((version, rest[..at].to_string(), direction)))
}

/// The migrations of a directory listing, in version order; two files for
/// the same version and direction are refused, as golang-migrate does.
pub fn scan<I: IntoIterator<Item = String>>(files: I) -> Result<Vec<Migration>, LayoutError> {
    let mut by_version: std::collections::BTreeMap<u64, Migration> = Default::default();
    let mut files: Vec<String> = files.into_iter().collect();
    files.sort();
    for file in files {
        let Some((version, name, direction)) = parse_file_name(&file)? else {
            continue;
        };
        let m = by_version.entry(version).or_insert_with(|| Migration {
            version,
            name: name.clone(),
            up: None,
            down: None,
        });
        let slot = match direction {
            Direction::Up => &mut m.up,
            Direction::Down => &mut m.down,
        };
        if let Some(other) = slot {
            return Err(LayoutError {
                file,
                message: format!("duplicate migration file: version {version} already has {other}"),
            });
        }
        *slot = Some(file);
    }
    Ok(by_version.into_values().collect())
}

/// The migration directory as loaded for one phase.
struct Dir {
    root: String,
    migrations: Vec<Migration>,
}

impl Dir {
    fn load(params: &Params) -> Result<Dir, Error> {
        let root = params.migrations.clone();
        let entries = std::fs::read_dir(&root).map_err(|e| {
            Error::NotFound(format!(
                "{root}: {e} (is the migration directory granted as files `{root}`?)"
            ))
        })?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::AccessDenied(format!("{root}: {e}")))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        let migrations =
            scan(names).map_err(|e| Error::PreconditionFailed(format!("{root}/{e}")))?;
        Ok(Dir { root, migrations })
    }

    /// The step's migration and the version before it (`None`: it is first).
    fn find(&self, version: u64) -> Result<(&Migration, Option<u64>), Error> {
        let at = self
            .migrations
            .iter()
            .position(|m| m.version == version)
            .ok_or_else(|| {
                Error::InvalidParams(format!(
                    "params.version: no migration {version} in {} (versions: {})",
                    self.root,
                    self.migrations
                        .iter()
                        .map(|m| m.version.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        Ok((
            &self.migrations[at],
            at.checked_sub(1).map(|p| self.migrations[p].version),
        ))
    }

    fn read(&self, file: &str) -> Result<String, Error> {
        std::fs::read_to_string(format!("{}/{file}", self.root))
            .map_err(|e| Error::NotFound(format!("{}/{file}: {e}", self.root)))
    }
}

/// golang-migrate's record: `None` when the table is missing, `Some(None)`
/// when it is empty (nothing applied).
type Record = Option<Option<(i64, bool)>>;

fn read_record(conn: &Connection) -> Result<Record, Error> {
    let exists = conn.query_i64(
        "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = 'public' AND tablename = 'schema_migrations'",
        &[],
    )? > 0;
    if !exists {
        return Ok(None);
    }
    let rows = conn.query(
        &format!("SELECT version, dirty::int4::int8 FROM {TABLE} ORDER BY version DESC LIMIT 1"),
        &[],
    )?;
    let row = rows.values()?.into_iter().next();
    Ok(Some(match row.as_deref() {
        Some([sluice_sdk::sql::Value::Integer(v), sluice_sdk::sql::Value::Integer(d)]) => {
            Some((*v, *d != 0))
        }
        Some(other) => {
            return Err(Error::PreconditionFailed(format!(
                "{TABLE}: unexpected row {other:?} (expected version bigint, dirty boolean)"
            )))
        }
        None => None,
    }))
}

/// Whether the record shows `version` applied: clean at it or past it.
/// Migrate then applies nothing, and rollback (reading the record its
/// backup saw) undoes nothing.
fn is_applied(record: Option<(i64, bool)>, version: i64) -> bool {
    matches!(record, Some((v, false)) if v >= version)
}

/// SQL setting the record as golang-migrate's `SetVersion` does.
fn set_record_sql(record: Option<(i64, bool)>) -> String {
    let mut sql = format!("TRUNCATE {TABLE};");
    if let Some((version, dirty)) = record {
        sql.push_str(&format!(
            "INSERT INTO {TABLE} (version, dirty) VALUES ({version}, {dirty});"
        ));
    }
    sql
}

const CREATE_SQL: &str = "CREATE TABLE IF NOT EXISTS public.schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)";

/// What the backup records for rollback.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Metadata {
    format: u32,
    postgres: String,
    tables: Vec<String>,
    /// The record at backup time (`None`: no table).
    before: Record,
}

fn check_target(ctx: &StepContext) -> Result<(), Error> {
    if ctx.target_kind != "postgres" {
        return Err(Error::Unsupported(format!(
            "target kind `{}`: golang-migrate projects run on PostgreSQL targets only",
            ctx.target_kind
        )));
    }
    Ok(())
}

/// The step's preview, from its params alone.
pub fn preview(ctx: &StepContext) -> Result<StepPreview, Error> {
    let params = Params::of(ctx)?;
    check_target(ctx)?;
    Ok(StepPreview {
        summary: format!(
            "runs golang-migrate migration {} of the directory granted as `{}`: its up script and the `schema_migrations` record (dirty while it runs); validate reports `version` and `dirty`; rollback runs its down script; {}",
            params.version,
            params.migrations,
            crate::touched::scope_summary(&params.tables, "up and down scripts")
        ),
        change: ChangeKind::Transactional,
        metrics: vec!["version".into(), "dirty".into()],
        tables: params.tables.clone(),
    })
}

/// Backup: the PostgreSQL plugin's backup of the tables and the record.
pub fn backup(ctx: &StepContext) -> Result<BackupManifest, Error> {
    check_target(ctx)?;
    let params = Params::of(ctx)?;
    let dir = Dir::load(&params)?;
    let (migration, _) = dir.find(params.version)?;
    let conn = Connection::open(&ctx.target)?;
    let before = read_record(&conn)?;
    let mut tables = params.tables.clone();
    if tables.is_empty() {
        let mut scripts = Vec::new();
        for file in [&migration.up, &migration.down].into_iter().flatten() {
            scripts.push((format!("{}/{file}", dir.root), dir.read(file)?));
        }
        let scripts: Vec<(&str, &str)> = scripts
            .iter()
            .map(|(f, s)| (f.as_str(), s.as_str()))
            .collect();
        tables = crate::touched::backup_tables(&conn, &scripts)?;
    }
    if before.is_some()
        && !tables
            .iter()
            .any(|t| t == "schema_migrations" || t == TABLE)
    {
        tables.push("schema_migrations".into());
    }
    let mut manifest =
        <PostgresPlugin as sluice_sdk::Backup>::backup(&crate::postgres_context(ctx, &tables))?;
    manifest.change = match &migration.up {
        Some(up) if !script::statements(&dir.read(up)?).transactional => {
            ChangeKind::NonTransactional
        }
        _ => ChangeKind::Transactional,
    };
    let metadata = Metadata {
        format: 1,
        postgres: std::mem::take(&mut manifest.metadata),
        tables,
        before,
    };
    manifest.metadata = serde_json::to_string(&metadata)
        .map_err(|e| Error::Internal(format!("encoding the backup metadata: {e}")))?;
    Ok(manifest)
}

fn dirty_error(version: i64) -> Error {
    Error::PreconditionFailed(format!(
        "{TABLE}: version {version} is dirty (a migration failed part-way); golang-migrate refuses to run until it is fixed, and so does sluice: roll back the sluice step that ran version {version} (`sluice rollback`), or repair the schema and clear the flag (`migrate force`)"
    ))
}

/// Migrate: the up script between golang-migrate's dirty mark and its clear.
pub fn migrate(ctx: &StepContext) -> Result<(), Error> {
    check_target(ctx)?;
    let params = Params::of(ctx)?;
    let dir = Dir::load(&params)?;
    let (migration, previous) = dir.find(params.version)?;
    let version = params.version as i64;
    let conn = Connection::open(&ctx.target)?;
    let current = read_record(&conn)?.flatten();
    let Some(up) = &migration.up else {
        return Err(Error::PreconditionFailed(format!(
            "{}: migration {version} has no up file (`{version}_{}.up.sql`)",
            dir.root, migration.name
        )));
    };
    let file = format!("{}/{up}", dir.root);
    let parsed = script::statements(&dir.read(up)?);
    if is_applied(current, version) {
        log::info(
            "migration already applied (schema_migrations): nothing to do",
            &[
                ("version", &version.to_string()),
                ("current", &current.map_or(-1, |(v, _)| v).to_string()),
            ],
        );
        return Ok(());
    }
    match current {
        // This step's own dirty mark, left by a crash before its one
        // transaction committed: nothing of the script is in, run it again.
        Some((v, true)) if v == version && parsed.transactional => {
            log::warn(
                "this migration's dirty mark is left from an interrupted run whose transaction never committed: running it again",
                &[("version", &version.to_string())],
            );
        }
        Some((v, true)) => return Err(dirty_error(v)),
        _ => {}
    }
    let expected = previous.map(|p| p as i64);
    let now = current.map(|(v, _)| v);
    if now != expected && !matches!(current, Some((v, true)) if v == version) {
        let show = |v: Option<i64>| v.map_or("none".to_string(), |v| v.to_string());
        return Err(Error::PreconditionFailed(format!(
            "migration {version} follows version {} in {}, but {TABLE} says the current version is {}: run the migrations before it first",
            show(expected),
            dir.root,
            show(now)
        )));
    }
    if parsed.rolls_back {
        return Err(Error::Unsupported(format!(
            "{file}: the up script ends its transaction with ROLLBACK, so it changes nothing"
        )));
    }
    // golang-migrate commits the dirty mark before the script runs, so a
    // failure (or a crash) leaves it for the next run to see.
    conn.transaction(|conn| {
        conn.execute_script(CREATE_SQL)?;
        conn.execute_script(&set_record_sql(Some((version, true))))
    })?;
    let clean = set_record_sql(Some((version, false)));
    if parsed.transactional {
        conn.transaction(|conn| {
            script::run(conn, &file, &parsed.statements)?;
            conn.execute_script(&clean)
        })?;
    } else {
        log::warn(
            "up script has statements PostgreSQL refuses in a transaction: running them one by one, then clearing the dirty flag",
            &[("script", &file)],
        );
        script::run(&conn, &file, &parsed.statements)?;
        conn.execute_script(&clean)?;
    }
    log::info(
        "migration applied",
        &[("version", &version.to_string()), ("script", &file)],
    );
    Ok(())
}

/// Validate: the record as metrics `version` and `dirty`.
pub fn validate(ctx: &StepContext) -> Result<Vec<Metric>, Error> {
    check_target(ctx)?;
    Params::of(ctx)?;
    let conn = Connection::open(&ctx.target)?;
    let record = read_record(&conn)?;
    let (version, dirty, detail) = match record {
        None => (
            -1,
            false,
            format!("{TABLE} does not exist: nothing applied"),
        ),
        Some(None) => (-1, false, format!("{TABLE} is empty: nothing applied")),
        Some(Some((v, d))) => (v, d, format!("{TABLE}: version {v}, dirty {d}")),
    };
    let mut metrics = Vec::new();
    if ctx.wants_metric("version") {
        metrics.push(Metric {
            name: "version".into(),
            value: version as f64,
            detail: detail.clone(),
        });
    }
    if ctx.wants_metric("dirty") {
        metrics.push(Metric {
            name: "dirty".into(),
            value: if dirty { 1.0 } else { 0.0 },
            detail,
        });
    }
    Ok(metrics)
}

/// Rollback: the down script and the record set back, then the PostgreSQL
/// plugin's check-or-restore. Safe twice: once the record is back, nothing
/// is run again.
pub fn rollback(
    ctx: &StepContext,
    manifest: &BackupManifest,
    reached: PhaseReached,
) -> Result<Vec<TableState>, Error> {
    check_target(ctx)?;
    let params = Params::of(ctx)?;
    let metadata: Metadata = serde_json::from_str(&manifest.metadata).map_err(|e| {
        Error::BackupInvalid(format!(
            "the manifest's metadata is not a golang-migrate step's: {e}"
        ))
    })?;
    let version = params.version as i64;
    let reached_text = format!("{reached:?}");
    if is_applied(metadata.before.flatten(), version) {
        // Migrate found the migration applied and did nothing: running the
        // down script would undo what golang-migrate (or an earlier run)
        // applied, and a restore could only discard writes this step did
        // not make.
        log::info(
            "rollback: the migration was already applied before this step, so its migrate applied nothing: nothing to undo",
            &[
                ("version", &version.to_string()),
                ("reached", &reached_text),
            ],
        );
        return Ok(Vec::new());
    }
    let dir = Dir::load(&params)?;
    let (migration, _) = dir.find(params.version)?;
    let conn = Connection::open(&ctx.target)?;
    let restore_record = match metadata.before {
        None => format!("DROP TABLE IF EXISTS {TABLE}"),
        Some(record) => set_record_sql(record),
    };
    match read_record(&conn)?.flatten() {
        Some((v, false)) if v == version => match &migration.down {
            Some(down) => {
                let file = format!("{}/{down}", dir.root);
                let parsed = script::statements(&dir.read(down)?);
                log::info(
                    "rollback: running the down script and setting schema_migrations back",
                    &[("script", &file), ("reached", &reached_text)],
                );
                if parsed.transactional {
                    conn.transaction(|conn| {
                        script::run(conn, &file, &parsed.statements)?;
                        conn.execute_script(&restore_record)
                    })?;
                } else {
                    script::run(&conn, &file, &parsed.statements)?;
                    conn.transaction(|conn| conn.execute_script(&restore_record))?;
                }
            }
            None => {
                log::warn(
                    "rollback: migration has no down file: setting schema_migrations back and restoring from the backup",
                    &[("version", &version.to_string())],
                );
                conn.transaction(|conn| conn.execute_script(&restore_record))?;
            }
        },
        Some((v, true)) if v == version => {
            log::info(
                "rollback: the migration failed part-way (dirty): setting schema_migrations back; the backup restores whatever the script left",
                &[("version", &version.to_string()), ("reached", &reached_text)],
            );
            conn.transaction(|conn| conn.execute_script(&restore_record))?;
        }
        _ => log::info(
            "rollback: schema_migrations does not show this migration: nothing to undo",
            &[
                ("version", &version.to_string()),
                ("reached", &reached_text),
            ],
        ),
    }
    let inner = BackupManifest {
        metadata: metadata.postgres.clone(),
        ..manifest.clone()
    };
    <PostgresPlugin as sluice_sdk::Rollback>::rollback(
        &crate::postgres_context(ctx, &metadata.tables),
        &inner,
        reached,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_parse_as_golang_migrate_does() {
        assert_eq!(
            parse_file_name("1_init.up.sql").unwrap(),
            Some((1, "init".into(), Direction::Up))
        );
        assert_eq!(
            parse_file_name("000002_add_users.down.sql").unwrap(),
            Some((2, "add_users".into(), Direction::Down))
        );
        // The name may itself hold dots and underscores.
        assert_eq!(
            parse_file_name("20240101120000_a.b_c.up.sql").unwrap(),
            Some((20240101120000, "a.b_c".into(), Direction::Up))
        );
        assert_eq!(
            parse_file_name("3_.up.sql").unwrap(),
            Some((3, String::new(), Direction::Up))
        );
        for skipped in [
            "README.md",
            "init.up.sql",
            "x1_init.up.sql",
            "1_init.sql",
            "1_init.up.",
            "1-init.up.sql",
        ] {
            assert_eq!(parse_file_name(skipped).unwrap(), None, "{skipped}");
        }
        let err = parse_file_name("99999999999999999999999_x.up.sql").unwrap_err();
        assert!(err.message.contains("too large"), "{err}");
    }

    #[test]
    fn a_directory_scans_in_version_order_with_optional_downs() {
        let files = [
            "10_ten.up.sql",
            "2_two.up.sql",
            "2_two.down.sql",
            "1_one.up.sql",
            "1_one.down.sql",
            "notes.txt",
        ]
        .map(String::from);
        let m = scan(files).unwrap();
        assert_eq!(m.iter().map(|m| m.version).collect::<Vec<_>>(), [1, 2, 10]);
        assert_eq!(m[1].down.as_deref(), Some("2_two.down.sql"));
        assert_eq!(m[2].up.as_deref(), Some("10_ten.up.sql"));
        assert_eq!(m[2].down, None);
    }

    #[test]
    fn a_duplicate_version_is_refused_naming_both_files() {
        let err = scan(["1_a.up.sql", "01_b.up.sql"].map(String::from)).unwrap_err();
        assert!(
            err.to_string().contains("duplicate migration file"),
            "{err}"
        );
        assert!(
            err.to_string().contains("01_b.up.sql") && err.to_string().contains("1_a.up.sql"),
            "{err}"
        );
    }

    #[test]
    fn params_select_the_format() {
        let ctx = |p: &str| StepContext::new("s", "t", "postgres", p);
        assert!(applies(&ctx(r#"{"migrations":"m","version":1}"#)));
        assert!(applies(&ctx(
            r#"{"format":"golang-migrate","migrations":"m","version":1}"#
        )));
        assert!(!applies(&ctx(r#"{"project":"flipr","change":"users"}"#)));
        let err = Params::of(&ctx(r#"{"migrations":"a/b","version":1}"#)).unwrap_err();
        assert!(format!("{err:?}").contains("params.migrations"), "{err:?}");
    }

    #[test]
    fn applied_means_clean_at_or_past_the_version() {
        assert!(is_applied(Some((3, false)), 3));
        assert!(is_applied(Some((4, false)), 3));
        assert!(!is_applied(Some((2, false)), 3));
        // Dirty: part-way, not applied (rollback keeps today's path).
        assert!(!is_applied(Some((3, true)), 3));
        assert!(!is_applied(Some((4, true)), 3));
        assert!(!is_applied(None, 3));
    }

    #[test]
    fn the_record_is_set_as_golang_migrate_sets_it() {
        assert_eq!(
            set_record_sql(Some((3, true))),
            "TRUNCATE public.schema_migrations;INSERT INTO public.schema_migrations (version, dirty) VALUES (3, true);"
        );
        assert_eq!(set_record_sql(None), "TRUNCATE public.schema_migrations;");
    }
}
