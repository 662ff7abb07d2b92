//! What a security reviewer sees and pins: `inspect`, `audit`, the lock.

use sluice_e2e::{plugin, Scenario};

#[test]
fn inspect_json_describes_a_real_plugin() {
    let s = Scenario::new();
    let path = plugin("sqlite.wasm");
    let out = s.sluice(&["inspect", "--json", path.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.all());
    let v: serde_json::Value =
        serde_json::from_str(&out.stdout).expect("inspect --json prints JSON");
    assert_eq!(v["name"], "sqlite");
    assert_eq!(v["wit_version"], "0.1.0");
    assert_eq!(v["kinds"], serde_json::json!(["sqlite"]));
    use sha2::Digest;
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(v["sha256"], hex::encode(sha2::Sha256::digest(&bytes)));
    assert_eq!(v["size"], bytes.len() as u64);
    let exports: Vec<&str> = v["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    for phase in ["describe", "backup", "migrate", "validate", "rollback"] {
        assert!(
            exports.contains(&format!("sluice:plugin/{phase}@0.1.0").as_str()),
            "{phase} in {exports:?}"
        );
    }
    let imports = v["imports"].as_array().unwrap();
    let sql = imports
        .iter()
        .find(|i| i["interface"] == "sluice:plugin/sql@0.1.0")
        .expect("imports sql");
    assert_eq!(sql["capability"], "datastore");
    assert!(imports
        .iter()
        .all(|i| i["capability"] != "network" && i["capability"] != "files"));
    let needs = v["needs"].as_array().unwrap();
    assert!(needs
        .iter()
        .any(|n| n["capability"] == "sql" && !n["reason"].as_str().unwrap().is_empty()));
}

#[test]
fn audit_shows_each_steps_grants_and_risks() {
    let s = Scenario::quickstart();
    let out = s.sluice(&["audit", "sluice.toml"]);
    assert_eq!(out.code, 3, "no lock yet: the audit says so and exits 3");
    for expected in [
        "step copy-customers — plugin sqlite",
        "step merge-legacy — plugin sqlite",
        "granted:   read-write on target `shop`, tables: every table",
        "granted:   read-write on target `shop`, tables: clientes, legacy_contacts",
        "RISKY:     read-write on every table or key of target `shop`",
        "requested: runtime basics (no authority); sluice protocol (backup store, progress, log); datastore access",
        "lock: DIFFERS",
    ] {
        assert!(out.stdout.contains(expected), "`{expected}` in:\n{}", out.stdout);
    }
}

#[test]
fn run_refuses_until_a_reviewer_accepts_changed_grants_or_plugins() {
    let s = Scenario::quickstart();
    let before = s.state("shop.db");
    // No lock: refused.
    let run = s.sluice(&["run", "sluice.toml"]);
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(
        run.stderr.contains("sluice.lock does not exist"),
        "{}",
        run.stderr
    );
    assert_eq!(s.state("shop.db"), before);

    // Accepted: runs.
    assert_eq!(s.sluice(&["audit", "--accept", "sluice.toml"]).code, 0);
    assert_eq!(
        s.sluice(&["audit", "sluice.toml"]).code,
        0,
        "the lock is up to date"
    );

    // A widened grant: refused, with the change shown.
    let plan = s.read("sluice.toml");
    s.write(
        "sluice.toml",
        &plan.replace(
            "tables = [\"clientes\", \"legacy_contacts\"]",
            "tables = [\"clientes\", \"legacy_contacts\", \"customers\"]",
        ),
    );
    let run = s.sluice(&["run", "sluice.toml"]);
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(
        run.stderr
            .contains("- step merge-legacy: tables clientes, legacy_contacts"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("+ step merge-legacy: tables clientes, legacy_contacts, customers"),
        "{}",
        run.stderr
    );
    assert_eq!(s.state("shop.db"), before);
    s.write("sluice.toml", &plan);

    // A swapped plugin (another component under the same name): refused.
    std::fs::copy(
        plugin("fixtures/panics.wasm"),
        s.path().join("swapped.wasm"),
    )
    .unwrap();
    s.write(
        "sluice.toml",
        &plan.replace(&plugin("sqlite.wasm").display().to_string(), "swapped.wasm"),
    );
    let run = s.sluice(&["run", "sluice.toml"]);
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(
        run.stderr.contains("- plugin sqlite: sha256"),
        "{}",
        run.stderr
    );
    assert_eq!(s.state("shop.db"), before);

    // Accepting the swap lets it run.
    assert_eq!(s.sluice(&["audit", "--accept", "sluice.toml"]).code, 0);
    assert_eq!(
        s.sluice(&["run", "sluice.toml"]).code,
        1,
        "runs (step 2 fails its threshold as designed)"
    );
}
