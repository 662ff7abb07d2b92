//! Crash safety: the real `sluice` process is SIGKILLed at every failpoint a
//! run passes (every journal transition, before and after it commits, and
//! points inside backup, migrate and rollback). After each kill the target
//! must equal a state some prefix of the plan leaves, and a plain re-run
//! must finish the plan with no manual action.

use sluice_e2e::{report, DbState, Scenario};

/// The states the quickstart may leave: the seed, after step 1, and after
/// step 1 and 2's migrate (before its rollback). Computed by applying the
/// SQL directly, not through sluice.
fn allowed_states() -> (DbState, DbState, DbState) {
    let s = Scenario::quickstart();
    let db = s.path().join("shop.db");
    let seed = DbState::of(&db);
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(&s.read("copy-customers.sql")).unwrap();
    let step1 = DbState::of(&db);
    conn.execute_batch(&s.read("merge-legacy.sql")).unwrap();
    let step2 = DbState::of(&db);
    (seed, step1, step2)
}

/// Every failpoint an uninterrupted run passes, in order (`name@n`).
fn failpoints_of_a_run() -> Vec<String> {
    let s = Scenario::quickstart();
    assert_eq!(s.sluice(&["audit", "--accept", "sluice.toml"]).code, 0);
    let trace = s.path().join("trace.txt");
    let out = s.sluice_with(
        &sluice_e2e::failpoints_bin(),
        &["run", "sluice.toml"],
        &[("SLUICE_FAILPOINT_TRACE", trace.to_str().unwrap())],
    );
    assert_eq!(
        out.code, 1,
        "the reference run: step 1 applies, step 2 rolls back"
    );
    std::fs::read_to_string(trace)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn a_kill_at_every_point_leaves_a_consistent_target_and_a_rerun_finishes() {
    let (seed, step1, step2) = allowed_states();
    let points = failpoints_of_a_run();
    assert!(
        points.len() >= 24,
        "expected dozens of fault points, got {points:?}"
    );
    let mut violations = Vec::new();
    for point in &points {
        let s = Scenario::quickstart();
        assert_eq!(s.sluice(&["audit", "--accept", "sluice.toml"]).code, 0);
        assert!(
            s.kill_at(&["run", "sluice.toml"], point, &[]),
            "{point} was not reached"
        );
        let after_kill = s.state("shop.db");
        if ![&seed, &step1, &step2].contains(&&after_kill) {
            violations.push(format!(
                "{point}: after the kill the target is in no step boundary state"
            ));
            continue;
        }
        let rerun = s.sluice(&["run", "sluice.toml"]);
        if rerun.code != 1 {
            violations.push(format!(
                "{point}: the re-run exited {} instead of 1:\n{}",
                rerun.code,
                rerun.all()
            ));
            continue;
        }
        if s.state("shop.db") != step1 {
            violations.push(format!(
                "{point}: after the re-run the target is not step 1's state"
            ));
            continue;
        }
        let status = s.sluice(&["status", "sluice.toml"]);
        let consistent = status.stdout.contains("copy-customers           completed")
            && status
                .stdout
                .contains("merge-legacy             rolled-back");
        if !consistent {
            violations.push(format!(
                "{point}: journal not consistent:\n{}",
                status.stdout
            ));
        }
    }
    report(
        "crash-sqlite.txt",
        &format!(
            "kill-at-every-point (SQLite): {} fault points exercised, {} violations",
            points.len(),
            violations.len()
        ),
    );
    assert!(
        violations.is_empty(),
        "{} violations:\n{}",
        violations.len(),
        violations.join("\n")
    );
}

#[test]
fn sigterm_during_migrate_rolls_the_step_back_and_releases_the_lease() {
    use std::io::{BufRead, BufReader};
    let (seed, step1, _) = allowed_states();
    let s = Scenario::quickstart();
    assert_eq!(s.sluice(&["audit", "--accept", "sluice.toml"]).code, 0);
    let mut child = std::process::Command::new(sluice_e2e::failpoints_bin())
        .args(["run", "sluice.toml"])
        .current_dir(s.path())
        .env("SLUICE_CACHE_DIR", s.path().join(".cache"))
        // Step 1's migrate has run its SQL and waits before committing.
        .env("SLUICE_FAILPOINT_DELAY", "sql:execute-script:done@1:1500")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 && !line.contains("SLUICE-FAILPOINT-DELAY") {
        line.clear();
    }
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{stdout}");
    assert!(
        stdout.contains("STOPPED by a signal at step `copy-customers`"),
        "{stdout}"
    );
    assert_eq!(
        s.state("shop.db"),
        seed,
        "the interrupted step was rolled back"
    );
    let conn = rusqlite::Connection::open(s.path().join(".sluice/journal.db")).unwrap();
    let leases: i64 = conn
        .query_row("SELECT count(*) FROM leases", [], |r| r.get(0))
        .unwrap();
    assert_eq!(leases, 0, "the lease was released");
    let rerun = s.sluice(&["run", "sluice.toml"]);
    assert_eq!(rerun.code, 1, "{}", rerun.all());
    assert_eq!(s.state("shop.db"), step1);
}

/// Runs the quickstart with an injected I/O error; the first step must fail
/// before changing anything, with the error named, and leave no artifact.
fn io_fault(point: &str, message: &str) {
    let (seed, step1, _) = allowed_states();
    let s = Scenario::quickstart();
    assert_eq!(s.sluice(&["audit", "--accept", "sluice.toml"]).code, 0);
    let out = s.sluice_with(
        &sluice_e2e::failpoints_bin(),
        &["run", "sluice.toml"],
        &[("SLUICE_FAILPOINT_ERROR", point)],
    );
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stdout.contains("backup failed") && out.stdout.contains(message),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("Nothing was changed"), "{}", out.stdout);
    assert_eq!(s.state("shop.db"), seed);
    let tmp = std::fs::read_dir(s.path().join(".sluice/backups/tmp"))
        .unwrap()
        .count();
    assert_eq!(tmp, 0, "no partial artifact is left behind");
    // The failed artifact was never recorded: a clean re-run works.
    let rerun = s.sluice(&["run", "sluice.toml"]);
    assert_eq!(rerun.code, 1, "{}", rerun.all());
    assert_eq!(s.state("shop.db"), step1);
}

#[test]
fn a_full_disk_while_writing_a_backup_changes_nothing() {
    io_fault("backup:write@2", "No space left on device");
}

#[test]
fn an_fsync_failure_invalidates_the_backup() {
    io_fault("backup:fsync@1", "fsync of artifact");
}
