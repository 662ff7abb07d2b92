//! The PostgreSQL plugin against a real server: each test owns a scratch
//! database, runs a plan through the real `sluice` binary, and checks the
//! database with its own client (schema and every table's rows), not with
//! sluice's code.

use std::collections::BTreeMap;

use sluice_e2e::pg_plan::PgPlan;
use sluice_e2e::services::{pg_scratch, PgScratch};

/// Customers with a serial key, orders referencing them (numeric, NULLs,
/// tabs in text: every COPY escape), and an archive holding five orders.
const SEED: &str = r#"
CREATE TABLE customers (
    id serial PRIMARY KEY,
    name text NOT NULL,
    email text UNIQUE,
    joined timestamptz NOT NULL DEFAULT '2024-01-01 00:00:00+00'
);
INSERT INTO customers (name, email)
    SELECT 'customer ' || g, 'c' || g || '@example.org' FROM generate_series(1, 500) g;
CREATE TABLE orders (
    id bigint PRIMARY KEY,
    customer_id int NOT NULL REFERENCES customers (id),
    total numeric(10, 2) NOT NULL CHECK (total >= 0),
    note text
);
INSERT INTO orders
    SELECT g, 1 + g % 500, g * 1.25, CASE WHEN g % 7 = 0 THEN NULL ELSE E'tab\there ' || g END
    FROM generate_series(1, 2000) g;
CREATE INDEX orders_customer ON orders (customer_id);
CREATE TABLE orders_archive (LIKE orders INCLUDING ALL);
INSERT INTO orders_archive SELECT * FROM orders WHERE id <= 5;
ANALYZE;
"#;

/// The database as this test sees it: schema lines and each table's rows
/// as text, sorted.
#[derive(Debug, PartialEq, Eq)]
struct PgState {
    schema: Vec<String>,
    tables: BTreeMap<String, Vec<String>>,
}

fn pg_state(db: &PgScratch) -> PgState {
    let mut c = db.client();
    let lines = |c: &mut postgres::Client, sql: &str| -> Vec<String> {
        c.query(sql, &[])
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect()
    };
    let mut schema = lines(
        &mut c,
        "SELECT concat_ws(' ', 'column', table_name, column_name, data_type, is_nullable, column_default) \
         FROM information_schema.columns WHERE table_schema = 'public'",
    );
    schema.extend(lines(
        &mut c,
        "SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = 'public'",
    ));
    schema.extend(lines(
        &mut c,
        "SELECT concat_ws(' ', 'constraint', conrelid::regclass::text, conname, pg_get_constraintdef(oid)) \
         FROM pg_constraint WHERE connamespace = 'public'::regnamespace",
    ));
    schema.sort();
    let mut tables = BTreeMap::new();
    for table in lines(
        &mut c,
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
    ) {
        let rows = lines(
            &mut c,
            &format!("SELECT t::text FROM \"{table}\" t ORDER BY 1"),
        );
        tables.insert(table, rows);
    }
    PgState { schema, tables }
}

/// A plan of PostgreSQL steps on a scratch database seeded with [`SEED`].
fn shop(steps: &str) -> PgPlan {
    PgPlan::new(SEED, steps)
}

const ROLLED_BACK: [&str; 6] = [
    "backing-up",
    "backed-up",
    "migrating",
    "validating",
    "rolling-back",
    "rolled-back",
];

#[test]
fn a_failed_transactional_migrate_needs_no_restore() {
    let s = shop(
        r#"
[[steps]]
id = "tier"
plugin = "pg"
target = "shop"
access = "read-write"

[steps.params]
tables = ["customers", "orders"]
# The third statement hits a duplicate key: PostgreSQL undoes the first two.
migrate = """
ALTER TABLE customers ADD COLUMN tier int;
UPDATE customers SET tier = 1, name = name || ' (gold)';
INSERT INTO orders VALUES (1, 1, 0, 'duplicate');
"""
"#,
    );
    let before = pg_state(&s.db);
    let run = s.run();
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stdout.contains("migrate failed"), "{}", run.stdout);
    assert!(
        run.stderr
            .contains("rollback: transaction already undone: tables and schema equal the backup"),
        "rollback took the no-restore path: {}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("restoring from the backup"),
        "{}",
        run.stderr
    );
    assert_eq!(
        s.states("tier"),
        [
            "backing-up",
            "backed-up",
            "migrating",
            "rolling-back",
            "rolled-back"
        ]
    );
    assert_eq!(pg_state(&s.db), before, "schema and every table as before");
}

#[test]
fn a_table_other_tables_reference_is_merged_back_without_touching_them() {
    // `orders` references `customers`, and only `customers` is backed up:
    // it cannot be truncated, so its rows are merged back by primary key,
    // its added column dropped, and the rows the step added deleted.
    let s = shop(
        r#"
[[steps]]
id = "tiers"
plugin = "pg"
target = "shop"
access = "read-write"
thresholds = ["gold == 0"]

[steps.params]
tables = ["customers"]
migrate = """
ALTER TABLE customers ADD COLUMN tier text;
UPDATE customers SET tier = 'gold', name = upper(name) WHERE id % 3 = 0;
INSERT INTO customers (name, email) VALUES ('new one', 'new@example.org');
"""

[[steps.params.metrics]]
name = "gold"
query = "SELECT count(*) FROM customers WHERE tier = 'gold'"
"#,
    );
    let before = pg_state(&s.db);
    let run = s.run();
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stderr.contains("dropping added column"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("table merged back by primary key"),
        "{}",
        run.stderr
    );
    assert_eq!(s.states("tiers"), ROLLED_BACK);
    assert_eq!(pg_state(&s.db), before, "names, rows and shape as before");
}

#[test]
fn a_transactional_step_failing_validation_is_restored_from_its_backup() {
    let s = shop(
        r#"
[[steps]]
id = "reprice"
plugin = "pg"
target = "shop"
access = "read-write"
thresholds = ["free_orders == 0"]

[steps.params]
tables = ["orders"]
migrate = """
ALTER TABLE orders ADD COLUMN currency text NOT NULL DEFAULT 'EUR';
UPDATE orders SET total = 0 WHERE id % 10 = 0;
CREATE INDEX orders_total ON orders (total);
"""

[[steps.params.metrics]]
name = "free_orders"
query = "SELECT count(*) FROM orders WHERE total = 0"
"#,
    );
    let before = pg_state(&s.db);
    let run = s.run();
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stdout
            .contains("threshold `free_orders == 0` not met (free_orders = 200)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("rollback: restoring from the backup"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("restore verified"), "{}", run.stderr);
    assert_eq!(s.states("reprice"), ROLLED_BACK);
    assert_eq!(
        pg_state(&s.db),
        before,
        "column, index and prices as before"
    );
}

#[test]
fn a_concurrent_index_is_compensated() {
    let s = shop(
        r#"
[[steps]]
id = "note-index"
plugin = "pg"
target = "shop"
access = "read-write"
thresholds = ["index_used == 1", "count_ms >= 0"]

[steps.params]
tables = ["orders"]
# The statistics target alters an existing column, so this step has no
# change set (which only drops what a step created) and its compensate
# script undoes it.
migrate = "CREATE INDEX CONCURRENTLY orders_note ON orders (note); ALTER TABLE orders ALTER COLUMN note SET STATISTICS 500"
compensate = "DROP INDEX CONCURRENTLY IF EXISTS orders_note; ALTER TABLE orders ALTER COLUMN note SET STATISTICS -1"

[[steps.params.metrics]]
name = "index_used"
# Most rows match: PostgreSQL scans the table, not the new index.
index_used = { query = "SELECT * FROM orders WHERE note IS NOT NULL", index = "orders_note" }

[[steps.params.metrics]]
name = "count_ms"
latency = { query = "SELECT count(*) FROM orders", runs = 5, percentile = 95, baseline = true }
"#,
    );
    let before = pg_state(&s.db);
    let run = s.run();
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stderr.contains("running them one by one"),
        "CREATE INDEX CONCURRENTLY runs outside a transaction: {}",
        run.stderr
    );
    assert!(
        run.stdout
            .contains("threshold `index_used == 1` not met (index_used = 0)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains("rollback: compensated: tables and schema equal the backup"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("restoring from the backup"),
        "{}",
        run.stderr
    );
    assert_eq!(s.states("note-index"), ROLLED_BACK);
    let status = s.sluice(&["status", "sluice.toml"]);
    assert!(
        status.stdout.contains("non-transactional"),
        "status says how the step changes its target:\n{}",
        status.stdout
    );
    let indexes: i64 =
        s.db.client()
            .query_one(
                "SELECT count(*) FROM pg_indexes WHERE indexname = 'orders_note'",
                &[],
            )
            .unwrap()
            .get(0);
    assert_eq!(indexes, 0, "the index is gone");
    assert_eq!(pg_state(&s.db), before);
}

#[test]
fn a_bulk_copy_below_its_threshold_is_undone_and_proven() {
    let s = shop(
        r#"
[[steps]]
id = "archive"
plugin = "pg"
target = "shop"
access = "read-write"
thresholds = ["archived >= 0.99", "duplicates == 0"]

[steps.params]
tables = ["orders_archive"]
# The copy forgets orders without a note: about 1 in 7 are missing.
copy = [{ from = "SELECT * FROM orders WHERE id > 5 AND note IS NOT NULL", into = "orders_archive" }]

[[steps.params.metrics]]
name = "archived"
match_rate = { source = "SELECT * FROM orders", target = "SELECT * FROM orders_archive" }

[[steps.params.metrics]]
name = "duplicates"
duplicates = { table = "orders_archive", columns = ["id"] }
"#,
    );
    let before = pg_state(&s.db);
    assert_eq!(before.tables["orders_archive"].len(), 5);
    let run = s.run();
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stdout
            .contains("threshold `archived >= 0.99` not met (archived = 0.857"),
        "{}",
        run.stdout
    );
    assert!(run.stderr.contains("rows copied"), "{}", run.stderr);
    // Migrate changed only rows: the host undoes the ones it recorded.
    assert!(
        !run.stderr.contains("rollback: restoring from the backup"),
        "{}",
        run.stderr
    );
    let proof = s.scenario.transitions("archive");
    assert!(
        proof
            .last()
            .is_some_and(|(state, detail)| state == "rolled-back"
                && detail.contains("undone by change set: 1710 rows the step changed put back and read back (`orders_archive` 1710)")),
        "the host undid the copied rows and read them back: {proof:?}"
    );
    assert_eq!(
        pg_state(&s.db),
        before,
        "the archive holds its five rows again"
    );
}

#[test]
fn a_bulk_copy_that_meets_its_thresholds_completes() {
    let s = shop(
        r#"
[[steps]]
id = "archive-all"
plugin = "pg"
target = "shop"
access = "read-write"
thresholds = ["archived == 1", "duplicates == 0"]

[steps.params]
tables = ["orders_archive"]
copy = [{ from = "SELECT * FROM orders WHERE id > 5", into = "orders_archive" }]

[[steps.params.metrics]]
name = "archived"
match_rate = { source = "SELECT * FROM orders", target = "SELECT * FROM orders_archive" }

[[steps.params.metrics]]
name = "duplicates"
duplicates = { table = "orders_archive", columns = ["id"] }
"#,
    );
    let run = s.run();
    assert_eq!(run.code, 0, "{}", run.all());
    let state = pg_state(&s.db);
    assert_eq!(state.tables["orders_archive"], state.tables["orders"]);
}

#[test]
fn an_undo_interrupted_after_its_commit_is_finished_by_the_next_run() {
    let s = shop(
        r#"
[[steps]]
id = "archive"
plugin = "pg"
target = "shop"
access = "read-write"
thresholds = ["archived >= 0.99"]

[steps.params]
tables = ["orders_archive"]
copy = [{ from = "SELECT * FROM orders WHERE id > 5 AND note IS NOT NULL", into = "orders_archive" }]

[[steps.params.metrics]]
name = "archived"
match_rate = { source = "SELECT * FROM orders", target = "SELECT * FROM orders_archive" }
"#,
    );
    let before = pg_state(&s.db);
    let accepted = s.sluice(&["audit", "--accept", "sluice.toml"]);
    assert_eq!(accepted.code, 0, "{}", accepted.all());
    // Killed right after the undo's commit, before the journal records
    // the rollback.
    assert!(
        s.scenario.kill_at(
            &["run", "sluice.toml"],
            "undo:after-commit@1",
            &[("SHOP_PG_URL", &s.db.url)]
        ),
        "the run reached the undo's commit"
    );
    assert_eq!(pg_state(&s.db), before, "the undo had committed");
    let rerun = s.sluice(&["run", "sluice.toml"]);
    assert_eq!(rerun.code, 1, "{}", rerun.all());
    let proof = s.scenario.transitions("archive");
    assert!(
        proof
            .last()
            .is_some_and(|(state, detail)| state == "rolled-back"
                && detail.contains(
                    "0 rows the step changed put back and read back (), 1710 already as before"
                )),
        "the second undo finds the work done: {proof:?}"
    );
    assert_eq!(pg_state(&s.db), before);
}

/// The crash suite on PostgreSQL: a two-step plan whose target AND journal
/// are on PostgreSQL — step 1 reshapes `customers` in one transaction and
/// passes, step 2 is a bulk copy that fails its threshold and is restored
/// from its backup. The real process is SIGKILLed at every failpoint an
/// uninterrupted run passes; after each kill the database must be in a
/// state some prefix of the plan leaves, and a plain re-run must finish the
/// plan (step 1 applied, step 2 rolled back) with no manual action.
mod crash {
    use super::*;

    // Step 1 reshapes `orders` (its restore truncates and reloads);
    // `a_table_other_tables_reference_is_merged_back_without_touching_them`
    // covers the merge path for referenced tables.
    const STEP1_SQL: &str = "ALTER TABLE orders ADD COLUMN tier text; \
        UPDATE orders SET tier = CASE WHEN id % 2 = 0 THEN 'gold' ELSE 'basic' END";
    /// Step 2 also creates an index, so its undo by change set drops a
    /// created object inside the transaction the kills interrupt.
    const STEP2_SQL: &str = "CREATE INDEX orders_archive_note ON orders_archive (note); \
        INSERT INTO orders_archive \
        SELECT id, customer_id, total, note FROM orders WHERE id > 5 AND note IS NOT NULL";

    fn scenario() -> PgPlan {
        let s = shop(&format!(
            r#"
[[steps]]
id = "tiers"
plugin = "pg"
target = "shop"
access = "read-write"
thresholds = ["tiered == 2000"]

[steps.params]
tables = ["orders"]
migrate = "{STEP1_SQL}"

[[steps.params.metrics]]
name = "tiered"
query = "SELECT count(*) FROM orders WHERE tier IS NOT NULL"

[[steps]]
id = "archive"
plugin = "pg"
target = "shop"
access = "read-write"
thresholds = ["archived >= 0.99"]

[steps.params]
tables = ["orders_archive"]
migrate = "CREATE INDEX orders_archive_note ON orders_archive (note)"
copy = [{{ from = "SELECT id, customer_id, total, note FROM orders WHERE id > 5 AND note IS NOT NULL", into = "orders_archive" }}]

[[steps.params.metrics]]
name = "archived"
match_rate = {{ source = "SELECT id, customer_id, total, note FROM orders", target = "SELECT * FROM orders_archive" }}
"#
        ));
        // The journal lives in the same database (schema `sluice_journal`,
        // which the states below do not look at).
        let plan = s.scenario.read("sluice.toml").replace(
            "[values]",
            "[plan]\nname = \"pg-crash\"\njournal = \"db\"\n\n[values]",
        );
        s.scenario.write("sluice.toml", &plan);
        let accepted = s.sluice(&["audit", "--accept", "sluice.toml"]);
        assert_eq!(accepted.code, 0, "audit --accept: {}", accepted.all());
        s
    }

    /// Seed, after step 1, after step 1 and step 2's migrate: computed by
    /// applying the SQL directly, not through sluice.
    fn allowed_states() -> [PgState; 3] {
        let db = pg_scratch();
        let mut c = db.client();
        c.batch_execute(SEED).unwrap();
        let seed = pg_state(&db);
        c.batch_execute(STEP1_SQL).unwrap();
        let step1 = pg_state(&db);
        c.batch_execute(STEP2_SQL).unwrap();
        [seed, step1, pg_state(&db)]
    }

    #[test]
    fn a_kill_at_every_point_leaves_a_consistent_database_and_a_rerun_finishes() {
        let [seed, step1, step2] = allowed_states();
        let reference = scenario();
        let trace = reference.scenario.path().join("trace.txt");
        let out = reference.scenario.sluice_with(
            &sluice_e2e::failpoints_bin(),
            &["run", "sluice.toml"],
            &[
                ("SHOP_PG_URL", reference.db.url.as_str()),
                ("SLUICE_FAILPOINT_TRACE", trace.to_str().unwrap()),
            ],
        );
        assert_eq!(out.code, 1, "the reference run: {}", out.all());
        assert_eq!(pg_state(&reference.db), step1);
        let points: Vec<String> = std::fs::read_to_string(trace)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        assert!(
            points.len() >= 24,
            "expected dozens of fault points, got {points:?}"
        );
        let mut violations = Vec::new();
        for point in &points {
            let s = scenario();
            if !s.scenario.kill_at(
                &["run", "sluice.toml"],
                point,
                &[("SHOP_PG_URL", s.db.url.as_str())],
            ) {
                violations.push(format!("{point} was not reached"));
                continue;
            }
            let after_kill = pg_state(&s.db);
            if ![&seed, &step1, &step2].contains(&&after_kill) {
                violations.push(format!(
                    "{point}: after the kill the database is in no step boundary state"
                ));
                continue;
            }
            let rerun = s.sluice(&["run", "sluice.toml"]);
            if rerun.code != 1 {
                violations.push(format!(
                    "{point}: the re-run exited {} instead of 1:\n{}",
                    rerun.code,
                    rerun.all()
                ));
                continue;
            }
            if pg_state(&s.db) != step1 {
                violations.push(format!(
                    "{point}: after the re-run the database is not step 1's state"
                ));
                continue;
            }
            let status = s.sluice(&["status", "sluice.toml"]);
            let consistent = status
                .stdout
                .lines()
                .any(|l| l.trim_start().starts_with("tiers ") && l.contains("completed"))
                && status
                    .stdout
                    .lines()
                    .any(|l| l.trim_start().starts_with("archive ") && l.contains("rolled-back"));
            if !consistent {
                violations.push(format!(
                    "{point}: journal not consistent:\n{}",
                    status.stdout
                ));
            }
        }
        sluice_e2e::report(
            "crash-postgres.txt",
            &format!(
                "kill-at-every-point (PostgreSQL target + PostgreSQL journal): {} fault points exercised, {} violations",
                points.len(),
                violations.len()
            ),
        );
        assert!(
            violations.is_empty(),
            "{} violations:\n{}",
            violations.len(),
            violations.join("\n")
        );
    }
}
