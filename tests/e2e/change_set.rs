//! Undo by change set on SQLite: a step that changes only rows is rolled
//! back row by row from what the host recorded on the step's own
//! connection, so an application's later writes to the same tables stay;
//! a row the step changed that the application changed since is a
//! conflict (exit 6, nothing undone) until the operator decides. The oracle
//! is a second database given the same seed and the application's writes
//! alone, compared row by row by the tests' own reader (`DbState`).

use std::time::Duration;

use sluice_e2e::{plugin, Scenario};

const SEED: &str =
    "CREATE TABLE src (id INTEGER PRIMARY KEY, note TEXT, updated_at INTEGER NOT NULL DEFAULT 0);
     CREATE TRIGGER src_touch AFTER UPDATE OF note ON src BEGIN
       UPDATE src SET updated_at = updated_at + 1 WHERE id = NEW.id;
     END;
     WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)
     INSERT INTO src (id, note) SELECT i, 'seed' FROM n;
     CREATE TABLE audit_log (id INTEGER PRIMARY KEY, what TEXT);";

/// The step updates ten rows (its `updated_at` trigger fires for each),
/// inserts one and deletes one: rows only, no schema.
const ROWS_ONLY: &str = "UPDATE src SET note = 'marked' WHERE id <= 10; INSERT INTO src (id, note) VALUES (1000, 'step'); DELETE FROM src WHERE id = 50";

/// A plan of one step running `migrate`, gated by `threshold`.
fn scenario(threshold: &str, migrate: &str) -> Scenario {
    let s = Scenario::new();
    s.seed("shop.db", SEED);
    s.write(
        "sluice.toml",
        &format!(
            r#"[plan]
name = "change-set"

[targets.shop]
kind = "sqlite"
path = "shop.db"

[plugins.sqlite]
path = "{plugin}"

[[steps]]
id = "mark"
plugin = "sqlite"
target = "shop"
access = "read-write"
thresholds = ["{threshold}"]

[steps.params]
migrate = "{migrate}"

[[steps.params.metrics]]
name = "marked"
query = "SELECT count(*) FROM src WHERE note = 'marked'"
"#,
            plugin = plugin("sqlite.wasm").display()
        ),
    );
    s
}

fn exec(s: &Scenario, db: &str, sql: &str) {
    let conn = rusqlite::Connection::open(s.path().join(db)).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute_batch(sql).unwrap();
}

/// The application's writes after the step: into the step's table (a new
/// row, a row the step did not touch) and into another table.
const APP: &str = "INSERT INTO src (id, note) VALUES (2000, 'app');
     UPDATE src SET note = 'app' WHERE id = 60;
     INSERT INTO audit_log (what) VALUES ('order 1 placed');";

#[test]
fn rolling_back_row_changes_keeps_the_applications_later_writes() {
    let s = scenario("marked == 10", ROWS_ONLY);
    let run = s.run("sluice.toml");
    assert_eq!(run.code, 0, "{}", run.all());
    exec(&s, "shop.db", APP);

    let undone = s.sluice(&["rollback", "sluice.toml"]);
    assert_eq!(undone.code, 0, "{}", undone.all());
    assert_eq!(s.step_state("mark"), "rolled-back");
    let (_, why) = s.entered("mark", "rolled-back");
    assert!(
        why.contains("undone by change set: 12 rows") && why.contains("writes made since"),
        "{why}"
    );

    // The oracle: the seed plus the application's writes, nothing of the step.
    s.seed("expected.db", SEED);
    exec(&s, "expected.db", APP);
    assert_eq!(s.state("shop.db"), s.state("expected.db"));
}

#[test]
fn a_row_the_application_changed_since_is_a_conflict_until_the_operator_decides() {
    let s = scenario("marked == 10", ROWS_ONLY);
    let run = s.run("sluice.toml");
    assert_eq!(run.code, 0, "{}", run.all());
    // The application changes a row the step changed, and writes elsewhere.
    exec(
        &s,
        "shop.db",
        "UPDATE src SET note = 'app' WHERE id = 5; INSERT INTO audit_log (what) VALUES ('x');",
    );
    let before = s.state("shop.db");

    let refused = s.sluice(&["rollback", "sluice.toml"]);
    assert_eq!(refused.code, 6, "{}", refused.all());
    assert_eq!(s.step_state("mark"), "rollback-refused");
    let (_, why) = s.entered("mark", "rollback-refused");
    assert!(
        why.contains(
            "table `src`: 1 row the step changed was changed since (keys 5 (updated since))"
        ),
        "{why}"
    );
    assert_eq!(s.state("shop.db"), before, "nothing was undone");

    let discarded = s.sluice(&["rollback", "sluice.toml", "--discard-later-writes"]);
    assert_eq!(discarded.code, 0, "{}", discarded.all());
    let (_, why) = s.entered("mark", "rolled-back");
    assert!(
        why.contains("discarded, as the operator decided") && why.contains("keys 5"),
        "{why}"
    );
    // Row 5 is the seed's again; the application's other write stays.
    s.seed("expected.db", SEED);
    exec(
        &s,
        "expected.db",
        "INSERT INTO audit_log (what) VALUES ('x');",
    );
    assert_eq!(s.state("shop.db"), s.state("expected.db"));
}

#[test]
fn a_failed_gate_undoes_the_rows_with_the_tables_trigger_kept_quiet() {
    // The gate fails: the automatic rollback undoes by change set, and the
    // table's `updated_at` trigger does not fire while rows are put back.
    let s = scenario("marked == 0", ROWS_ONLY);
    let seeded = s.state("shop.db");
    let run = s.run("sluice.toml");
    assert_eq!(run.code, 1, "{}", run.all());
    assert_eq!(s.step_state("mark"), "rolled-back");
    let (_, why) = s.entered("mark", "rolled-back");
    assert!(why.contains("undone by change set"), "{why}");
    assert_eq!(s.state("shop.db"), seeded);
}

#[test]
fn a_step_that_changes_the_schema_is_restored_from_its_backup() {
    let s = scenario(
        "marked == 10",
        "ALTER TABLE src ADD COLUMN sku TEXT; UPDATE src SET note = 'marked' WHERE id <= 10",
    );
    let seeded = s.state("shop.db");
    let run = s.run("sluice.toml");
    assert_eq!(run.code, 0, "{}", run.all());
    let undone = s.sluice(&["rollback", "sluice.toml"]);
    assert_eq!(undone.code, 0, "{}", undone.all());
    let (_, why) = s.entered("mark", "rolled-back");
    assert!(why.contains("restored and verified"), "{why}");
    assert_eq!(s.state("shop.db"), seeded);
}

#[test]
fn a_step_that_only_adds_objects_drops_them_and_keeps_the_applications_rows() {
    // The common migration: a new table (and an index on an old one), with
    // rows in both; the application writes into both afterwards.
    let s = scenario(
        "marked == 10",
        "CREATE TABLE notebooks (id INTEGER PRIMARY KEY, title TEXT); CREATE INDEX src_note ON src (note); INSERT INTO notebooks (title) VALUES ('first'); UPDATE src SET note = 'marked' WHERE id <= 10",
    );
    let run = s.run("sluice.toml");
    assert_eq!(run.code, 0, "{}", run.all());
    exec(
        &s,
        "shop.db",
        &format!("{APP} INSERT INTO notebooks (title) VALUES ('app');"),
    );
    let undone = s.sluice(&["rollback", "sluice.toml"]);
    assert_eq!(undone.code, 0, "{}", undone.all());
    let (_, why) = s.entered("mark", "rolled-back");
    assert!(
        why.contains("undone by change set: 10 rows")
            && why.contains("table notebooks (2 rows went with it)")
            && why.contains("index src_note"),
        "{why}"
    );
    s.seed("expected.db", SEED);
    exec(&s, "expected.db", APP);
    assert_eq!(s.state("shop.db"), s.state("expected.db"));
}
