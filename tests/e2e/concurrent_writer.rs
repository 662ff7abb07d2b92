//! An application writes the tables a step backs up, all the while sluice
//! runs the step. The plugin's backup and the host's verification of it
//! must read one state — a PostgreSQL snapshot both import, SQLite's write
//! lock held across both — or every busy database fails "backup not
//! verified". The writer's rows are checked afterwards with the tests' own
//! clients: none lost, the step applied.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_e2e::pg_plan::PgPlan;
use sluice_e2e::{plugin, Scenario};

/// Inserts into a table until stopped; counts what it wrote.
struct Writer {
    stop: Arc<AtomicBool>,
    wrote: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(mut insert: impl FnMut() + Send + 'static) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let wrote = Arc::new(AtomicU64::new(0));
        let (s, w) = (stop.clone(), wrote.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                insert();
                w.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        // Writing before sluice starts.
        while wrote.load(Ordering::SeqCst) < 5 {
            std::thread::sleep(Duration::from_millis(5));
        }
        Writer {
            stop,
            wrote,
            thread: Some(thread),
        }
    }

    /// Stops it; how many rows it wrote.
    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        self.wrote.load(Ordering::SeqCst)
    }
}

/// `orders` (50,000 rows, a `bigserial` key) and one PostgreSQL step
/// scoped to it, gated on its row count `orders`, its lock accepted.
fn busy_orders(threshold: &str, migrate: &str) -> PgPlan {
    let p = PgPlan::new(
        "CREATE TABLE orders (id bigserial PRIMARY KEY, note text NOT NULL);
         INSERT INTO orders (note) SELECT 'seed ' || i FROM generate_series(1, 50000) i;",
        &format!(
            r#"
[[steps]]
id = "sku"
plugin = "pg"
target = "shop"
access = "read-write"
tables = ["orders"]
thresholds = ["{threshold}"]

[steps.params]
tables = ["orders"]
migrate = "{migrate}"

[[steps.params.metrics]]
name = "orders"
query = "SELECT count(*) FROM orders"
"#
        ),
    );
    let accepted = p.sluice(&["audit", "--accept", "sluice.toml"]);
    assert_eq!(accepted.code, 0, "{}", accepted.all());
    p
}

/// An application inserting into `orders` of `p`'s database.
fn app_inserting_orders(p: &PgPlan) -> Writer {
    let mut app = postgres::Client::connect(&p.db.url, postgres::NoTls).unwrap();
    Writer::start(move || {
        app.execute("INSERT INTO orders (note) VALUES ('app')", &[])
            .unwrap();
    })
}

#[test]
fn postgres_backs_up_and_verifies_one_snapshot_while_an_application_writes() {
    let p = busy_orders("orders > 0", "ALTER TABLE orders ADD COLUMN sku text");
    let writer = app_inserting_orders(&p);
    let run = p.sluice(&["run", "sluice.toml"]);
    let wrote = writer.stop();
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        p.states("sku").contains(&"backed-up".to_string()),
        "{:?}",
        p.states("sku")
    );
    let mut c = p.db.client();
    let (rows, app_rows): (i64, i64) = {
        let r = c
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE note = 'app') FROM orders",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(app_rows as u64, wrote, "every application write is there");
    assert_eq!(rows as u64, 50_000 + wrote);
    let sku: bool = c
        .query_one(
            "SELECT count(*) = 1 FROM information_schema.columns
             WHERE table_name = 'orders' AND column_name = 'sku'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(sku, "the step applied");
}

#[test]
fn sqlite_holds_writers_while_the_backup_is_taken_and_verified() {
    let s = Scenario::new();
    s.seed(
        "shop.db",
        "PRAGMA journal_mode = WAL;
         CREATE TABLE orders (id INTEGER PRIMARY KEY, note TEXT NOT NULL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50000)
         INSERT INTO orders (note) SELECT 'seed ' || i FROM n;",
    );
    s.write(
        "sluice.toml",
        &format!(
            r#"[plan]
name = "busy-sqlite"

[targets.shop]
kind = "sqlite"
path = "shop.db"

[plugins.sqlite]
path = "{}"

[[steps]]
id = "sku"
plugin = "sqlite"
target = "shop"
access = "read-write"
thresholds = ["orders > 0"]

[steps.params]
tables = ["orders"]
migrate = "ALTER TABLE orders ADD COLUMN sku TEXT"

[[steps.params.metrics]]
name = "orders"
query = "SELECT count(*) FROM orders"
"#,
            plugin("sqlite.wasm").display()
        ),
    );
    let accepted = s.sluice(&["audit", "--accept", "sluice.toml"]);
    assert_eq!(accepted.code, 0, "{}", accepted.all());
    let app = rusqlite::Connection::open(s.path().join("shop.db")).unwrap();
    app.busy_timeout(Duration::from_secs(30)).unwrap();
    let writer = Writer::start(move || {
        app.execute("INSERT INTO orders (note) VALUES ('app')", [])
            .unwrap();
    });
    let run = s.sluice(&["run", "sluice.toml"]);
    let wrote = writer.stop();
    assert_eq!(run.code, 0, "{}", run.all());
    let c = rusqlite::Connection::open(s.path().join("shop.db")).unwrap();
    let app_rows: i64 = c
        .query_row("SELECT count(*) FROM orders WHERE note = 'app'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(app_rows as u64, wrote, "every application write is there");
    let sku: i64 = c
        .query_row(
            "SELECT count(*) FROM pragma_table_info('orders') WHERE name = 'sku'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(sku, 1, "the step applied");
}

#[test]
fn postgres_rolls_back_and_proves_it_while_an_application_draws_ids() {
    // The step fails its gate while the application goes on inserting into
    // `orders` (and so drawing ids from its sequence).
    let p = busy_orders(
        "orders < 0",
        "ALTER TABLE orders ADD COLUMN sku text; INSERT INTO orders (note) VALUES ('step')",
    );
    let writer = app_inserting_orders(&p);
    let run = p.sluice(&["run", "sluice.toml"]);
    let wrote = writer.stop();
    // The application wrote into `orders` after the step: restoring it
    // would lose those rows, so the rollback is refused (the undo contract).
    assert_eq!(run.code, 6, "{}", run.all());
    let mut c = p.db.client();
    let app_rows: i64 = c
        .query_one("SELECT count(*) FROM orders WHERE note = 'app'", &[])
        .unwrap()
        .get(0);
    assert_eq!(app_rows as u64, wrote, "nothing was undone");
    // The operator decides: the restore, and its proof — sequence values
    // included, though the application drew ids while the backup was read.
    let undone = p.sluice(&["rollback", "sluice.toml", "--discard-later-writes"]);
    assert_eq!(undone.code, 0, "{}", undone.all());
    let next: i64 = c
        .query_one(
            "INSERT INTO orders (note) VALUES ('after') RETURNING id",
            &[],
        )
        .unwrap()
        .get(0);
    let max_before: i64 = c
        .query_one("SELECT max(id) FROM orders WHERE note <> 'after'", &[])
        .unwrap()
        .get(0);
    assert!(
        next > max_before,
        "no id is handed out twice: {next} after {max_before}"
    );
}

#[test]
fn sqlite_rolls_back_a_row_step_by_change_set_while_an_application_writes() {
    // The step changes rows of `orders` and fails its gate while the
    // application inserts into `events` the whole time: the rollback puts
    // `orders` back and every application row stays.
    let s = Scenario::new();
    s.seed(
        "shop.db",
        "PRAGMA journal_mode = WAL;
         CREATE TABLE orders (id INTEGER PRIMARY KEY, note TEXT NOT NULL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
         INSERT INTO orders (note) SELECT 'seed ' || i FROM n;
         CREATE TABLE events (id INTEGER PRIMARY KEY, what TEXT NOT NULL);",
    );
    s.write(
        "sluice.toml",
        &format!(
            r#"[plan]
name = "busy-sqlite-rows"

[targets.shop]
kind = "sqlite"
path = "shop.db"

[plugins.sqlite]
path = "{}"

[[steps]]
id = "mark"
plugin = "sqlite"
target = "shop"
access = "read-write"
thresholds = ["marked == 0"]

[steps.params]
migrate = "UPDATE orders SET note = 'marked' WHERE id % 10 = 0"

[[steps.params.metrics]]
name = "marked"
query = "SELECT count(*) FROM orders WHERE note = 'marked'"
"#,
            plugin("sqlite.wasm").display()
        ),
    );
    let accepted = s.sluice(&["audit", "--accept", "sluice.toml"]);
    assert_eq!(accepted.code, 0, "{}", accepted.all());
    let seeded_orders = s.state("shop.db").tables["orders"].clone();
    let app = rusqlite::Connection::open(s.path().join("shop.db")).unwrap();
    app.busy_timeout(Duration::from_secs(30)).unwrap();
    let writer = Writer::start(move || {
        app.execute("INSERT INTO events (what) VALUES ('app')", [])
            .unwrap();
    });
    let run = s.sluice(&["run", "sluice.toml"]);
    let wrote = writer.stop();
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stdout
            .contains("rollback: undone by change set: the 500 rows"),
        "{}",
        run.stdout
    );
    // The tests' own reader: `orders` as seeded, every application row there.
    let after = s.state("shop.db");
    assert_eq!(after.tables["orders"], seeded_orders);
    assert_eq!(after.rows("events") as u64, wrote);
    assert!(wrote > 0, "the application wrote during the run");
}

#[test]
fn postgres_rolls_back_a_row_step_by_change_set_while_an_application_writes() {
    // The PostgreSQL twin of the SQLite test above: an unscoped step (its
    // backup covers every table, `events` too) changes rows of `orders` and
    // fails its gate while the application inserts into `events` the whole
    // time. The rollback puts `orders` back, every application row stays;
    // `pg_dump` of `orders` is the oracle.
    let p = PgPlan::new(
        "CREATE TABLE orders (id bigserial PRIMARY KEY, note text NOT NULL);
         INSERT INTO orders (note) SELECT 'seed ' || i FROM generate_series(1, 5000) i;
         CREATE TABLE events (id bigserial PRIMARY KEY, what text NOT NULL);",
        r#"
[[steps]]
id = "mark"
plugin = "pg"
target = "shop"
access = "read-write"
thresholds = ["marked == 0"]

[steps.params]
migrate = "UPDATE orders SET note = 'marked' WHERE id % 10 = 0"

[[steps.params.metrics]]
name = "marked"
query = "SELECT count(*) FROM orders WHERE note = 'marked'"
"#,
    );
    let accepted = p.sluice(&["audit", "--accept", "sluice.toml"]);
    assert_eq!(accepted.code, 0, "{}", accepted.all());
    let dump = || {
        let mut lines: Vec<String> = crate::field::run_tool(
            &crate::field::pg_tool("pg_dump"),
            &["--data-only", "--table=orders", &p.db.url],
        )
        .lines()
        .map(String::from)
        .collect();
        lines.sort();
        lines
    };
    let seeded = dump();
    let mut app = postgres::Client::connect(&p.db.url, postgres::NoTls).unwrap();
    let writer = Writer::start(move || {
        app.execute("INSERT INTO events (what) VALUES ('app')", &[])
            .unwrap();
    });
    let run = p.sluice(&["run", "sluice.toml"]);
    let wrote = writer.stop();
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stdout
            .contains("rollback: undone by change set: the 500 rows"),
        "{}",
        run.stdout
    );
    assert_eq!(dump(), seeded);
    let events: i64 =
        p.db.client()
            .query_one("SELECT count(*) FROM events", &[])
            .unwrap()
            .get(0);
    assert_eq!(events as u64, wrote);
    assert!(wrote > 0, "the application wrote during the run");
}
