//! Copies of a plan's targets for a rehearsal, and the host's measurement of
//! the real targets before and after it.
//!
//! - SQLite: `VACUUM INTO` from a read-only connection: one read transaction,
//!   so the copy is a consistent snapshot even of a live WAL database (a raw
//!   `cp` can catch the main file and its WAL at different moments).
//! - PostgreSQL: a scratch database on the same server,
//!   `CREATE DATABASE … TEMPLATE <db>` (a file-level copy, fastest). PostgreSQL
//!   refuses a template with other sessions on it (`55006`); then the copy is
//!   `pg_dump | psql` (one repeatable-read snapshot of the source, run with
//!   the credentials in the environment, never on a command line) when both
//!   tools are installed, else the error says what the operator can do.
//! - Redis: an empty database number on the same instance (the highest one
//!   `INFO keyspace` does not list), filled with `DUMP`/`RESTORE … ABSTTL` of
//!   the keys under the plan's prefixes, so absolute expiries are kept.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::datastores::redis::RedisSession;
use crate::datastores::{self, DatastoreError, Endpoint, Fingerprint};
use crate::plan::{Plan, SqliteFiles, TargetKind};
use crate::secret::Secret;

use super::RehearsalError;

/// Keys dumped and restored per pipeline while copying a Redis database.
const REDIS_COPY_BATCH: usize = 1000;

/// What the plan's steps touch on one target: its tables (or key prefixes),
/// `None` when some step may touch all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope(pub Option<BTreeSet<String>>);

/// The scope of every target some step uses, by target name.
pub fn scopes(plan: &Plan) -> BTreeMap<String, Scope> {
    let mut out: BTreeMap<String, Scope> = BTreeMap::new();
    for step in &plan.steps {
        let named = if plan.targets[&step.target].kind.is_sql() {
            &step.tables
        } else {
            &step.key_prefixes
        };
        let entry = out
            .entry(step.target.clone())
            .or_insert_with(|| Scope(Some(BTreeSet::new())));
        match (&mut entry.0, named) {
            (Some(all), Some(named)) => all.extend(named.iter().cloned()),
            (scope, None) => *scope = None,
            (None, Some(_)) => {}
        }
    }
    out
}

/// The host's view of one real target: its fingerprint over the plan's
/// scope and, for a SQLite file, the sha256 of the file's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetState {
    /// Schema digest and each table's (or prefix's) rows and checksum.
    pub fingerprint: Fingerprint,
    /// sha256 of the database file (SQLite only).
    pub file_sha256: Option<String>,
}

/// Measures a target: everything its steps may touch.
pub async fn measure(
    kind: TargetKind,
    endpoint: &Endpoint,
    scope: &Scope,
) -> Result<TargetState, DatastoreError> {
    match (kind, endpoint) {
        (TargetKind::Sqlite, Endpoint::File(files)) => {
            let files = files.clone();
            let tables: Option<Vec<String>> = scope.0.as_ref().map(|s| s.iter().cloned().collect());
            tokio::task::spawn_blocking(move || {
                let fingerprint = datastores::sqlite::fingerprint(&files, tables.as_deref())?;
                Ok(TargetState {
                    fingerprint,
                    file_sha256: Some(files_sha256(&files)?),
                })
            })
            .await
            .unwrap_or_else(|e| Err(DatastoreError::host("SLUICE_TASK", e.to_string())))
        }
        (TargetKind::Postgres, Endpoint::Url(url)) => {
            let tables = match &scope.0 {
                Some(tables) => tables.iter().cloned().collect(),
                None => postgres_tables(url).await?,
            };
            Ok(TargetState {
                fingerprint: datastores::fingerprint(kind, endpoint, tables).await?,
                file_sha256: None,
            })
        }
        (TargetKind::Redis, Endpoint::Url(_)) => {
            // The empty prefix is every key.
            let prefixes = match &scope.0 {
                Some(prefixes) => prefixes.iter().cloned().collect(),
                None => vec![String::new()],
            };
            Ok(TargetState {
                fingerprint: datastores::fingerprint(kind, endpoint, prefixes).await?,
                file_sha256: None,
            })
        }
        (kind, _) => Err(DatastoreError::host(
            "SLUICE_UNSUPPORTED",
            format!("{} targets cannot be rehearsed", kind.as_str()),
        )),
    }
}

/// The sha256 of the database file; with attached files, the sha256 over
/// the database file's digest and each attached file's `schema=digest`
/// (`schema=absent` for one not created yet), so any byte of any of them counts.
fn files_sha256(files: &SqliteFiles) -> Result<String, DatastoreError> {
    let digest = |path: &Path| -> Result<Option<String>, DatastoreError> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(Some(hex::encode(Sha256::digest(&bytes)))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(DatastoreError::host(
                "SLUICE_IO",
                format!("{}: {e}", path.display()),
            )),
        }
    };
    let main = digest(&files.path)?.ok_or_else(|| {
        DatastoreError::host(
            "SLUICE_IO",
            format!("{} does not exist", files.path.display()),
        )
    })?;
    if files.attach.is_empty() {
        return Ok(main);
    }
    let mut all = Sha256::new();
    all.update(main.as_bytes());
    for (schema, path) in &files.attach {
        let d = digest(path)?.unwrap_or_else(|| "absent".to_string());
        all.update(format!("\n{schema}={d}").as_bytes());
    }
    Ok(hex::encode(all.finalize()))
}

/// Every user table of a PostgreSQL database, `schema.table`.
async fn postgres_tables(url: &Secret) -> Result<Vec<String>, DatastoreError> {
    let client = pg_connect(url).await?;
    let rows = client
        .query(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables \
             WHERE table_type = 'BASE TABLE' \
               AND table_schema NOT IN ('pg_catalog', 'information_schema', 'sluice_journal') \
             ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| pg_error(url, e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// A copy of one target, made for a rehearsal.
#[derive(Debug)]
pub enum TargetCopy {
    /// SQLite files in the rehearsal directory: the database and each
    /// attached file that existed.
    Sqlite {
        /// The copies.
        files: SqliteFiles,
    },
    /// A scratch database on the target's PostgreSQL server.
    Postgres {
        /// Its name.
        database: String,
        /// Its URL (the target's credentials).
        url: Secret,
        /// A URL of the server's maintenance database, to drop it.
        admin: Secret,
        /// How it was made.
        method: &'static str,
    },
    /// A scratch database number on the target's Redis instance.
    Redis {
        /// Its number.
        db: u64,
        /// Its URL (the target's credentials).
        url: Secret,
        /// Keys copied.
        keys: u64,
    },
}

impl TargetCopy {
    /// Where the rehearsal's engine reaches it.
    pub fn endpoint(&self) -> Endpoint {
        match self {
            TargetCopy::Sqlite { files } => Endpoint::File(files.clone()),
            TargetCopy::Postgres { url, .. } | TargetCopy::Redis { url, .. } => {
                Endpoint::Url(url.clone())
            }
        }
    }

    /// What and where it is, without credentials.
    pub fn describe(&self) -> String {
        match self {
            TargetCopy::Sqlite { files } => {
                format!("SQLite file {} (VACUUM INTO)", files.describe())
            }
            TargetCopy::Postgres { url, method, .. } => {
                format!("PostgreSQL database {} ({method})", url.redacted_url())
            }
            TargetCopy::Redis { url, keys, .. } => {
                format!(
                    "Redis database {} ({keys} keys, DUMP/RESTORE ABSTTL)",
                    url.redacted_url()
                )
            }
        }
    }

    /// Removes the copy (drops the scratch database, empties the Redis
    /// database, deletes the file).
    pub async fn remove(&self) -> Result<(), DatastoreError> {
        match self {
            TargetCopy::Sqlite { files } => {
                for path in files.all() {
                    for suffix in ["", "-wal", "-shm", "-journal"] {
                        let mut p = path.to_path_buf().into_os_string();
                        p.push(suffix);
                        match std::fs::remove_file(&p) {
                            Ok(()) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                            Err(e) => {
                                return Err(DatastoreError::host(
                                    "SLUICE_IO",
                                    format!("{}: {e}", PathBuf::from(p).display()),
                                ))
                            }
                        }
                    }
                }
                Ok(())
            }
            TargetCopy::Postgres {
                database, admin, ..
            } => {
                let client = pg_connect(admin).await?;
                client
                    .batch_execute(&format!(
                        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                        quote_ident(database)
                    ))
                    .await
                    .map_err(|e| pg_error(admin, e))
            }
            TargetCopy::Redis { url, .. } => {
                let mut conn = redis_connect(url).await?;
                redis::cmd("FLUSHDB")
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(|e| redis_error(url, e))
            }
        }
    }
}

/// Copies one target. `label` names the copy (plan and target, sanitized).
pub async fn copy(
    kind: TargetKind,
    endpoint: &Endpoint,
    scope: &Scope,
    dir: &Path,
    label: &str,
) -> Result<TargetCopy, RehearsalError> {
    match (kind, endpoint) {
        (TargetKind::Sqlite, Endpoint::File(source)) => {
            // Attached files are copied beside the database copy
            // (`<label>.<schema>.db`); one not created yet is not copied, so
            // the rehearsal starts from the same absence.
            let files = SqliteFiles {
                path: dir.join(format!("{label}.db")),
                attach: source
                    .attach
                    .keys()
                    .map(|schema| (schema.clone(), dir.join(format!("{label}.{schema}.db"))))
                    .collect(),
            };
            let (source, dest) = (source.clone(), files.clone());
            tokio::task::spawn_blocking(move || {
                copy_sqlite(&source.path, &dest.path)?;
                for (schema, from) in &source.attach {
                    if from.is_file() {
                        copy_sqlite(from, &dest.attach[schema])?;
                    }
                }
                Ok::<_, RehearsalError>(())
            })
            .await
            .map_err(|e| RehearsalError::Copy {
                target: label.to_string(),
                reason: e.to_string(),
            })??;
            Ok(TargetCopy::Sqlite { files })
        }
        (TargetKind::Postgres, Endpoint::Url(url)) => copy_postgres(url, label).await,
        (TargetKind::Redis, Endpoint::Url(url)) => copy_redis(url, scope, label).await,
        (kind, _) => Err(RehearsalError::Copy {
            target: label.to_string(),
            reason: format!("{} targets cannot be copied", kind.as_str()),
        }),
    }
}

pub(crate) fn copy_sqlite(source: &Path, dest: &Path) -> Result<(), RehearsalError> {
    let fail = |reason: String| RehearsalError::Copy {
        target: source.display().to_string(),
        reason,
    };
    let conn = rusqlite::Connection::open_with_flags(
        source,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| fail(e.to_string()))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(|e| fail(e.to_string()))?;
    let dest_text = dest
        .to_str()
        .ok_or_else(|| fail(format!("{} is not UTF-8", dest.display())))?;
    conn.execute("VACUUM INTO ?1", [dest_text])
        .map_err(|e| fail(format!("VACUUM INTO {}: {e}", dest.display())))?;
    Ok(())
}

// ---- PostgreSQL ----------------------------------------------------------------

pub(crate) async fn pg_connect(url: &Secret) -> Result<tokio_postgres::Client, DatastoreError> {
    let config = tokio_postgres::Config::from_str(url.expose()).map_err(|e| {
        DatastoreError::host(
            "PG_CONFIG",
            format!("{}: not a valid PostgreSQL URL: {e}", url.redacted_url()),
        )
    })?;
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| pg_error(url, e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("rehearsal postgres connection ended: {e}");
        }
    });
    Ok(client)
}

pub(crate) fn pg_error(url: &Secret, e: tokio_postgres::Error) -> DatastoreError {
    let code = e.as_db_error().map_or("PG_CONNECTION".to_string(), |d| {
        format!("PG_{}", d.code().code())
    });
    let message = match e.as_db_error() {
        Some(d) => d.message().to_string(),
        None => e.to_string(),
    };
    DatastoreError {
        code,
        message: format!("{}: {}", url.redacted_url(), scrub(&message, url)),
    }
}

/// `"name"` with quotes doubled.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A PostgreSQL database name from a label: lower-case letters, digits and
/// `_`, at most 63 bytes (PostgreSQL's identifier limit).
pub fn scratch_database_name(label: &str) -> String {
    let clean: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let pid = std::process::id();
    let head = format!("sluice_rehearse_{clean}");
    let tail = format!("_{pid}");
    let keep = 63usize.saturating_sub(tail.len()).min(head.len());
    format!("{}{tail}", &head[..keep])
}

async fn copy_postgres(url: &Secret, label: &str) -> Result<TargetCopy, RehearsalError> {
    let fail = |reason: String| RehearsalError::Copy {
        target: url.redacted_url(),
        reason,
    };
    let config = tokio_postgres::Config::from_str(url.expose())
        .map_err(|e| fail(format!("not a valid PostgreSQL URL: {e}")))?;
    let source = config
        .get_dbname()
        .or(config.get_user())
        .ok_or_else(|| fail("the URL names no database".into()))?
        .to_string();
    let database = scratch_database_name(label);
    // Not a session on the source itself: a template must have none.
    let admin = Secret::new(with_path(url.expose(), "postgres"));
    let client = pg_connect(&admin).await.map_err(|e| fail(e.to_string()))?;
    let created = client
        .batch_execute(&format!(
            "CREATE DATABASE {} TEMPLATE {}",
            quote_ident(&database),
            quote_ident(&source)
        ))
        .await;
    let scratch = Secret::new(with_path(url.expose(), &database));
    let method = match created {
        Ok(()) => "CREATE DATABASE … TEMPLATE",
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE) => {
            // Other sessions use the source: copy a snapshot of it instead.
            client
                .batch_execute(&format!("CREATE DATABASE {}", quote_ident(&database)))
                .await
                .map_err(|e| fail(pg_error(&admin, e).to_string()))?;
            let copied = {
                let (url, scratch) = (url.clone(), scratch.clone());
                tokio::task::spawn_blocking(move || dump_and_load(&url, &scratch))
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()))
            };
            if let Err(reason) = copied {
                let _ = client
                    .batch_execute(&format!(
                        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                        quote_ident(&database)
                    ))
                    .await;
                return Err(fail(format!(
                    "database `{source}` has other sessions, so it cannot be a template, and \
                     the pg_dump | psql copy failed: {reason}. Install the PostgreSQL client \
                     tools (pg_dump, psql) of the server's version, or rehearse while nothing \
                     else is connected to `{source}`"
                )));
            }
            "pg_dump | psql (the source had other sessions)"
        }
        Err(e) => {
            return Err(fail(format!(
                "CREATE DATABASE {database} TEMPLATE {source}: {} (the role needs CREATEDB and \
                 must own `{source}` or be a superuser)",
                pg_error(&admin, e)
            )))
        }
    };
    Ok(TargetCopy::Postgres {
        database,
        url: scratch,
        admin,
        method,
    })
}

/// The libpq environment for a URL: credentials stay out of argv (which
/// every local user can read in `ps`).
fn libpq_env(url: &Secret) -> Result<Vec<(&'static str, String)>, String> {
    let config = tokio_postgres::Config::from_str(url.expose())
        .map_err(|e| format!("not a valid PostgreSQL URL: {e}"))?;
    let mut env = Vec::new();
    if let Some(host) = config.get_hosts().first() {
        match host {
            tokio_postgres::config::Host::Tcp(h) => env.push(("PGHOST", h.clone())),
            tokio_postgres::config::Host::Unix(p) => env.push(("PGHOST", p.display().to_string())),
        }
    }
    if let Some(port) = config.get_ports().first() {
        env.push(("PGPORT", port.to_string()));
    }
    if let Some(user) = config.get_user() {
        env.push(("PGUSER", user.to_string()));
    }
    if let Some(password) = config.get_password() {
        env.push(("PGPASSWORD", String::from_utf8_lossy(password).into_owned()));
    }
    if let Some(db) = config.get_dbname() {
        env.push(("PGDATABASE", db.to_string()));
    }
    Ok(env)
}

fn dump_and_load(source: &Secret, dest: &Secret) -> Result<(), String> {
    use std::process::{Command, Stdio};
    let mut dump = Command::new("pg_dump")
        .args(["--no-owner", "--no-privileges", "--format=plain"])
        .envs(libpq_env(source)?)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start pg_dump: {e}"))?;
    let stdout = dump.stdout.take().expect("piped");
    let load = Command::new("psql")
        .args(["--no-psqlrc", "--quiet", "-v", "ON_ERROR_STOP=1"])
        .envs(libpq_env(dest)?)
        .stdin(stdout)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot start psql: {e}"))?;
    let dumped = dump
        .wait_with_output()
        .map_err(|e| format!("pg_dump: {e}"))?;
    if !dumped.status.success() {
        return Err(format!(
            "pg_dump: {}",
            scrub(String::from_utf8_lossy(&dumped.stderr).trim(), source)
        ));
    }
    if !load.status.success() {
        return Err(format!(
            "psql: {}",
            scrub(String::from_utf8_lossy(&load.stderr).trim(), dest)
        ));
    }
    Ok(())
}

// ---- Redis -------------------------------------------------------------------------

pub(crate) async fn redis_connect(
    url: &Secret,
) -> Result<redis::aio::MultiplexedConnection, DatastoreError> {
    let client = redis::Client::open(url.expose()).map_err(|e| redis_error(url, e))?;
    tokio::time::timeout(
        datastores::redis::CONNECT_TIMEOUT * 2,
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| {
        DatastoreError::host(
            "REDIS_TIMEOUT",
            format!("{}: no answer", url.redacted_url()),
        )
    })?
    .map_err(|e| redis_error(url, e))
}

pub(crate) fn redis_error(url: &Secret, e: redis::RedisError) -> DatastoreError {
    DatastoreError::host(
        "REDIS",
        format!("{}: {}", url.redacted_url(), scrub(&e.to_string(), url)),
    )
}

/// The database number in a Redis URL's path (0 when absent).
fn redis_db(url: &str) -> u64 {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    rest.split_once('/')
        .and_then(|(_, db)| db.trim_matches('/').parse().ok())
        .unwrap_or(0)
}

/// Database numbers `INFO keyspace` lists (the ones holding keys).
fn used_databases(info: &str) -> BTreeSet<u64> {
    info.lines()
        .filter_map(|l| l.strip_prefix("db")?.split_once(':')?.0.parse().ok())
        .collect()
}

async fn copy_redis(
    url: &Secret,
    scope: &Scope,
    label: &str,
) -> Result<TargetCopy, RehearsalError> {
    let fail = |reason: String| RehearsalError::Copy {
        target: format!("{} ({label})", url.redacted_url()),
        reason,
    };
    let source_db = redis_db(url.expose());
    let mut admin = redis_connect(url).await.map_err(|e| fail(e.to_string()))?;
    let config: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("databases")
        .query_async(&mut admin)
        .await
        .map_err(|e| {
            fail(format!(
                "CONFIG GET databases: {} (a rehearsal needs to know the instance's database count)",
                redis_error(url, e)
            ))
        })?;
    let databases: u64 = config
        .get(1)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| fail(format!("CONFIG GET databases answered {config:?}")))?;
    let info: String = redis::cmd("INFO")
        .arg("keyspace")
        .query_async(&mut admin)
        .await
        .map_err(|e| fail(redis_error(url, e).to_string()))?;
    let used = used_databases(&info);
    // From the top: low numbers are the ones applications and tests take.
    let db = (0..databases)
        .rev()
        .find(|n| *n != source_db && !used.contains(n))
        .ok_or_else(|| {
            fail(format!(
                "every one of the instance's {databases} databases holds keys: there is no empty \
                 database to rehearse in (raise `databases` in redis.conf)"
            ))
        })?;
    let scratch = Secret::new(with_path(url.expose(), &db.to_string()));
    let source = RedisSession::connect(url)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let dest = RedisSession::connect(&scratch)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let prefixes: Vec<String> = match &scope.0 {
        Some(p) => p.iter().cloned().collect(),
        None => vec![String::new()],
    };
    let mut keys = BTreeSet::new();
    for prefix in &prefixes {
        keys.extend(
            source
                .keys_under(prefix)
                .await
                .map_err(|e| fail(e.to_string()))?,
        );
    }
    let keys: Vec<String> = keys.into_iter().collect();
    let mut copied = 0u64;
    for batch in keys.chunks(REDIS_COPY_BATCH) {
        let dumped = source.dump(batch).await.map_err(|e| fail(e.to_string()))?;
        copied += dumped.len() as u64;
        dest.restore(&dumped)
            .await
            .map_err(|e| fail(e.to_string()))?;
    }
    let copy = TargetCopy::Redis {
        db,
        url: scratch.clone(),
        keys: copied,
    };
    // Someone else writing into the database we picked would mix their keys
    // into the rehearsal: count what is there.
    let mut conn = redis_connect(&scratch)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let size: u64 = redis::cmd("DBSIZE")
        .query_async(&mut conn)
        .await
        .map_err(|e| fail(redis_error(&scratch, e).to_string()))?;
    if size > copied {
        let _ = copy.remove().await;
        return Err(fail(format!(
            "database {db} holds {size} keys after copying {copied}: something else uses it"
        )));
    }
    Ok(copy)
}

// ---- URLs --------------------------------------------------------------------------

/// `url` with its path (the database) replaced by `path`; a query is kept.
pub fn with_path(url: &str, path: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority..]
        .find('/')
        .map_or(base.len(), |i| authority + i);
    match query {
        Some(query) => format!("{}/{path}?{query}", &base[..path_start]),
        None => format!("{}/{path}", &base[..path_start]),
    }
}

/// A driver message with the URL (and its password) replaced by its
/// redacted form.
fn scrub(message: &str, url: &Secret) -> String {
    let mut out = message.replace(url.expose(), &url.redacted_url());
    if let Ok(config) = tokio_postgres::Config::from_str(url.expose()) {
        if let Some(pw) = config.get_password().filter(|p| !p.is_empty()) {
            out = out.replace(&*String::from_utf8_lossy(pw), "***");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_another_database_and_keep_their_query() {
        assert_eq!(
            with_path("postgres://u:pw@h:5432/shop?sslmode=disable", "scratch"),
            "postgres://u:pw@h:5432/scratch?sslmode=disable"
        );
        assert_eq!(
            with_path("redis://127.0.0.1:6379", "9"),
            "redis://127.0.0.1:6379/9"
        );
        assert_eq!(redis_db("redis://:pw@127.0.0.1:6379/12"), 12);
        assert_eq!(redis_db("redis://127.0.0.1:6379"), 0);
    }

    #[test]
    fn the_keyspace_section_names_the_used_databases() {
        let info =
            "# Keyspace\r\ndb0:keys=3,expires=0,avg_ttl=0\r\ndb17:keys=1,expires=1,avg_ttl=5\r\n";
        assert_eq!(used_databases(info), BTreeSet::from([0, 17]));
    }

    #[test]
    fn scratch_names_are_identifiers_within_the_limit() {
        let name = scratch_database_name(&format!("Plan-{}", "x".repeat(80)));
        assert!(name.len() <= 63, "{name}");
        assert!(name.starts_with("sluice_rehearse_plan_x"));
        assert!(name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
    }

    #[test]
    fn vacuum_into_copies_a_live_wal_database_from_a_read_only_connection() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.db");
        let writer = rusqlite::Connection::open(&src).unwrap();
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL; CREATE TABLE t (x INTEGER); \
                 INSERT INTO t VALUES (1), (2), (3);",
            )
            .unwrap();
        // The writer stays open: the rows live in the WAL, not the main file.
        let dest = dir.path().join("copy.db");
        copy_sqlite(&src, &dest).unwrap();
        let copy = rusqlite::Connection::open(&dest).unwrap();
        let n: i64 = copy
            .query_row("SELECT sum(x) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 6);
        assert_eq!(
            datastores::sqlite::fingerprint(&SqliteFiles::single(src), None).unwrap(),
            datastores::sqlite::fingerprint(&SqliteFiles::single(dest), None).unwrap()
        );
        drop(writer);
    }

    #[tokio::test]
    async fn sqlite_copies_take_attached_files_along() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = SqliteFiles::single(dir.path().join("app.db"));
        files
            .attach
            .insert("sqitch".into(), dir.path().join("sqitch.db"));
        files
            .attach
            .insert("later".into(), dir.path().join("later.db"));
        rusqlite::Connection::open(&files.path)
            .unwrap()
            .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        rusqlite::Connection::open(&files.attach["sqitch"])
            .unwrap()
            .execute_batch("CREATE TABLE changes (id); INSERT INTO changes VALUES ('a');")
            .unwrap();
        let out = dir.path().join("copies");
        std::fs::create_dir(&out).unwrap();
        let copy = copy(
            TargetKind::Sqlite,
            &Endpoint::File(files.clone()),
            &Scope(None),
            &out,
            "plan-app",
        )
        .await
        .unwrap();
        let Endpoint::File(copied) = copy.endpoint() else {
            panic!("a file copy")
        };
        assert_eq!(
            datastores::sqlite::fingerprint(&files, None).unwrap(),
            datastores::sqlite::fingerprint(&copied, None).unwrap()
        );
        assert!(copied.attach["sqitch"].starts_with(&out));
        // Not created yet at the source: not created in the copy either.
        assert!(!copied.attach["later"].exists());
        let before = files_sha256(&files).unwrap();
        copy.remove().await.unwrap();
        assert!(!copied.attach["sqitch"].exists() && !copied.path.exists());
        assert_eq!(files_sha256(&files).unwrap(), before);
    }
}
