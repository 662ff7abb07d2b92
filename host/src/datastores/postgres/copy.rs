//! Rehearsal copies of a PostgreSQL target: a scratch database on the same
//! server, `CREATE DATABASE … TEMPLATE <db>` (a file-level copy, fastest).
//! PostgreSQL refuses a template with other sessions on it (`55006`); then
//! the copy is `pg_dump | psql` (one repeatable-read snapshot of the source,
//! run with the credentials in the environment, never on a command line)
//! when both tools are installed, else the error says what the operator can
//! do.

use std::str::FromStr;

use futures_util::future::BoxFuture;

use crate::datastores::urls::{scrub, with_path};
use crate::datastores::{CopyError, DatastoreError, Endpoint, RehearsalCopy};
use crate::secret::Secret;

/// A scratch database on the target's PostgreSQL server.
#[derive(Debug)]
struct PostgresCopy {
    /// Its name.
    database: String,
    /// Its URL (the target's credentials).
    url: Secret,
    /// A URL of the server's maintenance database, to drop it.
    admin: Secret,
    /// How it was made.
    method: &'static str,
}

impl RehearsalCopy for PostgresCopy {
    fn endpoint(&self) -> Endpoint {
        Endpoint::Url(self.url.clone())
    }

    fn describe(&self) -> String {
        format!(
            "PostgreSQL database {} ({})",
            self.url.redacted_url(),
            self.method
        )
    }

    fn remove(&self) -> BoxFuture<'_, Result<(), DatastoreError>> {
        Box::pin(async move {
            let client = admin_connect(&self.admin).await?;
            client
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    quote_ident(&self.database)
                ))
                .await
                .map_err(|e| admin_error(&self.admin, e))
        })
    }
}

/// A plain client (no session settings, no policy) for the host's own
/// administrative statements.
pub(super) async fn admin_connect(url: &Secret) -> Result<tokio_postgres::Client, DatastoreError> {
    let config = tokio_postgres::Config::from_str(url.expose()).map_err(|e| {
        DatastoreError::host(
            "PG_CONFIG",
            format!("{}: not a valid PostgreSQL URL: {e}", url.redacted_url()),
        )
    })?;
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| admin_error(url, e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("rehearsal postgres connection ended: {e}");
        }
    });
    Ok(client)
}

/// An error of an administrative statement, naming the redacted URL.
pub(super) fn admin_error(url: &Secret, e: tokio_postgres::Error) -> DatastoreError {
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

/// Every user table of a PostgreSQL database, `schema.table`.
pub(super) async fn all_tables(url: &Secret) -> Result<Vec<String>, DatastoreError> {
    let client = admin_connect(url).await?;
    let rows = client
        .query(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables \
             WHERE table_type = 'BASE TABLE' \
               AND table_schema NOT IN ('pg_catalog', 'information_schema', 'sluice_journal', 'sluice_capture') \
             ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| admin_error(url, e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// `"name"` with quotes doubled.
pub(super) fn quote_ident(name: &str) -> String {
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

/// Copies the database `url` names into a scratch database named after `label`.
pub(super) async fn copy(url: &Secret, label: &str) -> Result<Box<dyn RehearsalCopy>, CopyError> {
    let fail = |reason: String| CopyError {
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
    let client = admin_connect(&admin)
        .await
        .map_err(|e| fail(e.to_string()))?;
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
                .map_err(|e| fail(admin_error(&admin, e).to_string()))?;
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
                admin_error(&admin, e)
            )))
        }
    };
    Ok(Box::new(PostgresCopy {
        database,
        url: scratch,
        admin,
        method,
    }))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_names_are_identifiers_within_the_limit() {
        let name = scratch_database_name(&format!("Plan-{}", "x".repeat(80)));
        assert!(name.len() <= 63, "{name}");
        assert!(name.starts_with("sluice_rehearse_plan_x"));
        assert!(name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
    }
}
