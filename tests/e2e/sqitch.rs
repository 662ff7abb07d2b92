//! The sqitch plugin against a real PostgreSQL: the tutorial-style project
//! in tests/fixtures/sqitch/flipr is copied into a scenario folder, granted
//! read-only, and deployed change by change through the real `sluice`
//! binary; the database (schema, functions and sqitch's registry rows) is
//! checked with the test's own client.

use std::path::Path;

use sluice_e2e::services::{pg_scratch, PgScratch};
use sluice_e2e::{plugin, root, sluice_bin, Outcome, Scenario};

/// The fixture's changes, in plan order, as steps name them.
const CHANGES: [(&str, &str); 4] = [
    ("appschema", "appschema"),
    ("users", "users"),
    ("insert-user-v1", "insert_user@v1.0.0-dev1"),
    ("insert-user", "insert_user"),
];

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let dest = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &dest);
        } else {
            std::fs::copy(&path, &dest).unwrap();
        }
    }
}

pub(crate) struct SqitchScenario {
    pub(crate) scenario: Scenario,
    pub(crate) db: PgScratch,
}

impl SqitchScenario {
    /// The flipr project in `flipr/`, a plan deploying the first `n`
    /// changes, each step with `extra` added to its params.
    pub(crate) fn new(n: usize, extra: &str) -> SqitchScenario {
        let db = pg_scratch();
        let scenario = Scenario::new();
        copy_dir(
            &root().join("tests/fixtures/sqitch/flipr"),
            &scenario.path().join("flipr"),
        );
        let mut steps = String::new();
        for (id, change) in CHANGES.iter().take(n) {
            steps.push_str(&format!(
                r#"
[[steps]]
id = "{id}"
plugin = "sqitch"
target = "app"
access = "read-write"
files = [{{ name = "flipr", path = "flipr", access = "read-only" }}]
thresholds = ["verified == 1"]
params = {{ project = "flipr", change = "{change}"{extra} }}
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
        SqitchScenario { scenario, db }
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

    fn registry_exists(&self) -> bool {
        !self
            .lines("SELECT nspname::text FROM pg_namespace WHERE nspname = 'sqitch'")
            .is_empty()
    }
}

/// sqitch's change id, computed here from its documented formula with
/// `sha1sum`, independently of the plugin.
fn sqitch_id(info: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("sha1sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha1sum (coreutils)");
    let mut input = format!("change {}\0", info.len()).into_bytes();
    input.extend_from_slice(info.as_bytes());
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..40].to_string()
}

#[test]
fn every_change_deploys_with_sqitchs_registry_rows() {
    let s = SqitchScenario::new(4, "");
    let run = s.run();
    assert_eq!(run.code, 0, "{}", run.all());

    // The schema the scripts describe: the table through the `\ir`
    // include, its default from sqitch.conf's deploy variables, the
    // reworked function body.
    assert_eq!(
        s.lines(
            "SELECT column_name::text || ' ' || coalesce(column_default, '') FROM information_schema.columns \
             WHERE table_schema = 'flipr' AND table_name = 'users' ORDER BY ordinal_position"
        ),
        [
            "nickname ",
            "password ",
            "fullname 'anonymous'::text",
            "timestamp now()"
        ]
    );
    let body = s.lines("SELECT prosrc FROM pg_proc WHERE proname = 'insert_user'");
    assert_eq!(body.len(), 1);
    assert!(
        body[0].contains("lower($1)"),
        "the reworked version: {body:?}"
    );

    // sqitch's registry: every change in plan order, ids as sqitch computes
    // them, the tag, the dependencies resolved, a deploy event each.
    let changes = s.lines(
        "SELECT change || ' ' || change_id || ' ' || project || ' ' || planner_email || ' ' || to_char(planned_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
         FROM sqitch.changes ORDER BY committed_at",
    );
    let appschema_id = sqitch_id(
        "project flipr\nuri https://example.org/flipr/\nchange appschema\nplanner Marge N. O'Vera <marge@example.org>\ndate 2024-01-01T10:00:00Z\n\nAdd schema for all flipr objects.",
    );
    let users_id = sqitch_id(&format!(
        "project flipr\nuri https://example.org/flipr/\nchange users\nparent {appschema_id}\nplanner Marge N. O'Vera <marge@example.org>\ndate 2024-01-01T10:05:00Z\nrequires\n  + appschema\n\nCreates table to track our users."
    ));
    assert_eq!(changes.len(), 4, "{changes:?}");
    assert_eq!(
        changes[0],
        format!("appschema {appschema_id} flipr marge@example.org 2024-01-01T10:00:00Z")
    );
    assert_eq!(
        changes[1],
        format!("users {users_id} flipr marge@example.org 2024-01-01T10:05:00Z")
    );
    assert!(changes[2].starts_with("insert_user "), "{changes:?}");
    assert!(changes[3].starts_with("insert_user "), "{changes:?}");
    assert_ne!(changes[2], changes[3], "a rework is a change of its own");
    assert_eq!(
        s.lines("SELECT tag || ' ' || project FROM sqitch.tags"),
        ["@v1.0.0-dev1 flipr"]
    );
    assert_eq!(
        s.lines(
            "SELECT c.change || ' ' || d.type || ' ' || d.dependency || ' ' || (d.dependency_id = t.change_id)::text \
             FROM sqitch.dependencies d JOIN sqitch.changes c USING (change_id) \
             LEFT JOIN sqitch.changes t ON t.change_id = d.dependency_id \
             WHERE c.change = 'users'"
        ),
        ["users require appschema true"]
    );
    assert_eq!(
        s.lines("SELECT event || ' ' || change FROM sqitch.events ORDER BY committed_at"),
        [
            "deploy appschema",
            "deploy users",
            "deploy insert_user",
            "deploy insert_user"
        ]
    );
    assert_eq!(
        s.lines("SELECT version::text FROM sqitch.releases"),
        ["1.1"]
    );
    // The deploy script's sha1, as sqitch records it.
    let hash = s.lines("SELECT script_hash FROM sqitch.changes WHERE change = 'appschema'");
    let bytes = std::fs::read(s.scenario.path().join("flipr/deploy/appschema.sql")).unwrap();
    let mut child = std::process::Command::new("sha1sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &bytes).unwrap();
    let expected = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
    assert_eq!(hash, [expected[..40].to_string()]);

    // Run again: every step is complete, nothing is deployed twice.
    let again = s.sluice(&["run", "sluice.toml"]);
    assert_eq!(again.code, 0, "{}", again.all());
    assert_eq!(s.lines("SELECT change FROM sqitch.changes").len(), 4);

    // Rolled back through sluice: revert scripts in reverse order, the
    // registry back to nothing (it did not exist before the first step).
    let back = s.sluice(&["rollback", "sluice.toml"]);
    assert_eq!(back.code, 0, "{}", back.all());
    assert!(s
        .lines("SELECT nspname::text FROM pg_namespace WHERE nspname = 'flipr'")
        .is_empty());
    assert!(
        !s.registry_exists(),
        "the registry the first step created is gone"
    );
}

#[test]
fn a_failing_verify_reverts_the_change_with_the_hosts_proof() {
    let s = SqitchScenario::new(2, "");
    // The users table is empty: this verify divides by zero.
    s.scenario.write(
        "flipr/verify/users.sql",
        "BEGIN;\nSELECT 1/count(*) FROM flipr.users;\nROLLBACK;\n",
    );
    assert_verify_failed_and_reverted(&s.run(), &s.scenario, "users");
    let report = s.sluice(&["report", "sluice.toml", "--format", "json"]);
    assert!(
        report.stdout.contains("division by zero"),
        "the verify's error is in the metric's detail: {}",
        report.stdout
    );
    assert!(s
        .lines(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'flipr'"
        )
        .is_empty());
    assert_eq!(
        s.lines("SELECT change FROM sqitch.changes"),
        ["appschema"],
        "the registry lists only what is deployed"
    );
    assert_eq!(
        s.lines("SELECT event || ' ' || change FROM sqitch.events ORDER BY committed_at"),
        ["deploy appschema", "deploy users", "revert users"]
    );
}

#[test]
fn a_backtick_set_without_a_supplied_variable_fails_naming_file_and_line() {
    let s = SqitchScenario::new(1, "");
    s.scenario.write(
        "flipr/deploy/appschema.sql",
        "-- Deploy flipr:appschema to pg\n\\set owner `cat /run/secrets/owner`\nBEGIN;\nCREATE SCHEMA flipr AUTHORIZATION :\"owner\";\nCOMMIT;\n",
    );
    let run = s.run();
    assert_ne!(run.code, 0, "{}", run.all());
    assert!(
        run.all()
            .contains("flipr/deploy/appschema.sql:2: `\\set owner `cat /run/secrets/owner``: sluice never runs shell commands"),
        "{}",
        run.all()
    );
    assert!(!s.registry_exists());

    // Supplied by the plan, the same script deploys.
    let s = SqitchScenario::new(1, r#", variables = { owner = "sluice" }"#);
    s.scenario.write(
        "flipr/deploy/appschema.sql",
        "\\set owner `cat /run/secrets/owner`\nBEGIN;\nCREATE SCHEMA flipr AUTHORIZATION :\"owner\";\nCOMMIT;\n",
    );
    let run = s.run();
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(
        s.lines("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'flipr'"),
        ["sluice"]
    );
}

#[test]
fn an_include_outside_the_project_is_refused() {
    let s = SqitchScenario::new(1, "");
    std::fs::write(
        s.scenario.path().join("outside.sql"),
        "CREATE SCHEMA stolen;\n",
    )
    .unwrap();
    s.scenario.write(
        "flipr/deploy/appschema.sql",
        "BEGIN;\nCREATE SCHEMA flipr;\n\\ir ../../outside.sql\nCOMMIT;\n",
    );
    let run = s.run();
    assert_ne!(run.code, 0, "{}", run.all());
    assert!(
        run.all().contains(
            "flipr/deploy/appschema.sql:3: `\\ir ../../outside.sql` leaves the project directory"
        ),
        "{}",
        run.all()
    );
    assert!(s
        .lines("SELECT nspname::text FROM pg_namespace WHERE nspname IN ('flipr', 'stolen')")
        .is_empty());
}

/// sqitch: `SLUICE_SQITCH` (set by `cargo xtask test`, which installs
/// Debian's `sqitch` and its PostgreSQL driver), else `sqitch` on the PATH.
/// A run whose change failed `verified == 1`: exit 1, the revert script
/// ran, and the host proved `step`'s pre-step state with its own checksums.
pub(crate) fn assert_verify_failed_and_reverted(run: &Outcome, scenario: &Scenario, step: &str) {
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stdout
            .contains("threshold `verified == 1` not met (verified = 0)"),
        "{}",
        run.stdout
    );
    // On SQLite a change that only adds objects and rows is undone by the
    // host's change set instead of the revert script: the same state.
    assert!(
        run.stderr
            .contains("rollback: running the revert script and removing the registry rows")
            || run.stdout.contains("rollback: undone by change set"),
        "{}",
        run.all()
    );
    let proof = scenario.transitions(step);
    assert!(
        proof
            .last()
            .is_some_and(|(state, detail)| state == "rolled-back"
                && (detail.contains("table checksums equal the pre-step state")
                    || detail.contains("schema equals the pre-step state"))),
        "the host proved the revert with its own checksums: {proof:?}"
    );
}

pub(crate) fn sqitch_bin() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("SLUICE_SQITCH") {
        return path.into();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("sqitch"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "sqitch is missing: this test deploys the fixture with sqitch itself. \
                 `cargo xtask test` installs Debian's `sqitch` and `libdbd-pg-perl` and sets SLUICE_SQITCH"
            )
        })
}

/// Runs sqitch in `project` against the database at `url`.
pub(crate) fn sqitch(project: &Path, args: &[&str], url: &str) -> String {
    let target = format!("db:pg://{}", url.split_once("://").unwrap().1);
    let out = std::process::Command::new(sqitch_bin())
        .args(args)
        .arg(&target)
        .current_dir(project)
        .env("SQITCH_FULLNAME", "Side By Side")
        .env("SQITCH_EMAIL", "side@example.org")
        .env("SQITCH_USER_CONFIG", project.join("no-user.conf"))
        .env("SQITCH_SYSTEM_CONFIG", project.join("no-system.conf"))
        .output()
        .expect("running sqitch");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("$ sqitch {} {target}\n{text}", args.join(" "));
    assert!(out.status.success(), "sqitch {args:?} failed: {text}");
    text
}

/// The schema without either tool's registry, as `pg_dump` prints it.
fn schema_dump(url: &str) -> String {
    let out = std::process::Command::new("pg_dump")
        .args([
            "--schema-only",
            "--exclude-schema=sqitch",
            "--no-owner",
            "--no-privileges",
            url,
        ])
        .output()
        .expect("pg_dump (PostgreSQL client tools)");
    assert!(
        out.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // pg_dump 15.14+ brackets the dump with a random `\restrict` key.
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The registry rows both tools must agree on (times and committers aside).
fn registry_rows(db: &PgScratch) -> Vec<String> {
    let mut c = db.client();
    let mut out = Vec::new();
    for sql in [
        "SELECT concat_ws(' ', change_id, script_hash, change, project, note, planned_at, planner_name, planner_email) FROM sqitch.changes ORDER BY committed_at",
        "SELECT concat_ws(' ', tag_id, tag, project, change_id, note, planned_at, planner_name, planner_email) FROM sqitch.tags ORDER BY tag_id",
        "SELECT concat_ws(' ', change_id, type, dependency, dependency_id) FROM sqitch.dependencies ORDER BY 1",
        "SELECT concat_ws(' ', event, change_id, change, project, note, requires::text, conflicts::text, tags::text, planned_at) FROM sqitch.events ORDER BY committed_at",
        "SELECT concat_ws(' ', project, uri) FROM sqitch.projects",
        "SELECT version::text FROM sqitch.releases",
    ] {
        out.extend(
            c.query(sql, &[])
                .unwrap()
                .iter()
                .map(|r| r.get::<_, String>(0)),
        );
    }
    out
}

#[test]
fn side_by_side_with_sqitch_the_schemas_and_registries_match() {
    // sluice deploys the fixture to one database…
    let s = SqitchScenario::new(4, "");
    let run = s.run();
    assert_eq!(run.code, 0, "{}", run.all());
    // …sqitch deploys the same project to another (its own scenario: its
    // own copy of the project and a sluice journal that has run nothing).
    let theirs = SqitchScenario::new(4, "");
    let by_sqitch = &theirs.db;
    let project = s.scenario.path().join("flipr");
    sqitch(
        &theirs.scenario.path().join("flipr"),
        &["deploy", "--verify"],
        &by_sqitch.url,
    );

    let ours = schema_dump(&s.db.url);
    assert!(ours.contains("CREATE TABLE flipr.users"), "{ours}");
    assert_eq!(ours, schema_dump(&by_sqitch.url), "identical schemas");
    assert_eq!(
        registry_rows(&s.db),
        registry_rows(by_sqitch),
        "the same registry rows: change ids, tag ids, script hashes, dependencies, events"
    );

    // sqitch reads sluice's registry: up to date, nothing to deploy.
    let status = sqitch(&project, &["status"], &s.db.url);
    let last = s.lines("SELECT change_id FROM sqitch.changes ORDER BY committed_at DESC LIMIT 1");
    assert!(
        status.contains(&last[0]),
        "sqitch sees sluice's last change: {status}"
    );
    assert!(
        status.contains("Nothing to deploy (up-to-date)"),
        "{status}"
    );
    let deploy = sqitch(&project, &["deploy"], &s.db.url);
    assert!(deploy.contains("Nothing to deploy"), "{deploy}");

    // sluice reads sqitch's registry: every change is already deployed.
    let again = theirs.run();
    assert_eq!(again.code, 0, "{}", again.all());
    assert_eq!(
        again
            .stderr
            .matches("change already deployed (sqitch registry): nothing to do")
            .count(),
        4,
        "{}",
        again.stderr
    );
    assert_eq!(theirs.lines("SELECT event FROM sqitch.events").len(), 4);
}

/// A two-change project, `shop`: `accounts` creates `accounts` (3 rows),
/// `orders` referencing it `ON DELETE CASCADE` (3 rows) and an unrelated
/// `audit` (2 rows); `charge` runs `deploy` against them, with a revert that
/// only undoes the schema (the data is the backup's to restore) and a
/// verify that fails. Returns the scenario, its database and the run.
fn shop_with_failing_charge(deploy: &str) -> (Scenario, PgScratch, Outcome) {
    let db = pg_scratch();
    let scenario = Scenario::new();
    let dir = scenario.path().join("shop");
    for sub in ["deploy", "verify", "revert"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let files = [
        ("sqitch.conf", "[core]\n\tengine = pg\n"),
        (
            "sqitch.plan",
            "%syntax-version=1.0.0\n%project=shop\n\naccounts 2024-01-01T00:00:00Z Test <test@example.org> # accounts\ncharge [accounts] 2024-01-01T00:01:00Z Test <test@example.org> # a charge\n",
        ),
        (
            "deploy/accounts.sql",
            "BEGIN;\nCREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL);\nINSERT INTO accounts VALUES (1, 100), (2, 50), (3, 5);\nCREATE TABLE orders (id int PRIMARY KEY, account int NOT NULL REFERENCES accounts ON DELETE CASCADE);\nINSERT INTO orders VALUES (10, 1), (11, 3), (12, 3);\nCREATE TABLE audit (at text);\nINSERT INTO audit VALUES ('a'), ('b');\nCOMMIT;\n",
        ),
        ("verify/accounts.sql", "BEGIN;\nSELECT id FROM accounts WHERE false;\nROLLBACK;\n"),
        ("revert/accounts.sql", "BEGIN;\nDROP TABLE audit;\nDROP TABLE orders;\nDROP TABLE accounts;\nCOMMIT;\n"),
        ("deploy/charge.sql", deploy),
        // Fails: a balance went negative.
        (
            "verify/charge.sql",
            "BEGIN;\nSELECT 1/(count(*) FILTER (WHERE balance < 0) = 0)::int FROM accounts;\nROLLBACK;\n",
        ),
        ("revert/charge.sql", "BEGIN;\nALTER TABLE accounts DROP COLUMN note;\nCOMMIT;\n"),
    ];
    for (file, text) in files {
        std::fs::write(dir.join(file), text).unwrap();
    }
    let mut steps = String::new();
    for change in ["accounts", "charge"] {
        steps.push_str(&format!(
            "\n[[steps]]\nid = \"{change}\"\nplugin = \"sqitch\"\ntarget = \"app\"\naccess = \"read-write\"\nfiles = [{{ name = \"shop\", path = \"shop\", access = \"read-only\" }}]\nthresholds = [\"verified == 1\"]\nparams = {{ project = \"shop\", change = \"{change}\" }}\n"
        ));
    }
    scenario.write(
        "sluice.toml",
        &format!(
            "[values]\ndb = {{ env = \"APP_PG_URL\" }}\n\n[targets.app]\nkind = \"postgres\"\nconnection = \"db\"\n\n[plugins.sqitch]\npath = \"{}\"\n{steps}",
            plugin("sqitch.wasm").display()
        ),
    );
    let env = [("APP_PG_URL", db.url.as_str())];
    let accepted = scenario.sluice_with(&sluice_bin(), &["audit", "--accept", "sluice.toml"], &env);
    assert_eq!(accepted.code, 0, "{}", accepted.all());
    let run = scenario.sluice_with(&sluice_bin(), &["run", "sluice.toml"], &env);
    (scenario, db, run)
}

/// Every row of the three tables, as text, in order.
fn shop_rows(db: &PgScratch) -> Vec<String> {
    db.client()
        .query(
            "SELECT 'accounts ' || a::text FROM accounts a UNION ALL SELECT 'orders ' || o::text FROM orders o UNION ALL SELECT 'audit ' || t::text FROM audit t ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}

#[test]
fn a_narrowed_backup_restores_what_the_change_wrote_with_the_hosts_proof() {
    // The charge writes `accounts` (and, through the cascade, `orders`);
    // `audit` is not touched, so not backed up.
    let (scenario, db, run) = shop_with_failing_charge(
        "BEGIN;\nALTER TABLE accounts ADD COLUMN note text;\nUPDATE accounts SET balance = balance - 10, note = 'charged';\nDELETE FROM accounts WHERE id = 1;\nCOMMIT;\n",
    );
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stderr.contains(
            "backup scope: the existing tables the scripts can write scripts=deploy/charge.sql, revert/charge.sql tables=accounts, orders"
        ),
        "the backup saves the written table and its cascade child only: {}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("table=audit"),
        "audit was never backed up: {}",
        run.stderr
    );
    let proof = scenario.transitions("charge");
    assert!(
        proof
            .last()
            .is_some_and(|(state, detail)| state == "rolled-back"
                && detail.contains("table checksums equal the pre-step state")),
        "the host proved the restore with its own checksums: {proof:?}"
    );
    // The revert script only dropped the column: the balances, the deleted
    // account and its cascaded orders came back from the narrowed backup.
    assert_eq!(
        shop_rows(&db),
        [
            "accounts (1,100)",
            "accounts (2,50)",
            "accounts (3,5)",
            "audit (a)",
            "audit (b)",
            "orders (10,1)",
            "orders (11,3)",
            "orders (12,3)",
        ]
    );
}

#[test]
fn a_script_the_analysis_cannot_bound_backs_up_every_table_and_says_why() {
    let (scenario, db, run) = shop_with_failing_charge(
        "BEGIN;\nALTER TABLE accounts ADD COLUMN note text;\nDO $$ BEGIN UPDATE accounts SET balance = balance - 10; DELETE FROM audit; END $$;\nCOMMIT;\n",
    );
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stderr.contains("backup scope: every table of every schema (extension-owned tables aside), because what the scripts write cannot be bounded scripts=deploy/charge.sql, revert/charge.sql why=deploy/charge.sql: statement 2 (`DO $$"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("table=audit"), "{}", run.stderr);
    let proof = scenario.transitions("charge");
    assert!(
        proof
            .last()
            .is_some_and(|(state, detail)| state == "rolled-back"
                && detail.contains("table checksums equal the pre-step state")),
        "{proof:?}"
    );
    assert_eq!(shop_rows(&db).len(), 8, "{:?}", shop_rows(&db));
}

#[test]
fn a_table_the_change_created_and_the_revert_left_fails_the_hosts_schema_proof() {
    // `extra` did not exist at backup time, so it is not backed up; the
    // revert forgets it, and the host's schema digest sees it.
    let (scenario, _db, run) = shop_with_failing_charge(
        "BEGIN;\nALTER TABLE accounts ADD COLUMN note text;\nCREATE TABLE extra (id int);\nUPDATE accounts SET balance = balance - 10;\nCOMMIT;\n",
    );
    assert_ne!(run.code, 0, "{}", run.all());
    assert!(
        run.stderr.contains("tables=accounts, orders"),
        "{}",
        run.stderr
    );
    let proof = scenario.transitions("charge");
    assert!(
        proof
            .iter()
            .any(|(_, detail)| detail.contains("does not equal its pre-step state")),
        "the host's proof caught the leftover table: {proof:?}"
    );
    assert!(
        !proof.iter().any(|(state, _)| state == "rolled-back"),
        "{proof:?}"
    );
}
