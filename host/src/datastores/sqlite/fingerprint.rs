//! The host's own measurements of a SQLite target: fingerprints and backup
//! size estimates, read-only.

use std::collections::BTreeMap;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use sluice_sdk::checksum::TableChecksum;
use sluice_sdk::row::ValueRef as RowValue;

use super::error;
use super::session::{quote, row_value, BUSY_TIMEOUT};
use crate::datastores::{DatastoreError, Fingerprint, TableFingerprint};
use crate::plan::SqliteFiles;

/// Fingerprints a database: the host's own, plugin-independent measurement,
/// used to check a backup's claims and to prove a rollback restored the
/// pre-step state. The schema (every object's name and SQL) is always
/// covered; table contents for `tables` only (all tables when `None`).
/// Attached files are covered alike, their objects and tables named
/// `schema.name`; one that does not exist counts as empty.
pub fn fingerprint(
    files: &SqliteFiles,
    tables: Option<&[String]>,
) -> Result<Fingerprint, DatastoreError> {
    let (conn, schemas) = open_read_only(files)?;
    // One read transaction: a consistent view of all tables.
    conn.execute_batch("BEGIN").map_err(error)?;
    let mut schema = sha2::Sha256::default();
    let mut measured = Vec::new();
    // (type, qualified name, sql) of every object, for a proof that names
    // what differs.
    let mut lines: Vec<(String, String, String)> = Vec::new();
    for db in &schemas {
        use sha2::Digest;
        let mut stmt = conn
            .prepare(&format!("SELECT type, name, coalesce(sql, '') FROM {}.sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name", quote(db)))
            .map_err(error)?;
        let mut rows = stmt.query([]).map_err(error)?;
        while let Some(row) = rows.next().map_err(error)? {
            let (kind, name, sql): (String, String, String) = (
                row.get(0).map_err(error)?,
                row.get(1).map_err(error)?,
                row.get(2).map_err(error)?,
            );
            let full = qualified(db, &name);
            for part in [&kind, &full, &sql] {
                schema.update((part.len() as u64).to_le_bytes());
                schema.update(part.as_bytes());
            }
            if kind == "table" && tables.is_none_or(|only| only.contains(&full)) {
                measured.push((full.clone(), format!("{}.{}", quote(db), quote(&name))));
            }
            lines.push((kind, full, sql));
        }
    }
    let objects = crate::datastores::postgres::schema_digest::summarize(
        lines
            .iter()
            .map(|(kind, full, sql)| (format!("{kind} {full}"), sql.as_str())),
    );
    let mut out = BTreeMap::new();
    for (table, sql_name) in measured {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM {sql_name}"))
            .map_err(error)?;
        let width = stmt.column_count();
        let mut rows = stmt.query([]).map_err(error)?;
        let mut checksum = TableChecksum::new();
        while let Some(row) = rows.next().map_err(error)? {
            // Text as the plugin sees it (made UTF-8), so both checksums agree.
            let mut texts = Vec::with_capacity(width);
            let mut values = Vec::with_capacity(width);
            for i in 0..width {
                let v = row.get_ref(i).map_err(error)?;
                texts.push(match v {
                    ValueRef::Text(t) => Some(String::from_utf8_lossy(t)),
                    _ => None,
                });
                values.push(v);
            }
            checksum.add_row(values.iter().zip(&texts).map(|(v, t)| match t {
                Some(t) => RowValue::Text(t),
                None => row_value(*v),
            }));
        }
        out.insert(
            table,
            TableFingerprint {
                rows: checksum.rows(),
                checksum: checksum.hex(),
            },
        );
    }
    use sha2::Digest;
    Ok(Fingerprint {
        schema: hex::encode(schema.finalize()),
        objects,
        tables: out,
        sequences: BTreeMap::new(),
    })
}

/// Estimates, read-only, the bytes a backup of `tables` (every table when
/// `None`) will hold: each table's pages as `dbstat` counts them; without
/// `dbstat`, the whole file (`page_count * page_size`) when unscoped, else
/// the stored length of every value. Tables that do not exist count 0.
/// Attached files count alike (tables named `schema.table`).
pub fn estimate_backup(
    files: &SqliteFiles,
    tables: Option<&[String]>,
) -> Result<u64, DatastoreError> {
    let (conn, schemas) = open_read_only(files)?;
    conn.execute_batch("BEGIN").map_err(error)?;
    let mut names: Vec<(String, String)> = Vec::new();
    for db in &schemas {
        let mut stmt = conn
            .prepare(&format!(
                "SELECT name FROM {}.sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
                quote(db)
            ))
            .map_err(error)?;
        let all = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(error)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(error)?;
        names.extend(
            all.into_iter()
                .filter(|t| tables.is_none_or(|only| only.contains(&qualified(db, t))))
                .map(|t| (db.clone(), t)),
        );
    }
    let dbstat = |db: &str, table: &str| -> rusqlite::Result<i64> {
        conn.query_row(
            "SELECT coalesce(sum(pgsize), 0) FROM dbstat(?1) WHERE name = ?2",
            [db, table],
            |r| r.get(0),
        )
    };
    let mut total: u64 = 0;
    for (db, table) in &names {
        let bytes = match dbstat(db, table) {
            Ok(n) => n,
            Err(_) if tables.is_none() => {
                // No dbstat: the whole files are the honest upper bound.
                let mut whole: u64 = 0;
                for db in &schemas {
                    let n = conn
                        .query_row(
                            "SELECT page_count * page_size FROM pragma_page_count(?1), pragma_page_size(?1)",
                            [db],
                            |r| r.get::<_, i64>(0),
                        )
                        .map_err(error)?;
                    whole = whole.saturating_add(n.max(0) as u64);
                }
                return Ok(whole);
            }
            Err(_) => stored_length(&conn, db, table).map_err(error)?,
        };
        total = total.saturating_add(bytes.max(0) as u64);
    }
    Ok(total)
}

/// A read-only connection to the database with its existing attached files
/// attached; returns it and the schema names to read (`main` first).
fn open_read_only(files: &SqliteFiles) -> Result<(Connection, Vec<String>), DatastoreError> {
    let conn = Connection::open_with_flags(
        &files.path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(error)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(error)?;
    let mut schemas = vec!["main".to_string()];
    for (schema, path) in &files.attach {
        // A file not created yet holds nothing: no objects, no tables.
        if path.is_file() {
            conn.execute(
                &format!("ATTACH DATABASE ?1 AS {}", quote(schema)),
                [path.to_string_lossy()],
            )
            .map_err(error)?;
            schemas.push(schema.clone());
        }
    }
    Ok((conn, schemas))
}

/// How a table of schema `db` is named in scopes, manifests and fingerprints:
/// plain in the database itself, `schema.table` in an attached file.
fn qualified(db: &str, table: &str) -> String {
    if db == "main" {
        table.to_string()
    } else {
        format!("{db}.{table}")
    }
}

/// Sum of the stored length of every value of `table` in schema `db`.
fn stored_length(conn: &Connection, db: &str, table: &str) -> rusqlite::Result<i64> {
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info(?1, ?2)")?
        .query_map([table, db], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if columns.is_empty() {
        return Ok(0);
    }
    let lengths: Vec<String> = columns
        .iter()
        .map(|c| format!("coalesce(length(CAST({} AS BLOB)), 0)", quote(c)))
        .collect();
    conn.query_row(
        &format!(
            "SELECT coalesce(sum({}), 0) FROM {}.{}",
            lengths.join(" + "),
            quote(db),
            quote(table)
        ),
        [],
        |r| r.get(0),
    )
}
