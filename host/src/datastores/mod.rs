//! Native datastore drivers behind the capabilities. They know nothing of
//! WebAssembly: capabilities translate between WIT types and these.

pub mod postgres;
pub mod redis;
pub mod sqlite;

use std::collections::BTreeMap;

use crate::plan::{SqliteFiles, TargetKind};
use crate::secret::Secret;

/// Where a target is reached, resolved from the plan (secrets read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A database file, with the files attached to it.
    File(SqliteFiles),
    /// A server URL.
    Url(Secret),
}

/// The host's own, plugin-independent measurement of a target: the schema
/// and the content of `scope` (tables, or key prefixes for key-value
/// targets). Used to check a backup's claims and to prove a rollback.
pub async fn fingerprint(
    kind: TargetKind,
    endpoint: &Endpoint,
    scope: Vec<String>,
) -> Result<Fingerprint, DatastoreError> {
    match (kind, endpoint) {
        (TargetKind::Sqlite, Endpoint::File(files)) => {
            let files = files.clone();
            tokio::task::spawn_blocking(move || sqlite::fingerprint(&files, Some(&scope)))
                .await
                .unwrap_or_else(|e| Err(DatastoreError::host("SLUICE_TASK", e.to_string())))
        }
        (TargetKind::Postgres, Endpoint::Url(url)) => postgres::fingerprint(url, &scope).await,
        (TargetKind::Redis, Endpoint::Url(url)) => redis::fingerprint(url, &scope).await,
        (kind, _) => Err(DatastoreError::host(
            "SLUICE_UNSUPPORTED",
            format!(
                "fingerprints of {} targets are not wired yet",
                kind.as_str()
            ),
        )),
    }
}

/// Estimates, read-only, how many bytes a backup of `scope` will hold:
/// tables of SQL targets, key prefixes of key-value targets; `None` (or an
/// empty scope) means the whole target. Measured by the host, never by a
/// plugin, for `sluice plan`.
pub async fn estimate_backup(
    kind: TargetKind,
    endpoint: &Endpoint,
    scope: Option<Vec<String>>,
) -> Result<u64, DatastoreError> {
    let scope = scope.filter(|s| !s.is_empty());
    match (kind, endpoint) {
        (TargetKind::Sqlite, Endpoint::File(files)) => {
            if !files.path.exists() {
                return Err(DatastoreError::host(
                    "SQLITE_CANTOPEN",
                    format!("{} does not exist", files.path.display()),
                ));
            }
            let files = files.clone();
            tokio::task::spawn_blocking(move || sqlite::estimate_backup(&files, scope.as_deref()))
                .await
                .unwrap_or_else(|e| Err(DatastoreError::host("SLUICE_TASK", e.to_string())))
        }
        (TargetKind::Postgres, Endpoint::Url(url)) => {
            postgres::estimate_backup(url, scope.as_deref()).await
        }
        (TargetKind::Redis, Endpoint::Url(url)) => {
            redis::estimate_backup(url, scope.as_deref().unwrap_or_default()).await
        }
        (kind, _) => Err(DatastoreError::host(
            "SLUICE_UNSUPPORTED",
            format!("a {} target is not reached that way", kind.as_str()),
        )),
    }
}

/// One SQL value, as drivers exchange it.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// NULL.
    Null,
    /// A 64-bit integer.
    Integer(i64),
    /// A 64-bit float.
    Real(f64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

/// Rows in sluice's row encoding (`sluice_sdk::row`), as they cross the
/// plugin boundary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rows {
    /// Column names (for `query`; empty for cursor batches).
    pub columns: Vec<String>,
    /// Values per row.
    pub width: usize,
    /// Number of rows.
    pub rows: usize,
    /// The encoded values.
    pub data: Vec<u8>,
}

/// An error from a datastore, with the driver's code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DatastoreError {
    /// Driver code, such as `SQLITE_CONSTRAINT_UNIQUE`.
    pub code: String,
    /// Driver message.
    pub message: String,
}

impl DatastoreError {
    /// An error that is not the datastore's own (misuse, closed connection).
    pub fn host(code: &str, message: impl Into<String>) -> Self {
        DatastoreError {
            code: code.to_string(),
            message: message.into(),
        }
    }
}

/// Row count and checksum of one table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableFingerprint {
    /// Rows.
    pub rows: u64,
    /// Order-independent checksum of the rows (see `sluice_sdk::checksum`).
    pub checksum: String,
}

/// The state of a whole database: schema and every table's content.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fingerprint {
    /// sha256 over every schema object (kind, name, definition), sorted.
    pub schema: String,
    /// Each schema object (`kind name`, such as `trigger public.items.notify`)
    /// → a short digest of its definition, so a failed proof names what
    /// differs. Empty in fingerprints recorded before it existed (and for
    /// key-value targets): then only `schema` is compared.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub objects: BTreeMap<String, String>,
    /// Every user table.
    pub tables: BTreeMap<String, TableFingerprint>,
}

impl Fingerprint {
    /// What differs from `other`, one line per difference.
    pub fn differences(&self, other: &Fingerprint) -> Vec<String> {
        let mut out = Vec::new();
        if self.schema != other.schema {
            let objects = object_differences(&self.objects, &other.objects);
            if objects.is_empty() {
                out.push("schema differs".to_string());
            } else {
                let more = objects.len().saturating_sub(MAX_LISTED_OBJECTS);
                out.extend(objects.into_iter().take(MAX_LISTED_OBJECTS));
                if more > 0 {
                    out.push(format!("and {more} more schema objects differ"));
                }
            }
        }
        for (name, t) in &self.tables {
            match other.tables.get(name) {
                None => out.push(format!("table `{name}` is missing")),
                Some(o) if o != t => out.push(format!(
                    "table `{name}`: {} rows (checksum {}) instead of {} rows (checksum {})",
                    o.rows, o.checksum, t.rows, t.checksum
                )),
                Some(_) => {}
            }
        }
        for name in other
            .tables
            .keys()
            .filter(|n| !self.tables.contains_key(*n))
        {
            out.push(format!("table `{name}` exists but did not before"));
        }
        out
    }
}

/// Schema objects a proof lists by name before summing up the rest: enough
/// to see what a restore lost, short enough for one journal line.
const MAX_LISTED_OBJECTS: usize = 20;

/// `before` → `after`, one line per schema object missing, added or changed
/// (`trigger public.items.notify_items missing`). Empty when either side has
/// no object list (a fingerprint recorded before lists existed).
fn object_differences(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Vec<String> {
    if before.is_empty() || after.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (key, digest) in before {
        match after.get(key) {
            None => out.push(format!("{key} missing")),
            Some(d) if d != digest => out.push(match key.strip_prefix("enum ") {
                Some(name) => format!("enum {name} labels differ"),
                None => format!("{key} differs"),
            }),
            Some(_) => {}
        }
    }
    out.extend(
        after
            .keys()
            .filter(|k| !before.contains_key(*k))
            .map(|key| format!("{key} exists but did not before")),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fingerprint(schema: &str, objects: &[(&str, &str)]) -> Fingerprint {
        Fingerprint {
            schema: schema.to_string(),
            objects: objects
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            tables: BTreeMap::new(),
        }
    }

    #[test]
    fn a_failed_proof_names_the_objects_that_differ() {
        let before = fingerprint(
            "a",
            &[
                ("trigger public.items.notify_items", "1"),
                ("enum public.mood", "2"),
                ("table public.items", "3"),
            ],
        );
        let after = fingerprint(
            "b",
            &[
                ("enum public.mood", "9"),
                ("table public.items", "3"),
                ("role reporter", "4"),
            ],
        );
        assert_eq!(
            before.differences(&after),
            [
                "enum public.mood labels differ",
                "trigger public.items.notify_items missing",
                "role reporter exists but did not before",
            ]
        );
        // A fingerprint recorded before object lists existed: the digest alone.
        let old = fingerprint("a", &[]);
        assert_eq!(old.differences(&after), ["schema differs"]);
        assert!(before.differences(&before.clone()).is_empty());
    }

    #[test]
    fn a_long_list_of_differences_is_summed_up() {
        let names: Vec<String> = (0..25).map(|i| format!("index public.i{i:02}")).collect();
        let before = fingerprint(
            "a",
            &names.iter().map(|n| (n.as_str(), "1")).collect::<Vec<_>>(),
        );
        let after = fingerprint("b", &[("schema public", "1")]);
        let differences = before.differences(&after);
        assert_eq!(differences.len(), MAX_LISTED_OBJECTS + 1);
        assert_eq!(
            differences.last().unwrap(),
            "and 6 more schema objects differ"
        );
    }
}
