//! `sluice conformance`: each deliberately broken fixture plugin is caught
//! by exactly the check meant to catch it, with the reason, and exit 1;
//! the first-party plugins pass on SQLite, PostgreSQL and Redis scratch
//! targets (sqitch with its project granted read-only); bad input is exit 2.

use std::path::PathBuf;

use sluice_e2e::services::{pg_scratch, redis_scratch};
use sluice_e2e::{plugin, root, Outcome, Scenario};

/// Every check, in the order the report lists them.
const CHECKS: [&str; 7] = [
    "restores",
    "rollback-twice",
    "idempotent",
    "validate-read-only",
    "declared-imports",
    "backup-read-back",
    "deadline",
];

fn fixtures(name: &str) -> PathBuf {
    root().join("tests/fixtures/conformance").join(name)
}

/// `sluice conformance <plugin> --json <args…>`, the report parsed.
fn conformance(plugin_file: &str, args: &[&str]) -> (Outcome, serde_json::Value) {
    let s = Scenario::new();
    let path = plugin(plugin_file).display().to_string();
    let mut all = vec!["conformance", path.as_str(), "--json"];
    all.extend_from_slice(args);
    let out = s.sluice(&all);
    let report = serde_json::from_str(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out, report)
}

/// The checks that failed, with their reasons.
fn failed(report: &serde_json::Value) -> Vec<(String, String)> {
    let checks = report["checks"].as_array().expect("a report with checks");
    let names: Vec<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, CHECKS, "every check, in order");
    checks
        .iter()
        .filter(|c| c["passed"] == false)
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Runs a broken fixture plugin on the shop fixture and returns the one
/// failing check's reason, asserting it is `check`.
fn caught_by(fixture_plugin: &str, params: serde_json::Value, check: &str) -> String {
    let params = params.to_string();
    let fixture = fixtures("broken/fixture.sql").display().to_string();
    let (out, report) = conformance(
        &format!("fixtures/{fixture_plugin}.wasm"),
        &[
            "--target",
            "sqlite",
            "--fixture",
            &fixture,
            "--params",
            &params,
        ],
    );
    assert_eq!(out.code, 1, "{}", out.all());
    let failed = failed(&report);
    assert_eq!(
        failed.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        [check],
        "only `{check}` fails: {failed:?}"
    );
    failed[0].1.clone()
}

/// Params every broken fixture but `forgets-table` and `not-idempotent`
/// runs with: a sound step on the shop.
fn sound_params() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures("sqlite/params.json")).unwrap()).unwrap()
}

#[test]
fn a_rollback_that_forgets_a_table_fails_restores() {
    let reason = caught_by(
        "forgets-table",
        serde_json::json!({
            "tables": ["customers", "orders"],
            "migrate": "UPDATE customers SET email = upper(email); UPDATE orders SET total = 0;",
            "metrics": [{ "name": "orders", "row_count": "orders" }]
        }),
        "restores",
    );
    assert!(
        reason.contains("after rollback") && reason.contains("table `orders`"),
        "names the table left changed: {reason}"
    );
}

#[test]
fn a_migrate_claiming_idempotence_that_duplicates_rows_fails_idempotent() {
    let reason = caught_by(
        "not-idempotent",
        serde_json::json!({
            "tables": ["orders"],
            "migrate": "INSERT INTO orders (customer_id, total) SELECT id, 1.0 FROM customers;",
            "metrics": [{ "name": "orders", "row_count": "orders" }]
        }),
        "idempotent",
    );
    assert!(
        reason.contains("declares idempotent-migrate") && reason.contains("table `orders`: 9 rows"),
        "says what the second migrate changed: {reason}"
    );
}

#[test]
fn a_validate_that_writes_fails_validate_read_only() {
    let reason = caught_by("validate-writes", sound_params(), "validate-read-only");
    assert!(
        reason.contains("read-only") && reason.contains("validate failed"),
        "says validate was refused a write: {reason}"
    );
}

#[test]
fn a_describe_that_under_declares_fails_declared_imports() {
    let reason = caught_by("under-declares", sound_params(), "declared-imports");
    assert!(
        reason.contains("imports `sluice:plugin/sql@") && reason.contains("no `sql` need"),
        "names the undeclared import: {reason}"
    );
}

#[test]
fn a_rollback_reading_a_stray_artifact_fails_backup_read_back() {
    let reason = caught_by("stray-artifact", sound_params(), "backup-read-back");
    assert!(
        reason.contains("`previous-snapshot`") && reason.contains("did not write"),
        "names the stray artifact: {reason}"
    );
}

/// Asserts a first-party plugin passes every check and the table says so.
fn passes(plugin_file: &str, args: &[&str]) {
    let (out, report) = conformance(plugin_file, args);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(failed(&report), Vec::<(String, String)>::new());
}

#[test]
fn the_sqlite_plugin_passes_on_a_scratch_file() {
    let fixture = fixtures("sqlite/fixture.sql").display().to_string();
    let params = fixtures("sqlite/params.json").display().to_string();
    passes(
        "sqlite.wasm",
        &[
            "--target",
            "sqlite",
            "--fixture",
            &fixture,
            "--params-file",
            &params,
        ],
    );
    // The table, for people: one row per check, and the verdict.
    let s = Scenario::new();
    let out = s.sluice(&[
        "conformance",
        &plugin("sqlite.wasm").display().to_string(),
        "--target",
        "sqlite",
        "--fixture",
        &fixture,
        "--params-file",
        &params,
    ]);
    assert_eq!(out.code, 0, "{}", out.all());
    for check in CHECKS {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.trim_start().starts_with(check) && l.contains("pass")),
            "{check}: {}",
            out.stdout
        );
    }
    assert!(out.stdout.contains("all 7 checks passed"), "{}", out.stdout);
}

#[test]
fn a_sqlite_copy_target_leaves_the_original_untouched() {
    let s = Scenario::new();
    s.seed(
        "shop.db",
        &std::fs::read_to_string(fixtures("sqlite/fixture.sql")).unwrap(),
    );
    let db = s.path().join("shop.db");
    let before = std::fs::read(&db).unwrap();
    let target = format!("sqlite:{}", db.display());
    let params = fixtures("sqlite/params.json").display().to_string();
    passes(
        "sqlite.wasm",
        &["--target", &target, "--params-file", &params],
    );
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "the original file is never written"
    );
}

#[test]
fn the_postgres_plugin_passes_on_a_scratch_database() {
    let db = pg_scratch();
    let fixture = fixtures("postgres/fixture.sql").display().to_string();
    let params = fixtures("postgres/params.json").display().to_string();
    let s = Scenario::new();
    let path = plugin("postgres.wasm").display().to_string();
    // The URL (and its password) through the environment, not argv.
    let out = s.sluice_with(
        &sluice_e2e::sluice_bin(),
        &[
            "conformance",
            &path,
            "--json",
            "--target-env",
            "SCRATCH_PG",
            "--fixture",
            &fixture,
            "--params-file",
            &params,
        ],
        &[("SCRATCH_PG", &db.url)],
    );
    assert_eq!(out.code, 0, "{}", out.all());
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(failed(&report), Vec::<(String, String)>::new());
}

#[test]
fn the_redis_plugin_passes_on_a_scratch_database() {
    let db = redis_scratch();
    let fixture = fixtures("redis/fixture.txt").display().to_string();
    let params = fixtures("redis/params.json").display().to_string();
    passes(
        "redis.wasm",
        &[
            "--target",
            &db.url,
            "--fixture",
            &fixture,
            "--params-file",
            &params,
        ],
    );
}

#[test]
fn the_sqitch_plugin_passes_with_its_project_granted_read_only() {
    let db = pg_scratch();
    let fixture = fixtures("sqitch/fixture.sql").display().to_string();
    let params = fixtures("sqitch/params.json").display().to_string();
    let project = format!(
        "flipr={}",
        root().join("tests/fixtures/sqitch/flipr").display()
    );
    passes(
        "sqitch.wasm",
        &[
            "--target",
            &db.url,
            "--fixture",
            &fixture,
            "--params-file",
            &params,
            "--file",
            &project,
        ],
    );
}

#[test]
fn bad_input_is_exit_2_with_a_clear_error() {
    let sqlite = plugin("sqlite.wasm").display().to_string();
    let cases: [(&[&str], &str); 4] = [
        (
            &[
                "conformance",
                "/nonexistent/plugin.wasm",
                "--target",
                "sqlite",
            ],
            "plugin /nonexistent/plugin.wasm",
        ),
        (
            &["conformance", &sqlite, "--target", "mysql://h/db"],
            "is not one of",
        ),
        (
            &[
                "conformance",
                &sqlite,
                "--target",
                "sqlite",
                "--params",
                "[1]",
            ],
            "JSON object",
        ),
        (
            &[
                "conformance",
                &sqlite,
                "--target",
                "sqlite",
                "--params",
                r#"{"migrate": 7}"#,
            ],
            "params",
        ),
    ];
    let s = Scenario::new();
    for (args, message) in cases {
        let out = s.sluice(args);
        assert_eq!(out.code, 2, "{args:?}: {}", out.all());
        assert!(out.stderr.contains(message), "{args:?}: {}", out.stderr);
    }
    s.write("bad.sql", "CREATE TABLE broken (");
    let bad = s.path().join("bad.sql").display().to_string();
    let out = s.sluice(&[
        "conformance",
        &sqlite,
        "--target",
        "sqlite",
        "--fixture",
        &bad,
    ]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("fixture"), "{}", out.stderr);
}
