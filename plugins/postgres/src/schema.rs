//! What the backup saves about the schema: each backed-up table's DDL (to
//! recreate it if the step dropped or reshaped it), read from the catalogs,
//! and a digest of the whole schema (to tell, in rollback, whether anything
//! changed at all).

use serde::{Deserialize, Serialize};
use sluice_sdk::sql::{Connection, Value};
use sluice_sdk::Error;

use crate::names::{quote_ident, quote_literal, TableName};

/// Name of the artifact holding the [`SchemaSnapshot`].
pub const SCHEMA_ARTIFACT: &str = "schema.json";

/// The `schema.json` artifact.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SchemaSnapshot {
    /// Format of this artifact.
    pub format: u32,
    /// The backed-up tables, in the order rollback loads them (a table
    /// before the tables whose foreign keys reference it).
    pub tables: Vec<TableDdl>,
}

/// One backed-up table: how to recreate it and where its rows are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableDdl {
    /// Name as in the manifest.
    pub name: String,
    /// Schema.
    pub schema: String,
    /// Table.
    pub table: String,
    /// Artifact holding its rows (`COPY (SELECT * FROM t) TO STDOUT`, text format).
    pub artifact: String,
    /// Columns in order.
    pub columns: Vec<ColumnDdl>,
    /// Constraints (primary key, unique, check, exclusion, foreign keys).
    pub constraints: Vec<ConstraintDdl>,
    /// Indexes that do not back a constraint.
    pub indexes: Vec<IndexDdl>,
}

/// One column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnDdl {
    /// Column name.
    pub name: String,
    /// Type, as `format_type` spells it.
    pub type_sql: String,
    /// `NOT NULL`.
    pub not_null: bool,
    /// Default expression (or generation expression when `generated`).
    pub default: Option<String>,
    /// `a` (always) or `d` (by default) for identity columns.
    pub identity: Option<String>,
    /// Stored generated column.
    pub generated: bool,
    /// Sequence a `serial` column draws from (`schema.seq`, quoted as needed).
    pub sequence: Option<String>,
}

/// One constraint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConstraintDdl {
    /// Constraint name.
    pub name: String,
    /// `p`, `u`, `c`, `x` or `f`.
    pub kind: String,
    /// `pg_get_constraintdef` text.
    pub definition: String,
    /// For a foreign key: the referenced table, as `regclass` prints it.
    pub references: Option<String>,
}

/// One index not owned by a constraint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexDdl {
    /// Index name.
    pub name: String,
    /// `pg_get_indexdef` text (`CREATE INDEX …`).
    pub definition: String,
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Text(s) => Some(s.clone()),
        Value::Integer(i) => Some(i.to_string()),
        _ => None,
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Integer(i) => *i != 0,
        Value::Text(t) => t == "t" || t == "true",
        _ => false,
    }
}

/// Whether the table exists (as a table).
pub fn exists(conn: &Connection, name: &TableName) -> Result<bool, Error> {
    let v = conn.query_value(
        "SELECT count(*) FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
        &[name.schema.as_str().into(), name.table.as_str().into()],
    )?;
    Ok(truthy(&v))
}

/// Columns of an existing table, in order.
pub fn columns(conn: &Connection, name: &TableName) -> Result<Vec<ColumnDdl>, Error> {
    let rows = conn.query(
        "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull, \
                pg_catalog.pg_get_expr(d.adbin, d.adrelid), a.attidentity::text, \
                a.attgenerated::text, \
                CASE WHEN a.attidentity = '' THEN pg_catalog.pg_get_serial_sequence($3, a.attname) END \
         FROM pg_catalog.pg_attribute a \
         JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
         WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped \
         ORDER BY a.attnum",
        &[
            name.schema.as_str().into(),
            name.table.as_str().into(),
            name.quoted().into(),
        ],
    )?;
    Ok(rows
        .values()?
        .iter()
        .map(|r| ColumnDdl {
            name: text(&r[0]).unwrap_or_default(),
            type_sql: text(&r[1]).unwrap_or_default(),
            not_null: truthy(&r[2]),
            default: text(&r[3]),
            identity: text(&r[4]).filter(|s| !s.is_empty()),
            generated: text(&r[5]).is_some_and(|s| !s.is_empty()),
            sequence: text(&r[6]),
        })
        .collect())
}

/// Constraints of an existing table, foreign keys last.
pub fn constraints(conn: &Connection, name: &TableName) -> Result<Vec<ConstraintDdl>, Error> {
    let rows = conn.query(
        "SELECT conname, contype::text, pg_catalog.pg_get_constraintdef(oid), \
                CASE WHEN contype = 'f' THEN confrelid::regclass::text END \
         FROM pg_catalog.pg_constraint WHERE conrelid = $1::regclass \
         ORDER BY contype = 'f', conname",
        &[name.quoted().into()],
    )?;
    Ok(rows
        .values()?
        .iter()
        .map(|r| ConstraintDdl {
            name: text(&r[0]).unwrap_or_default(),
            kind: text(&r[1]).unwrap_or_default(),
            definition: text(&r[2]).unwrap_or_default(),
            references: text(&r[3]),
        })
        .collect())
}

/// Indexes of an existing table that no constraint owns.
pub fn indexes(conn: &Connection, name: &TableName) -> Result<Vec<IndexDdl>, Error> {
    let rows = conn.query(
        "SELECT i.relname, pg_catalog.pg_get_indexdef(i.oid) \
         FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid \
         WHERE x.indrelid = $1::regclass AND NOT EXISTS ( \
             SELECT 1 FROM pg_catalog.pg_constraint k \
             WHERE k.conindid = x.indexrelid AND k.conrelid = x.indrelid \
               AND k.contype IN ('p', 'u', 'x')) \
         ORDER BY 1",
        &[name.quoted().into()],
    )?;
    Ok(rows
        .values()?
        .iter()
        .map(|r| IndexDdl {
            name: text(&r[0]).unwrap_or_default(),
            definition: text(&r[1]).unwrap_or_default(),
        })
        .collect())
}

/// Ordinary tables of a schema, by name (the default backup set).
pub fn tables_of(conn: &Connection, schema: &str) -> Result<Vec<TableName>, Error> {
    let rows = conn.query(
        "SELECT c.relname FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition \
         ORDER BY 1",
        &[schema.into()],
    )?;
    Ok(rows
        .values()?
        .iter()
        .filter_map(|r| text(&r[0]))
        .map(|table| TableName {
            schema: schema.to_string(),
            table,
        })
        .collect())
}

/// Every user table of every schema the session can see: not PostgreSQL's
/// own schemas (catalog, TOAST, temporary), not sluice's shared journal, not
/// tables an extension owns (PostGIS's `spatial_ref_sys`: the extension
/// recreates them, and they are not the project's data). Partitions are
/// reached through their parent.
pub fn user_tables(conn: &Connection) -> Result<Vec<TableName>, Error> {
    let rows = conn.query(
        "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
         AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'sluice_journal', 'sluice_capture') \
         AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%' \
         AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
             WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e') \
         ORDER BY 1, 2",
        &[],
    )?;
    Ok(rows
        .values()?
        .iter()
        .filter_map(|r| {
            Some(TableName {
                schema: text(&r[0])?,
                table: text(&r[1])?,
            })
        })
        .collect())
}

/// Reads a table's DDL.
pub fn table_ddl(conn: &Connection, name: &TableName, artifact: String) -> Result<TableDdl, Error> {
    Ok(TableDdl {
        name: name.display(),
        schema: name.schema.clone(),
        table: name.table.clone(),
        artifact,
        columns: columns(conn, name)?,
        constraints: constraints(conn, name)?,
        indexes: indexes(conn, name)?,
    })
}

impl TableDdl {
    /// The table's name, parsed.
    pub fn table_name(&self) -> TableName {
        TableName {
            schema: self.schema.clone(),
            table: self.table.clone(),
        }
    }

    /// Statements that recreate the table with its columns and every
    /// constraint except foreign keys (added once every table has its rows).
    pub fn create_statements(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut defs = Vec::new();
        for c in &self.columns {
            let mut def = format!("{} {}", quote_ident(&c.name), c.type_sql);
            if c.generated {
                if let Some(expr) = &c.default {
                    def.push_str(&format!(" GENERATED ALWAYS AS ({expr}) STORED"));
                }
            } else if let Some(kind) = &c.identity {
                let how = if kind == "a" { "ALWAYS" } else { "BY DEFAULT" };
                def.push_str(&format!(" GENERATED {how} AS IDENTITY"));
            } else if let Some(expr) = &c.default {
                def.push_str(&format!(" DEFAULT {expr}"));
            }
            if c.not_null {
                def.push_str(" NOT NULL");
            }
            if let Some(seq) = &c.sequence {
                // A serial's sequence is dropped with its table.
                out.push(format!("CREATE SEQUENCE IF NOT EXISTS {seq}"));
            }
            defs.push(def);
        }
        let table = self.table_name().quoted();
        out.push(format!("CREATE TABLE {table} ({})", defs.join(", ")));
        for c in &self.columns {
            if let Some(seq) = &c.sequence {
                out.push(format!(
                    "ALTER SEQUENCE {seq} OWNED BY {table}.{}",
                    quote_ident(&c.name)
                ));
            }
        }
        out
    }

    /// `ALTER TABLE … ADD CONSTRAINT …` for one constraint.
    pub fn add_constraint(&self, c: &ConstraintDdl) -> String {
        format!(
            "ALTER TABLE {} ADD CONSTRAINT {} {}",
            self.table_name().quoted(),
            quote_ident(&c.name),
            c.definition
        )
    }
}

/// Orders tables so that a table comes before the backed-up tables whose
/// foreign keys reference it (cycles keep the given order).
pub fn load_order(tables: Vec<TableDdl>) -> Vec<TableDdl> {
    let mut pending = tables;
    let mut out: Vec<TableDdl> = Vec::new();
    while !pending.is_empty() {
        let ready = pending.iter().position(|t| {
            t.constraints.iter().all(|c| match &c.references {
                Some(parent) => parent == &t.name || !pending.iter().any(|p| &p.name == parent),
                None => true,
            })
        });
        out.push(pending.remove(ready.unwrap_or(0)));
    }
    out
}

/// A PostgreSQL array literal of `items` (`{"a","b"}`), for a `$1::text[]`
/// parameter.
fn text_array<S: AsRef<str>>(items: &[S]) -> String {
    format!(
        "{{{}}}",
        items
            .iter()
            .map(|s| format!(
                "\"{}\"",
                s.as_ref().replace('\\', "\\\\").replace('"', "\\\"")
            ))
            .collect::<Vec<_>>()
            .join(",")
    )
}

/// One sequence's state at backup: what `setval(seq, last_value,
/// is_called)` puts back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceValue {
    /// Schema.
    pub schema: String,
    /// Sequence.
    pub name: String,
    /// `last_value`.
    pub last_value: i64,
    /// `is_called`: whether `last_value` was handed out already (`false`
    /// for a fresh or reset sequence, whose next value is `last_value`).
    pub is_called: bool,
}

impl SequenceValue {
    /// `"schema"."name"`, for SQL text.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    /// `schema.name`, for logs (as the host names it in a failed proof).
    pub fn display(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// Puts the value back when the sequence exists (a row), else nothing
    /// (no row). `setval` is not transactional.
    pub fn setval_statement(&self) -> String {
        format!(
            "SELECT pg_catalog.setval(s, {}, {}) FROM (SELECT pg_catalog.to_regclass({}) AS s) q \
             WHERE s IS NOT NULL",
            self.last_value,
            self.is_called,
            quote_literal(&self.quoted())
        )
    }
}

/// The sequences of `tables`: each one a serial or identity column of one
/// of them owns, unless a column default of a table outside them draws from
/// it too (then the application writes through it, and putting it back
/// could hand out ids its other table already holds). The host proves the
/// same set after a rollback (its `schema_digest::SEQUENCES_OF_TABLES`;
/// keep the two rules equal), and lets a step scoped to `tables` read them.
pub fn sequences_of(
    conn: &Connection,
    tables: &[TableName],
) -> Result<Vec<(String, String)>, Error> {
    if tables.is_empty() {
        return Ok(Vec::new());
    }
    let quoted: Vec<String> = tables.iter().map(TableName::quoted).collect();
    let rows = conn.query(
        "WITH t AS MATERIALIZED ( \
           SELECT DISTINCT pg_catalog.to_regclass(x) AS oid FROM unnest($1::text[]) x \
            WHERE pg_catalog.to_regclass(x) IS NOT NULL), \
         owned AS MATERIALIZED ( \
           SELECT DISTINCT d.objid AS oid FROM t JOIN pg_catalog.pg_depend d \
               ON d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid = t.oid \
            WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.deptype IN ('a', 'i')) \
         SELECT n.nspname::text, s.relname::text \
           FROM owned o \
           JOIN pg_catalog.pg_class s ON s.oid = o.oid AND s.relkind = 'S' \
           JOIN pg_catalog.pg_namespace n ON n.oid = s.relnamespace \
          WHERE NOT EXISTS ( \
              SELECT 1 FROM pg_catalog.pg_depend u JOIN pg_catalog.pg_attrdef ad ON ad.oid = u.objid \
               WHERE u.refclassid = 'pg_catalog.pg_class'::regclass AND u.refobjid = s.oid \
                 AND u.classid = 'pg_catalog.pg_attrdef'::regclass AND ad.adrelid NOT IN (SELECT oid FROM t)) \
          ORDER BY 1, 2",
        &[text_array(&quoted).into()],
    )?;
    Ok(rows
        .values()?
        .iter()
        .filter_map(|r| Some((text(&r[0])?, text(&r[1])?)))
        .collect())
}

/// `last_value` and `is_called` of every sequence of `tables`
/// ([`sequences_of`]), read in the phase's transaction (a sequence reads
/// the same in any snapshot: its value is not versioned).
pub fn sequence_values(
    conn: &Connection,
    tables: &[TableName],
) -> Result<Vec<SequenceValue>, Error> {
    let mut out = Vec::new();
    for (schema, name) in sequences_of(conn, tables)? {
        let mut seq = SequenceValue {
            schema,
            name,
            last_value: 0,
            is_called: false,
        };
        let rows = conn.query(
            &format!("SELECT last_value, is_called FROM {}", seq.quoted()),
            &[],
        )?;
        let values = rows.values()?;
        let [last_value, is_called] = values.first().map(Vec::as_slice).unwrap_or_default() else {
            return Err(Error::Internal(format!(
                "sequence `{}` read no last_value and is_called",
                seq.display()
            )));
        };
        seq.last_value = match last_value {
            Value::Integer(i) => *i,
            Value::Text(t) => t.parse().map_err(|_| {
                Error::Internal(format!("sequence `{}`: last_value `{t}`", seq.display()))
            })?,
            other => {
                return Err(Error::Internal(format!(
                    "sequence `{}`: last_value {other:?}",
                    seq.display()
                )))
            }
        };
        seq.is_called = truthy(is_called);
        out.push(seq);
    }
    Ok(out)
}

/// A digest of the schemas' columns, indexes and constraints, so rollback
/// can tell whether the step changed any of them.
pub fn schema_digest(conn: &Connection, schemas: &[String]) -> Result<String, Error> {
    let array = text_array(schemas);
    let v = conn.query_value(
        "SELECT md5(coalesce(string_agg(line, E'\\n' ORDER BY line), '')) FROM ( \
           SELECT 'column ' || n.nspname || '.' || c.relname || ' ' || a.attname || ' ' \
                  || pg_catalog.format_type(a.atttypid, a.atttypmod) || ' ' \
                  || a.attnotnull::text || ' ' || a.attidentity::text || a.attgenerated::text \
                  || ' ' || coalesce(pg_catalog.pg_get_expr(d.adbin, d.adrelid), '') AS line \
             FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
            WHERE n.nspname = ANY($1::text[]) AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
              AND a.attnum > 0 AND NOT a.attisdropped \
           UNION ALL \
           SELECT 'index ' || schemaname || ' ' || indexdef FROM pg_catalog.pg_indexes \
            WHERE schemaname = ANY($1::text[]) \
           UNION ALL \
           SELECT 'constraint ' || k.conrelid::regclass::text || ' ' || k.conname || ' ' \
                  || pg_catalog.pg_get_constraintdef(k.oid) \
             FROM pg_catalog.pg_constraint k \
             JOIN pg_catalog.pg_namespace n ON n.oid = k.connamespace \
            WHERE n.nspname = ANY($1::text[]) \
         ) s",
        &[array.into()],
    )?;
    text(&v).ok_or_else(|| Error::Internal("the schema digest query returned no text".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str, refs: &[&str]) -> TableDdl {
        TableDdl {
            name: name.into(),
            schema: "public".into(),
            table: name.into(),
            artifact: String::new(),
            columns: vec![ColumnDdl {
                name: "id".into(),
                type_sql: "integer".into(),
                not_null: true,
                default: Some("nextval('t_id_seq'::regclass)".into()),
                identity: None,
                generated: false,
                sequence: Some("public.t_id_seq".into()),
            }],
            constraints: refs
                .iter()
                .map(|r| ConstraintDdl {
                    name: format!("{name}_{r}_fk"),
                    kind: "f".into(),
                    definition: String::new(),
                    references: Some(r.to_string()),
                })
                .collect(),
            indexes: Vec::new(),
        }
    }

    #[test]
    fn parents_load_first() {
        let order: Vec<String> = load_order(vec![
            table("items", &["orders", "products"]),
            table("orders", &["customers"]),
            table("customers", &["customers"]),
            table("products", &["elsewhere"]),
        ])
        .into_iter()
        .map(|t| t.name)
        .collect();
        assert_eq!(order, ["customers", "orders", "products", "items"]);
    }

    #[test]
    fn sequences_are_set_back_by_their_quoted_names() {
        let seq = SequenceValue {
            schema: "Sales".into(),
            name: "o'rders \"id\"_seq".into(),
            last_value: 200,
            is_called: true,
        };
        assert_eq!(seq.display(), "Sales.o'rders \"id\"_seq");
        assert_eq!(
            seq.setval_statement(),
            "SELECT pg_catalog.setval(s, 200, true) FROM (SELECT pg_catalog.to_regclass('\"Sales\".\"o''rders \"\"id\"\"_seq\"') AS s) q WHERE s IS NOT NULL"
        );
        assert_eq!(text_array(&["a", "b\"c"]), r#"{"a","b\"c"}"#);
    }

    #[test]
    fn metadata_written_before_sequences_were_saved_still_reads() {
        let old: crate::BackupMetadata = serde_json::from_str(
            r#"{"format":1,"transactional":true,"schema_digest":"d","schemas":["public"],"baselines":{}}"#,
        )
        .unwrap();
        assert!(old.sequences.is_empty());
    }

    #[test]
    fn serial_columns_recreate_their_sequence() {
        let sql = table("t", &[]).create_statements();
        assert_eq!(
            sql,
            [
                "CREATE SEQUENCE IF NOT EXISTS public.t_id_seq",
                "CREATE TABLE \"public\".\"t\" (\"id\" integer DEFAULT nextval('t_id_seq'::regclass) NOT NULL)",
                "ALTER SEQUENCE public.t_id_seq OWNED BY \"public\".\"t\".\"id\"",
            ]
        );
    }
}
