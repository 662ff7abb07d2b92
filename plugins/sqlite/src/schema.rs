//! The schema snapshot stored with every backup.

use serde::{Deserialize, Serialize};
use sluice_sdk::sql::{quote_ident, Connection, Value};
use sluice_sdk::Error;

/// One entry of `sqlite_master`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaObject {
    /// `table`, `index`, `view` or `trigger`.
    pub kind: String,
    /// Object name.
    pub name: String,
    /// Table the object belongs to.
    pub table: String,
    /// The SQL that creates it (`None` for automatic indexes).
    pub sql: Option<String>,
}

/// A backed-up table: which columns the artifact holds, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableLayout {
    /// Table name.
    pub name: String,
    /// Artifact holding its rows.
    pub artifact: String,
    /// Whether the first value of each row is the rowid.
    pub with_rowid: bool,
    /// Column names after the optional rowid.
    pub columns: Vec<String>,
}

/// The `schema` artifact: every object before the step, and the table layouts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SchemaSnapshot {
    /// Format of this artifact.
    pub format: u32,
    /// All user objects of the database before the step.
    pub objects: Vec<SchemaObject>,
    /// The backed-up tables.
    pub tables: Vec<TableLayout>,
}

/// Name of the artifact holding the [`SchemaSnapshot`].
pub const SCHEMA_ARTIFACT: &str = "schema.json";

/// Reads all user objects from `sqlite_master`.
pub fn objects(conn: &Connection) -> Result<Vec<SchemaObject>, Error> {
    let rows = conn.query(
        "SELECT type, name, tbl_name, sql FROM sqlite_master \
         WHERE name NOT LIKE 'sqlite_%' ORDER BY rowid",
        &[],
    )?;
    let text = |v: &Value| match v {
        Value::Text(s) => Some(s.clone()),
        _ => None,
    };
    Ok(rows
        .values()?
        .iter()
        .map(|row| SchemaObject {
            kind: text(&row[0]).unwrap_or_default(),
            name: text(&row[1]).unwrap_or_default(),
            table: text(&row[2]).unwrap_or_default(),
            sql: text(&row[3]),
        })
        .collect())
}

/// Column names of a table (generated columns excluded: they cannot be inserted).
pub fn columns(conn: &Connection, table: &str) -> Result<Vec<String>, Error> {
    let rows = conn.query("SELECT name FROM pragma_table_info(?1)", &[table.into()])?;
    Ok(rows
        .values()?
        .iter()
        .filter_map(|row| match &row[0] {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        })
        .collect())
}

/// Whether restoring the table must carry its rowid explicitly: it has a
/// rowid (not `WITHOUT ROWID`) that is not already a column (an `INTEGER
/// PRIMARY KEY` is the rowid under another name).
pub fn needs_rowid(conn: &Connection, table: &str) -> Result<bool, Error> {
    if conn
        .query(
            &format!("SELECT rowid FROM {} LIMIT 0", quote_ident(table)),
            &[],
        )
        .is_err()
    {
        return Ok(false);
    }
    let pk = conn.query(
        "SELECT type FROM pragma_table_info(?1) WHERE pk > 0",
        &[table.into()],
    )?;
    let pk = pk.values()?;
    let integer_pk_alias =
        pk.len() == 1 && matches!(&pk[0][0], Value::Text(t) if t.eq_ignore_ascii_case("integer"));
    Ok(!integer_pk_alias)
}

/// The `SELECT` that reads a table in its artifact's column order.
pub fn select_rows(layout: &TableLayout) -> String {
    let mut cols: Vec<String> = layout.columns.iter().map(|c| quote_ident(c)).collect();
    if layout.with_rowid {
        cols.insert(0, "rowid".to_string());
    }
    format!(
        "SELECT {} FROM {}",
        cols.join(", "),
        quote_ident(&layout.name)
    )
}

/// The `INSERT` that restores a table from its artifact.
pub fn insert_rows(layout: &TableLayout) -> String {
    let mut cols: Vec<String> = layout.columns.iter().map(|c| quote_ident(c)).collect();
    if layout.with_rowid {
        cols.insert(0, "rowid".to_string());
    }
    let marks: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
    format!(
        "INSERT INTO {} ({}) VALUES ({})",
        quote_ident(&layout.name),
        cols.join(", "),
        marks.join(", ")
    )
}
