//! Dropping what a step created, for an undo by change set on PostgreSQL.
//!
//! The engine names a step's created objects as the schema digest keys
//! them (`table public.notes`, `owner of table public.notes`,
//! `column public.notes.body`, `trigger public.orders.set_updated_at`).
//! One object brings several keys: its owner, grants and comment lines,
//! and its parts (a new table's columns, constraints, indexes, triggers,
//! owned sequences and partitions). Each key is grouped under the object
//! that owns it; only the objects that stand alone are dropped, each with
//! its own `DROP … IF EXISTS` (never `CASCADE`, which could take an
//! application's object with it), in an order found by trying: a drop that
//! another object still depends on is rolled back to its savepoint and
//! tried again after the others. What cannot be dropped that way leaves
//! the change set unusable, and the rollback restores the backup.

use std::collections::{BTreeMap, BTreeSet};

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::pg_error;
use crate::datastores::DatastoreError;

/// The digest's lines about an object rather than objects of their own.
const ASPECTS: [&str; 3] = ["owner of ", "grants on ", "comment on "];

/// Kinds the undo drops on their own, in the order first tried: parts of
/// tables before tables, tables before the types and functions they use,
/// schemas and roles last.
const DROPPED: [&str; 23] = [
    "membership",
    "trigger",
    "rule",
    "policy",
    "constraint",
    "index",
    "statistics",
    "view",
    "materialized view",
    "table",
    "foreign table",
    "sequence",
    "function",
    "procedure",
    "aggregate",
    "domain",
    "enum",
    "composite type",
    "range type",
    "collation",
    "extension",
    "schema",
    "role",
];

/// Kinds that go with the object owning them (`column` with its table,
/// view or composite type): never dropped alone.
const PARTS: [(&str, &[&str]); 3] = [
    (
        "column",
        &[
            "table",
            "view",
            "materialized view",
            "composite type",
            "foreign table",
        ],
    ),
    ("domain constraint", &["domain"]),
    ("extension member", &["extension"]),
];

/// `kind name` of a digest key: the kind is the longest known kind the key
/// starts with (kinds contain spaces: `materialized view`).
fn split(key: &str) -> Option<(&str, &str)> {
    DROPPED
        .iter()
        .chain(PARTS.iter().map(|(kind, _)| kind))
        .filter_map(|kind| Some((*kind, key.strip_prefix(kind)?.strip_prefix(' ')?)))
        .max_by_key(|(kind, _)| kind.len())
}

/// The first of `created` an undo cannot drop: a line about an object the
/// step did not create (a comment added to an existing table), a column
/// added to an existing table, or a kind it does not drop (a database,
/// a tablespace, default privileges, …).
pub fn undroppable(created: &[String]) -> Option<&str> {
    let keys: BTreeSet<&str> = created.iter().map(String::as_str).collect();
    created
        .iter()
        .map(String::as_str)
        .find(|key| !droppable(key, &keys))
}

fn droppable(key: &str, created: &BTreeSet<&str>) -> bool {
    if let Some(base) = ASPECTS.iter().find_map(|a| key.strip_prefix(a)) {
        return created.contains(base) && droppable(base, created);
    }
    let Some((kind, name)) = split(key) else {
        return false;
    };
    let Some((_, owners)) = PARTS.iter().find(|(part, _)| *part == kind) else {
        return true;
    };
    if kind == "extension member" {
        // Which extension owns it is in the definition, not the key: the
        // undo resolves it, and this only asks that the step created one.
        return created.iter().any(|k| k.starts_with("extension "));
    }
    created.iter().any(|k| {
        split(k).is_some_and(|(owner_kind, owner)| {
            owners.contains(&owner_kind)
                && name.len() > owner.len()
                && name.starts_with(owner)
                && name[owner.len()..].starts_with('.')
        })
    })
}

/// A created object as the target has it now.
struct Found {
    /// The key of the object it is part of, if any.
    owner: Option<String>,
    /// The statement dropping it alone, if it can be.
    drop: Option<String>,
    /// For a table, the query counting its rows.
    count: Option<String>,
}

/// What the undo dropped: each object standing alone, with the rows a
/// table held (the application's writes into it since go with it).
pub type Dropped = Vec<(String, Option<u64>)>;

/// Drops the objects of `created` in the client's transaction. `Ok(Err)`:
/// they cannot all be dropped (an object the step did not create depends on
/// one, or one is not the step's to drop); the caller rolls back.
pub async fn drop_created(
    client: &Client,
    created: &[String],
) -> Result<Result<Dropped, String>, DatastoreError> {
    let bases: BTreeSet<String> = created
        .iter()
        .map(|key| {
            ASPECTS
                .iter()
                .find_map(|a| key.strip_prefix(a))
                .unwrap_or(key)
                .to_string()
        })
        .collect();
    let wanted: Vec<&String> = bases.iter().collect();
    client
        .batch_execute("SET LOCAL search_path = pg_catalog")
        .await
        .map_err(pg_error)?;
    let rows = client
        .query(DROPS_QUERY, &[&wanted])
        .await
        .map_err(pg_error)?;
    client
        .batch_execute("SET LOCAL search_path TO DEFAULT")
        .await
        .map_err(pg_error)?;
    let found: BTreeMap<String, Found> = rows
        .iter()
        .map(|r| {
            let found = Found {
                owner: r.get(1),
                drop: r.get(2),
                count: r.get(3),
            };
            (r.get(0), found)
        })
        .collect();
    let mut alone: Vec<(&str, &str, Option<&str>)> = Vec::new();
    for key in &bases {
        // Gone already (the application dropped it, or it went with an
        // object dropped since): the proof after the undo checks it.
        let Some(Found { owner, drop, count }) = found.get(key) else {
            continue;
        };
        match (owner, drop) {
            (Some(owner), _) if bases.contains(owner) => {}
            (_, Some(drop)) => alone.push((key, drop, count.as_deref())),
            (_, None) => {
                return Ok(Err(format!(
                    "{key} is part of an object the step did not create"
                )))
            }
        }
    }
    let rank = |key: &str| {
        split(key)
            .and_then(|(kind, _)| DROPPED.iter().position(|k| *k == kind))
            .unwrap_or(DROPPED.len())
    };
    alone.sort_by_key(|(key, ..)| rank(key));

    let mut dropped = Dropped::new();
    let mut pending = alone;
    while !pending.is_empty() {
        let mut waiting = Vec::new();
        let mut last_refusal = None;
        for (key, drop, count) in pending.iter().copied() {
            let rows = match count {
                Some(count) => Some(
                    client
                        .query_one(count, &[])
                        .await
                        .map_err(pg_error)?
                        .get::<_, i64>(0) as u64,
                ),
                None => None,
            };
            client
                .batch_execute("SAVEPOINT sluice_drop")
                .await
                .map_err(pg_error)?;
            match client.batch_execute(drop).await {
                Ok(()) => {
                    client
                        .batch_execute("RELEASE SAVEPOINT sluice_drop")
                        .await
                        .map_err(pg_error)?;
                    dropped.push((key.to_string(), rows));
                }
                Err(e) if e.code() == Some(&SqlState::DEPENDENT_OBJECTS_STILL_EXIST) => {
                    client
                        .batch_execute("ROLLBACK TO SAVEPOINT sluice_drop")
                        .await
                        .map_err(pg_error)?;
                    last_refusal = Some(
                        e.as_db_error()
                            .map(|d| {
                                let detail = d.detail().map(|x| format!(" ({x})")).unwrap_or_default();
                                format!("{}{detail}", d.message())
                            })
                            .unwrap_or_else(|| e.to_string()),
                    );
                    waiting.push((key, drop, count));
                }
                Err(e) => return Err(pg_error(e)),
            }
        }
        if waiting.len() == pending.len() {
            return Ok(Err(format!(
                "what the step created cannot be dropped without what depends on it: {}",
                last_refusal.unwrap_or_default()
            )));
        }
        pending = waiting;
    }
    Ok(Ok(dropped))
}

/// `$1`: digest keys (without aspect prefixes). Rows: the key, the key of
/// the object it is part of (NULL when it stands alone), the statement
/// that drops it alone (NULL for parts that only go with their owner) and,
/// for tables, a query counting its rows. Names as the schema digest
/// prints them, with `search_path` pinned to `pg_catalog`.
const DROPS_QUERY: &str = r#"
WITH ns AS (
  -- Which schemas count is the digest's rule: the keys asked for come from
  -- it. This only spares the system catalogs' thousands of rows.
  SELECT oid, nspname FROM pg_namespace WHERE nspname NOT IN ('pg_catalog', 'information_schema')
),
rel AS (
  SELECT c.oid, c.relname, c.relkind, c.relispartition, n.nspname, n.nspname || '.' || c.relname AS qname,
         CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'f' THEN 'foreign table'
                        WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence'
                        WHEN 'c' THEN 'composite type' END AS kind
    FROM pg_class c JOIN ns n ON n.oid = c.relnamespace
   WHERE c.relkind IN ('r', 'p', 'f', 'v', 'm', 'S', 'c')
),
objs(key, owner, drop, count) AS (
  SELECT 'schema ' || nspname, NULL, format('DROP SCHEMA IF EXISTS %I', nspname), NULL FROM ns
  UNION ALL
  SELECT r.kind || ' ' || r.qname,
         CASE
           WHEN r.relispartition THEN (SELECT 'table ' || p.qname FROM pg_inherits i JOIN rel p ON p.oid = i.inhparent
                                        WHERE i.inhrelid = r.oid)
           WHEN r.relkind = 'S' THEN (SELECT o.kind || ' ' || o.qname FROM pg_depend d JOIN rel o ON o.oid = d.refobjid
                                       WHERE d.classid = 'pg_class'::regclass AND d.objid = r.oid
                                         AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') LIMIT 1)
         END,
         format('DROP %s IF EXISTS %I.%I', CASE r.relkind WHEN 'c' THEN 'TYPE' ELSE upper(r.kind) END, r.nspname, r.relname),
         CASE WHEN r.relkind IN ('r', 'p', 'm') THEN format('SELECT count(*) FROM %I.%I', r.nspname, r.relname) END
    FROM rel r
  UNION ALL
  SELECT 'column ' || r.qname || '.' || a.attname, r.kind || ' ' || r.qname, NULL, NULL
    FROM pg_attribute a JOIN rel r ON r.oid = a.attrelid
   WHERE a.attnum > 0 AND NOT a.attisdropped AND r.relkind <> 'S'
  UNION ALL
  SELECT 'constraint ' || r.qname || '.' || k.conname, r.kind || ' ' || r.qname,
         format('ALTER %s IF EXISTS %I.%I DROP CONSTRAINT IF EXISTS %I',
                CASE r.relkind WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, r.nspname, r.relname, k.conname),
         NULL
    FROM pg_constraint k JOIN rel r ON r.oid = k.conrelid
  UNION ALL
  SELECT 'index ' || n.nspname || '.' || ic.relname,
         coalesce((SELECT 'constraint ' || r.qname || '.' || k.conname FROM pg_constraint k
                    WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid AND k.contype IN ('p', 'u', 'x')),
                  r.kind || ' ' || r.qname),
         format('DROP INDEX IF EXISTS %I.%I', n.nspname, ic.relname), NULL
    FROM pg_index i JOIN rel r ON r.oid = i.indrelid
    JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_namespace n ON n.oid = ic.relnamespace
  UNION ALL
  SELECT 'trigger ' || r.qname || '.' || g.tgname, r.kind || ' ' || r.qname,
         format('DROP TRIGGER IF EXISTS %I ON %I.%I', g.tgname, r.nspname, r.relname), NULL
    FROM pg_trigger g JOIN rel r ON r.oid = g.tgrelid WHERE NOT g.tgisinternal
  UNION ALL
  SELECT 'rule ' || r.qname || '.' || w.rulename, r.kind || ' ' || r.qname,
         format('DROP RULE IF EXISTS %I ON %I.%I', w.rulename, r.nspname, r.relname), NULL
    FROM pg_rewrite w JOIN rel r ON r.oid = w.ev_class WHERE w.rulename <> '_RETURN'
  UNION ALL
  SELECT 'policy ' || r.qname || '.' || p.polname, r.kind || ' ' || r.qname,
         format('DROP POLICY IF EXISTS %I ON %I.%I', p.polname, r.nspname, r.relname), NULL
    FROM pg_policy p JOIN rel r ON r.oid = p.polrelid
  UNION ALL
  SELECT CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' ELSE 'function' END
           || ' ' || n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
         NULL,
         format('DROP %s IF EXISTS %s',
                CASE p.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END,
                p.oid::regprocedure::text),
         NULL
    FROM pg_proc p JOIN ns n ON n.oid = p.pronamespace
  UNION ALL
  SELECT CASE t.typtype WHEN 'e' THEN 'enum' WHEN 'd' THEN 'domain' ELSE 'range type' END
           || ' ' || n.nspname || '.' || t.typname,
         NULL,
         format('DROP %s IF EXISTS %I.%I', CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, n.nspname, t.typname),
         NULL
    FROM pg_type t JOIN ns n ON n.oid = t.typnamespace WHERE t.typtype IN ('e', 'd', 'r')
  UNION ALL
  SELECT 'domain constraint ' || n.nspname || '.' || t.typname || '.' || k.conname,
         'domain ' || n.nspname || '.' || t.typname, NULL, NULL
    FROM pg_constraint k JOIN pg_type t ON t.oid = k.contypid JOIN ns n ON n.oid = t.typnamespace
  UNION ALL
  SELECT 'statistics ' || n.nspname || '.' || s.stxname, NULL,
         format('DROP STATISTICS IF EXISTS %I.%I', n.nspname, s.stxname), NULL
    FROM pg_statistic_ext s JOIN ns n ON n.oid = s.stxnamespace
  UNION ALL
  SELECT 'collation ' || n.nspname || '.' || c.collname, NULL,
         format('DROP COLLATION IF EXISTS %I.%I', n.nspname, c.collname), NULL
    FROM pg_collation c JOIN ns n ON n.oid = c.collnamespace
  UNION ALL
  SELECT 'extension ' || e.extname, NULL, format('DROP EXTENSION IF EXISTS %I', e.extname), NULL
    FROM pg_extension e
  UNION ALL
  SELECT 'extension member ' || o.type || ' ' || o.identity, 'extension ' || e.extname, NULL, NULL
    FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
    CROSS JOIN LATERAL pg_identify_object(d.classid, d.objid, 0) o
   WHERE d.deptype = 'e' AND d.refclassid = 'pg_extension'::regclass
  UNION ALL
  SELECT 'role ' || r.rolname, NULL, format('DROP ROLE IF EXISTS %I', r.rolname), NULL
    FROM pg_roles r WHERE r.rolname !~ '^pg_'
  UNION ALL
  SELECT 'membership ' || pg_get_userbyid(m.member) || ' in ' || pg_get_userbyid(m.roleid), NULL,
         format('REVOKE %I FROM %I', pg_get_userbyid(m.roleid), pg_get_userbyid(m.member)), NULL
    FROM pg_auth_members m
)
SELECT key, owner, drop, count FROM objs WHERE key = ANY ($1::text[])
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(keys: &[&str]) -> Vec<String> {
        keys.iter().map(|k| k.to_string()).collect()
    }

    #[test]
    fn a_new_table_with_its_parts_and_a_new_trigger_can_be_dropped() {
        let created = keys(&[
            "table public.notes",
            "owner of table public.notes",
            "grants on table public.notes",
            "column public.notes.id",
            "column public.notes.body",
            "constraint public.notes.notes_pkey",
            "index public.notes_pkey",
            "sequence public.notes_id_seq",
            "function public.set_updated_at()",
            "owner of function public.set_updated_at()",
            "trigger public.orders.set_updated_at",
            "materialized view public.totals",
            "column public.totals.n",
        ]);
        assert_eq!(undroppable(&created), None);
    }

    #[test]
    fn what_alters_an_existing_object_cannot_be_dropped() {
        // A column added to a table the step did not create.
        let added = keys(&["column public.orders.sku"]);
        assert_eq!(undroppable(&added), Some("column public.orders.sku"));
        // A comment on an existing table.
        let comment = keys(&["comment on table public.orders"]);
        assert_eq!(undroppable(&comment), Some("comment on table public.orders"));
        // A column whose name merely starts like a new table's.
        let prefix = keys(&["table public.note", "column public.notes.body"]);
        assert_eq!(undroppable(&prefix), Some("column public.notes.body"));
        // Kinds an undo does not drop.
        for kind in ["database this database", "tablespace fast", "settings every role in this database"] {
            assert_eq!(undroppable(&keys(&[kind])), Some(kind));
        }
    }

    #[test]
    fn kinds_with_spaces_split_at_the_longest_kind() {
        assert_eq!(
            split("materialized view public.v"),
            Some(("materialized view", "public.v"))
        );
        assert_eq!(
            split("domain constraint public.d.positive"),
            Some(("domain constraint", "public.d.positive"))
        );
        assert_eq!(split("extension member function public.f()").map(|s| s.0), Some("extension member"));
    }
}
