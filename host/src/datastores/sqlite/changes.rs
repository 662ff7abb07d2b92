//! Change sets on SQLite: a step's read-write session gets a `TEMP`
//! trigger after every insert, update and delete of each table, logging
//! the row's rowid and its old and new values into a `temp` table. `TEMP`
//! triggers fire only for their own connection, so the log holds the
//! step's changes (and those of the triggers they fire) and nothing an
//! application does; being in `temp`, it commits and rolls back with the
//! step's transactions, savepoints included. When the session closes, the
//! log goes to the step's [`ChangeCapture`]. Tables that cannot be logged
//! (`WITHOUT ROWID`, generated columns, virtual tables) are not: the
//! engine's completeness check against its fingerprints then sends a step
//! that changed them to a restore.
//!
//! The undo runs in one `BEGIN IMMEDIATE` transaction with triggers
//! switched off for its connection (so a user's `updated_at` trigger cannot
//! rewrite the rows it puts back): each row must still be as the step left
//! it, then gets its pre-step image back and is read back before commit.

use std::collections::BTreeMap;

use rusqlite::config::DbConfig;
use rusqlite::hooks::AuthAction;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::error;
use super::session::{attach, quote, BUSY_TIMEOUT};
use super::TableScope;
use crate::datastores::changes::{
    qualified, Cell, ChangeCapture, ChangeSet, Found, Image, Key, RowChange, RowEvent, Undone,
    UndoOutcome,
};
use crate::datastores::DatastoreError;
use crate::plan::{Access, SqliteFiles};

/// The prefix of the host's `temp` log tables and triggers; the table
/// scope lets a session's own triggers write them.
pub(super) const LOG_PREFIX: &str = "sluice_capture_";

fn is_log(name: &str) -> bool {
    name.starts_with(LOG_PREFIX)
}

/// Whether a statement leaves the host's change log alone: only the log's
/// own triggers (`accessor`) insert into it, and nothing else writes,
/// drops, alters or hooks a trigger onto it or its triggers — so what the
/// log says the step did is all it did on the logged tables.
pub(super) fn log_untouched(accessor: Option<&str>, action: &AuthAction<'_>) -> bool {
    use AuthAction as A;
    match action {
        A::Insert { table_name } if is_log(table_name) => accessor.is_some_and(is_log),
        A::Delete { table_name }
        | A::Update { table_name, .. }
        | A::DropTable { table_name }
        | A::DropTempTable { table_name }
        | A::AlterTable { table_name, .. }
        | A::CreateTrigger { table_name, .. }
        | A::CreateTempTrigger { table_name, .. }
        | A::CreateIndex { table_name, .. }
        | A::CreateTempIndex { table_name, .. } => !is_log(table_name),
        A::DropTrigger { trigger_name, .. } | A::DropTempTrigger { trigger_name, .. } => {
            !is_log(trigger_name)
        }
        _ => true,
    }
}

/// One logged table.
struct Log {
    log: String,
    database: String,
    table: String,
    width: usize,
}

/// The logs of one session, flushed into its capture when it closes.
pub(super) struct Recorder {
    logs: Vec<Log>,
    capture: ChangeCapture,
}

/// Installs the logging triggers on `conn` (before its authorizer, which
/// would refuse them) for every table the session may write (`scope`). A
/// failure gives the change set up and leaves the session usable.
pub(super) fn record(
    conn: &Connection,
    capture: ChangeCapture,
    scope: Option<&TableScope>,
) -> Option<Recorder> {
    match install(conn, scope) {
        Ok((logs, out_of_scope)) => {
            // What the session cannot write counts as logged with nothing
            // in it: the authorizer refuses the step every write there.
            capture.session_opened(
                logs.iter()
                    .map(|l| qualified(&l.database, &l.table))
                    .chain(out_of_scope)
                    .collect(),
            );
            Some(Recorder { logs, capture })
        }
        Err(e) => {
            capture.give_up(format!("cannot record the step's changes: {e}"));
            None
        }
    }
}

/// The logs made, and the tables left out because the session may not
/// write them.
fn install(
    conn: &Connection,
    scope: Option<&TableScope>,
) -> Result<(Vec<Log>, Vec<String>), DatastoreError> {
    let tables: Vec<(String, String)> = conn
        .prepare(
            "SELECT schema, name FROM pragma_table_list \
             WHERE schema <> 'temp' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
        )
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .map_err(error)?;
    let mut logs = Vec::new();
    let mut out_of_scope = Vec::new();
    for (database, table) in tables {
        if scope.is_some_and(|scope| !scope.covers(&database, &table)) {
            out_of_scope.push(qualified(&database, &table));
            continue;
        }
        // A table that cannot be undone by rowid is not logged; the
        // engine's check of the log then refuses it a change set.
        let Ok(shape) = shape(conn, &database, &table)? else {
            continue;
        };
        let log = format!("{LOG_PREFIX}{}", logs.len());
        let width = shape.columns.len();
        let image = |row: &str| -> String {
            let cells: Vec<String> =
                shape.columns.iter().map(|c| format!("{row}.{}", quote(c))).collect();
            cells.join(", ")
        };
        let (old, new) = (image("OLD"), image("NEW"));
        let o: Vec<String> = (0..width).map(|k| format!("o{k}")).collect();
        let n: Vec<String> = (0..width).map(|k| format!("n{k}")).collect();
        let on = &shape.sql_name;
        conn.execute_batch(&format!(
            "CREATE TEMP TABLE {log} (seq INTEGER PRIMARY KEY, op, k_old, k_new, {o}, {n});
             CREATE TEMP TRIGGER {log}_i AFTER INSERT ON {on} BEGIN
               INSERT INTO {log} (op, k_new, {n}) VALUES ('i', NEW.rowid, {new}); END;
             CREATE TEMP TRIGGER {log}_u AFTER UPDATE ON {on} BEGIN
               INSERT INTO {log} (op, k_old, k_new, {o}, {n})
               VALUES ('u', OLD.rowid, NEW.rowid, {old}, {new}); END;
             CREATE TEMP TRIGGER {log}_d AFTER DELETE ON {on} BEGIN
               INSERT INTO {log} (op, k_old, {o}) VALUES ('d', OLD.rowid, {old}); END;",
            o = o.join(", "),
            n = n.join(", "),
        ))
        .map_err(|e| {
            let e = error(e);
            DatastoreError::host(&e.code, format!("logging table `{table}`: {}", e.message))
        })?;
        logs.push(Log {
            log,
            database,
            table,
            width,
        });
    }
    Ok((logs, out_of_scope))
}

impl Recorder {
    /// Hands what the session's committed transactions changed to the
    /// capture (a transaction left open is rolled back first, as closing
    /// the connection would).
    pub(super) fn finish(self, conn: &Connection) {
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        let rest = self.read(conn);
        self.capture.session_closed(rest);
    }

    /// Reads the logs in order, handing the capture a batch at a time (it
    /// bounds what it keeps); returns the last batch.
    fn read(&self, conn: &Connection) -> Result<Vec<RowEvent>, String> {
        const BATCH: usize = 4096;
        let mut events = Vec::new();
        for log in &self.logs {
            let mut stmt = conn
                .prepare(&format!("SELECT * FROM temp.{} ORDER BY seq", log.log))
                .map_err(|e| format!("reading the change log of `{}`: {e}", log.table))?;
            let mut rows = stmt.query([]).map_err(|e| e.to_string())?;
            while let Some(row) = rows.next().map_err(|e| e.to_string())? {
                let get = |i: usize| row.get_ref(i).map_err(|e| e.to_string());
                let image = |from: usize| -> Result<Image, String> {
                    (from..from + log.width).map(|i| get(i).map(cell)).collect()
                };
                let key = |i: usize| -> Result<Key, String> {
                    get(i)?.as_i64().map(Key::Rowid).map_err(|e| e.to_string())
                };
                let op = get(1)?.as_str().map_err(|e| e.to_string())?.to_string();
                let (old_at, new_at) = (4, 4 + log.width);
                let delete = |old: Image, k| RowEvent::Delete {
                    database: log.database.clone(),
                    table: log.table.clone(),
                    key: k,
                    old,
                };
                let insert = |new: Image, k| RowEvent::Insert {
                    database: log.database.clone(),
                    table: log.table.clone(),
                    key: k,
                    new,
                };
                match op.as_str() {
                    "i" => events.push(insert(image(new_at)?, key(3)?)),
                    "d" => events.push(delete(image(old_at)?, key(2)?)),
                    _ => {
                        events.push(delete(image(old_at)?, key(2)?));
                        events.push(insert(image(new_at)?, key(3)?));
                    }
                }
                if events.len() >= BATCH {
                    self.capture.commit(std::mem::take(&mut events));
                    if self.capture.is_given_up() {
                        return Ok(Vec::new());
                    }
                }
            }
        }
        Ok(events)
    }
}

fn cell(value: ValueRef<'_>) -> Cell {
    match value {
        ValueRef::Null => Cell::Null,
        ValueRef::Integer(i) => Cell::Integer(i),
        ValueRef::Real(r) => Cell::Real(r),
        ValueRef::Text(t) => match std::str::from_utf8(t) {
            Ok(s) => Cell::Text(s.to_string()),
            Err(_) => Cell::TextBytes(t.to_vec()),
        },
        ValueRef::Blob(b) => Cell::Blob(b.to_vec()),
    }
}

struct Bound<'a>(&'a Cell);

impl rusqlite::ToSql for Bound<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self.0 {
            Cell::Null => ValueRef::Null,
            Cell::Integer(i) => ValueRef::Integer(*i),
            Cell::Real(r) => ValueRef::Real(*r),
            Cell::Text(t) => ValueRef::Text(t.as_bytes()),
            Cell::TextBytes(b) => ValueRef::Text(b),
            Cell::Blob(b) => ValueRef::Blob(b),
            Cell::Line(l) => ValueRef::Text(l.as_bytes()),
        }))
    }
}

/// A table's name in SQL and its columns, in declared order.
struct Shape {
    sql_name: String,
    columns: Vec<String>,
}

/// Why a table's rows cannot be undone by rowid, if they cannot.
fn shape(conn: &Connection, database: &str, table: &str) -> Result<Result<Shape, String>, DatastoreError> {
    let listed: Option<(String, bool)> = conn
        .query_row(
            "SELECT type, wr FROM pragma_table_list WHERE schema = ?1 AND name = ?2",
            [database, table],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(error)?;
    match listed {
        None => return Ok(Err(format!("table `{table}` no longer exists"))),
        Some((kind, _)) if kind != "table" => {
            return Ok(Err(format!("`{table}` is a {kind}, not a table")))
        }
        Some((_, true)) => {
            return Ok(Err(format!(
                "table `{table}` is WITHOUT ROWID (its rows have no stable key to undo by)"
            )))
        }
        Some(_) => {}
    }
    let mut stmt = conn
        .prepare("SELECT name, hidden FROM pragma_table_xinfo(?1, ?2)")
        .map_err(error)?;
    let columns: Vec<(String, i64)> = stmt
        .query_map([table, database], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(error)?
        .collect::<Result<_, _>>()
        .map_err(error)?;
    if columns.iter().any(|(_, hidden)| *hidden != 0) {
        return Ok(Err(format!(
            "table `{table}` has generated or hidden columns, which cannot be written back"
        )));
    }
    Ok(Ok(Shape {
        sql_name: format!("{}.{}", quote(database), quote(table)),
        columns: columns.into_iter().map(|(name, _)| name).collect(),
    }))
}

fn current(conn: &Connection, shape: &Shape, key: i64) -> Result<Option<Image>, DatastoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {} FROM {} WHERE rowid = ?1",
            shape
                .columns
                .iter()
                .map(|c| quote(c))
                .collect::<Vec<_>>()
                .join(", "),
            shape.sql_name
        ))
        .map_err(error)?;
    stmt.query_row([key], |r| {
        (0..shape.columns.len())
            .map(|i| r.get_ref(i).map(cell))
            .collect::<Result<Image, _>>()
    })
    .optional()
    .map_err(error)
}

/// Puts `row`'s key back to `image` (`None`: no row), from whatever is there.
fn write(
    conn: &Connection,
    shape: &Shape,
    key: i64,
    now: &Option<Image>,
    image: &Option<Image>,
) -> Result<(), DatastoreError> {
    let columns: Vec<String> = shape.columns.iter().map(|c| quote(c)).collect();
    match (now, image) {
        (Some(_), None) => {
            conn.prepare_cached(&format!("DELETE FROM {} WHERE rowid = ?1", shape.sql_name))
                .and_then(|mut s| s.execute([key]))
                .map_err(error)?;
        }
        (None, Some(image)) => {
            let marks: Vec<String> = (1..=columns.len() + 1).map(|i| format!("?{i}")).collect();
            let key = Cell::Integer(key);
            let params = std::iter::once(&key).chain(image).map(Bound);
            conn.prepare_cached(&format!(
                "INSERT INTO {} (rowid, {}) VALUES ({})",
                shape.sql_name,
                columns.join(", "),
                marks.join(", ")
            ))
            .and_then(|mut s| s.execute(rusqlite::params_from_iter(params)))
            .map_err(error)?;
        }
        (Some(_), Some(image)) => {
            let sets: Vec<String> = columns
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c} = ?{}", i + 1))
                .collect();
            let key = Cell::Integer(key);
            let params = image.iter().chain(std::iter::once(&key)).map(Bound);
            conn.prepare_cached(&format!(
                "UPDATE {} SET {} WHERE rowid = ?{}",
                shape.sql_name,
                sets.join(", "),
                columns.len() + 1
            ))
            .and_then(|mut s| s.execute(rusqlite::params_from_iter(params)))
            .map_err(error)?;
        }
        (None, None) => {}
    }
    Ok(())
}

/// Undoes `set` on the target in one transaction (see the module's doc).
pub(super) fn undo(
    files: &SqliteFiles,
    set: &ChangeSet,
    created: &[String],
    discard_later_writes: bool,
) -> Result<UndoOutcome, DatastoreError> {
    let conn = Connection::open_with_flags(
        &files.path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(error)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(error)?;
    attach(&conn, files, Access::ReadWrite)?;
    // The rows go back as they were; a trigger must not rewrite them.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false)
        .map_err(error)?;
    conn.execute_batch("BEGIN IMMEDIATE").map_err(error)?;
    let outcome = undo_in(&conn, set, created, discard_later_writes);
    match &outcome {
        Ok(UndoOutcome::Undone(_)) => {
            crate::failpoint!("undo:before-commit");
            conn.execute_batch("COMMIT").map_err(error)?;
            crate::failpoint!("undo:after-commit");
        }
        _ => {
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
    outcome
}

/// A created object as the fingerprint names it (`table notebooks`,
/// `index sqitch.by_name`): its kind, database and name.
fn object_of(object: &str) -> Option<(&str, &str, &str)> {
    let (kind, full) = object.split_once(' ')?;
    let (database, name) = match full.split_once('.') {
        Some((database, name)) if !database.is_empty() => (database, name),
        _ => ("main", full),
    };
    Some((kind, database, name))
}

/// Whether the undo drops `object` (a table, index, view or trigger).
pub(super) fn drops(object: &str) -> bool {
    matches!(
        object_of(object),
        Some(("table" | "index" | "view" | "trigger", _, _))
    )
}

fn undo_in(
    conn: &Connection,
    set: &ChangeSet,
    created: &[String],
    discard_later_writes: bool,
) -> Result<UndoOutcome, DatastoreError> {
    let mut objects = Vec::new();
    for object in created {
        match object_of(object) {
            Some((kind @ ("table" | "index" | "view" | "trigger"), database, name)) => {
                objects.push((object.as_str(), kind, database, name))
            }
            _ => return Ok(UndoOutcome::Unusable(format!("cannot drop {object}"))),
        }
    }
    // Rows of tables the step created go with them.
    let created_tables: Vec<(&str, &str)> = objects
        .iter()
        .filter(|(_, kind, ..)| *kind == "table")
        .map(|(_, _, database, name)| (*database, *name))
        .collect();
    let rows: Vec<&RowChange> = set
        .rows
        .iter()
        .filter(|r| !created_tables.contains(&(r.database.as_str(), r.table.as_str())))
        .collect();
    let mut shapes: BTreeMap<(String, String), Shape> = BTreeMap::new();
    for row in rows.iter().copied() {
        let id = (row.database.clone(), row.table.clone());
        if shapes.contains_key(&id) {
            continue;
        }
        match shape(conn, &row.database, &row.table)? {
            Ok(shape) => {
                shapes.insert(id, shape);
            }
            Err(why) => return Ok(UndoOutcome::Unusable(why)),
        }
    }
    fn rowid(row: &RowChange) -> Result<i64, DatastoreError> {
        match row.key {
            Key::Rowid(id) => Ok(id),
            Key::Columns(_) => Err(DatastoreError::host(
                "SLUICE_CHANGE_SET",
                format!("a row of `{}` is not keyed by rowid", row.qualified_table()),
            )),
        }
    }
    fn shape_of<'s>(shapes: &'s BTreeMap<(String, String), Shape>, row: &RowChange) -> &'s Shape {
        &shapes[&(row.database.clone(), row.table.clone())]
    }
    for row in rows.iter().copied() {
        let width = shape_of(&shapes, row).columns.len();
        let widths = [&row.before, &row.after].map(|i| i.as_ref().map(Vec::len));
        if widths.iter().flatten().any(|w| *w != width) {
            return Ok(UndoOutcome::Unusable(format!(
                "table `{}` has {width} columns now, not as many as the step's rows had",
                row.qualified_table()
            )));
        }
    }

    // Classify every row before writing any.
    let mut undone = Undone::default();
    let mut conflicts = Vec::new();
    let mut to_write: Vec<(&RowChange, Option<Image>)> = Vec::new();
    for row in rows.iter().copied() {
        let now = current(conn, shape_of(&shapes, row), rowid(row)?)?;
        match row.found(now.as_ref(), row.before.as_ref(), row.after.as_ref()) {
            Found::AsBefore => undone.already += 1,
            Found::AsLeft => to_write.push((row, now)),
            Found::ChangedSince(conflict) => {
                conflicts.push(conflict);
                to_write.push((row, now));
            }
        }
    }
    if !conflicts.is_empty() {
        if !discard_later_writes {
            return Ok(UndoOutcome::Conflicts(conflicts));
        }
        undone.discarded = conflicts;
    }

    // Rows the step inserted go first and rows it deleted come back last, so
    // a key or unique value the step moved is free when it is put back.
    to_write.sort_by_key(|(row, _)| match (&row.before, &row.after) {
        (None, _) => 0,
        (Some(_), Some(_)) => 1,
        (Some(_), None) => 2,
    });
    for (row, now) in &to_write {
        write(conn, shape_of(&shapes, row), rowid(row)?, now, &row.before)?;
        *undone.rows.entry(row.qualified_table()).or_insert(0) += 1;
    }
    // What the step created goes, dependants first.
    for kind in ["trigger", "view", "index", "table"] {
        for (object, _, database, name) in objects.iter().filter(|o| o.1 == kind) {
            let sql_name = format!("{}.{}", quote(database), quote(name));
            let held = if kind == "table" {
                Some(
                    conn.query_row(&format!("SELECT count(*) FROM {sql_name}"), [], |r| {
                        r.get::<_, i64>(0)
                    })
                    .map_err(error)? as u64,
                )
            } else {
                None
            };
            conn.execute_batch(&format!("DROP {} IF EXISTS {sql_name}", kind.to_uppercase()))
                .map_err(error)?;
            undone.dropped.push((object.to_string(), held));
        }
    }
    // Read back: every key holds its pre-step image.
    for row in rows.iter().copied() {
        let now = current(conn, shape_of(&shapes, row), rowid(row)?)?;
        if now != row.before {
            return Err(row.unproven());
        }
    }
    Ok(UndoOutcome::Undone(undone))
}
