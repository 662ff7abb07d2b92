//! golang-migrate projects against a real PostgreSQL: the directory in
//! tests/fixtures/golang-migrate (`N_name.up.sql` / `N_name.down.sql`) is
//! copied into a scenario folder, granted read-only and run migration by
//! migration through the real `sluice` binary (the sqitch plugin with
//! `format = "golang-migrate"`); the schema and golang-migrate's own
//! `schema_migrations` record are checked with the test's own client.
//!
//! The real `migrate` CLI is not packaged by Debian, so there is no
//! side-by-side run here (the sqitch tests have one).

use std::path::Path;

use sluice_e2e::services::{pg_scratch, PgScratch};
use sluice_e2e::{plugin, root, sluice_bin, Outcome, Scenario};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

pub(crate) struct Migrations {
    pub(crate) scenario: Scenario,
    pub(crate) db: PgScratch,
}

impl Migrations {
    /// The fixture in `db/`, a plan running versions `1..=last`, each step
    /// gated on golang-migrate's record showing it applied and clean.
    pub(crate) fn new(last: u64) -> Migrations {
        let db = pg_scratch();
        let scenario = Scenario::new();
        copy_dir(
            &root().join("tests/fixtures/golang-migrate"),
            &scenario.path().join("db"),
        );
        let mut steps = String::new();
        for version in 1..=last {
            steps.push_str(&format!(
                r#"
[[steps]]
id = "v{version}"
plugin = "sqitch"
target = "app"
access = "read-write"
files = [{{ name = "db", path = "db", access = "read-only" }}]
thresholds = ["version == {version}", "dirty == 0"]
params = {{ format = "golang-migrate", migrations = "db", version = {version} }}
"#
            ));
        }
        scenario.write(
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
{steps}"#,
                plugin("sqitch.wasm").display()
            ),
        );
        Migrations { scenario, db }
    }

    fn sluice(&self, args: &[&str]) -> Outcome {
        self.scenario
            .sluice_with(&sluice_bin(), args, &[("APP_PG_URL", &self.db.url)])
    }

    pub(crate) fn run(&self) -> Outcome {
        let accepted = self.sluice(&["audit", "--accept", "sluice.toml"]);
        assert_eq!(accepted.code, 0, "audit --accept: {}", accepted.all());
        self.sluice(&["run", "sluice.toml"])
    }

    pub(crate) fn lines(&self, sql: &str) -> Vec<String> {
        self.db
            .client()
            .query(sql, &[])
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect()
    }

    /// golang-migrate's record as `version dirty` lines.
    pub(crate) fn record(&self) -> Vec<String> {
        self.lines("SELECT version::text || ' ' || dirty::text FROM schema_migrations")
    }

    fn tables(&self) -> Vec<String> {
        self.lines(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
        )
    }

    fn users_columns(&self) -> Vec<String> {
        self.lines(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = 'users' ORDER BY ordinal_position",
        )
    }

    fn proved(&self, step: &str) -> bool {
        self.scenario
            .transitions(step)
            .last()
            .is_some_and(|(state, detail)| {
                // Restored, or undone by change set (golang-migrate's
                // record is truncated and rewritten: recorded since the
                // truncate's rows are logged): either way proven.
                state == "rolled-back"
                    && (detail.contains("table checksums equal the pre-step state")
                        || (detail.contains("undone by change set")
                            && detail.contains("read back")
                            && detail.contains("schema equals the pre-step state")))
            })
    }
}

#[test]
fn every_migration_runs_with_golang_migrates_record_and_rolls_back() {
    let m = Migrations::new(4);
    let run = m.run();
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(m.record(), ["4 false"], "one row: the last version, clean");
    assert_eq!(m.tables(), ["orders", "schema_migrations", "users"]);
    assert_eq!(m.users_columns(), ["id", "email", "name"]);
    assert_eq!(
        m.lines(
            "SELECT u.name || ' ' || o.total_cents FROM orders o JOIN users u ON u.id = o.user_id ORDER BY u.name"
        ),
        ["Ada 1000", "Bob 1000"]
    );
    let report = m.sluice(&["report", "sluice.toml", "--format", "json"]);
    assert!(
        report
            .stdout
            .contains("schema_migrations: version 3, dirty false"),
        "validate's detail is in the report: {}",
        report.stdout
    );

    // Again: every step is complete; nothing runs twice.
    let again = m.sluice(&["run", "sluice.toml"]);
    assert_eq!(again.code, 0, "{}", again.all());
    assert_eq!(m.record(), ["4 false"]);

    // Back to version 2: migration 4 has no down file (its rows come back
    // from the backup), 3's down drops orders; the record follows.
    let back = m.sluice(&["rollback", "sluice.toml", "--to", "v2"]);
    assert_eq!(back.code, 0, "{}", back.all());
    assert!(m.proved("v4") && m.proved("v3"), "{}", back.all());
    assert_eq!(m.record(), ["2 false"]);
    assert_eq!(m.tables(), ["schema_migrations", "users"]);

    // All the way: the record table the first step created is gone too.
    let all = m.sluice(&["rollback", "sluice.toml"]);
    assert_eq!(all.code, 0, "{}", all.all());
    assert!(m.proved("v1"), "{}", all.all());
    assert!(m.tables().is_empty(), "{:?}", m.tables());
}

#[test]
fn a_failing_migration_rolls_back_and_a_dirty_record_is_refused_until_rolled_back() {
    let m = Migrations::new(5);
    // Changes the schema, then fails: golang-migrate would leave (5, dirty).
    m.scenario.write(
        "db/5_broken.up.sql",
        "ALTER TABLE users ADD COLUMN nickname text;\nSELECT 1 / (SELECT count(*) - 2 FROM users);\n",
    );
    m.scenario.write(
        "db/5_broken.down.sql",
        "ALTER TABLE users DROP COLUMN nickname;\n",
    );
    let run = m.run();
    assert_ne!(run.code, 0, "{}", run.all());
    assert!(
        run.all().contains("5_broken.up.sql") && run.all().contains("division by zero"),
        "the error names the script: {}",
        run.all()
    );
    assert!(
        m.proved("v5"),
        "the host proved the rollback: {}",
        run.all()
    );
    assert_eq!(m.record(), ["4 false"], "the record is back, not dirty");
    assert_eq!(m.users_columns(), ["id", "email", "name"]);

    // A dirty record, as golang-migrate leaves it after a failure of its
    // own: sluice refuses, naming the version, and changes nothing.
    m.db.client()
        .batch_execute("UPDATE schema_migrations SET dirty = true")
        .unwrap();
    let refused = m.sluice(&["run", "sluice.toml"]);
    assert_ne!(refused.code, 0, "{}", refused.all());
    assert!(
        refused.all().contains("version 4 is dirty"),
        "{}",
        refused.all()
    );
    assert_eq!(m.record(), ["4 true"]);
    assert_eq!(m.users_columns(), ["id", "email", "name"]);

    // The dirty flag is a write made after the step into the record the
    // step changed: rolling back is refused (the undo contract), nothing
    // undone, until the operator decides to discard it.
    let refused = m.sluice(&["rollback", "sluice.toml", "--to", "v3"]);
    assert_eq!(refused.code, 6, "{}", refused.all());
    assert!(
        refused.stdout.contains("table `schema_migrations`"),
        "{}",
        refused.all()
    );
    assert_eq!(m.record(), ["4 true"]);

    // Rolling back the step that ran version 4, discarding the flag, leaves
    // a consistent record (version 3, clean) and the schema and rows as
    // before it, proven.
    let back = m.sluice(&[
        "rollback",
        "sluice.toml",
        "--to",
        "v3",
        "--discard-later-writes",
    ]);
    assert_eq!(back.code, 0, "{}", back.all());
    assert!(m.proved("v4"), "{}", back.all());
    assert_eq!(m.record(), ["3 false"]);
    assert_eq!(m.lines("SELECT count(*)::text FROM orders"), ["0"]);

    // Fixed, the plan runs to the end.
    m.scenario.write(
        "db/5_broken.up.sql",
        "ALTER TABLE users ADD COLUMN nickname text;\n",
    );
    let fixed = m.sluice(&["run", "sluice.toml"]);
    assert_eq!(fixed.code, 0, "{}", fixed.all());
    assert_eq!(m.record(), ["5 false"]);
    assert_eq!(m.users_columns(), ["id", "email", "name", "nickname"]);
}

#[test]
fn a_migration_out_of_order_is_refused_naming_the_versions() {
    let m = Migrations::new(3);
    // Skip version 2: the plan runs 1 then 3.
    let plan = m.scenario.read("sluice.toml");
    let start = plan.find("\n[[steps]]\nid = \"v2\"").unwrap();
    let end = plan.find("\n[[steps]]\nid = \"v3\"").unwrap();
    m.scenario.write(
        "sluice.toml",
        &format!("{}{}", &plan[..start], &plan[end..]),
    );
    let run = m.run();
    assert_ne!(run.code, 0, "{}", run.all());
    assert!(
        run.all()
            .contains("migration 3 follows version 2 in db, but public.schema_migrations says the current version is 1"),
        "{}",
        run.all()
    );
    assert_eq!(m.record(), ["1 false"]);
}
