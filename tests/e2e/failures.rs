//! Steps that fail: thresholds, panics, loops, tampered backups. Each must
//! leave the target provably in its pre-step state.

use sluice_e2e::{plugin, Scenario};

/// A plan with one step run by `plugin_file`, on the quickstart database.
fn one_step(plugin_file: &str, extra_params: &str, limits: &str) -> Scenario {
    let s = Scenario::quickstart();
    s.write(
        "one.toml",
        &format!(
            r#"
[targets.shop]
kind = "sqlite"
path = "shop.db"

[plugins.p]
path = "{}"

[[steps]]
id = "copy"
plugin = "p"
target = "shop"
access = "read-write"
thresholds = ["duplicates == 0"]
{limits}

[steps.params]
migrate = {{ file = "copy-customers.sql" }}
{extra_params}

[[steps.params.metrics]]
name = "duplicates"
duplicates = {{ table = "clientes", key = ["correo"] }}
"#,
            plugin(plugin_file).display()
        ),
    );
    s
}

#[test]
fn a_threshold_not_met_rolls_back_to_the_pre_step_checksums() {
    let s = Scenario::quickstart();
    // Apply step 1 alone first, and remember the state it leaves.
    let plan = s.read("sluice.toml");
    let step1_only = &plan[..plan.find("[[steps]]\nid = \"merge-legacy\"").unwrap()];
    s.write("step1.toml", step1_only);
    assert_eq!(s.run("step1.toml").code, 0);
    let after_step1 = s.state("shop.db");

    let run = s.run("sluice.toml");
    assert_eq!(run.code, 1, "a failed, rolled-back step exits 1");
    assert!(
        run.stdout
            .contains("threshold `duplicates == 0` not met (duplicates = 3)"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("Rolled back"), "{}", run.stdout);
    assert_eq!(
        s.state("shop.db"),
        after_step1,
        "every table and the schema equal their pre-step state"
    );
    // A step of rows only is undone by the host's change set; the plugin's
    // rollback is not called (`a_panic_in_rollback…` covers that path).
    assert!(
        run.stdout
            .contains("rollback: undone by change set: the 40 rows"),
        "{}",
        run.stdout
    );

    let states: Vec<String> = s
        .transitions("merge-legacy")
        .into_iter()
        .map(|t| t.0)
        .collect();
    assert_eq!(
        states,
        [
            "backing-up",
            "backed-up",
            "migrating",
            "validating",
            "rolling-back",
            "rolled-back"
        ]
    );
}

#[test]
fn a_panic_in_migrate_is_rolled_back_and_the_host_survives() {
    let s = one_step("fixtures/panics.wasm", "panic_in = \"migrate\"", "");
    let before = s.state("shop.db");
    let run = s.run("one.toml");
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stdout.contains("migrate failed: plugin trapped"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("fixture panics in migrate as asked"),
        "the panic message reaches the operator: {}",
        run.stdout
    );
    assert!(run.stdout.contains("failed, rolled back"), "{}", run.stdout);
    assert!(
        run.stderr
            .contains("rollback reached=PhaseReached::Migrating"),
        "{}",
        run.stderr
    );
    assert_eq!(s.state("shop.db"), before);
}

#[test]
fn a_panic_in_backup_changes_nothing() {
    let s = one_step("fixtures/panics.wasm", "panic_in = \"backup\"", "");
    let before = s.state("shop.db");
    let run = s.run("one.toml");
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stdout.contains("backup failed: plugin trapped"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("Nothing was changed"), "{}", run.stdout);
    assert_eq!(s.state("shop.db"), before);
}

#[test]
fn a_panic_in_rollback_is_reported_as_needing_attention() {
    // Validation fails (duplicates), and then the rollback itself panics: the
    // operator must be told the target was not restored.
    let s = one_step("fixtures/panics.wasm", "panic_in = \"rollback\"", "");
    s.write(
        "copy-customers.sql",
        &(s.read("copy-customers.sql") + "\nINSERT INTO clientes SELECT contact_id, full_name, 'customer1@example.com', '' FROM legacy_contacts;"),
    );
    restores_its_backup(&s);
    let run = s.run("one.toml");
    assert_eq!(run.code, 4, "{}", run.all());
    assert!(run.stdout.contains("NEEDS ATTENTION"), "{}", run.stdout);
    assert!(
        run.stdout.contains("rollback failed: plugin trapped"),
        "{}",
        run.stdout
    );
    let status = s.sluice(&["status", "one.toml"]);
    assert!(
        status.stdout.contains("rollback-failed"),
        "{}",
        status.stdout
    );
}

#[test]
fn a_plugin_stuck_in_a_loop_hits_the_deadline_and_is_rolled_back() {
    let s = one_step("fixtures/loops.wasm", "", "limits = { phase_seconds = 1 }");
    let before = s.state("shop.db");
    let started = std::time::Instant::now();
    let run = s.run("one.toml");
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stdout
            .contains("migrate failed: deadline of 1s exceeded"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("failed, rolled back"), "{}", run.stdout);
    assert_eq!(s.state("shop.db"), before);
    assert!(
        started.elapsed().as_secs() < 30,
        "the deadline must stop the loop promptly"
    );
}

#[test]
fn a_backup_altered_before_rollback_is_refused() {
    let s = one_step("sqlite.wasm", "", "");
    restores_its_backup(&s);
    assert_eq!(s.run("one.toml").code, 0);
    let applied = s.state("shop.db");

    // Damage one stored artifact.
    let objects = s.path().join(".sluice/backups/sha256");
    let victim = std::fs::read_dir(&objects)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&victim, bytes).unwrap();

    let run = s.sluice(&["rollback", "one.toml"]);
    assert_eq!(run.code, 4, "{}", run.all());
    assert!(
        run.stdout.contains("rollback refused") && run.stdout.contains("was altered or damaged"),
        "{}",
        run.stdout
    );
    assert_eq!(
        s.state("shop.db"),
        applied,
        "a refused rollback touches nothing"
    );
}

#[test]
fn a_read_only_step_cannot_write() {
    let s = one_step("sqlite.wasm", "", "");
    s.write(
        "one.toml",
        &s.read("one.toml")
            .replace("access = \"read-write\"", "access = \"read-only\""),
    );
    let before = s.state("shop.db");
    let run = s.run("one.toml");
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stdout.contains("SQLITE_READONLY"),
        "read-only is enforced by SQLite itself: {}",
        run.stdout
    );
    assert_eq!(s.state("shop.db"), before);
}

/// Makes the step alter a table it did not create, so its rollback
/// restores the backup through the plugin (a step that only adds objects
/// and changes rows is undone by change set without calling it).
fn restores_its_backup(s: &Scenario) {
    s.write(
        "copy-customers.sql",
        &(s.read("copy-customers.sql") + "\nALTER TABLE legacy_contacts ADD COLUMN note TEXT;"),
    );
}
