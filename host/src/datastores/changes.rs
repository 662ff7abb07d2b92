//! Change sets: the rows a step's migrate changed, keyed, with their
//! before- and after-images, recorded by the host on the step's own
//! connections while migrate runs (never the application's), so a rollback
//! can undo exactly what the step did and keep every other write.
//!
//! A driver that records them ([`super::Datastore::captures_changes`])
//! feeds a [`ChangeCapture`] from its sessions; the engine stores the
//! [`ChangeSet`] it yields with the step's backup, and a rollback hands it
//! back to the driver's [`super::Datastore::undo_changes`]. The undo is a
//! transaction that, per key, finds the step's after-image and puts the
//! before-image back; a key the application changed since is a
//! [`Conflict`], and nothing is undone unless the operator decided to
//! discard such writes.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How many bytes of row images one migrate may record before the change
/// set is given up (the rollback then restores the backup): bounded memory
/// whatever a step changes.
pub const MAX_CAPTURE_BYTES: usize = 64 << 20;

/// One cell of a row image, exactly as the datastore holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cell {
    /// NULL.
    Null,
    /// An integer.
    Integer(i64),
    /// A float (compared by its bits, so a restored value is the same value).
    Real(f64),
    /// UTF-8 text.
    Text(String),
    /// Text whose bytes are not UTF-8, kept byte for byte.
    TextBytes(Vec<u8>),
    /// Bytes.
    Blob(Vec<u8>),
    /// A whole row in its datastore's canonical text form (PostgreSQL: a
    /// `COPY` text line, the form the host's fingerprint hashes).
    Line(String),
}

impl PartialEq for Cell {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Cell::Null, Cell::Null) => true,
            (Cell::Integer(a), Cell::Integer(b)) => a == b,
            (Cell::Real(a), Cell::Real(b)) => a.to_bits() == b.to_bits(),
            (Cell::Text(a), Cell::Text(b)) => a == b,
            (Cell::TextBytes(a), Cell::TextBytes(b)) | (Cell::Blob(a), Cell::Blob(b)) => a == b,
            (Cell::Line(a), Cell::Line(b)) => a == b,
            _ => false,
        }
    }
}

impl Cell {
    /// Bytes it takes, roughly, for the capture's bound.
    fn size(&self) -> usize {
        match self {
            Cell::Text(t) | Cell::Line(t) => t.len() + 16,
            Cell::TextBytes(b) | Cell::Blob(b) => b.len() + 16,
            _ => 16,
        }
    }
}

/// A row image: every column of the table, in its declared order (or one
/// [`Cell::Line`] holding them all).
pub type Image = Vec<Cell>;

/// How a change set names a row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Key {
    /// SQLite: the rowid.
    Rowid(i64),
    /// PostgreSQL: the primary key's columns, each in `COPY` text form.
    Columns(Vec<String>),
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Rowid(id) => write!(f, "{id}"),
            Key::Columns(columns) if columns.len() == 1 => f.write_str(&columns[0]),
            Key::Columns(columns) => write!(f, "({})", columns.join(", ")),
        }
    }
}

/// What the step did to one row: the row before its first change and after
/// its last (`None`: absent — inserted by the step, or deleted by it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowChange {
    /// The database the table is in (`main`, or an attached file's schema).
    pub database: String,
    /// The table.
    pub table: String,
    /// The row's key.
    pub key: Key,
    /// The row before the step changed it.
    pub before: Option<Image>,
    /// The row as the step left it.
    pub after: Option<Image>,
}

impl RowChange {
    /// `database.table`, as reports name it (`main.` left out).
    pub fn qualified_table(&self) -> String {
        qualified(&self.database, &self.table)
    }
}

/// What an undo finds at a row's key, against what the step did.
#[derive(Debug)]
pub enum Found {
    /// The row the step found: nothing to do.
    AsBefore,
    /// The row as the step left it: to put back.
    AsLeft,
    /// Changed since the step: a conflict (put back only if the operator
    /// discards later writes).
    ChangedSince(Conflict),
}

impl RowChange {
    /// Judges `now`, what is at this row's key, against the step's images
    /// `before` and `after` — all three in the form the driver compares
    /// rows in. One rule for every datastore.
    pub fn found<T: PartialEq>(
        &self,
        now: Option<T>,
        before: Option<T>,
        after: Option<T>,
    ) -> Found {
        if now == before {
            return Found::AsBefore;
        }
        if now == after {
            return Found::AsLeft;
        }
        let what = match (after, now) {
            (None, Some(_)) => "inserted since",
            (Some(_), None) => "deleted since",
            _ => "updated since",
        };
        Found::ChangedSince(Conflict {
            table: self.qualified_table(),
            key: self.key.clone(),
            what: what.into(),
        })
    }

    /// The error of an undo whose read-back found this row not at its
    /// pre-step image.
    pub fn unproven(&self) -> super::DatastoreError {
        super::DatastoreError::host(
            "SLUICE_UNDO_UNPROVEN",
            format!(
                "after the undo, row {} of `{}` does not hold its pre-step value",
                self.key,
                self.qualified_table()
            ),
        )
    }
}

/// `database.table` as fingerprints and reports name it (SQLite's `main.`
/// and PostgreSQL's `public.` left out).
pub fn qualified(database: &str, table: &str) -> String {
    if database == "main" || database == "public" {
        table.to_string()
    } else {
        format!("{database}.{table}")
    }
}

/// A plan's or fingerprint's table name as [`qualified`] spells it.
fn canonical(table: &str) -> &str {
    table
        .strip_prefix("main.")
        .or_else(|| table.strip_prefix("public."))
        .unwrap_or(table)
}

/// Everything a step's migrate changed, in the order each row was first
/// changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChangeSet {
    /// Format of this record (1).
    pub format: u32,
    /// The changed rows; a row changed and changed back is left out.
    pub rows: Vec<RowChange>,
    /// The tables every session of the step logged (`database.table`,
    /// `main.` left out): a change to any other table could go unseen.
    #[serde(default)]
    pub logged: std::collections::BTreeSet<String>,
    /// Sequences of the step's tables that migrate moved: name → (value
    /// before, value after), as fingerprints spell them. An undo sets one
    /// back only while it still holds the step's value (no one drew from
    /// it since).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sequences: BTreeMap<String, (String, String)>,
}

impl ChangeSet {
    /// Rows changed per table (`database.table`, `main.` left out).
    pub fn rows_per_table(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for row in &self.rows {
            *out.entry(row.qualified_table()).or_insert(0) += 1;
        }
        out
    }
}

impl ChangeSet {
    /// Whether the change set accounts for every change between two
    /// fingerprints of the tables it records changes in: the checksums are
    /// sums of row hashes, so `after − before` of such a table must equal
    /// the hashes of the rows the step left minus those it found, and the
    /// row counts alike. A change the recording missed (or an application's
    /// write in between) fails it, with the table named. A table it records
    /// nothing in is the application's business: the log's guard
    /// (`log_untouched` on SQLite) makes "nothing recorded" mean the step
    /// did not write it.
    pub fn accounts_for(
        &self,
        before: &super::Fingerprint,
        after: &super::Fingerprint,
    ) -> Result<(), String> {
        use sluice_sdk::checksum::TableChecksum;
        let mut sums: BTreeMap<String, (TableChecksum, TableChecksum)> = BTreeMap::new();
        for row in &self.rows {
            let (found, left) = sums.entry(row.qualified_table()).or_default();
            if let Some(image) = &row.before {
                add_image(found, image);
            }
            if let Some(image) = &row.after {
                add_image(left, image);
            }
        }
        for (table, then) in &before.tables {
            let Some(now) = after.tables.get(table) else {
                return Err(format!("table `{table}` is gone"));
            };
            let (found, left) = match sums.remove(canonical(table)) {
                Some(sums) => sums,
                // Logged and nothing recorded: the step did not write it.
                None if self.logged.contains(canonical(table)) => continue,
                // Not logged: the step must have left it as it was.
                None => Default::default(),
            };
            let parse = |hex: &str| u128::from_str_radix(hex, 16).ok();
            let (Some(then_sum), Some(now_sum)) = (parse(&then.checksum), parse(&now.checksum))
            else {
                return Err(format!("table `{table}` has no checksum sluice can read"));
            };
            if now.rows + found.rows() != then.rows + left.rows()
                || now_sum.wrapping_sub(then_sum) != left.sum().wrapping_sub(found.sum())
            {
                return Err(format!(
                    "the rows of table `{table}` changed in ways the change set does not record"
                ));
            }
        }
        Ok(())
    }
}

/// Adds a row image as the host's fingerprint hashes rows (text made UTF-8).
fn add_image(checksum: &mut sluice_sdk::checksum::TableChecksum, image: &Image) {
    use sluice_sdk::row::ValueRef;
    if let [Cell::Line(line)] = image.as_slice() {
        checksum.add_encoded_row(line.as_bytes());
        return;
    }
    let lossy: Vec<Option<String>> = image
        .iter()
        .map(|c| match c {
            Cell::TextBytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })
        .collect();
    checksum.add_row(
        image
            .iter()
            .zip(&lossy)
            .map(|(cell, lossy)| match (cell, lossy) {
                (_, Some(text)) => ValueRef::Text(text),
                (Cell::Null, _) => ValueRef::Null,
                (Cell::Integer(i), _) => ValueRef::Integer(*i),
                (Cell::Real(r), _) => ValueRef::Real(*r),
                (Cell::Text(t), _) => ValueRef::Text(t),
                (Cell::TextBytes(_), None) => unreachable!("text bytes are made UTF-8 above"),
                (Cell::Line(line), _) => ValueRef::Text(line),
                (Cell::Blob(b), _) => ValueRef::Blob(b),
            }),
    );
}

/// One row change as a session saw it, before its transaction committed.
#[derive(Debug, Clone)]
pub enum RowEvent {
    /// A row was inserted at `key`.
    Insert {
        /// Database.
        database: String,
        /// Table.
        table: String,
        /// Its key.
        key: Key,
        /// The new row.
        new: Image,
    },
    /// The row at `key` was deleted.
    Delete {
        /// Database.
        database: String,
        /// Table.
        table: String,
        /// Its key.
        key: Key,
        /// The row deleted.
        old: Image,
    },
}

impl RowEvent {
    fn size(&self) -> usize {
        let (database, table, image) = match self {
            RowEvent::Insert {
                database,
                table,
                new,
                ..
            } => (database, table, new),
            RowEvent::Delete {
                database,
                table,
                old,
                ..
            } => (database, table, old),
        };
        database.len() + table.len() + image.iter().map(Cell::size).sum::<usize>() + 32
    }
}

#[derive(Default)]
struct Captured {
    /// Row changes by (database, table, key), with the order of first change.
    rows: BTreeMap<(String, String, Key), (usize, RowChange)>,
    next: usize,
    bytes: usize,
    /// Why the change set was given up, once it was.
    given_up: Option<String>,
    /// Sessions still recording: their changes reach the capture when
    /// they close.
    open_sessions: usize,
    /// Tables every session so far logged (`None` before the first).
    logged: Option<std::collections::BTreeSet<String>>,
}

/// Where a step's sessions record the rows its migrate changes; shared by
/// every connection the plugin opens during the phase.
#[derive(Clone, Default)]
pub struct ChangeCapture(Arc<(Mutex<Captured>, Condvar)>);

impl std::fmt::Debug for ChangeCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChangeCapture")
    }
}

/// Two grants are equal when they record into the same capture.
impl PartialEq for ChangeCapture {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ChangeCapture {}

impl ChangeCapture {
    /// An empty capture.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Captured> {
        // A panic in a hook cannot leave the map half-updated in a way that
        // matters more than losing it: give the change set up instead.
        self.0 .0.lock().unwrap_or_else(|poisoned| {
            let mut c = poisoned.into_inner();
            c.given_up
                .get_or_insert_with(|| "the change recording failed".into());
            c
        })
    }

    /// A session started recording, logging `tables`.
    pub fn session_opened(&self, tables: std::collections::BTreeSet<String>) {
        let mut c = self.lock();
        c.open_sessions += 1;
        let logged = match c.logged.take() {
            Some(before) => before.intersection(&tables).cloned().collect(),
            None => tables,
        };
        c.logged = Some(logged);
    }

    /// A session closed with what its committed transactions changed (or
    /// why that cannot be known).
    pub fn session_closed(&self, events: Result<Vec<RowEvent>, String>) {
        match events {
            Ok(events) => self.commit(events),
            Err(why) => self.give_up(why),
        }
        let mut c = self.lock();
        c.open_sessions = c.open_sessions.saturating_sub(1);
        drop(c);
        self.0 .1.notify_all();
    }

    /// Records committed row events, in order.
    pub fn commit(&self, events: Vec<RowEvent>) {
        let mut c = self.lock();
        if c.given_up.is_some() {
            return;
        }
        for event in events {
            c.bytes += event.size();
            if c.bytes > MAX_CAPTURE_BYTES {
                c.rows.clear();
                c.given_up = Some(format!(
                    "the step changed more than {} MiB of rows",
                    MAX_CAPTURE_BYTES >> 20
                ));
                return;
            }
            let (database, table, key, image, inserted) = match event {
                RowEvent::Insert {
                    database,
                    table,
                    key,
                    new,
                } => (database, table, key, new, true),
                RowEvent::Delete {
                    database,
                    table,
                    key,
                    old,
                } => (database, table, key, old, false),
            };
            let next = c.next;
            let entry = c
                .rows
                .entry((database.clone(), table.clone(), key.clone()))
                .or_insert_with(|| {
                    (
                        next,
                        RowChange {
                            database,
                            table,
                            key,
                            // First seen inserted: absent before the step.
                            before: (!inserted).then(|| image.clone()),
                            after: None,
                        },
                    )
                });
            entry.1.after = inserted.then_some(image);
            c.next += 1;
        }
    }

    /// Whether the change set was given up already (more recording is
    /// wasted work).
    pub fn is_given_up(&self) -> bool {
        self.lock().given_up.is_some()
    }

    /// Gives the change set up (a rollback then restores the backup).
    pub fn give_up(&self, why: String) {
        let mut c = self.lock();
        c.rows.clear();
        c.given_up.get_or_insert(why);
    }

    /// Waits up to `wait` for every session to hand its changes over (and,
    /// on PostgreSQL, remove its recording); whether they all did.
    pub fn wait_closed(&self, wait: Duration) -> bool {
        let c = self.lock();
        let (_c, timeout) = self
            .0
             .1
            .wait_timeout_while(c, wait, |c| c.open_sessions > 0)
            .unwrap_or_else(|e| e.into_inner());
        !timeout.timed_out()
    }

    /// The change set, or why there is none to undo by, once every session
    /// has closed (waiting up to `wait` for the last ones).
    pub fn take(&self, wait: Duration) -> Result<ChangeSet, String> {
        if !self.wait_closed(wait) {
            return Err("a session of the step did not finish recording its changes".into());
        }
        let mut c = self.lock();
        if let Some(why) = c.given_up.take() {
            return Err(why);
        }
        let mut rows: Vec<(usize, RowChange)> = std::mem::take(&mut c.rows)
            .into_values()
            .filter(|(_, row)| row.before != row.after)
            .collect();
        rows.sort_by_key(|(order, _)| *order);
        Ok(ChangeSet {
            format: 1,
            rows: rows.into_iter().map(|(_, row)| row).collect(),
            logged: c.logged.take().unwrap_or_default(),
            sequences: BTreeMap::new(),
        })
    }
}

/// A row the step changed that the application changed since: undoing it
/// would discard the application's write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// `database.table` (`main.` left out).
    pub table: String,
    /// The row's key.
    pub key: Key,
    /// What the application did to it.
    pub what: String,
}

/// What an undo by change set did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Undone {
    /// Rows put back to their pre-step image, per table.
    pub rows: BTreeMap<String, u64>,
    /// Rows already at their pre-step image (an interrupted undo, or a
    /// migrate that committed nothing).
    pub already: u64,
    /// Rows the application had changed since, overwritten because the
    /// operator decided so (`--discard-later-writes`).
    pub discarded: Vec<Conflict>,
    /// Objects the step created, dropped, with the rows a table held then
    /// (the step's and any the application wrote into it).
    pub dropped: Vec<(String, Option<u64>)>,
    /// Sequences migrate moved that were drawn from since, so they keep
    /// their values (ids handed out stay unique).
    pub sequences_kept: Vec<String>,
}

/// The result of asking a driver to undo a change set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UndoOutcome {
    /// Undone and read back: every key holds its pre-step image.
    Undone(Undone),
    /// Nothing was undone: these rows changed since the step.
    Conflicts(Vec<Conflict>),
    /// Nothing was undone: the change set cannot be applied to the target as
    /// it is (the reason), so the backup is the way back.
    Unusable(String),
}

/// Conflicts summed up for a journal line: how many rows, per table, and the
/// first keys.
pub fn describe_conflicts(conflicts: &[Conflict]) -> Vec<String> {
    let mut per_table: BTreeMap<&str, Vec<&Conflict>> = BTreeMap::new();
    for c in conflicts {
        per_table.entry(c.table.as_str()).or_default().push(c);
    }
    per_table
        .into_iter()
        .map(|(table, rows)| {
            const SHOWN: usize = 10;
            let keys: Vec<String> = rows
                .iter()
                .take(SHOWN)
                .map(|c| format!("{} ({})", c.key, c.what))
                .collect();
            format!(
                "table `{table}`: {} row{} the step changed {} changed since (keys {}{})",
                rows.len(),
                if rows.len() == 1 { "" } else { "s" },
                if rows.len() == 1 { "was" } else { "were" },
                keys.join(", "),
                if rows.len() > SHOWN { ", …" } else { "" }
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(key: i64, v: i64) -> RowEvent {
        RowEvent::Insert {
            database: "main".into(),
            table: "t".into(),
            key: Key::Rowid(key),
            new: vec![Cell::Integer(v)],
        }
    }

    fn delete(key: i64, v: i64) -> RowEvent {
        RowEvent::Delete {
            database: "main".into(),
            table: "t".into(),
            key: Key::Rowid(key),
            old: vec![Cell::Integer(v)],
        }
    }

    #[test]
    fn first_before_and_last_after_per_key() {
        let capture = ChangeCapture::new();
        // An update is a delete and an insert at the same key.
        capture.commit(vec![delete(1, 10), insert(1, 11)]);
        capture.commit(vec![delete(1, 11), insert(1, 12)]);
        capture.commit(vec![insert(2, 20)]);
        capture.commit(vec![delete(3, 30)]);
        // Changed and changed back: nothing to undo.
        capture.commit(vec![
            delete(4, 40),
            insert(4, 41),
            delete(4, 41),
            insert(4, 40),
        ]);
        // Inserted and deleted by the step: nothing to undo.
        capture.commit(vec![insert(5, 50), delete(5, 50)]);
        let set = capture.take(Duration::ZERO).unwrap();
        let got: Vec<(Key, Option<Image>, Option<Image>)> = set
            .rows
            .iter()
            .map(|r| (r.key.clone(), r.before.clone(), r.after.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    Key::Rowid(1),
                    Some(vec![Cell::Integer(10)]),
                    Some(vec![Cell::Integer(12)])
                ),
                (Key::Rowid(2), None, Some(vec![Cell::Integer(20)])),
                (Key::Rowid(3), Some(vec![Cell::Integer(30)]), None),
            ]
        );
        assert_eq!(set.rows_per_table()["t"], 3);
    }

    #[test]
    fn a_capture_over_its_bound_is_given_up() {
        let capture = ChangeCapture::new();
        let big = "x".repeat(1 << 20);
        for key in 0..80 {
            capture.commit(vec![RowEvent::Insert {
                database: "main".into(),
                table: "t".into(),
                key: Key::Rowid(key),
                new: vec![Cell::Text(big.clone())],
            }]);
        }
        let why = capture.take(Duration::ZERO).unwrap_err();
        assert!(why.contains("64 MiB"), "{why}");
    }

    #[test]
    fn floats_compare_by_bits() {
        assert_eq!(Cell::Real(f64::NAN), Cell::Real(f64::NAN));
        assert_ne!(Cell::Real(0.0), Cell::Real(-0.0));
    }

    #[test]
    fn conflicts_are_summed_per_table() {
        let lines = describe_conflicts(&[
            Conflict {
                table: "orders".into(),
                key: Key::Rowid(3),
                what: "updated".into(),
            },
            Conflict {
                table: "orders".into(),
                key: Key::Columns(vec!["9".into()]),
                what: "deleted".into(),
            },
        ]);
        assert_eq!(
            lines,
            vec!["table `orders`: 2 rows the step changed were changed since (keys 3 (updated), 9 (deleted))"]
        );
    }
}
