//! Migrate: the step's SQL, in one transaction when PostgreSQL allows it,
//! then bulk copies streamed through the plugin.

use sluice_sdk::sql::Connection;
use sluice_sdk::{log, progress, Error, ErrorExt, StepContext};

use crate::classify::classify;
use crate::params::{copy_target, CopySpec};
use crate::{Params, PostgresPlugin};

impl sluice_sdk::Migrate for PostgresPlugin {
    fn migrate(ctx: &StepContext) -> Result<(), Error> {
        let params = Params::of(ctx)?;
        if params.migrate.is_none() && params.copy.is_empty() {
            return Err(Error::InvalidParams(
                "nothing to do: give `migrate` (SQL) or `copy` (bulk copies)".into(),
            ));
        }
        let conn = Connection::open(&ctx.target)?;
        // The copies' source connection opens now, before the step's
        // transaction holds locks: the host prepares every connection of a
        // read-write step (its change recording), which waits for the
        // locks of an open transaction.
        let source = if params.copy.is_empty() {
            None
        } else {
            Some(Connection::open(&ctx.target)?)
        };
        let change = params.change();
        if change.transactional {
            // A failing statement leaves nothing behind: PostgreSQL DDL is
            // transactional, and so are the copies.
            return conn.transaction(|conn| {
                if let Some(script) = &params.migrate {
                    conn.execute_script(script)?;
                    log::info("migration applied in one transaction", &[]);
                }
                copies(conn, source.as_ref(), &params.copy)
            });
        }
        log::warn(
            "migration has statements PostgreSQL refuses in a transaction: running them one by one",
            &[("statements", &change.statements.len().to_string())],
        );
        run_one_by_one(&conn, &change.statements)?;
        conn.transaction(|conn| copies(conn, source.as_ref(), &params.copy))
    }
}

/// Runs a script the way [`classify`] says it must run: in one transaction,
/// or statement by statement. Also used for `compensate`.
pub(crate) fn run_script(conn: &Connection, script: &str) -> Result<(), Error> {
    let change = classify(script);
    if change.transactional {
        conn.transaction(|conn| conn.execute_script(script))
    } else {
        run_one_by_one(conn, &change.statements)
    }
}

fn run_one_by_one(conn: &Connection, statements: &[String]) -> Result<(), Error> {
    for (i, statement) in statements.iter().enumerate() {
        conn.execute_script(statement).map_err(|e| match e {
            Error::Datastore(d) => Error::datastore(
                d.code,
                format!(
                    "{} (statement {} of {}, earlier ones stay applied: `{}`)",
                    d.message,
                    i + 1,
                    statements.len(),
                    first_line(statement)
                ),
            ),
            other => other,
        })?;
        log::info(
            "statement applied",
            &[("statement", &format!("{} of {}", i + 1, statements.len()))],
        );
    }
    Ok(())
}

fn first_line(statement: &str) -> String {
    let line = statement.lines().next().unwrap_or_default();
    line.chars().take(120).collect()
}

fn copies(
    conn: &Connection,
    source: Option<&Connection>,
    copies: &[CopySpec],
) -> Result<(), Error> {
    // One connection cannot run two COPYs at once: the rows are read on a
    // second connection (`source`: the committed state before this
    // transaction) and written on the step's transaction.
    let Some(source) = source else {
        return Ok(());
    };
    for (i, copy) in copies.iter().enumerate() {
        let into = copy_target(&copy.into, &format!("params.copy[{i}].into"))?;
        let from = copy.from.trim().trim_end_matches(';').trim_end();
        let mut reader = source.copy_out(&format!("COPY ({from}) TO STDOUT"))?;
        let mut writer = conn.copy_in(&format!("COPY {into} FROM STDIN"))?;
        let mut rows = 0u64;
        while let Some(chunk) = reader.next_chunk()? {
            writer.write(&chunk)?;
            rows += chunk.iter().filter(|b| **b == b'\n').count() as u64;
            progress::report(rows, None, &copy.into);
        }
        let loaded = writer.finish()?;
        log::info(
            "rows copied",
            &[("into", copy.into.as_str()), ("rows", &loaded.to_string())],
        );
    }
    Ok(())
}
