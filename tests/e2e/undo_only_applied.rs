//! Undo only what was done (issue 15, failure 2): a step whose migrate
//! applied nothing, because its change was already deployed by the tool
//! itself, rolls back by doing nothing. Each database here is deployed
//! outside sluice (by Debian's sqitch, or with golang-migrate's record
//! written as golang-migrate writes it), the application then stores rows in
//! the table the change created, and a sluice plan whose step fails its
//! thresholds rolls that step back automatically: the table, its rows and
//! the tool's registry must all still be there, and the host must still
//! prove the pre-step state.

use sluice_e2e::Scenario;

use crate::golang_migrate::Migrations;
use crate::sqitch::{sqitch, SqitchScenario};
use crate::sqitch_sqlite::{self, sqlite3, SqliteSqitch};

/// The step ended `rolled-back` with the host's own proof of the pre-step
/// state.
fn assert_proved(scenario: &Scenario, step: &str) {
    let transitions = scenario.transitions(step);
    assert!(
        transitions
            .last()
            .is_some_and(|(state, detail)| state == "rolled-back"
                && (detail.contains("table checksums equal the pre-step state")
                    || detail.contains("schema equals the pre-step state"))),
        "the host proved the pre-step state: {transitions:?}"
    );
}

/// A verify script that fails whatever the database holds: validate
/// reports `verified = 0`, so `verified == 1` fails and rollback runs.
const FAILING_VERIFY: &str = "BEGIN;\nSELECT no_such_column FROM users WHERE 1 = 0;\nROLLBACK;\n";

#[test]
fn a_change_sqitch_deployed_on_postgres_is_left_alone_by_the_rollback() {
    // Plan: appschema, users. sqitch deploys the whole project first.
    let s = SqitchScenario::new(2, "");
    let project = s.scenario.path().join("flipr");
    sqitch(&project, &["deploy"], &s.db.url);
    let mut app = s.db.client();
    app.batch_execute(
        "INSERT INTO flipr.users (nickname, password, fullname) VALUES ('ada', 'x', 'Ada L.'), ('bob', 'y', 'Bob T.')",
    )
    .unwrap();
    let oid = s.lines("SELECT 'flipr.users'::regclass::oid::text");
    let events = s.lines("SELECT event || ' ' || change FROM sqitch.events ORDER BY committed_at");
    assert_eq!(events.len(), 4, "{events:?}");
    s.scenario.write(
        "flipr/verify/users.sql",
        &FAILING_VERIFY.replace("users", "flipr.users"),
    );

    let run = s.run();
    assert_eq!(run.code, 1, "step failed and rolled back: {}", run.all());
    assert!(
        run.stdout
            .contains("threshold `verified == 1` not met (verified = 0)"),
        "{}",
        run.stdout
    );
    assert_eq!(
        run.stderr
            .matches("change already deployed (sqitch registry): nothing to do")
            .count(),
        2,
        "{}",
        run.stderr
    );
    // The host's change set of a migrate that applied nothing is empty:
    // nothing is undone, as the plugin's own rollback would decide.
    assert!(
        run.stdout
            .contains("undone by change set: the 0 rows the step changed"),
        "{}",
        run.stdout
    );
    assert!(
        !run.stderr.contains("running the revert script"),
        "{}",
        run.stderr
    );
    assert_proved(&s.scenario, "users");

    // The very table (never dropped and recreated) with the app's rows.
    assert_eq!(s.lines("SELECT 'flipr.users'::regclass::oid::text"), oid);
    assert_eq!(
        s.lines("SELECT nickname || ' ' || fullname FROM flipr.users ORDER BY 1"),
        ["ada Ada L.", "bob Bob T."]
    );
    // sqitch's registry as sqitch left it: no revert event, nothing to
    // deploy by sqitch's own reading.
    assert_eq!(
        s.lines("SELECT event || ' ' || change FROM sqitch.events ORDER BY committed_at"),
        events
    );
    assert_eq!(s.lines("SELECT change FROM sqitch.changes").len(), 4);
    let status = sqitch(&project, &["status"], &s.db.url);
    assert!(
        status.contains("Nothing to deploy (up-to-date)"),
        "{status}"
    );
}

#[test]
fn a_change_sqitch_deployed_on_sqlite_is_left_alone_by_the_rollback() {
    // Plan: users. sqitch deploys the whole project first.
    let s = SqliteSqitch::new(1);
    let project = s.scenario.path().join("flipr");
    sqitch_sqlite::sqitch(&project, &["deploy"], &s.db());
    sqlite3(
        &s.db(),
        "PRAGMA foreign_keys = ON; \
         INSERT INTO users (nickname, password) VALUES ('ada', 'x'), ('bob', 'y'); \
         INSERT INTO flips (nickname, body) VALUES ('ada', 'hello');",
    );
    let events = sqlite3(
        &s.registry(),
        "SELECT event || ' ' || change FROM events ORDER BY committed_at",
    );
    assert_eq!(events.len(), 4, "{events:?}");
    s.scenario.write("flipr/verify/users.sql", FAILING_VERIFY);

    let run = s.run();
    assert_eq!(run.code, 1, "step failed and rolled back: {}", run.all());
    assert!(
        run.stdout
            .contains("threshold `verified == 1` not met (verified = 0)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains("change already deployed (sqitch registry): nothing to do"),
        "{}",
        run.stderr
    );
    // The host's change set of a migrate that applied nothing is empty:
    // nothing is undone, as the plugin's own rollback would decide.
    assert!(
        run.stdout
            .contains("undone by change set: the 0 rows the step changed"),
        "{}",
        run.stdout
    );
    assert!(
        !run.stderr.contains("running the revert script"),
        "{}",
        run.stderr
    );
    assert_proved(&s.scenario, "users");

    assert_eq!(
        sqlite3(&s.db(), "SELECT nickname FROM users ORDER BY 1"),
        ["ada", "bob"]
    );
    assert_eq!(
        sqlite3(&s.db(), "SELECT nickname || ' ' || body FROM flips"),
        ["ada hello"]
    );
    assert_eq!(
        sqlite3(
            &s.registry(),
            "SELECT event || ' ' || change FROM events ORDER BY committed_at"
        ),
        events
    );
    assert_eq!(
        sqlite3(&s.registry(), "SELECT count(*) FROM changes"),
        ["4"]
    );
    let status = sqitch_sqlite::sqitch(&project, &["status"], &s.db());
    assert!(
        status.contains("Nothing to deploy (up-to-date)"),
        "{status}"
    );
}

#[test]
fn a_migration_golang_migrate_applied_is_left_alone_by_the_rollback() {
    let m = Migrations::new(1);
    // Migration 1 applied as golang-migrate applies it: the record table,
    // `(1, dirty)` committed, the up script, `(1, clean)`.
    let up = std::fs::read_to_string(m.scenario.path().join("db/1_create_users.up.sql")).unwrap();
    let mut app = m.db.client();
    app.batch_execute(
        "CREATE TABLE IF NOT EXISTS public.schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL); \
         BEGIN; TRUNCATE schema_migrations; INSERT INTO schema_migrations (version, dirty) VALUES (1, true); COMMIT;",
    )
    .unwrap();
    app.batch_execute(&up).unwrap();
    app.batch_execute(
        "BEGIN; TRUNCATE schema_migrations; INSERT INTO schema_migrations (version, dirty) VALUES (1, false); COMMIT;",
    )
    .unwrap();
    app.batch_execute("INSERT INTO users (email) VALUES ('ada@example.org'), ('bob@example.org')")
        .unwrap();
    let oid = m.lines("SELECT 'public.users'::regclass::oid::text");
    // A threshold that cannot hold at version 1: the step's rollback runs.
    let plan = m.scenario.read("sluice.toml");
    let gated = plan.replace(
        r#"thresholds = ["version == 1", "dirty == 0"]"#,
        r#"thresholds = ["dirty == 0", "version >= 2"]"#,
    );
    assert_ne!(gated, plan);
    m.scenario.write("sluice.toml", &gated);

    let run = m.run();
    assert_eq!(run.code, 1, "step failed and rolled back: {}", run.all());
    assert!(
        run.stdout.contains("threshold `version >= 2` not met"),
        "{}",
        run.stdout
    );
    assert_proved(&m.scenario, "v1");
    assert_eq!(m.record(), ["1 false"]);
    assert_eq!(
        m.lines("SELECT id::text || ' ' || email FROM users ORDER BY id"),
        ["1 ada@example.org", "2 bob@example.org"]
    );
    // The very table, never dropped and recreated…
    assert_eq!(m.lines("SELECT 'public.users'::regclass::oid::text"), oid);
    // …and its sequence went nowhere either: the app's next row follows.
    assert_eq!(
        m.lines("INSERT INTO users (email) VALUES ('cy@example.org') RETURNING id::text"),
        ["3"]
    );
    assert!(
        run.stderr
            .contains("migration already applied (schema_migrations): nothing to do"),
        "{}",
        run.stderr
    );
    // The host's change set of a migrate that applied nothing is empty.
    assert!(
        run.stdout
            .contains("undone by change set: the 0 rows the step changed"),
        "{}",
        run.stdout
    );
    assert!(
        !run.stderr.contains("running the down script"),
        "{}",
        run.stderr
    );
}
