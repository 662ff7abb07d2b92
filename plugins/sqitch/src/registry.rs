//! sqitch's own PostgreSQL registry (release 1.1): the same schema, tables,
//! columns and rows sqitch writes, so `sqitch status` reads what sluice
//! deployed and sluice reads what sqitch deployed.

use sluice_plugin_postgres::names::{quote_ident, quote_literal};
use sluice_sdk::sql::Connection;
use sluice_sdk::Error;

use crate::plan::{Change, SqitchPlan};

/// The registry tables that say what is deployed: backed up with the step
/// (when the registry exists), so the host's proof covers them. `events`
/// (append-only history) and `projects` are not: a rollback logs a
/// `revert` event as sqitch does.
pub const STATE_TABLES: [&str; 3] = ["changes", "tags", "dependencies"];

/// Whether the registry exists in `schema`.
pub fn exists(conn: &Connection, schema: &str) -> Result<bool, Error> {
    Ok(conn.query_i64(
        "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = $1 AND tablename = 'changes'",
        &[schema.into()],
    )? > 0)
}

/// Whether the change with `change_id` is deployed.
pub fn is_deployed(conn: &Connection, schema: &str, change_id: &str) -> Result<bool, Error> {
    Ok(exists(conn, schema)?
        && conn.query_i64(
            &format!(
                "SELECT count(*) FROM {}.changes WHERE change_id = $1",
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
            "SELECT change_id FROM {}.changes WHERE project = $1 AND change = $2 ORDER BY committed_at DESC LIMIT 1",
            quote_ident(schema)
        ),
        &[project.into(), change.into()],
    )?;
    Ok(rows
        .values()?
        .into_iter()
        .next()
        .and_then(|row| match row.into_iter().next() {
            Some(sluice_sdk::sql::Value::Text(id)) => Some(id),
            _ => None,
        }))
}

/// Creates the registry if it is missing (sqitch's `pg.sql`, release 1.1,
/// without the comments) and records the project.
pub fn create_sql(schema: &str, plan: &SqitchPlan, who: &Committer) -> String {
    let s = quote_ident(schema);
    let name = quote_literal(&who.name);
    let email = quote_literal(&who.email);
    format!(
        "CREATE SCHEMA IF NOT EXISTS {s};
COMMENT ON SCHEMA {s} IS 'Sqitch database deployment metadata v1.1.';
CREATE TABLE IF NOT EXISTS {s}.releases (
    version REAL PRIMARY KEY,
    installed_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    installer_name TEXT NOT NULL,
    installer_email TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.projects (
    project TEXT PRIMARY KEY,
    uri TEXT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    creator_name TEXT NOT NULL,
    creator_email TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.changes (
    change_id TEXT PRIMARY KEY,
    script_hash TEXT NULL,
    change TEXT NOT NULL,
    project TEXT NOT NULL REFERENCES {s}.projects(project) ON UPDATE CASCADE,
    note TEXT NOT NULL DEFAULT '',
    committed_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    committer_name TEXT NOT NULL,
    committer_email TEXT NOT NULL,
    planned_at TIMESTAMPTZ NOT NULL,
    planner_name TEXT NOT NULL,
    planner_email TEXT NOT NULL,
    UNIQUE(project, script_hash));
CREATE TABLE IF NOT EXISTS {s}.tags (
    tag_id TEXT PRIMARY KEY,
    tag TEXT NOT NULL,
    project TEXT NOT NULL REFERENCES {s}.projects(project) ON UPDATE CASCADE,
    change_id TEXT NOT NULL REFERENCES {s}.changes(change_id) ON UPDATE CASCADE,
    note TEXT NOT NULL DEFAULT '',
    committed_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    committer_name TEXT NOT NULL,
    committer_email TEXT NOT NULL,
    planned_at TIMESTAMPTZ NOT NULL,
    planner_name TEXT NOT NULL,
    planner_email TEXT NOT NULL,
    UNIQUE(project, tag));
CREATE TABLE IF NOT EXISTS {s}.dependencies (
    change_id TEXT NOT NULL REFERENCES {s}.changes(change_id) ON UPDATE CASCADE ON DELETE CASCADE,
    type TEXT NOT NULL,
    dependency TEXT NOT NULL,
    dependency_id TEXT NULL REFERENCES {s}.changes(change_id) ON UPDATE CASCADE CONSTRAINT dependencies_check CHECK (
        (type = 'require' AND dependency_id IS NOT NULL) OR (type = 'conflict' AND dependency_id IS NULL)),
    PRIMARY KEY (change_id, dependency));
CREATE TABLE IF NOT EXISTS {s}.events (
    event TEXT NOT NULL CONSTRAINT events_event_check CHECK (event IN ('deploy', 'revert', 'fail', 'merge')),
    change_id TEXT NOT NULL,
    change TEXT NOT NULL,
    project TEXT NOT NULL REFERENCES {s}.projects(project) ON UPDATE CASCADE,
    note TEXT NOT NULL DEFAULT '',
    requires TEXT[] NOT NULL DEFAULT '{{}}',
    conflicts TEXT[] NOT NULL DEFAULT '{{}}',
    tags TEXT[] NOT NULL DEFAULT '{{}}',
    committed_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    committer_name TEXT NOT NULL,
    committer_email TEXT NOT NULL,
    planned_at TIMESTAMPTZ NOT NULL,
    planner_name TEXT NOT NULL,
    planner_email TEXT NOT NULL,
    PRIMARY KEY (change_id, committed_at));
INSERT INTO {s}.releases (version, installer_name, installer_email)
    VALUES (1.1, {name}, {email}) ON CONFLICT (version) DO NOTHING;
INSERT INTO {s}.projects (project, uri, creator_name, creator_email)
    VALUES ({}, {}, {name}, {email}) ON CONFLICT (project) DO NOTHING;",
        quote_literal(&plan.project),
        plan.uri.as_deref().map_or("NULL".to_string(), quote_literal),
    )
}

/// Who the registry records as committer.
pub struct Committer {
    /// Name.
    pub name: String,
    /// Email.
    pub email: String,
}

fn array(items: &[String]) -> String {
    if items.is_empty() {
        return "'{}'::text[]".into();
    }
    let quoted: Vec<String> = items.iter().map(|i| quote_literal(i)).collect();
    format!("ARRAY[{}]::text[]", quoted.join(", "))
}

/// The rows sqitch writes when it deploys `change`: the change, its
/// dependencies (`required` pairs each dependency with the change id it
/// resolved to), its tags, and a `deploy` event.
pub fn deploy_sql(
    schema: &str,
    plan: &SqitchPlan,
    change: &Change,
    script_hash: &str,
    required: &[(String, String)],
    who: &Committer,
) -> String {
    let s = quote_ident(schema);
    let q = |v: &str| quote_literal(v);
    let committer = format!("{}, {}", q(&who.name), q(&who.email));
    let planned = format!(
        "{}::timestamptz, {}, {}",
        q(&change.planned.at),
        q(&change.planned.name),
        q(&change.planned.email)
    );
    let mut sql = format!(
        "INSERT INTO {s}.changes (change_id, script_hash, change, project, note, committer_name, committer_email, planned_at, planner_name, planner_email)
    VALUES ({}, {}, {}, {}, {}, {committer}, {planned});\n",
        q(&change.id),
        q(script_hash),
        q(&change.name),
        q(&plan.project),
        q(&change.note),
    );
    for (dependency, id) in required {
        sql.push_str(&format!(
            "INSERT INTO {s}.dependencies (change_id, type, dependency, dependency_id) VALUES ({}, 'require', {}, {});\n",
            q(&change.id),
            q(dependency),
            q(id)
        ));
    }
    for conflict in &change.conflicts {
        sql.push_str(&format!(
            "INSERT INTO {s}.dependencies (change_id, type, dependency, dependency_id) VALUES ({}, 'conflict', {}, NULL);\n",
            q(&change.id),
            q(&conflict.as_string())
        ));
    }
    for tag in &change.tags {
        sql.push_str(&format!(
            "INSERT INTO {s}.tags (tag_id, tag, project, change_id, note, committer_name, committer_email, planned_at, planner_name, planner_email)
    VALUES ({}, {}, {}, {}, {}, {committer}, {}::timestamptz, {}, {});\n",
            q(&tag.id),
            q(&format!("@{}", tag.name)),
            q(&plan.project),
            q(&change.id),
            q(&tag.note),
            q(&tag.planned.at),
            q(&tag.planned.name),
            q(&tag.planned.email),
        ));
    }
    sql.push_str(&event_sql(schema, plan, change, "deploy", who));
    sql
}

/// An event row (`deploy`, `revert`, `fail`).
pub fn event_sql(
    schema: &str,
    plan: &SqitchPlan,
    change: &Change,
    event: &str,
    who: &Committer,
) -> String {
    let q = |v: &str| quote_literal(v);
    let requires: Vec<String> = change.requires.iter().map(|d| d.as_string()).collect();
    let conflicts: Vec<String> = change.conflicts.iter().map(|d| d.as_string()).collect();
    let tags: Vec<String> = change.tags.iter().map(|t| format!("@{}", t.name)).collect();
    format!(
        "INSERT INTO {}.events (event, change_id, change, project, note, requires, conflicts, tags, committer_name, committer_email, planned_at, planner_name, planner_email)
    VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}::timestamptz, {}, {});\n",
        quote_ident(schema),
        q(event),
        q(&change.id),
        q(&change.name),
        q(&plan.project),
        q(&change.note),
        array(&requires),
        array(&conflicts),
        array(&tags),
        q(&who.name),
        q(&who.email),
        q(&change.planned.at),
        q(&change.planned.name),
        q(&change.planned.email),
    )
}

/// What sqitch does to the registry when it reverts `change`: its tags,
/// dependencies and row go, a `revert` event is logged.
pub fn revert_sql(schema: &str, plan: &SqitchPlan, change: &Change, who: &Committer) -> String {
    let s = quote_ident(schema);
    let id = quote_literal(&change.id);
    format!(
        "DELETE FROM {s}.tags WHERE change_id = {id};
DELETE FROM {s}.dependencies WHERE change_id = {id};
DELETE FROM {s}.changes WHERE change_id = {id};
{}",
        event_sql(schema, plan, change, "revert", who)
    )
}
