//! The sqitch plugin on SQLite targets, side by side with Debian's sqitch:
//! tests/fixtures/sqitch/flipr-sqlite deployed by sluice (sqitch's registry
//! file attached to the target, `attach = { sqitch = "sqitch.db" }`) and by
//! sqitch's own `sqlite` engine to two files; schemas, registry rows and
//! each tool's reading of the other's deployment compared with the
//! `sqlite3` CLI.

use std::path::{Path, PathBuf};

use sluice_e2e::{plugin, root, Outcome, Scenario};

use crate::sqitch::{assert_verify_failed_and_reverted, copy_dir, sqitch_bin};

/// The fixture's changes, in plan order, as steps name them.
const CHANGES: [(&str, &str); 4] = [
    ("users", "users"),
    ("flips", "flips"),
    ("userflips-v1", "userflips@v1.0.0-dev1"),
    ("userflips", "userflips"),
];

pub(crate) struct SqliteSqitch {
    pub(crate) scenario: Scenario,
}

impl SqliteSqitch {
    /// The project in `flipr/`, an empty `app.db`, and a plan deploying the
    /// first `n` changes to it with the registry attached.
    pub(crate) fn new(n: usize) -> SqliteSqitch {
        let scenario = Scenario::new();
        copy_dir(
            &root().join("tests/fixtures/sqitch/flipr-sqlite"),
            &scenario.path().join("flipr"),
        );
        // sqitch creates the database file on first use; a sluice target
        // names an existing one.
        std::fs::write(scenario.path().join("app.db"), b"").unwrap();
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
params = {{ project = "flipr", change = "{change}" }}
"#
            ));
        }
        scenario.write(
            "sluice.toml",
            &format!(
                r#"
[targets.app]
kind = "sqlite"
path = "app.db"
attach = {{ sqitch = "sqitch.db" }}

[plugins.sqitch]
path = "{}"
{steps}"#,
                plugin("sqitch.wasm").display()
            ),
        );
        SqliteSqitch { scenario }
    }

    pub(crate) fn db(&self) -> PathBuf {
        self.scenario.path().join("app.db")
    }

    pub(crate) fn registry(&self) -> PathBuf {
        self.scenario.path().join("sqitch.db")
    }

    pub(crate) fn run(&self) -> Outcome {
        let accepted = self.scenario.sluice(&["audit", "--accept", "sluice.toml"]);
        assert_eq!(accepted.code, 0, "audit --accept: {}", accepted.all());
        self.scenario.sluice(&["run", "sluice.toml"])
    }
}

/// `sqlite3 -batch file sql`: the CLI both tools' files are read with.
pub(crate) fn sqlite3(file: &Path, sql: &str) -> Vec<String> {
    let out = std::process::Command::new("sqlite3")
        .arg("-batch")
        .arg(file)
        .arg(sql)
        .output()
        .expect("sqlite3 (installed by `cargo xtask test` with sqitch)");
    assert!(
        out.status.success(),
        "sqlite3 {} {sql}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Runs sqitch in `project` against the SQLite database `db`.
pub(crate) fn sqitch(project: &Path, args: &[&str], db: &Path) -> String {
    let target = format!("db:sqlite:{}", db.display());
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

/// The registry rows both tools must agree on (times and committers aside).
fn registry_rows(registry: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for sql in [
        "SELECT change_id, script_hash, change, project, note, planned_at, planner_name, planner_email FROM changes ORDER BY committed_at",
        "SELECT tag_id, tag, project, change_id, note, planned_at, planner_name, planner_email FROM tags ORDER BY tag_id",
        "SELECT change_id, type, dependency, dependency_id FROM dependencies ORDER BY 1, 3",
        "SELECT event, change_id, change, project, note, requires, conflicts, tags, planned_at FROM events ORDER BY committed_at",
        "SELECT project, uri FROM projects",
        "SELECT version FROM releases",
        "SELECT type, name, sql FROM sqlite_master ORDER BY name",
    ] {
        out.extend(sqlite3(registry, sql));
    }
    out
}

#[test]
fn side_by_side_with_sqitch_on_sqlite_the_schemas_and_registries_match() {
    // sluice deploys the project to one file…
    let ours = SqliteSqitch::new(4);
    let run = ours.run();
    assert_eq!(run.code, 0, "{}", run.all());
    // …sqitch to another (its own scenario, whose sluice journal is empty).
    let theirs = SqliteSqitch::new(4);
    sqitch(
        &theirs.scenario.path().join("flipr"),
        &["deploy", "--verify"],
        &theirs.db(),
    );
    assert!(
        theirs.registry().is_file(),
        "sqitch's registry is sqitch.db beside app.db"
    );

    let schema = sqlite3(&ours.db(), ".schema");
    assert!(
        schema.iter().any(|l| l.contains("CREATE VIEW userflips")),
        "{schema:?}"
    );
    assert_eq!(
        schema,
        sqlite3(&theirs.db(), ".schema"),
        "identical schemas"
    );
    let rows = registry_rows(&ours.registry());
    assert_eq!(
        sqlite3(&ours.registry(), "SELECT count(*) FROM changes"),
        ["4"]
    );
    assert_eq!(
        rows,
        registry_rows(&theirs.registry()),
        "the same registry rows and registry schema"
    );

    // sqitch reads sluice's registry: up to date, nothing to deploy.
    let project = ours.scenario.path().join("flipr");
    let status = sqitch(&project, &["status"], &ours.db());
    let last = sqlite3(
        &ours.registry(),
        "SELECT change_id FROM changes ORDER BY committed_at DESC LIMIT 1",
    );
    assert!(
        status.contains(&last[0]),
        "sqitch sees sluice's last change: {status}"
    );
    assert!(
        status.contains("Nothing to deploy (up-to-date)"),
        "{status}"
    );
    let deploy = sqitch(&project, &["deploy"], &ours.db());
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
    assert_eq!(
        sqlite3(&theirs.registry(), "SELECT count(*) FROM events"),
        ["4"]
    );

    // The reviewed grant names the attached registry, and the lock pins it.
    let audit = ours.scenario.sluice(&["audit", "sluice.toml"]);
    assert!(
        audit.stdout.contains("attached database `sqitch`"),
        "{}",
        audit.all()
    );
    let lock = std::fs::read_to_string(ours.scenario.path().join("sluice.lock")).unwrap();
    assert!(lock.contains("sqitch = \"sqitch.db\""), "{lock}");
}

#[test]
fn a_failing_verify_on_sqlite_reverts_the_change_with_the_hosts_proof() {
    let s = SqliteSqitch::new(2);
    s.scenario.write(
        "flipr/verify/flips.sql",
        "BEGIN;\nSELECT id, nickname, no_such_column FROM flips WHERE 0;\nROLLBACK;\n",
    );
    assert_verify_failed_and_reverted(&s.run(), &s.scenario, "flips");
    let report = s
        .scenario
        .sluice(&["report", "sluice.toml", "--format", "json"]);
    assert!(
        report.stdout.contains("no_such_column"),
        "the verify's error is in the metric's detail: {}",
        report.stdout
    );
    assert_eq!(
        sqlite3(
            &s.db(),
            "SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name"
        ),
        ["users"]
    );
    assert_eq!(
        sqlite3(&s.registry(), "SELECT change FROM changes"),
        ["users"],
        "the registry lists only what is deployed"
    );
    assert_eq!(
        sqlite3(
            &s.registry(),
            "SELECT event || ' ' || change FROM events ORDER BY committed_at"
        ),
        // The host undid the step's rows by change set, its registry
        // event among them: the history reads as if `flips` never ran
        // (the plugin's revert path appends `revert flips` instead).
        ["deploy users"]
    );
}

#[test]
fn a_sqlite_target_without_the_registry_attached_is_refused_with_the_fix() {
    let s = SqliteSqitch::new(1);
    let plan = std::fs::read_to_string(s.scenario.path().join("sluice.toml")).unwrap();
    s.scenario.write(
        "sluice.toml",
        &plan.replace("attach = { sqitch = \"sqitch.db\" }\n", ""),
    );
    let run = s.run();
    assert_ne!(run.code, 0, "{}", run.all());
    assert!(
        run.all().contains("attach = { sqitch = \"sqitch.db\" }"),
        "the error says how to attach the registry: {}",
        run.all()
    );
    assert!(!s.registry().exists(), "nothing was attached or created");
}

#[test]
fn a_rehearsal_copies_the_attached_registry_and_leaves_production_alone() {
    // Production has users deployed (by sluice), so the registry exists.
    let s = SqliteSqitch::new(1);
    assert_eq!(s.run().code, 0);
    let registry_before = std::fs::read(s.registry()).unwrap();
    let db_before = std::fs::read(s.db()).unwrap();
    let s4 = SqliteSqitch::new(4);
    std::fs::copy(
        s4.scenario.path().join("sluice.toml"),
        s.scenario.path().join("sluice.toml"),
    )
    .unwrap();
    let accepted = s.scenario.sluice(&["audit", "--accept", "sluice.toml"]);
    assert_eq!(accepted.code, 0, "{}", accepted.all());
    let out = s.scenario.path().join("rehearsal");
    let rehearsal =
        s.scenario
            .sluice(&["rehearse", "sluice.toml", "--output", out.to_str().unwrap()]);
    assert_eq!(rehearsal.code, 0, "{}", rehearsal.all());
    let report = std::fs::read_to_string(out.join("rehearsal.md")).unwrap();
    assert!(
        report.contains("(attach: sqitch = "),
        "the copy names the attached registry: {report}"
    );
    // The first change was already deployed in the copied registry.
    assert!(
        rehearsal
            .stderr
            .contains("change already deployed (sqitch registry): nothing to do"),
        "{}",
        rehearsal.stderr
    );
    assert_eq!(std::fs::read(s.registry()).unwrap(), registry_before);
    assert_eq!(std::fs::read(s.db()).unwrap(), db_before);
}
