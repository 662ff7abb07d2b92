//! Step three of loading: the datastores a plan changes (`[targets]`), each
//! a SQLite file (with the files the host attaches to it) or a server whose
//! URL a named value holds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::read::{Source, TargetFile};
use super::{refs, PlanError, ValueSource};

/// Kinds of datastore a target can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// A SQLite database file.
    Sqlite,
    /// A PostgreSQL database.
    Postgres,
    /// A Redis database.
    Redis,
}

impl TargetKind {
    /// The name used in plan files and passed to plugins.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Sqlite => "sqlite",
            TargetKind::Postgres => "postgres",
            TargetKind::Redis => "redis",
        }
    }

    /// Whether plugins reach it through `sql` (else through `kv`).
    pub fn is_sql(self) -> bool {
        matches!(self, TargetKind::Sqlite | TargetKind::Postgres)
    }
}

/// Where a target's data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A database file, with the files attached to it.
    File(SqliteFiles),
    /// A server, reached by the connection URL held in the named plan value
    /// (never written in the plan itself, never printed).
    Connection(String),
}

/// A SQLite target's files: the database, and the files the host ATTACHes
/// to every session on it under the schema names the plan declares
/// (`attach = { sqitch = "sqitch.db" }`). Plugins can attach nothing
/// themselves; these are part of the target, for grants, scopes
/// (`sqitch.changes`), fingerprints, rehearsal copies and leases alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteFiles {
    /// The database file (absolute).
    pub path: PathBuf,
    /// Schema name → attached database file (absolute).
    pub attach: BTreeMap<String, PathBuf>,
}

impl SqliteFiles {
    /// A database file with nothing attached.
    pub fn single(path: PathBuf) -> Self {
        SqliteFiles {
            path,
            attach: BTreeMap::new(),
        }
    }

    /// For people: the database file, and `(attach: schema = file, …)`.
    pub fn describe(&self) -> String {
        if self.attach.is_empty() {
            return self.path.display().to_string();
        }
        let attached: Vec<String> = self
            .attach
            .iter()
            .map(|(schema, path)| format!("{schema} = {}", path.display()))
            .collect();
        format!("{} (attach: {})", self.path.display(), attached.join(", "))
    }

    /// Every file: the database first, then the attached ones.
    pub fn all(&self) -> impl Iterator<Item = &Path> {
        std::iter::once(self.path.as_path()).chain(self.attach.values().map(PathBuf::as_path))
    }
}

/// Schema names SQLite gives the database itself and its temporary tables.
const RESERVED_SCHEMAS: &[&str] = &["main", "temp"];

/// A datastore a plan changes.
#[derive(Debug, Clone)]
pub struct Target {
    /// Name in the plan.
    pub name: String,
    /// Its kind.
    pub kind: TargetKind,
    /// Where it lives.
    pub address: Address,
}

/// The plan's `[targets]`, by name; a server's `connection` must name one of
/// `values`.
pub(super) fn load(
    src: &Source<'_>,
    dir: &Path,
    targets: &BTreeMap<String, Spanned<TargetFile>>,
    values: &BTreeMap<String, ValueSource>,
) -> Result<BTreeMap<String, Target>, PlanError> {
    let mut loaded = BTreeMap::new();
    for (name, target) in targets {
        src.check_name(name, target.span().start, "target")?;
        let t = target.get_ref();
        let kind = match t.kind.get_ref().as_str() {
            "sqlite" => TargetKind::Sqlite,
            "postgres" => TargetKind::Postgres,
            "redis" => TargetKind::Redis,
            other => {
                return Err(src.error(
                    t.kind.span().start,
                    format!("target `{name}` has unknown kind `{other}`; supported kinds: sqlite, postgres, redis"),
                ))
            }
        };
        if let (Some(attach), false) = (&t.attach, kind == TargetKind::Sqlite) {
            return Err(src.error(
                attach.span().start,
                format!("target `{name}`: `attach` adds database files to a sqlite target; this one is {}", kind.as_str()),
            ));
        }
        let address = match (kind, &t.path, &t.connection) {
            (TargetKind::Sqlite, Some(path), None) => {
                Address::File(load_attach(src, dir, name, dir.join(path.get_ref()), t.attach.as_ref())?)
            }
            (TargetKind::Sqlite, _, _) => {
                return Err(src.error(
                    target.span().start,
                    format!("target `{name}`: a sqlite target needs `path = \"file.db\"` (and no `connection`)"),
                ))
            }
            (_, None, Some(value)) => Address::Connection(refs::connection(src, name, value, values)?),
            (kind, _, _) => {
                return Err(src.error(
                    target.span().start,
                    format!(
                        "target `{name}`: a {} target needs `connection = \"<value name>\"`, naming a [values] entry that holds its URL (so the URL and its password stay out of the plan); `path` is for sqlite",
                        kind.as_str()
                    ),
                ))
            }
        };
        loaded.insert(
            name.clone(),
            Target {
                name: name.clone(),
                kind,
                address,
            },
        );
    }
    Ok(loaded)
}

/// A sqlite target's `attach = { schema = "file.db" }`: schema names SQLite
/// accepts unquoted (not `main`/`temp`), files distinct from the database and
/// from each other.
fn load_attach(
    src: &Source<'_>,
    dir: &Path,
    target: &str,
    path: PathBuf,
    attach: Option<&Spanned<BTreeMap<String, Spanned<String>>>>,
) -> Result<SqliteFiles, PlanError> {
    let mut files = SqliteFiles::single(path);
    let Some(attach) = attach else {
        return Ok(files);
    };
    for (schema, file) in attach.get_ref() {
        let plain = schema
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && schema.len() <= 64
            && schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !plain
            || RESERVED_SCHEMAS
                .iter()
                .any(|r| r.eq_ignore_ascii_case(schema))
        {
            return Err(src.error(
                file.span().start,
                format!("target `{target}`: attach schema `{schema}` must be 1–64 letters, digits and `_`, not starting with a digit, and not `main` or `temp`"),
            ));
        }
        let file_path = dir.join(file.get_ref());
        if files.all().any(|p| p == file_path) {
            return Err(src.error(
                file.span().start,
                format!(
                    "target `{target}`: `{}` is attached twice or is the database itself",
                    file.get_ref()
                ),
            ));
        }
        files.attach.insert(schema.clone(), file_path);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::{Address, TargetKind};
    use crate::plan::test_plan::*;

    #[test]
    fn a_target_name_must_be_plain() {
        assert_eq!(
            refused(&STEP.replace("[targets.db]", "[targets.\"d b\"]")),
            "1:1: target `d b` must be 1–64 characters of letters, digits, `-` and `_`"
        );
    }

    #[test]
    fn a_target_kind_must_be_known() {
        assert_eq!(
            refused(&STEP.replace("\"sqlite\"", "\"mysql\"")),
            "2:8: target `db` has unknown kind `mysql`; supported kinds: sqlite, postgres, redis"
        );
    }

    #[test]
    fn only_sqlite_targets_attach_files() {
        assert_eq!(
            refused(&KV_STEP.replace(
                "connection = \"url\"",
                "connection = \"url\"\nattach = { a = \"a.db\" }"
            )),
            "7:10: target `kv`: `attach` adds database files to a sqlite target; this one is redis"
        );
    }

    #[test]
    fn a_sqlite_target_needs_a_path() {
        assert_eq!(
            refused(&STEP.replace("path = \"db.sqlite\"", "")),
            "1:1: target `db`: a sqlite target needs `path = \"file.db\"` (and no `connection`)"
        );
    }

    #[test]
    fn a_sqlite_target_has_no_connection() {
        assert_eq!(
            refused(&STEP.replace(
                "path = \"db.sqlite\"",
                "path = \"db.sqlite\"\nconnection = \"x\""
            )),
            "1:1: target `db`: a sqlite target needs `path = \"file.db\"` (and no `connection`)"
        );
    }

    #[test]
    fn a_server_target_needs_a_connection() {
        assert_eq!(
            refused(&KV_STEP.replace("connection = \"url\"", "path = \"x\"")),
            "4:1: target `kv`: a redis target needs `connection = \"<value name>\"`, naming a [values] entry that holds its URL (so the URL and its password stay out of the plan); `path` is for sqlite"
        );
    }

    #[test]
    fn an_attach_schema_cannot_be_main_or_temp() {
        assert_eq!(
            refused(&STEP.replace("path = \"db.sqlite\"", "path = \"db.sqlite\"\nattach = { temp = \"x.db\" }")),
            "4:19: target `db`: attach schema `temp` must be 1–64 letters, digits and `_`, not starting with a digit, and not `main` or `temp`"
        );
    }

    #[test]
    fn an_attach_schema_cannot_start_with_a_digit() {
        assert_eq!(
            refused(&STEP.replace("path = \"db.sqlite\"", "path = \"db.sqlite\"\nattach = { \"1x\" = \"x.db\" }")),
            "4:19: target `db`: attach schema `1x` must be 1–64 letters, digits and `_`, not starting with a digit, and not `main` or `temp`"
        );
    }

    #[test]
    fn a_file_is_attached_once() {
        assert_eq!(
            refused(&STEP.replace(
                "path = \"db.sqlite\"",
                "path = \"db.sqlite\"\nattach = { a = \"x.db\", b = \"x.db\" }"
            )),
            "4:28: target `db`: `x.db` is attached twice or is the database itself"
        );
    }

    #[test]
    fn the_database_cannot_attach_itself() {
        assert_eq!(
            refused(&STEP.replace(
                "path = \"db.sqlite\"",
                "path = \"db.sqlite\"\nattach = { a = \"db.sqlite\" }"
            )),
            "4:16: target `db`: `db.sqlite` is attached twice or is the database itself"
        );
    }

    #[test]
    fn attached_files_resolve_beside_the_plan() {
        let plan = loads(&STEP.replace(
            "path = \"db.sqlite\"",
            "path = \"db.sqlite\"\nattach = { sqitch = \"sqitch.db\" }",
        ));
        let t = &plan.targets["db"];
        assert_eq!(t.kind, TargetKind::Sqlite);
        let Address::File(files) = &t.address else {
            panic!()
        };
        assert_eq!(files.path, plan.dir.join("db.sqlite"));
        assert_eq!(files.attach["sqitch"], plan.dir.join("sqitch.db"));
    }
}
