//! Plugin authors' path: `sluice new plugin` → the generated README's build
//! command → `sluice conformance` passes, unmodified; and the plugin written
//! from outside (`examples/custom-plugin`) passes conformance and runs its
//! plan through `sluice run` and `sluice rollback`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use sluice_e2e::{plugin, report, root, Scenario};

/// The conformance checks (names are part of the contract).
const CHECKS: [&str; 7] = [
    "restores",
    "rollback-twice",
    "idempotent",
    "validate-read-only",
    "declared-imports",
    "backup-read-back",
    "deadline",
];

/// Where crates outside the workspace build: shared with `cargo xtask
/// build`'s build of examples/custom-plugin, so their dependencies are
/// compiled once.
fn plugin_crates_target() -> PathBuf {
    std::env::var_os("SLUICE_PLUGIN_CRATES")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/plugin-crates"))
}

/// Asserts a `sluice conformance --json` output lists every check, passed.
fn assert_all_checks_passed(json: &str) {
    let report: serde_json::Value = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("conformance --json is not JSON ({e}): {json}"));
    let text = report.to_string();
    for check in CHECKS {
        assert!(
            text.contains(&format!("\"{check}\"")),
            "no check {check}: {text}"
        );
    }
    // `{ "checks": [{ "name", "passed", "reason" }, …] }` (or the list alone).
    let checks = report.get("checks").unwrap_or(&report);
    let failed: Vec<&serde_json::Value> = checks
        .as_array()
        .unwrap_or_else(|| panic!("no list of checks: {text}"))
        .iter()
        .filter(|c| c["passed"] != true)
        .collect();
    assert!(failed.is_empty(), "failed checks: {failed:?}");
}

/// Runs a script of the generated crate with the environment CI has: no
/// network (the crates were fetched when the workspace was built), the
/// shared target dir, the sluice binary under test.
fn script(dir: &Path, name: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new(dir.join(name))
        .args(args)
        .current_dir(dir)
        .env("CARGO_NET_OFFLINE", "true")
        .env("CARGO_TARGET_DIR", plugin_crates_target())
        .env("SLUICE", sluice_e2e::sluice_bin())
        .env("SLUICE_CACHE_DIR", dir.join(".cache"))
        .output()
        .expect("running a generated script");
    println!(
        "$ {name} {}\n[{}]\n{}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn a_new_plugin_builds_and_passes_conformance_unmodified() {
    let s = Scenario::new();
    let started = Instant::now();
    let made = s.sluice(&["new", "plugin", "demo", "--dir", "authors"]);
    assert_eq!(made.code, 0, "{}", made.all());
    let dir = s.path().join("authors/demo");
    for file in [
        "Cargo.toml",
        "Cargo.lock",
        "README.md",
        "build.sh",
        "src/lib.rs",
    ] {
        assert!(dir.join(file).is_file(), "{file} was not created");
    }

    // The README's build command, then the README's conformance command.
    let built = script(&dir, "build.sh", &[]);
    assert!(built.status.success(), "build.sh failed");
    let wasm = PathBuf::from(String::from_utf8_lossy(&built.stdout).trim());
    assert!(wasm.is_file(), "build.sh printed {}", wasm.display());
    let checked = script(&dir, "conformance.sh", &[]);
    assert!(checked.status.success(), "conformance.sh failed");
    let seconds = started.elapsed().as_secs_f64();
    let table = String::from_utf8_lossy(&checked.stdout);
    for check in CHECKS {
        assert!(table.contains(check), "no row for {check}: {table}");
    }
    let json = script(&dir, "conformance.sh", &["--json"]);
    assert!(json.status.success());
    assert_all_checks_passed(&String::from_utf8_lossy(&json.stdout));
    report(
        "template",
        &format!("sluice new plugin demo → build.sh → passing conformance: {seconds:.0} s"),
    );

    // Its own digest is what `sluice inspect` prints for operators to pin.
    let inspected = s.sluice(&["inspect", wasm.to_str().unwrap()]);
    assert_eq!(inspected.code, 0, "{}", inspected.all());
    assert!(
        inspected.stdout.contains("demo 0.1.0"),
        "{}",
        inspected.stdout
    );
}

#[test]
fn new_plugin_refuses_bad_names_and_existing_directories() {
    let s = Scenario::new();
    let bad = s.sluice(&["new", "plugin", "Not-A-Crate"]);
    assert_eq!(bad.code, 2, "{}", bad.all());
    assert!(bad.stderr.contains("invalid plugin name"), "{}", bad.stderr);

    std::fs::create_dir(s.path().join("taken")).unwrap();
    s.write("taken/notes.txt", "mine");
    let exists = s.sluice(&["new", "plugin", "taken"]);
    assert_eq!(exists.code, 2, "{}", exists.all());
    assert!(
        exists.stderr.contains("already exists"),
        "{}",
        exists.stderr
    );
    assert_eq!(s.read("taken/notes.txt"), "mine");
    assert!(!s.path().join("taken/Cargo.toml").exists());

    let no_sdk = s.sluice(&["new", "plugin", "demo", "--sdk", "."]);
    assert_eq!(no_sdk.code, 2, "{}", no_sdk.all());
    assert!(
        no_sdk.stderr.contains("is not the sluice sdk"),
        "{}",
        no_sdk.stderr
    );
    assert!(!s.path().join("demo").exists());
}

#[test]
fn the_custom_plugin_passes_conformance() {
    let example = root().join("examples/custom-plugin");
    let s = Scenario::new();
    let wasm = plugin("custom-drawers.wasm");
    let out = s.sluice(&[
        "conformance",
        wasm.to_str().unwrap(),
        "--target",
        "sqlite",
        "--fixture",
        example.join("seed.sql").to_str().unwrap(),
        "--params-file",
        example.join("params.json").to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_all_checks_passed(&out.stdout);
}

/// The drawers' follow-up ids, counted per id, and the number of drawers.
fn drawer_followups(db: &Path) -> (usize, std::collections::BTreeMap<String, usize>) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn.prepare("SELECT drawer FROM client_drawers").unwrap();
    let drawers: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut ids = std::collections::BTreeMap::new();
    for drawer in &drawers {
        let doc: serde_json::Value = serde_json::from_str(drawer).unwrap();
        for f in doc["services"]["shared"]["questionnaires"]["followups"]
            .as_array()
            .unwrap()
        {
            *ids.entry(f["followup_id"].as_str().unwrap().to_string())
                .or_insert(0) += 1;
        }
    }
    (drawers.len(), ids)
}

#[test]
fn the_custom_plugin_plan_runs_and_rolls_back() {
    let example = root().join("examples/custom-plugin");
    let s = Scenario::new();
    let plan = std::fs::read_to_string(example.join("sluice.toml"))
        .unwrap()
        .replace(
            "../../target/plugins/custom-drawers.wasm",
            plugin("custom-drawers.wasm").to_str().unwrap(),
        );
    s.write("sluice.toml", &plan);
    s.seed(
        "coaching.db",
        &std::fs::read_to_string(example.join("seed.sql")).unwrap(),
    );
    let db = s.path().join("coaching.db");
    let before = s.state("coaching.db");

    let run = s.run("sluice.toml");
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.all().contains("match_rate"), "{}", run.all());
    let (drawers, ids) = drawer_followups(&db);
    assert_eq!(drawers, 400, "one drawer per client");
    // Every follow-up before the cutoff, plus the dual-write's after it,
    // each exactly once.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let legacy: usize = conn
        .query_row(
            "SELECT count(*) FROM followup_submissions WHERE submitted_at < '2025-02-01'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let dual_write: usize = conn
        .query_row(
            "SELECT count(*) FROM followup_submissions WHERE submitted_at >= '2025-02-01' \
             AND CAST(user_id AS INTEGER) % 20 = 0",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(ids.len(), legacy + dual_write);
    assert!(ids.values().all(|n| *n == 1), "a follow-up is held twice");
    let inicial: usize = conn
        .query_row(
            "SELECT count(*) FROM client_drawers \
             WHERE json_extract(drawer, '$.services.shared.questionnaires.inicial') IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        inicial, 360,
        "every client with an initial questionnaire before the cutoff"
    );
    drop(conn);

    let rolled = s.sluice(&["rollback", "sluice.toml"]);
    assert_eq!(rolled.code, 0, "{}", rolled.all());
    assert_eq!(s.state("coaching.db"), before, "rollback restores the seed");
}
