//! Steps that succeed: applied once, skipped on re-run, journaled, reversible.

use sluice_e2e::Scenario;

/// The quickstart with a second step that skips contacts who are customers
/// already, so both steps pass.
fn passing_quickstart() -> Scenario {
    let s = Scenario::quickstart();
    s.write(
        "merge-legacy.sql",
        "INSERT INTO clientes (id, nombre, correo, creado_en)
         SELECT contact_id, full_name, mail, '2020-01-01' FROM legacy_contacts
         WHERE mail NOT IN (SELECT correo FROM clientes);",
    );
    s
}

#[test]
fn both_steps_complete_and_a_rerun_changes_nothing() {
    let s = passing_quickstart();
    let first = s.run("sluice.toml");
    assert_eq!(first.code, 0, "{}", first.all());
    let after = s.state("shop.db");
    assert_eq!(after.rows("clientes"), 1037);

    let again = s.run("sluice.toml");
    assert_eq!(again.code, 0);
    assert!(again.stdout.contains("already applied"), "{}", again.stdout);
    assert_eq!(
        s.state("shop.db"),
        after,
        "a re-run must not change the database"
    );

    // The journal lists each transition, in order, once per step.
    for step in ["copy-customers", "merge-legacy"] {
        let states: Vec<String> = s.transitions(step).into_iter().map(|t| t.0).collect();
        assert_eq!(
            states,
            [
                "backing-up",
                "backed-up",
                "migrating",
                "validating",
                "completed"
            ],
            "{step}"
        );
    }

    let status = s.sluice(&["status", "sluice.toml"]);
    assert_eq!(status.code, 0);
    assert!(
        status.stdout.contains("copy-customers") && status.stdout.contains("completed"),
        "{}",
        status.stdout
    );
}

#[test]
fn rollback_command_restores_every_step_in_reverse_order() {
    let s = passing_quickstart();
    let seeded = s.state("shop.db");
    assert_eq!(s.run("sluice.toml").code, 0);
    let after_both = s.state("shop.db");

    // Roll back only the second step.
    let partial = s.sluice(&["rollback", "sluice.toml", "--to", "copy-customers"]);
    assert_eq!(partial.code, 0, "{}", partial.all());
    let after_one = s.state("shop.db");
    assert_ne!(after_one, after_both);
    assert_eq!(after_one.rows("clientes"), 1000);

    // Then everything: back to the seeded database exactly.
    let full = s.sluice(&["rollback", "sluice.toml"]);
    assert_eq!(full.code, 0, "{}", full.all());
    assert_eq!(s.state("shop.db"), seeded);

    // Rolled-back steps run again.
    assert_eq!(s.run("sluice.toml").code, 0);
    assert_eq!(s.state("shop.db"), after_both);
}

#[test]
fn changed_params_of_a_completed_step_are_reported_as_drift() {
    let s = passing_quickstart();
    assert_eq!(s.run("sluice.toml").code, 0);
    let before = s.state("shop.db");
    s.write(
        "copy-customers.sql",
        &(s.read("copy-customers.sql") + "\n-- edited after it ran\n"),
    );
    let rerun = s.run("sluice.toml");
    assert_eq!(rerun.code, 3, "drift is refused with exit code 3");
    assert!(
        rerun.stdout.contains("drift") && rerun.stdout.contains("params changed"),
        "{}",
        rerun.stdout
    );
    assert_eq!(
        s.state("shop.db"),
        before,
        "drift must not re-apply anything"
    );
}
