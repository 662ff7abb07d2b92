//! Native datastore drivers behind the capabilities. They know nothing of
//! WebAssembly: capabilities translate between WIT types and these.
//!
//! Each driver is one folder (`sqlite/`, `postgres/`, `redis/`) that
//! implements [`Datastore`] (and [`SqlSession`] or [`KvSession`] for the
//! sessions plugins use), and one line in the `drivers!` list below;
//! everything else reaches it through [`driver`].

pub mod changes;
mod driver;
mod kv_session;
mod sql_session;
mod urls;

/// Declares each driver's folder and registers its [`Datastore`]: one line
/// per driver, `folder::Driver`.
macro_rules! drivers {
    ($($folder:ident::$driver:ident),* $(,)?) => {
        $(pub mod $folder;)*
        /// Every registered driver.
        static DRIVERS: &[&dyn Datastore] = &[$(&$folder::$driver),*];
    };
}

drivers! {
    sqlite::Sqlite,
    postgres::Postgres,
    redis::Redis,
}

/// The driver of `kind` targets.
pub fn driver(kind: TargetKind) -> &'static dyn Datastore {
    DRIVERS
        .iter()
        .copied()
        .find(|d| d.kind() == kind)
        .unwrap_or_else(|| panic!("no datastore driver is registered for {}", kind.as_str()))
}

pub use driver::{
    BackupHold, CopyError, Datastore, RehearsalCopy, ScratchSource, ScratchTarget, TargetState,
};
pub use kv_session::{DumpedKey, KvResult, KvSession};
pub use sql_session::{
    CopyInStream, CopyOutStream, Interrupt, SessionOptions, SqlCursor, SqlSession,
};

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
    driver(kind).fingerprint(endpoint, scope).await
}

/// Holds `endpoint` still for a backup and its verification: the plugin's
/// backup and the host's fingerprint of it see one state.
pub async fn hold_for_backup(
    kind: TargetKind,
    endpoint: &Endpoint,
) -> Result<BackupHold, DatastoreError> {
    driver(kind).hold_for_backup(endpoint).await
}

/// [`fingerprint`] in a held backup's snapshot.
pub async fn fingerprint_in(
    kind: TargetKind,
    endpoint: &Endpoint,
    scope: Vec<String>,
    snapshot: Option<&str>,
) -> Result<Fingerprint, DatastoreError> {
    driver(kind).fingerprint_in(endpoint, scope, snapshot).await
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
    driver(kind).estimate_backup(endpoint, scope).await
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
    /// The values of the sequences of `tables` (PostgreSQL: each sequence a
    /// backed-up table's serial or identity column owns, unless a table
    /// outside them draws from it too), `schema.sequence` →
    /// `last_value=… is_called=…`. Kept apart from `schema`: they change
    /// with the data, not the schema. Empty for other kinds and in
    /// fingerprints recorded before sequence values were measured; a proof
    /// compares only the sequences its pre-step fingerprint lists.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sequences: BTreeMap<String, String>,
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
        // A sequence only `other` lists is new or newly owned by a measured
        // table: the schema digest reports that.
        for (name, value) in &self.sequences {
            match other.sequences.get(name) {
                None => out.push(format!("sequence `{name}` is missing (value was {value})")),
                Some(now) if now != value && !drawn_while_held(value, now) => {
                    out.push(format!("sequence `{name}`: {now} instead of {value}"))
                }
                Some(_) => {}
            }
        }
        out
    }
}

/// Whether a sequence found at `now` is behind the pre-step `value` only by
/// ids an application drew while the backup was held. Sequences are outside
/// every snapshot: the plugin reads one a moment before the host does, so a
/// faithful restore can put it back a little behind the host's reading —
/// never ahead, which is a rewind that did not happen. The ids in between
/// belonged to rows written after the backup's snapshot, which the restore
/// removed, so none is handed out twice.
fn drawn_while_held(value: &str, now: &str) -> bool {
    fn position(v: &str) -> Option<(i128, bool)> {
        let (last, called) = v.strip_prefix("last_value=")?.split_once(" is_called=")?;
        Some((last.parse().ok()?, called.parse().ok()?))
    }
    matches!((position(value), position(now)), (Some(before), Some(after)) if after < before)
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

    #[test]
    fn every_kind_has_exactly_one_driver() {
        for kind in [TargetKind::Sqlite, TargetKind::Postgres, TargetKind::Redis] {
            let n = DRIVERS.iter().filter(|d| d.kind() == kind).count();
            assert_eq!(n, 1, "{}", kind.as_str());
            assert_eq!(driver(kind).kind(), kind);
        }
    }

    #[tokio::test]
    async fn a_target_reached_the_wrong_way_is_an_error_not_a_panic() {
        let file = Endpoint::File(SqliteFiles::single("/nonexistent/x.db".into()));
        let url = Endpoint::Url(Secret::new("redis://127.0.0.1:1"));
        for (kind, endpoint) in [
            (TargetKind::Sqlite, &url),
            (TargetKind::Postgres, &file),
            (TargetKind::Redis, &file),
        ] {
            let e = fingerprint(kind, endpoint, vec![]).await.unwrap_err();
            assert_eq!(e.code, "SLUICE_UNSUPPORTED", "{e}");
            let e = estimate_backup(kind, endpoint, None).await.unwrap_err();
            assert_eq!(e.code, "SLUICE_UNSUPPORTED", "{e}");
        }
        let e = driver(TargetKind::Redis)
            .open_sql(
                &url,
                SessionOptions {
                    access: crate::plan::Access::ReadOnly,
                    tables: None,
                    statement_timeout: std::time::Duration::from_secs(1),
                    authorize: true,
                    snapshot: None,
                    capture: None,
                },
            )
            .await
            .err()
            .expect("Redis has no sql sessions");
        assert_eq!(e.code, "SLUICE_UNSUPPORTED", "{e}");
        let e = driver(TargetKind::Sqlite)
            .open_kv(&file)
            .await
            .err()
            .expect("SQLite has no kv sessions");
        assert_eq!(e.code, "SLUICE_UNSUPPORTED", "{e}");
    }

    fn fingerprint_of(schema: &str, objects: &[(&str, &str)]) -> Fingerprint {
        Fingerprint {
            schema: schema.to_string(),
            objects: objects
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            tables: BTreeMap::new(),
            sequences: BTreeMap::new(),
        }
    }

    #[test]
    fn a_failed_proof_names_the_objects_that_differ() {
        let before = fingerprint_of(
            "a",
            &[
                ("trigger public.items.notify_items", "1"),
                ("enum public.mood", "2"),
                ("table public.items", "3"),
            ],
        );
        let after = fingerprint_of(
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
        let old = fingerprint_of("a", &[]);
        assert_eq!(old.differences(&after), ["schema differs"]);
        assert!(before.differences(&before.clone()).is_empty());
    }

    #[test]
    fn a_failed_proof_names_the_sequences_whose_values_differ() {
        let mut before = fingerprint_of("a", &[]);
        before.sequences = BTreeMap::from([
            (
                "public.items_id_seq".to_string(),
                "last_value=200 is_called=true".to_string(),
            ),
            (
                "public.tags_id_seq".to_string(),
                "last_value=1 is_called=false".to_string(),
            ),
        ]);
        let mut after = before.clone();
        assert!(before.differences(&after).is_empty());
        after.sequences.insert(
            "public.items_id_seq".into(),
            "last_value=203 is_called=true".into(),
        );
        after.sequences.remove("public.tags_id_seq");
        after.sequences.insert(
            "public.new_seq".into(),
            "last_value=1 is_called=false".into(),
        );
        // Behind the host's pre-step reading: ids drawn while the backup was
        // held, whose rows the restore removed.
        let mut drawn = before.clone();
        drawn.sequences.insert(
            "public.items_id_seq".into(),
            "last_value=190 is_called=true".into(),
        );
        assert!(before.differences(&drawn).is_empty());
        assert_eq!(
            before.differences(&after),
            [
                "sequence `public.items_id_seq`: last_value=203 is_called=true instead of last_value=200 is_called=true",
                "sequence `public.tags_id_seq` is missing (value was last_value=1 is_called=false)",
            ]
        );
        // A pre-step fingerprint recorded before sequence values were
        // measured compares none.
        assert!(fingerprint_of("a", &[]).differences(&after).is_empty());
    }

    #[test]
    fn a_long_list_of_differences_is_summed_up() {
        let names: Vec<String> = (0..25).map(|i| format!("index public.i{i:02}")).collect();
        let before = fingerprint_of(
            "a",
            &names.iter().map(|n| (n.as_str(), "1")).collect::<Vec<_>>(),
        );
        let after = fingerprint_of("b", &[("schema public", "1")]);
        let differences = before.differences(&after);
        assert_eq!(differences.len(), MAX_LISTED_OBJECTS + 1);
        assert_eq!(
            differences.last().unwrap(),
            "and 6 more schema objects differ"
        );
    }
}
