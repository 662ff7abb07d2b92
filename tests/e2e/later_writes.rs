//! The undo contract's first rule: a rollback never silently discards writes
//! the step did not make. After migrate the host fingerprints what the step
//! backed up; a rollback that finds it changed since (an application wrote)
//! is refused before anything is undone (exit 6, `rollback-refused`) unless
//! the operator passes `--discard-later-writes`, which is recorded. Writes
//! into what the step itself created go with it and are not conflicts.
//! Checked with the tests' own SQLite and PostgreSQL clients.

use std::time::Duration;

use sluice_e2e::services::{pg_scratch, pg_scratch_exclusive, PgScratch};
use sluice_e2e::{plugin, sluice_bin, Scenario};

/// `src` with 100 rows and `audit_log`, a table the step never changes.
fn seed(s: &Scenario) {
    s.seed(
        "shop.db",
        "CREATE TABLE src (id INTEGER PRIMARY KEY, note TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)
         INSERT INTO src SELECT i, 'seed' FROM n;
         CREATE TABLE audit_log (id INTEGER PRIMARY KEY, what TEXT);",
    );
}

/// One step `copy`: creates `dst` from `src`, adds a column to `src` and
/// marks its rows; `extra` is more TOML for the step (thresholds, a watch
/// window). Altering `src` makes the backup the way back (a step that only
/// adds objects and changes rows is undone by change set: `change_set.rs`).
fn plan(s: &Scenario, extra: &str) {
    s.write(
        "sluice.toml",
        &format!(
            r#"[plan]
name = "later-writes"

[targets.shop]
kind = "sqlite"
path = "shop.db"

[plugins.sqlite]
path = "{plugin}"

[[steps]]
id = "copy"
plugin = "sqlite"
target = "shop"
access = "read-write"
thresholds = ["duplicates == 0"]
{extra}

[steps.params]
migrate = "CREATE TABLE dst AS SELECT id FROM src; ALTER TABLE src ADD COLUMN copied INTEGER; UPDATE src SET note = 'copied' WHERE id <= 10"

[[steps.params.metrics]]
name = "duplicates"
duplicates = {{ table = "dst", key = ["id"] }}
"#,
            plugin = plugin("sqlite.wasm").display()
        ),
    );
}

fn exec(s: &Scenario, sql: &str) {
    let conn = rusqlite::Connection::open(s.path().join("shop.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute_batch(sql).unwrap();
}

fn count(s: &Scenario, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(s.path().join("shop.db")).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn a_rollback_that_would_discard_an_applications_later_write_is_refused() {
    let s = Scenario::new();
    seed(&s);
    plan(&s, "");
    let seeded = s.state("shop.db");
    let out = s.run("sluice.toml");
    assert_eq!(out.code, 0, "{}", out.all());

    // The application writes after the step, into a table the step backed up.
    exec(&s, "INSERT INTO audit_log (what) VALUES ('order 1 placed')");

    let refused = s.sluice(&["rollback", "sluice.toml"]);
    assert_eq!(refused.code, 6, "{}", refused.all());
    assert!(
        refused.stdout.contains("ROLLBACK REFUSED")
            && refused
                .stdout
                .contains("table `audit_log`: 1 rows now, 0 right after the step"),
        "{}",
        refused.stdout
    );
    assert_eq!(s.step_state("copy"), "rollback-refused");
    // Nothing was undone: the step's change and the application's write stay.
    assert_eq!(count(&s, "SELECT count(*) FROM audit_log"), 1);
    assert_eq!(count(&s, "SELECT count(*) FROM dst"), 100);

    // A run does not go past a step waiting for that decision.
    let rerun = s.sluice(&["run", "sluice.toml"]);
    assert_eq!(rerun.code, 3, "{}", rerun.all());
    assert!(
        rerun.stdout.contains("rollback-refused"),
        "{}",
        rerun.stdout
    );

    // The operator decides to discard the write: recorded, then restored.
    let discarded = s.sluice(&["rollback", "sluice.toml", "--discard-later-writes"]);
    assert_eq!(discarded.code, 0, "{}", discarded.all());
    assert_eq!(s.state("shop.db"), seeded);
    let (_, why) = s.entered("copy", "rolling-back");
    assert!(
        why.contains("--discard-later-writes") && why.contains("table `audit_log`"),
        "{why}"
    );
}

#[test]
fn writes_into_what_the_step_created_go_with_it_and_are_not_conflicts() {
    let s = Scenario::new();
    seed(&s);
    plan(&s, "");
    let seeded = s.state("shop.db");
    assert_eq!(s.run("sluice.toml").code, 0);
    exec(&s, "INSERT INTO dst VALUES (1000)");
    let out = s.sluice(&["rollback", "sluice.toml"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(s.state("shop.db"), seeded);
}

#[test]
fn a_step_completed_without_a_post_step_fingerprint_is_treated_as_changed_since() {
    let s = Scenario::new();
    seed(&s);
    plan(&s, "");
    assert_eq!(s.run("sluice.toml").code, 0);
    // What a journal written before the undo contract holds.
    let journal = rusqlite::Connection::open(s.path().join(".sluice/journal.db")).unwrap();
    journal
        .execute(
            "UPDATE steps SET backup = json_remove(backup, '$.post_step') WHERE step_id = 'copy'",
            [],
        )
        .unwrap();
    drop(journal);
    let out = s.sluice(&["rollback", "sluice.toml"]);
    assert_eq!(out.code, 6, "{}", out.all());
    assert!(
        out.stdout.contains("no post-step fingerprint is recorded"),
        "{}",
        out.stdout
    );
    assert_eq!(count(&s, "SELECT count(*) FROM dst"), 100);
}

#[test]
fn an_automatic_rollback_meeting_a_later_write_pauses_instead_of_discarding_it() {
    let s = Scenario::new();
    seed(&s);
    plan(&s, "\n[steps.watch]\nevery = \"1s\"\nfor = \"60s\"\n");
    assert_eq!(s.sluice(&["audit", "--accept", "sluice.toml"]).code, 0);
    let child = s.spawn_sluice(&["run", "sluice.toml"]);
    s.wait_for_state("copy", "watching");
    // The application keeps writing during the watch window; then a
    // duplicate appears in what the step created, which breaches it.
    exec(
        &s,
        "INSERT INTO audit_log (what) VALUES ('written while watched');
         UPDATE src SET note = 'edited by the app' WHERE id = 50;
         INSERT INTO dst VALUES (7);",
    );
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(6), "{stdout}");
    assert!(
        stdout.contains("ROLLBACK REFUSED") && stdout.contains("table `src`"),
        "{stdout}"
    );
    assert_eq!(s.step_state("copy"), "rollback-refused");
    assert_eq!(count(&s, "SELECT count(*) FROM audit_log"), 1);
    assert_eq!(
        count(
            &s,
            "SELECT count(*) FROM src WHERE note = 'edited by the app'"
        ),
        1
    );
}

/// A shop database and a plan whose one step runs `migrate` on it.
fn pg_shop(migrate: &str) -> (PgScratch, Scenario) {
    pg_shop_on(pg_scratch(), migrate)
}

/// [`pg_shop`] on the database `db`.
fn pg_shop_on(db: PgScratch, migrate: &str) -> (PgScratch, Scenario) {
    db.client()
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);
             INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 50) g;
             CREATE TABLE orders (id serial PRIMARY KEY, item int REFERENCES items (id));",
        )
        .unwrap();
    let s = Scenario::new();
    s.write(
        "sluice.toml",
        &format!(
            r#"[values]
db = {{ env = "SHOP_PG_URL" }}

[targets.shop]
kind = "postgres"
connection = "db"

[plugins.pg]
path = "{}"

[[steps]]
id = "rename"
plugin = "pg"
target = "shop"
access = "read-write"

[steps.params]
migrate = "{migrate}"
"#,
            plugin("postgres.wasm").display()
        ),
    );
    (db, s)
}

/// `pg_dump --data-only` of the shop's `items`, lines sorted: a row put
/// back may sit elsewhere in the heap.
fn items_dump(db: &PgScratch) -> Vec<String> {
    let mut lines: Vec<String> = crate::field::run_tool(
        &crate::field::pg_tool("pg_dump"),
        &["--data-only", "--table=items", &db.url],
    )
    .lines()
    .map(String::from)
    .collect();
    lines.sort();
    lines
}

/// A completed step that added objects — a trigger function and its
/// trigger on an existing table, an enum, a new table referencing an
/// existing one, a view, a role with a grant — and changed rows is rolled
/// back by dropping what it created and putting its rows back: the
/// application's later writes to the existing tables stay, and its rows in
/// the step's new table go with it, counted. Oracles: `pg_dump
/// --schema-only`, `pg_dumpall --globals-only` (for the role) and `pg_dump
/// --data-only` of the existing tables.
#[test]
fn postgres_a_later_rollback_drops_what_the_step_created() {
    // The role is cluster-wide: no other test uses the server meanwhile.
    let db = pg_scratch_exclusive();
    let role = format!("{}_reader", db.name);
    let (db, s) = pg_shop_on(
        db,
        &format!(
            "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.name := NEW.name || '*'; RETURN NEW; END $$; \
             CREATE TRIGGER touch BEFORE UPDATE ON items FOR EACH ROW EXECUTE FUNCTION touch(); \
             CREATE TYPE status AS ENUM ('open', 'shipped'); \
             CREATE TABLE shipments (id bigserial PRIMARY KEY, item int NOT NULL REFERENCES items (id), status status NOT NULL DEFAULT 'open'); \
             CREATE INDEX shipments_by_item ON shipments (item); \
             CREATE VIEW open_shipments AS SELECT * FROM shipments WHERE status = 'open'; \
             CREATE ROLE {role}; GRANT SELECT ON shipments, open_shipments TO {role}; \
             INSERT INTO shipments (item) SELECT id FROM items WHERE id <= 3; \
             UPDATE items SET name = upper(name) WHERE id <= 5"
        ),
    );
    let env = [("SHOP_PG_URL", db.url.as_str())];
    let sluice = |args: &[&str]| s.sluice_with(&sluice_bin(), args, &env);
    let tool =
        |name: &str, args: &[&str]| crate::field::run_tool(&crate::field::pg_tool(name), args);
    let schema = || tool("pg_dump", &["--schema-only", &db.url]);
    let globals = || {
        tool("pg_dumpall", &["--globals-only", "--dbname", &db.url])
            .lines()
            .filter(|l| l.contains(&role))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let data = || items_dump(&db);
    assert_eq!(sluice(&["audit", "--accept", "sluice.toml"]).code, 0);
    let (pre_schema, pre_globals, pre_data) = (schema(), globals(), data());
    assert!(pre_globals.is_empty());
    let out = sluice(&["run", "sluice.toml"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_ne!(globals(), pre_globals, "the step created its role");

    // The application goes on: an order, an item the step did not touch
    // (its new trigger marks it), and shipments in the step's new table.
    db.client()
        .batch_execute(
            "INSERT INTO orders (item) VALUES (3); UPDATE items SET name = 'app' WHERE id = 40; \
             INSERT INTO shipments (item, status) VALUES (7, 'shipped')",
        )
        .unwrap();
    let undone = sluice(&["rollback", "sluice.toml"]);
    assert_eq!(undone.code, 0, "{}", undone.all());
    let report = undone.all();
    assert!(report.contains("undone by change set"), "{report}");
    assert!(
        report.contains("the 6 objects it created are dropped with the 4 rows its tables held"),
        "the application's shipment is counted with the step's: {report}"
    );
    assert_eq!(
        schema(),
        pre_schema,
        "pg_dump --schema-only as before the step"
    );
    assert_eq!(globals(), pre_globals, "the step's role is gone");
    let rows = |sql: &str| -> i64 { db.client().query_one(sql, &[]).unwrap().get(0) };
    assert_eq!(
        rows("SELECT count(*) FROM orders"),
        1,
        "the application's order kept"
    );
    assert_eq!(
        rows("SELECT count(*) FROM items WHERE id = 40 AND name = 'app*'"),
        1,
        "the application's item kept as it wrote it (through the step's trigger)"
    );
    db.client()
        .batch_execute("UPDATE items SET name = 'item 40' WHERE id = 40")
        .unwrap();
    assert_eq!(data(), pre_data, "the step's items put back");
}

/// A step that changed the schema as well as rows is rolled back by
/// restore, which would discard the application's later writes: refused
/// unless the operator decides.
#[test]
fn postgres_a_rollback_that_would_discard_later_writes_is_refused() {
    let (db, s) = pg_shop(
        "UPDATE items SET name = upper(name) WHERE id <= 5; ALTER TABLE items ADD COLUMN note text",
    );
    let env = [("SHOP_PG_URL", db.url.as_str())];
    let sluice = |args: &[&str]| s.sluice_with(&sluice_bin(), args, &env);
    assert_eq!(sluice(&["audit", "--accept", "sluice.toml"]).code, 0);
    let out = sluice(&["run", "sluice.toml"]);
    assert_eq!(out.code, 0, "{}", out.all());

    db.client()
        .batch_execute("INSERT INTO orders (item) VALUES (3), (4)")
        .unwrap();
    let refused = sluice(&["rollback", "sluice.toml"]);
    assert_eq!(refused.code, 6, "{}", refused.all());
    assert!(
        refused.stdout.contains("ROLLBACK REFUSED") && refused.stdout.contains("orders`"),
        "{}",
        refused.stdout
    );
    let rows = |sql: &str| -> i64 { db.client().query_one(sql, &[]).unwrap().get(0) };
    assert_eq!(rows("SELECT count(*) FROM orders"), 2);
    assert_eq!(
        rows("SELECT count(*) FROM items WHERE name LIKE 'ITEM%'"),
        5
    );

    let discarded = sluice(&["rollback", "sluice.toml", "--discard-later-writes"]);
    assert_eq!(discarded.code, 0, "{}", discarded.all());
    assert_eq!(rows("SELECT count(*) FROM orders"), 0);
    assert_eq!(
        rows("SELECT count(*) FROM items WHERE name LIKE 'ITEM%'"),
        0
    );
}

/// A step that changed only rows is undone by its change set: the
/// application's later writes (new orders, an item the step did not touch)
/// stay; an item the step changed that the application changed since is a
/// conflict, refused until the operator decides. `pg_dump` of the tables
/// is the oracle.
#[test]
fn postgres_a_later_rollback_undoes_only_the_steps_rows() {
    let (db, s) = pg_shop("UPDATE items SET name = upper(name) WHERE id <= 5");
    let env = [("SHOP_PG_URL", db.url.as_str())];
    let sluice = |args: &[&str]| s.sluice_with(&sluice_bin(), args, &env);
    let dump = || items_dump(&db);
    assert_eq!(sluice(&["audit", "--accept", "sluice.toml"]).code, 0);
    let pre_step = dump();
    let out = sluice(&["run", "sluice.toml"]);
    assert_eq!(out.code, 0, "{}", out.all());

    // The application goes on: orders, and an item the step did not touch.
    db.client()
        .batch_execute(
            "INSERT INTO orders (item) VALUES (3), (4); UPDATE items SET name = 'app' WHERE id = 40",
        )
        .unwrap();
    let rows = |sql: &str| -> i64 { db.client().query_one(sql, &[]).unwrap().get(0) };
    // …and one the step changed: a conflict.
    db.client()
        .batch_execute("UPDATE items SET name = 'app' WHERE id = 2")
        .unwrap();
    let refused = sluice(&["rollback", "sluice.toml"]);
    assert_eq!(refused.code, 6, "{}", refused.all());
    assert!(
        refused.stdout.contains(
            "table `items`: 1 row the step changed was changed since (keys 2 (updated since))"
        ),
        "{}",
        refused.stdout
    );
    assert_eq!(
        rows("SELECT count(*) FROM items WHERE name LIKE 'ITEM%'"),
        4,
        "nothing undone"
    );

    db.client()
        .batch_execute("UPDATE items SET name = 'ITEM 2' WHERE id = 2")
        .unwrap();
    let undone = sluice(&["rollback", "sluice.toml"]);
    assert_eq!(undone.code, 0, "{}", undone.all());
    assert!(
        undone.stdout.contains("undone by change set"),
        "{}",
        undone.stdout
    );
    assert_eq!(
        rows("SELECT count(*) FROM orders"),
        2,
        "the application's orders kept"
    );
    assert_eq!(
        rows("SELECT count(*) FROM items WHERE name LIKE 'ITEM%'"),
        0
    );
    // The items are as before the step but for the application's own write.
    db.client()
        .batch_execute("UPDATE items SET name = 'item 40' WHERE id = 40")
        .unwrap();
    assert_eq!(dump(), pre_step);
}
