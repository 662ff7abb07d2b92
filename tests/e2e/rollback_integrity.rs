//! Rollback integrity (issue 15): a scoped step always rolls back (3),
//! user triggers do not fire while a restore reloads rows (4), verify
//! scripts run as written (6), an empty backup table list is an error
//! (8), and sequences come back with their tables. Each test runs the real
//! `sluice` binary and plugins against a real PostgreSQL or SQLite file and
//! checks the data with its own client.

use std::collections::BTreeMap;

use sluice_e2e::pg_plan::PgPlan;
use sluice_e2e::services::{pg_scratch, PgScratch};
use sluice_e2e::{plugin, sluice_bin, DbState, Scenario};

/// Schema lines (columns, indexes, constraints, user triggers with their
/// enabled state) and every table's rows as text, sorted: this test's own
/// view of the database.
#[derive(Debug, PartialEq, Eq)]
struct PgState {
    schema: Vec<String>,
    tables: BTreeMap<String, Vec<String>>,
}

fn lines(c: &mut postgres::Client, sql: &str) -> Vec<String> {
    c.query(sql, &[])
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}

fn pg_state(db: &PgScratch) -> PgState {
    let mut c = db.client();
    let mut schema = lines(
        &mut c,
        "SELECT concat_ws(' ', 'column', table_name, column_name, data_type, is_nullable, column_default, is_generated, generation_expression) \
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
    schema.extend(lines(
        &mut c,
        "SELECT concat_ws(' ', 'trigger', tgrelid::regclass::text, tgname, tgenabled::text, pg_get_triggerdef(oid)) \
         FROM pg_trigger WHERE NOT tgisinternal",
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

const ROLLED_BACK: [&str; 6] = [
    "backing-up",
    "backed-up",
    "migrating",
    "validating",
    "rolling-back",
    "rolled-back",
];

/// Failure 3. A step scoped to its tables (`tables = [...]`, what `audit`
/// recommends) adds a column and fails its threshold. Its restore needs a
/// staging table twice: `items` is referenced by a table outside the backup
/// (merged back by primary key), `prices` has a generated column (loaded
/// through a staging table). The host must accept both inside the grant,
/// and the proof must pass.
#[test]
fn a_scoped_step_rolls_back_through_its_staging_tables() {
    let p = PgPlan::new(
        r#"
CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 200) g;
CREATE TABLE item_tags (item_id int NOT NULL REFERENCES items (id), tag text NOT NULL);
INSERT INTO item_tags SELECT g, 'tag' FROM generate_series(1, 200, 7) g;
CREATE TABLE prices (
    id int PRIMARY KEY,
    net numeric(10, 2) NOT NULL,
    gross numeric(10, 2) GENERATED ALWAYS AS (net * 1.21) STORED
);
INSERT INTO prices (id, net) SELECT g, g * 2.5 FROM generate_series(1, 200) g;
"#,
        r#"
[[steps]]
id = "sku"
plugin = "pg"
target = "shop"
access = "read-write"
tables = ["items", "prices"]
thresholds = ["missing_sku == 0"]

[steps.params]
tables = ["items", "prices"]
migrate = """
ALTER TABLE items ADD COLUMN sku text;
UPDATE items SET sku = 'SKU-' || id WHERE id % 2 = 0;
INSERT INTO items (id, name) VALUES (1000, 'new item');
UPDATE prices SET net = 0 WHERE id % 5 = 0;
"""

[[steps.params.metrics]]
name = "missing_sku"
query = "SELECT count(*) FROM items WHERE sku IS NULL"
"#,
    );
    let before = pg_state(&p.db);
    let run = p.run();
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stdout.contains("threshold `missing_sku == 0` not met"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("table merged back by primary key"),
        "the merge path ran: {}",
        run.stderr
    );
    assert!(run.stderr.contains("restore verified"), "{}", run.stderr);
    assert_eq!(p.states("sku"), ROLLED_BACK);
    assert_eq!(pg_state(&p.db), before, "column, rows and prices as before");
    // And the next run is not refused.
    let again = p.sluice(&["status", "sluice.toml"]);
    assert_eq!(again.code, 0, "{}", again.all());
}

/// Failure 4. Tables with the ubiquitous triggers: `BEFORE UPDATE …
/// updated_at := now()` on a table other tables reference (restored by an
/// upsert), `BEFORE INSERT` stamping and `AFTER INSERT … pg_notify` plus an
/// event row on a table reloaded with `COPY`, one trigger disabled, one
/// `ENABLE REPLICA`, one `ENABLE ALWAYS`. Migrate changes only rows, so
/// the host undoes them by change set: it must write exactly the pre-step
/// rows, fire nothing (no event row appears), pass its proof, and leave
/// every trigger enabled as it was. (The restore's own trigger handling:
/// `a_restore_that_cannot_disable_triggers_fails_naming_the_table` and the
/// crash suites.)
#[test]
fn user_triggers_do_not_fire_while_rows_are_put_back() {
    let p = PgPlan::new(
        r#"
CREATE TABLE accounts (
    id int PRIMARY KEY,
    owner text NOT NULL,
    balance int NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT '2024-01-01 00:00:00+00'
);
INSERT INTO accounts (id, owner, balance) SELECT g, 'owner ' || g, g * 10 FROM generate_series(1, 100) g;
CREATE TABLE transfers (id int PRIMARY KEY, account_id int NOT NULL REFERENCES accounts (id));
INSERT INTO transfers SELECT g, g FROM generate_series(1, 50) g;
CREATE TABLE ledger (
    id int PRIMARY KEY,
    account_id int NOT NULL,
    amount int NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT '2024-01-01 00:00:00+00'
);
INSERT INTO ledger (id, account_id, amount) SELECT g, 1 + g % 100, g FROM generate_series(1, 300) g;
CREATE TABLE events (id serial PRIMARY KEY, what text NOT NULL);

CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.updated_at := now(); RETURN NEW; END $$;
CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.recorded_at := now(); RETURN NEW; END $$;
CREATE FUNCTION announce() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ledger', NEW.id::text);
    INSERT INTO events (what) VALUES (TG_NAME || ' ' || NEW.id);
    RETURN NEW;
END $$;

CREATE TRIGGER accounts_touch BEFORE UPDATE ON accounts FOR EACH ROW EXECUTE FUNCTION touch();
CREATE TRIGGER accounts_audit AFTER INSERT ON accounts FOR EACH ROW EXECUTE FUNCTION announce();
ALTER TABLE accounts DISABLE TRIGGER accounts_audit;
CREATE TRIGGER ledger_stamp BEFORE INSERT ON ledger FOR EACH ROW EXECUTE FUNCTION stamp();
CREATE TRIGGER ledger_announce AFTER INSERT ON ledger FOR EACH ROW EXECUTE FUNCTION announce();
ALTER TABLE ledger ENABLE ALWAYS TRIGGER ledger_announce;
CREATE TRIGGER ledger_replica AFTER INSERT ON ledger FOR EACH ROW EXECUTE FUNCTION announce();
ALTER TABLE ledger ENABLE REPLICA TRIGGER ledger_replica;
"#,
        r#"
[[steps]]
id = "rebalance"
plugin = "pg"
target = "shop"
access = "read-write"
thresholds = ["emptied == 0"]

[steps.params]
tables = ["accounts", "ledger"]
migrate = """
UPDATE accounts SET balance = 0 WHERE id % 2 = 0;
UPDATE ledger SET amount = -amount WHERE id % 3 = 0;
DELETE FROM ledger WHERE id > 290;
"""

[[steps.params.metrics]]
name = "emptied"
query = "SELECT count(*) FROM accounts WHERE balance = 0"
"#,
    );
    let before = pg_state(&p.db);
    let run = p.run();
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stdout.contains("rollback: undone by change set"),
        "migrate changed only rows: the host undoes them, its triggers off too: {}",
        run.stdout
    );
    assert_eq!(p.states("rebalance"), ROLLED_BACK);
    let after = pg_state(&p.db);
    assert_eq!(
        after.tables["events"],
        Vec::<String>::new(),
        "no trigger wrote an event during the restore"
    );
    assert_eq!(
        after, before,
        "rows (updated_at, recorded_at) and triggers' enabled state as before"
    );
}

/// Failure 4 when disabling is not permitted: the connecting role does not
/// own the table, so the restore fails naming the table instead of firing
/// the triggers; nothing is half-restored.
#[test]
fn a_restore_that_cannot_disable_triggers_fails_naming_the_table() {
    let role = format!("sluice_t_{}", std::process::id());
    let p = PgPlan::exclusive(
        &format!(
            r#"
CREATE ROLE {role} LOGIN;
CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL, updated_at timestamptz NOT NULL DEFAULT '2024-01-01 00:00:00+00');
INSERT INTO notes (id, body) SELECT g, 'note ' || g FROM generate_series(1, 20) g;
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.updated_at := now(); RETURN NEW; END $$;
CREATE TRIGGER notes_touch BEFORE INSERT ON notes FOR EACH ROW EXECUTE FUNCTION touch();
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON notes TO {role};
"#
        ),
        r#"
[[steps]]
id = "blank"
plugin = "pg"
target = "shop"
access = "read-write"
thresholds = ["blank == 0"]

[steps.params]
tables = ["notes"]
migrate = "UPDATE notes SET body = '' WHERE id <= 5"

[[steps.params.metrics]]
name = "blank"
query = "SELECT count(*) FROM notes WHERE body = ''"
"#,
    );
    let before = pg_state(&p.db);
    // The same database, connecting as the role that does not own `notes`.
    let (scheme, rest) = p.db.url.split_once("://").unwrap();
    let (_, host) = rest
        .split_once('@')
        .expect("the scratch URL names its user");
    let url = format!("{scheme}://{role}@{host}");
    let out = |args: &[&str]| {
        p.scenario
            .sluice_with(&sluice_bin(), args, &[("SHOP_PG_URL", &url)])
    };
    let accepted = out(&["audit", "--accept", "sluice.toml"]);
    assert_eq!(accepted.code, 0, "{}", accepted.all());
    let run = out(&["run", "sluice.toml"]);
    let mut c = p.db.client();
    let _ = c.batch_execute(&format!("DROP OWNED BY {role}"));
    drop(c);
    assert_ne!(run.code, 0, "{}", run.all());
    assert!(
        run.all()
            .contains("cannot restore `notes` without firing its triggers (notes_touch)"),
        "{}",
        run.all()
    );
    let after = pg_state(&p.db);
    assert_ne!(
        after, before,
        "the migrated rows stay: nothing half-restored"
    );
    assert!(
        after.tables["notes"]
            .iter()
            .all(|r| r.contains("2024-01-01")),
        "no trigger fired: {:?}",
        after.tables["notes"]
    );
    // The role is cluster-wide: drop it.
    let admin = sluice_e2e::services::pg_url();
    let mut c = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
    c.batch_execute(&format!("DROP ROLE IF EXISTS {role}"))
        .unwrap();
    // Only now may other tests use the server again.
    drop(p);
}

/// Failure 8 (part). `params.tables = []` used to mean "every table of
/// `public`"; it is an error naming the step in `plan`, `check` and `run`,
/// and nothing runs.
#[test]
fn an_empty_backup_table_list_is_an_error_naming_the_step() {
    let p = PgPlan::new(
        "CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items VALUES (1), (2);",
        r#"
[[steps]]
id = "nothing-saved"
plugin = "pg"
target = "shop"
access = "read-write"

[steps.params]
tables = []
migrate = "DELETE FROM items"
"#,
    );
    for command in ["plan", "check"] {
        let out = p.sluice(&[command, "sluice.toml"]);
        assert_eq!(out.code, 2, "{command}: {}", out.all());
        assert!(
            out.stderr.contains("step `nothing-saved`")
                && out.stderr.contains("params.tables is empty"),
            "{command}: {}",
            out.stderr
        );
    }
    let _ = p.sluice(&["audit", "--accept", "sluice.toml"]);
    let run = p.sluice(&["run", "sluice.toml"]);
    assert_ne!(run.code, 0, "{}", run.all());
    let mut c = p.db.client();
    assert_eq!(lines(&mut c, "SELECT count(*)::text FROM items"), ["2"]);
}

/// A sqitch project whose scripts use what real projects do: `SET`,
/// `SET LOCAL`, `RESET`, savepoints and `SET LOCAL role` in verify scripts,
/// and psql's `\gexec` (at the end of a query's line and on its own line)
/// in deploy and verify scripts.
fn sqitch_project(s: &Scenario, verify_extra: &str) {
    for dir in ["deploy", "revert", "verify"] {
        std::fs::create_dir_all(s.path().join("proj").join(dir)).unwrap();
    }
    s.write("proj/sqitch.conf", "[core]\n\tengine = pg\n");
    s.write(
        "proj/sqitch.plan",
        "%syntax-version=1.0.0\n%project=proj\n\nwidgets 2024-01-01T10:00:00Z Ann <ann@example.org> # Widgets and their log.\n",
    );
    s.write(
        "proj/deploy/widgets.sql",
        r#"-- Deploy proj:widgets to pg
BEGIN;
CREATE TABLE widgets (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO widgets VALUES (1, 'one'), (2, 'two');
SELECT format('CREATE TABLE %I (widget_id int NOT NULL, note text)', 'widget_' || w)
  FROM unnest(ARRAY['log', 'notes']) w\gexec
SELECT format('INSERT INTO widget_log VALUES (%s, %L)', id, name) FROM widgets ORDER BY id
\gexec
COMMIT;
"#,
    );
    s.write(
        "proj/revert/widgets.sql",
        "BEGIN;\nDROP TABLE widget_notes;\nDROP TABLE widget_log;\nDROP TABLE widgets;\nCOMMIT;\n",
    );
    s.write(
        "proj/verify/widgets.sql",
        &format!(
            r#"-- Verify proj:widgets on pg
BEGIN;
SET client_min_messages = warning;
SET LOCAL lock_timeout = '5s';
SET search_path TO public;
SAVEPOINT shape;
SELECT id, name FROM widgets WHERE FALSE;
ROLLBACK TO SAVEPOINT shape;
RELEASE SAVEPOINT shape;
SET LOCAL role pg_read_all_data;
SELECT 1 / count(*) FROM widget_log;
RESET role;
RESET client_min_messages;
SELECT 'SELECT count(*) FROM widget_notes HAVING count(*) = 0' \gexec
{verify_extra}
ROLLBACK;
"#
        ),
    );
}

fn sqitch_plan(s: &Scenario) {
    s.write(
        "sluice.toml",
        &format!(
            r#"
[values]
db = {{ env = "APP_PG_URL" }}

[targets.app]
kind = "postgres"
connection = "db"

[plugins.sqitch]
path = "{}"

[[steps]]
id = "widgets"
plugin = "sqitch"
target = "app"
access = "read-write"
files = [{{ name = "proj", path = "proj", access = "read-only" }}]
thresholds = ["verified == 1"]
params = {{ project = "proj", change = "widgets" }}
"#,
            plugin("sqitch.wasm").display()
        ),
    );
}

/// Failure 6. The deploy builds tables through `\gexec`, the verify script
/// sets settings, uses a savepoint and a role, and runs a `\gexec`: the
/// step completes and every statement ran.
#[test]
fn verify_scripts_run_as_written_with_settings_savepoints_roles_and_gexec() {
    let db = pg_scratch();
    let s = Scenario::new();
    sqitch_project(&s, "");
    sqitch_plan(&s);
    let sluice = |args: &[&str]| s.sluice_with(&sluice_bin(), args, &[("APP_PG_URL", &db.url)]);
    let accepted = sluice(&["audit", "--accept", "sluice.toml"]);
    assert_eq!(accepted.code, 0, "{}", accepted.all());
    let run = sluice(&["run", "sluice.toml"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let mut c = db.client();
    assert_eq!(
        lines(
            &mut c,
            "SELECT string_agg(widget_id || ':' || note, ',' ORDER BY widget_id) FROM widget_log"
        ),
        ["1:one,2:two"],
        "\\gexec ran each generated statement"
    );
    assert_eq!(
        lines(&mut c, "SELECT count(*)::text FROM widget_notes"),
        ["0"]
    );
}

/// Failure 6, refusals: a meta-command sluice does not run is refused by
/// name even after SQL on its line, and the settings that would leave or
/// widen the host's read-only transaction stay refused.
#[test]
fn unsupported_meta_commands_and_transaction_settings_stay_refused_in_verify() {
    for (extra, expect) in [
        (
            "SELECT 1 AS x \\gset",
            "psql meta-command `\\gset` is not supported",
        ),
        (
            "SET TRANSACTION READ WRITE;",
            "`SET TRANSACTION READ WRITE` is refused in a read-only phase",
        ),
        (
            "SET SESSION AUTHORIZATION DEFAULT;",
            "is refused in a read-only phase: it changes the session's identity",
        ),
        (
            "SET default_transaction_read_only = off;",
            "`default_transaction_read_only` is the host's",
        ),
    ] {
        let db = pg_scratch();
        let s = Scenario::new();
        sqitch_project(&s, extra);
        sqitch_plan(&s);
        let sluice = |args: &[&str]| s.sluice_with(&sluice_bin(), args, &[("APP_PG_URL", &db.url)]);
        let accepted = sluice(&["audit", "--accept", "sluice.toml"]);
        assert_eq!(accepted.code, 0, "{}", accepted.all());
        let run = sluice(&["run", "sluice.toml"]);
        assert_ne!(run.code, 0, "{extra}: {}", run.all());
        assert!(run.all().contains(expect), "{extra}: {}", run.all());
        let mut c = db.client();
        assert_eq!(
            lines(
                &mut c,
                "SELECT count(*)::text FROM pg_tables WHERE tablename LIKE 'widget%'"
            ),
            ["0"],
            "{extra}: rolled back"
        );
    }
}

/// Failure 3 and 4 on SQLite: a step scoped to `customers` whose table has
/// an `AFTER UPDATE … updated_at` trigger and an `AFTER INSERT` trigger
/// writing an audit table outside the backup; the restore must reload
/// exactly the saved rows, fire neither trigger, and put both back.
#[test]
fn a_scoped_sqlite_restore_fires_no_user_trigger_and_restores_them() {
    let s = Scenario::new();
    s.seed(
        "shop.db",
        r#"
CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, updated_at TEXT NOT NULL DEFAULT '2024-01-01');
CREATE TABLE audit (id INTEGER PRIMARY KEY, what TEXT NOT NULL);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200)
INSERT INTO customers (id, name) SELECT i, 'customer ' || i FROM n;
CREATE TRIGGER customers_touch AFTER UPDATE ON customers FOR EACH ROW
BEGIN UPDATE customers SET updated_at = datetime('now') WHERE id = NEW.id AND updated_at <> datetime('now'); END;
CREATE TRIGGER customers_audit AFTER INSERT ON customers FOR EACH ROW
BEGIN INSERT INTO audit (what) VALUES ('insert ' || NEW.id); END;
CREATE VIEW named AS SELECT id, name FROM customers;
"#,
    );
    s.write(
        "sluice.toml",
        &format!(
            r#"
[targets.shop]
kind = "sqlite"
path = "shop.db"

[plugins.sqlite]
path = "{}"

[[steps]]
id = "rename"
plugin = "sqlite"
target = "shop"
access = "read-write"
tables = ["customers"]
thresholds = ["renamed == 0"]

[steps.params]
tables = ["customers"]
migrate = "ALTER TABLE customers ADD COLUMN tag TEXT; UPDATE customers SET name = upper(name) WHERE id % 4 = 0"

[[steps.params.metrics]]
name = "renamed"
query = "SELECT count(*) FROM customers WHERE name = upper(name)"
"#,
            plugin("sqlite.wasm").display()
        ),
    );
    let before = DbState::of(&s.path().join("shop.db"));
    let accepted = s.sluice(&["audit", "--accept", "sluice.toml"]);
    assert_eq!(accepted.code, 0, "{}", accepted.all());
    let run = s.sluice(&["run", "sluice.toml"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stderr.contains("restore verified"), "{}", run.stderr);
    assert_eq!(s.step_state("rename"), "rolled-back");
    let after = DbState::of(&s.path().join("shop.db"));
    assert_eq!(after.rows("audit"), 0, "no audit row from the restore");
    assert_eq!(after, before, "rows, triggers and view as before");
}

/// `last_value` and `is_called` of a sequence, read by this test's own
/// client.
fn sequence(db: &PgScratch, name: &str) -> (i64, bool) {
    let row = db
        .client()
        .query_one(&format!("SELECT last_value, is_called FROM {name}"), &[])
        .unwrap();
    (row.get(0), row.get(1))
}

/// The id the next row of `table` gets (inserted, so call it last).
fn next_id(db: &PgScratch, table: &str) -> i32 {
    db.client()
        .query_one(
            &format!("INSERT INTO {table} (note) VALUES ('next') RETURNING id"),
            &[],
        )
        .unwrap()
        .get(0)
}

const SEQUENCE_SEED: &str = r#"
CREATE TABLE orders (id serial PRIMARY KEY, note text NOT NULL);
INSERT INTO orders (note) SELECT 'order ' || g FROM generate_series(1, 100) g;
CREATE TABLE tickets (id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, note text NOT NULL);
INSERT INTO tickets (note) SELECT 'ticket ' || g FROM generate_series(1, 20) g;
-- A sequence reset (as a restore of a recreated table leaves it): the next
-- id is 500 itself, which only `is_called = false` says.
SELECT setval(pg_get_serial_sequence('tickets', 'id'), 500, false);
CREATE TABLE audit_log (id serial PRIMARY KEY, note text NOT NULL);
INSERT INTO audit_log (note) VALUES ('first');
"#;

/// A step that inserts rows into tables with a serial and an identity
/// column, then fails its threshold: the undo by change set takes the rows
/// out and sets the sequences back too (no one drew from them since), so
/// the next insert gets the id it would have got before the step. Checked
/// with this test's own reads of the sequences.
#[test]
fn a_rolled_back_step_puts_its_tables_sequences_back() {
    let p = PgPlan::new(
        SEQUENCE_SEED,
        r#"
[[steps]]
id = "bulk"
plugin = "pg"
target = "shop"
access = "read-write"
tables = ["orders", "tickets"]
thresholds = ["orders == 100"]

[steps.params]
tables = ["orders", "tickets"]
migrate = """
INSERT INTO orders (note) SELECT 'bulk ' || g FROM generate_series(1, 25) g;
INSERT INTO tickets (note) SELECT 'bulk ' || g FROM generate_series(1, 7) g;
"""

[[steps.params.metrics]]
name = "orders"
query = "SELECT count(*) FROM orders"
"#,
    );
    let before = pg_state(&p.db);
    assert_eq!(sequence(&p.db, "orders_id_seq"), (100, true));
    assert_eq!(sequence(&p.db, "tickets_id_seq"), (500, false));
    let run = p.run();
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stdout.contains("threshold `orders == 100` not met"),
        "{}",
        run.stdout
    );
    // Undone by change set: the rows the step inserted go, and each
    // sequence it moved is set back, as no one drew from it since.
    assert!(
        run.stdout.contains("rollback: undone by change set"),
        "{}",
        run.stdout
    );
    assert_eq!(p.states("bulk"), ROLLED_BACK);
    assert_eq!(pg_state(&p.db), before, "rows as before");
    assert_eq!(sequence(&p.db, "orders_id_seq"), (100, true));
    assert_eq!(sequence(&p.db, "tickets_id_seq"), (500, false));
    assert_eq!(next_id(&p.db, "orders"), 101);
    assert_eq!(next_id(&p.db, "tickets"), 500);
}

/// The same when PostgreSQL undid the migrate itself (its transaction
/// failed): the tables equal the backup, so nothing is restored, but the
/// sequences the failed inserts advanced are put back. A sequence of a
/// table the step did not back up (`audit_log`, which the unscoped step's
/// migrate also drew from, as an application might meanwhile) is not
/// the step's: it stays advanced and does not fail the proof.
#[test]
fn sequences_a_failed_transaction_advanced_are_put_back() {
    let p = PgPlan::new(
        SEQUENCE_SEED,
        r#"
[[steps]]
id = "fails"
plugin = "pg"
target = "shop"
access = "read-write"

[steps.params]
tables = ["orders", "tickets"]
migrate = """
INSERT INTO orders (note) SELECT 'bulk ' || g FROM generate_series(1, 25) g;
INSERT INTO tickets (note) SELECT 'bulk ' || g FROM generate_series(1, 7) g;
INSERT INTO audit_log (note) SELECT 'bulk ' || g FROM generate_series(1, 3) g;
SELECT 1 / 0;
"""
"#,
    );
    let before = pg_state(&p.db);
    let run = p.run();
    assert_ne!(run.code, 0, "{}", run.all());
    assert!(
        run.stderr.contains("transaction already undone"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("sequence restored"), "{}", run.stderr);
    assert_eq!(
        p.states("fails").last().map(String::as_str),
        Some("rolled-back"),
        "{}",
        run.all()
    );
    assert_eq!(pg_state(&p.db), before, "rows as before");
    assert_eq!(sequence(&p.db, "orders_id_seq"), (100, true));
    assert_eq!(sequence(&p.db, "tickets_id_seq"), (500, false));
    assert_eq!(
        sequence(&p.db, "audit_log_id_seq"),
        (4, true),
        "not the step's sequence: left as the failed insert advanced it"
    );
    assert_eq!(next_id(&p.db, "orders"), 101);
    assert_eq!(next_id(&p.db, "tickets"), 500);
}
