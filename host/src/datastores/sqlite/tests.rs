//! Sessions, scopes and fingerprints over a database with attached files.

use rusqlite::Connection;

use super::*;
use crate::plan::{Access, SqliteFiles};

/// `app.db` with a table `t`, and `sqitch.db` with `changes` holding one row.
fn files(dir: &std::path::Path) -> SqliteFiles {
    let app = dir.join("app.db");
    let reg = dir.join("sqitch.db");
    Connection::open(&app)
        .unwrap()
        .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    Connection::open(&reg)
        .unwrap()
        .execute_batch("CREATE TABLE changes (id TEXT); INSERT INTO changes VALUES ('a');")
        .unwrap();
    let mut files = SqliteFiles::single(app);
    files.attach.insert("sqitch".into(), reg);
    files
}

fn scope(tables: &[&str]) -> Option<TableScope> {
    Some(TableScope::new(Some(
        tables.iter().map(|t| t.to_string()).collect(),
    )))
}

#[tokio::test]
async fn declared_files_are_attached_and_nothing_else_can_be() {
    let dir = tempfile::tempdir().unwrap();
    let files = files(dir.path());
    let s = Session::open(&files, Access::ReadWrite, Some(TableScope::new(None)), None).unwrap();
    let rows = s
        .query("SELECT id FROM sqitch.changes".into(), vec![], 10)
        .await
        .unwrap();
    assert_eq!(rows.rows, 1);
    let other = dir.path().join("other.db");
    let err = s
        .script(format!("ATTACH DATABASE '{}' AS other", other.display()))
        .await
        .unwrap_err();
    assert!(err.code.starts_with("SQLITE_"), "{err}");
    assert!(
        !other.exists(),
        "a refused ATTACH created {}",
        other.display()
    );
    let err = s.script("DETACH DATABASE sqitch".into()).await.unwrap_err();
    assert!(err.code.starts_with("SQLITE_"), "{err}");

    // Without the authorizer, the attach slot limit alone refuses it.
    let s = Session::open(&files, Access::ReadWrite, None, None).unwrap();
    let err = s
        .script(format!("ATTACH DATABASE '{}' AS other", other.display()))
        .await
        .unwrap_err();
    assert!(err.message.contains("too many attached"), "{err}");

    // A target that declares no attachment gets none and may not attach.
    let single = SqliteFiles::single(files.path.clone());
    let s = Session::open(&single, Access::ReadWrite, None, None).unwrap();
    let err = s
        .query("SELECT id FROM sqitch.changes".into(), vec![], 10)
        .await
        .unwrap_err();
    assert!(err.message.contains("no such table"), "{err}");
    let err = s
        .script(format!(
            "ATTACH DATABASE '{}' AS sqitch",
            files.attach["sqitch"].display()
        ))
        .await
        .unwrap_err();
    assert!(err.message.contains("too many attached"), "{err}");
}

#[tokio::test]
async fn read_only_sessions_cannot_write_attached_files() {
    let dir = tempfile::tempdir().unwrap();
    let files = files(dir.path());
    let s = Session::open(&files, Access::ReadOnly, Some(TableScope::new(None)), None).unwrap();
    for sql in [
        "INSERT INTO sqitch.changes VALUES ('b')",
        "CREATE TABLE sqitch.more (x)",
        "PRAGMA query_only = 0",
    ] {
        assert!(s.script(sql.into()).await.is_err(), "{sql} was allowed");
    }
    let after = fingerprint(&files, None).unwrap();
    assert_eq!(after.tables["sqitch.changes"].rows, 1);

    // A file not created yet: a read-only session sees an empty schema
    // and creates nothing; a read-write one creates the file.
    let mut missing = files.clone();
    let fresh = dir.path().join("fresh.db");
    missing.attach.insert("sqitch".into(), fresh.clone());
    let s = Session::open(&missing, Access::ReadOnly, None, None).unwrap();
    let rows = s
        .query(
            "SELECT count(*) FROM sqitch.sqlite_master".into(),
            vec![],
            1,
        )
        .await
        .unwrap();
    assert_eq!(rows.rows, 1);
    assert!(s.script("CREATE TABLE sqitch.x (y)".into()).await.is_err());
    assert!(!fresh.exists());
    let s = Session::open(&missing, Access::ReadWrite, None, None).unwrap();
    s.script("CREATE TABLE sqitch.x (y)".into()).await.unwrap();
    assert!(fresh.is_file());
}

#[tokio::test]
async fn scopes_name_attached_tables_by_schema() {
    let dir = tempfile::tempdir().unwrap();
    let files = files(dir.path());
    let s = Session::open(&files, Access::ReadWrite, scope(&["t", "sqitch.changes"]), None).unwrap();
    s.script("INSERT INTO sqitch.changes VALUES ('b'); INSERT INTO t VALUES (2);".into())
        .await
        .unwrap();
    // `changes` alone is a table of the database itself, not the attached one.
    let s = Session::open(&files, Access::ReadWrite, scope(&["t", "changes"]), None).unwrap();
    assert!(s
        .script("INSERT INTO sqitch.changes VALUES ('c')".into())
        .await
        .is_err());
    assert!(s
        .script("CREATE TABLE sqitch.tags (x)".into())
        .await
        .is_err());
    // And `sqitch.t` is not the database's `t`.
    let s = Session::open(&files, Access::ReadWrite, scope(&["sqitch.t"]), None).unwrap();
    assert!(s.script("INSERT INTO t VALUES (3)".into()).await.is_err());
}

#[test]
fn fingerprints_cover_attached_tables() {
    let dir = tempfile::tempdir().unwrap();
    let files = files(dir.path());
    let before = fingerprint(&files, None).unwrap();
    assert_eq!(
        before.tables.keys().collect::<Vec<_>>(),
        ["sqitch.changes", "t"]
    );
    // The database alone fingerprints as it always did.
    let alone = fingerprint(&SqliteFiles::single(files.path.clone()), None).unwrap();
    assert_ne!(alone.schema, before.schema);
    Connection::open(&files.attach["sqitch"])
        .unwrap()
        .execute_batch("UPDATE changes SET id = 'z'")
        .unwrap();
    let after = fingerprint(&files, None).unwrap();
    let differences = before.differences(&after);
    assert_eq!(differences.len(), 1, "{differences:?}");
    assert!(differences[0].contains("sqitch.changes"), "{differences:?}");
    let scoped = fingerprint(&files, Some(&["sqitch.changes".to_string()])).unwrap();
    assert_eq!(scoped.tables.keys().collect::<Vec<_>>(), ["sqitch.changes"]);
    assert!(estimate_backup(&files, Some(&["sqitch.changes".to_string()])).unwrap() > 0);
}

#[tokio::test]
async fn a_session_records_its_committed_changes_and_nothing_else() {
    use crate::datastores::changes::{Cell, ChangeCapture, UndoOutcome};
    let dir = tempfile::tempdir().unwrap();
    let files = files(dir.path());
    let capture = ChangeCapture::new();
    let s = Session::open(
        &files,
        Access::ReadWrite,
        scope(&["t", "sqitch.changes"]),
        Some(capture.clone()),
    )
    .unwrap();
    s.script("UPDATE t SET x = 2; INSERT INTO sqitch.changes VALUES ('b')".into())
        .await
        .unwrap();
    // A transaction rolled back leaves nothing to undo.
    s.script("BEGIN; INSERT INTO t VALUES (99); ROLLBACK".into())
        .await
        .unwrap();
    // Another connection (the application) is not the step.
    let app = Connection::open(&files.path).unwrap();
    app.execute_batch("INSERT INTO t VALUES (7)").unwrap();
    drop(s);
    let set = capture.take(std::time::Duration::from_secs(10)).unwrap();
    type Change = (String, Option<Vec<Cell>>, Option<Vec<Cell>>);
    let got: Vec<Change> = set
        .rows
        .iter()
        .map(|r| (r.qualified_table(), r.before.clone(), r.after.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "t".into(),
                Some(vec![Cell::Integer(1)]),
                Some(vec![Cell::Integer(2)])
            ),
            (
                "sqitch.changes".into(),
                None,
                Some(vec![Cell::Text("b".into())])
            ),
        ]
    );

    // The application changes the row the step changed: a conflict, and
    // nothing is undone.
    app.execute_batch("UPDATE t SET x = 3 WHERE x = 2").unwrap();
    let outcome = changes::undo(&files, &set, &[], false).unwrap();
    assert!(
        matches!(&outcome, UndoOutcome::Conflicts(c) if c.len() == 1 && c[0].key == crate::datastores::changes::Key::Rowid(1)),
        "{outcome:?}"
    );
    let registry: i64 = Connection::open(dir.path().join("sqitch.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM changes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(registry, 2, "nothing undone");
    // Put back as the step left it: undone, the application's row kept.
    app.execute_batch("UPDATE t SET x = 2 WHERE x = 3").unwrap();
    let UndoOutcome::Undone(undone) = changes::undo(&files, &set, &[], false).unwrap() else {
        panic!("undone")
    };
    assert_eq!(undone.rows.values().sum::<u64>(), 2);
    let rows: Vec<i64> = app
        .prepare("SELECT x FROM t ORDER BY x")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows, vec![1, 7]);
}
