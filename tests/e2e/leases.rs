//! One run at a time per target, and no lease that outlives its holder.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sluice_e2e::{failpoints_bin, report, DbState, Scenario};

/// Trials of the concurrency test; `SLUICE_LEASE_TRIALS` raises it.
fn trials() -> usize {
    std::env::var("SLUICE_LEASE_TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(3)
}

fn step1_state() -> DbState {
    let s = Scenario::quickstart();
    let db = s.path().join("shop.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(&s.read("copy-customers.sql"))
        .unwrap();
    DbState::of(&db)
}

#[test]
fn of_ten_concurrent_runs_exactly_one_proceeds() {
    let step1 = step1_state();
    let trials = trials();
    for trial in 0..trials {
        let s = Scenario::quickstart();
        // Accepting also compiles the plugin into the cache, so all ten
        // reach the lease at about the same time.
        assert_eq!(s.sluice(&["audit", "--accept", "sluice.toml"]).code, 0);
        let children: Vec<_> = (0..10)
            .map(|_| {
                Command::new(failpoints_bin())
                    .args(["run", "sluice.toml"])
                    .current_dir(s.path())
                    .env("SLUICE_CACHE_DIR", s.path().join(".cache"))
                    // The winner holds its lease a while after taking it.
                    .env("SLUICE_FAILPOINT_DELAY", "lease:acquired@1:3000")
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let outcomes: Vec<(i32, String)> = children
            .into_iter()
            .map(|c| {
                let out = c.wait_with_output().unwrap();
                (
                    out.status.code().unwrap_or(-1),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                )
            })
            .collect();
        let proceeded = outcomes.iter().filter(|(code, _)| *code == 1).count();
        let refused = outcomes
            .iter()
            .filter(|(code, err)| *code == 3 && err.contains("is held by run"))
            .count();
        assert_eq!((proceeded, refused), (1, 9), "trial {trial}: {outcomes:?}");
        assert_eq!(s.state("shop.db"), step1, "trial {trial}");
    }
    report("leases.txt", &format!("10 concurrent runs on one target: exactly one proceeded in {trials} of {trials} trials"));
}

#[test]
fn a_killed_holder_is_taken_over_at_once_on_the_same_host() {
    let s = Scenario::quickstart();
    assert_eq!(s.sluice(&["audit", "--accept", "sluice.toml"]).code, 0);
    assert!(s.kill_at(
        &["run", "sluice.toml"],
        "journal:migrating:after-commit@2",
        &[]
    ));
    let started = Instant::now();
    let rerun = s.sluice(&["run", "sluice.toml"]);
    assert_eq!(rerun.code, 1, "{}", rerun.all());
    assert!(
        rerun
            .stdout
            .contains("resumed: interrupted while migrating"),
        "{}",
        rerun.stdout
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "within the lease window"
    );
    assert_eq!(s.state("shop.db"), step1_state());
}

/// Makes the lease left by a killed run look like it belongs to a live run
/// on another machine.
fn lease_of_another_host(s: &Scenario) {
    let conn = rusqlite::Connection::open(s.path().join(".sluice/journal.db")).unwrap();
    let n = conn
        .execute(
            "UPDATE leases SET host = 'other-host', expires_at = strftime('%s','now') + 4",
            [],
        )
        .unwrap();
    assert_eq!(n, 1, "the killed run left its lease");
}

#[test]
fn a_live_lease_refuses_and_an_expired_one_is_taken_over() {
    let s = Scenario::quickstart();
    s.write(
        "sluice.toml",
        &s.read("sluice.toml")
            .replace("[plan]\n", "[plan]\nlease_seconds = 2\n"),
    );
    assert_eq!(s.sluice(&["audit", "--accept", "sluice.toml"]).code, 0);
    assert!(s.kill_at(
        &["run", "sluice.toml"],
        "journal:validating:after-commit@1",
        &[]
    ));
    lease_of_another_host(&s);
    let status = s.sluice(&["status", "sluice.toml"]);
    assert!(
        status
            .stdout
            .contains("copy-customers           validating")
            && status.stdout.contains("INTERRUPTED"),
        "{}",
        status.stdout
    );
    let refused = s.sluice(&["run", "sluice.toml"]);
    assert_eq!(refused.code, 3, "{}", refused.all());
    assert!(
        refused.stderr.contains("is held by run") && refused.stderr.contains("host other-host"),
        "{}",
        refused.stderr
    );
    std::thread::sleep(Duration::from_millis(4500));
    let rerun = s.sluice(&["run", "sluice.toml"]);
    assert_eq!(rerun.code, 1, "{}", rerun.all());
    assert_eq!(s.state("shop.db"), step1_state());
}

#[test]
fn unlock_force_removes_a_lease_and_records_why() {
    let s = Scenario::quickstart();
    assert_eq!(s.sluice(&["audit", "--accept", "sluice.toml"]).code, 0);
    assert!(s.kill_at(
        &["run", "sluice.toml"],
        "journal:validating:after-commit@1",
        &[]
    ));
    lease_of_another_host(&s);
    let no_force = s.sluice(&["unlock", "sluice.toml", "shop", "--reason", "x"]);
    assert_eq!(no_force.code, 2);
    let unlock = s.sluice(&[
        "unlock",
        "sluice.toml",
        "shop",
        "--force",
        "--reason",
        "host other-host was decommissioned",
    ]);
    assert_eq!(unlock.code, 0, "{}", unlock.all());
    assert!(
        unlock.stdout.contains("removed the lease of run"),
        "{}",
        unlock.stdout
    );
    let conn = rusqlite::Connection::open(s.path().join(".sluice/journal.db")).unwrap();
    let reason: String = conn
        .query_row(
            "SELECT reason FROM lease_events WHERE event = 'forced-unlock'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(reason, "host other-host was decommissioned");
    let rerun = s.sluice(&["run", "sluice.toml"]);
    assert_eq!(rerun.code, 1, "{}", rerun.all());
}
