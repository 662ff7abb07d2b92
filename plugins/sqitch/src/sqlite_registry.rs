//! sqitch's own SQLite registry (release 1.1): the same tables, columns and
//! rows sqitch's `sqlite` engine writes. sqitch keeps it in a database file
//! of its own (`sqitch.db` beside the target by default); the plan attaches
//! that file to the target under the registry's name
//! (`attach = { sqitch = "sqitch.db" }`), so the plugin reads and writes it
//! as the schema `sqitch` and `sqitch status` reads what sluice deployed.

use sluice_sdk::sql::{quote_ident, Connection, Value};
use sluice_sdk::{Error, ErrorExt};

use crate::plan::{Change, SqitchPlan};
use crate::registry::Committer;

/// The registry tables that say what is deployed: backed up with the step,
/// so the host's proof covers them (as for PostgreSQL).
pub use crate::registry::STATE_TABLES;

/// Every registry table, dependants first (the order to drop them in).
const ALL_TABLES: [&str; 6] = [
    "events",
    "dependencies",
    "tags",
    "changes",
    "projects",
    "releases",
];

/// sqitch's `sqlite.sql` (App::Sqitch 1.3.1, release 1.1), table names to be
/// qualified with the attached registry's schema; kept verbatim so the
/// registry file's schema is the one sqitch creates.
const DDL: &str = include_str!("sqlite_registry.sql");

/// Whether the registry exists; an error that says how to attach it when
/// the target does not attach the registry file at all.
pub fn exists(conn: &Connection, schema: &str) -> Result<bool, Error> {
    match conn.query_i64(
        &format!(
            "SELECT count(*) FROM {}.sqlite_master WHERE type = 'table' AND name = 'changes'",
            quote_ident(schema)
        ),
        &[],
    ) {
        Ok(n) => Ok(n > 0),
        Err(e) if e.describe().contains("no such table") => Err(Error::PreconditionFailed(format!(
            "sqitch's SQLite registry `{schema}` is not attached to this target: sqitch keeps it in its own file; declare it on the target, e.g. `[targets.app] kind = \"sqlite\"  path = \"app.db\"  attach = {{ {schema} = \"{schema}.db\" }}` (the file sqitch uses beside the database)"
        ))),
        Err(e) => Err(e),
    }
}

/// Whether the change with `change_id` is deployed.
pub fn is_deployed(conn: &Connection, schema: &str, change_id: &str) -> Result<bool, Error> {
    Ok(exists(conn, schema)?
        && conn.query_i64(
            &format!(
                "SELECT count(*) FROM {}.changes WHERE change_id = ?1",
                quote_ident(schema)
            ),
            &[change_id.into()],
        )? > 0)
}

/// The id of the latest deployed instance of `change` in `project`.
pub fn deployed_id(
    conn: &Connection,
    schema: &str,
    project: &str,
    change: &str,
) -> Result<Option<String>, Error> {
    if !exists(conn, schema)? {
        return Ok(None);
    }
    let rows = conn.query(
        &format!(
            "SELECT change_id FROM {}.changes WHERE project = ?1 AND change = ?2 ORDER BY committed_at DESC LIMIT 1",
            quote_ident(schema)
        ),
        &[project.into(), change.into()],
    )?;
    Ok(rows
        .values()?
        .into_iter()
        .next()
        .and_then(|row| match row.into_iter().next() {
            Some(Value::Text(id)) => Some(id),
            _ => None,
        }))
}

/// A SQL string literal.
fn lit(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// sqitch's timestamp default on SQLite (`_ts_default`).
const NOW: &str = "strftime('%Y-%m-%d %H:%M:%f')";

/// A plan timestamp (`2013-12-31T20:11:09Z`) as sqitch's sqlite engine
/// stores it (`_char2ts`: `YYYY-MM-DD HH:MM:SS`, UTC).
fn planned_at(at: &str) -> String {
    at.trim_end_matches('Z').replacen('T', " ", 1)
}

/// Creates the registry (sqitch's DDL, its release and the project), when
/// it does not exist yet.
pub fn create_sql(schema: &str, plan: &SqitchPlan, who: &Committer) -> String {
    let s = quote_ident(schema);
    let ddl = DDL
        .replace("BEGIN;", "")
        .replace("COMMIT;", "")
        .replace("CREATE TABLE ", &format!("CREATE TABLE {s}."));
    format!(
        "{ddl}
INSERT INTO {s}.releases (version, installed_at, installer_name, installer_email) VALUES (1.1, {NOW}, {name}, {email});
INSERT INTO {s}.projects (project, uri, creator_name, creator_email) VALUES ({}, {}, {name}, {email});",
        lit(&plan.project),
        plan.uri.as_deref().map_or("NULL".to_string(), lit),
        name = lit(&who.name),
        email = lit(&who.email),
    )
}

/// The rows sqitch writes when it deploys `change` (see
/// `registry::deploy_sql` for PostgreSQL).
pub fn deploy_sql(
    schema: &str,
    plan: &SqitchPlan,
    change: &Change,
    script_hash: &str,
    required: &[(String, String)],
    who: &Committer,
) -> String {
    let s = quote_ident(schema);
    let committer = format!("{}, {}", lit(&who.name), lit(&who.email));
    let planned = format!(
        "{}, {}, {}",
        lit(&planned_at(&change.planned.at)),
        lit(&change.planned.name),
        lit(&change.planned.email)
    );
    let mut sql = format!(
        "INSERT INTO {s}.changes (change_id, script_hash, change, project, note, committer_name, committer_email, planned_at, planner_name, planner_email, committed_at)
    VALUES ({}, {}, {}, {}, {}, {committer}, {planned}, {NOW});\n",
        lit(&change.id),
        lit(script_hash),
        lit(&change.name),
        lit(&plan.project),
        lit(&change.note),
    );
    for (dependency, id) in required {
        sql.push_str(&format!(
            "INSERT INTO {s}.dependencies (change_id, type, dependency, dependency_id) VALUES ({}, 'require', {}, {});\n",
            lit(&change.id),
            lit(dependency),
            lit(id)
        ));
    }
    for conflict in &change.conflicts {
        sql.push_str(&format!(
            "INSERT INTO {s}.dependencies (change_id, type, dependency, dependency_id) VALUES ({}, 'conflict', {}, NULL);\n",
            lit(&change.id),
            lit(&conflict.as_string())
        ));
    }
    for tag in &change.tags {
        sql.push_str(&format!(
            "INSERT INTO {s}.tags (tag_id, tag, project, change_id, note, committer_name, committer_email, planned_at, planner_name, planner_email, committed_at)
    VALUES ({}, {}, {}, {}, {}, {committer}, {}, {}, {}, {NOW});\n",
            lit(&tag.id),
            lit(&format!("@{}", tag.name)),
            lit(&plan.project),
            lit(&change.id),
            lit(&tag.note),
            lit(&planned_at(&tag.planned.at)),
            lit(&tag.planned.name),
            lit(&tag.planned.email),
        ));
    }
    sql.push_str(&event_sql(schema, plan, change, "deploy", who));
    sql
}

/// An event row; sqitch's sqlite engine joins tags with spaces and
/// dependencies with commas.
pub fn event_sql(
    schema: &str,
    plan: &SqitchPlan,
    change: &Change,
    event: &str,
    who: &Committer,
) -> String {
    let requires: Vec<String> = change.requires.iter().map(|d| d.as_string()).collect();
    let conflicts: Vec<String> = change.conflicts.iter().map(|d| d.as_string()).collect();
    let tags: Vec<String> = change.tags.iter().map(|t| format!("@{}", t.name)).collect();
    format!(
        "INSERT INTO {}.events (event, change_id, change, project, note, tags, requires, conflicts, committer_name, committer_email, planned_at, planner_name, planner_email, committed_at)
    VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {NOW});\n",
        quote_ident(schema),
        lit(event),
        lit(&change.id),
        lit(&change.name),
        lit(&plan.project),
        lit(&change.note),
        lit(&tags.join(" ")),
        lit(&requires.join(",")),
        lit(&conflicts.join(",")),
        lit(&who.name),
        lit(&who.email),
        lit(&planned_at(&change.planned.at)),
        lit(&change.planned.name),
        lit(&change.planned.email),
    )
}

/// What sqitch does to the registry when it reverts `change`.
pub fn revert_sql(schema: &str, plan: &SqitchPlan, change: &Change, who: &Committer) -> String {
    let s = quote_ident(schema);
    let id = lit(&change.id);
    format!(
        "DELETE FROM {s}.tags WHERE change_id = {id};
DELETE FROM {s}.dependencies WHERE change_id = {id};
DELETE FROM {s}.changes WHERE change_id = {id};
{}",
        event_sql(schema, plan, change, "revert", who)
    )
}

/// Drops every registry table: the state before a step that created it.
pub fn drop_sql(schema: &str) -> String {
    let s = quote_ident(schema);
    ALL_TABLES
        .iter()
        .map(|t| format!("DROP TABLE IF EXISTS {s}.{t};\n"))
        .collect()
}

/// sqitch's SQLite registry, for the dependency checks migrate shares
/// with the PostgreSQL engine.
pub(crate) struct SqliteRegistry;

impl crate::migrate::RegistryReader for SqliteRegistry {
    fn is_deployed(conn: &Connection, schema: &str, change_id: &str) -> Result<bool, Error> {
        is_deployed(conn, schema, change_id)
    }
    fn deployed_id(
        conn: &Connection,
        schema: &str,
        project: &str,
        change: &str,
    ) -> Result<Option<String>, Error> {
        deployed_id(conn, schema, project, change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_stored_as_sqitch_stores_them() {
        assert_eq!(planned_at("2013-12-31T20:11:09Z"), "2013-12-31 20:11:09");
    }
}
