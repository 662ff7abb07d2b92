//! A shared PostgreSQL journal: plans in different directories (on different
//! hosts, in real life) record their runs in one database and lease the
//! targets they share from each other.

use std::path::Path;
use std::process::{Command, Stdio};

use sluice_e2e::services::{pg_scratch, PgScratch};
use sluice_e2e::{failpoints_bin, Scenario};

/// The variable the plans read the journal's URL from (a `[values]` entry),
/// so the URL stays out of the plan files.
const URL_VAR: &str = "SLUICE_E2E_JOURNAL_URL";

/// Makes a quickstart scenario's plan be named `name`, journal in the shared
/// PostgreSQL journal and change the SQLite file `db`.
fn share(s: &Scenario, name: &str, db: &Path) {
    let plan = s
        .read("sluice.toml")
        .replace(
            "name = \"quickstart\"",
            &format!("name = \"{name}\"\njournal = \"journal\""),
        )
        .replace(
            "path = \"shop.db\"",
            &format!("path = {:?}", db.display().to_string()),
        );
    s.write(
        "sluice.toml",
        &format!("{plan}\n[values]\njournal = {{ env = \"{URL_VAR}\" }}\n"),
    );
}

/// Runs of plan `plan` in the shared journal: (id, outcome), oldest first.
fn runs(journal: &PgScratch, plan: &str) -> Vec<(String, Option<String>)> {
    journal
        .client()
        .query(
            "SELECT id, outcome FROM sluice_journal.runs WHERE namespace = $1 ORDER BY started_at",
            &[&plan],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn count(journal: &PgScratch, sql: &str, plan: &str) -> i64 {
    journal.client().query_one(sql, &[&plan]).unwrap().get(0)
}

#[test]
fn two_plans_sharing_a_journal_and_a_target_run_one_at_a_time() {
    let journal = pg_scratch();
    let env = [(URL_VAR, journal.url.as_str())];
    // Plan a changes its own shop.db; plan b, in another directory, the
    // same file.
    let (a, b) = (Scenario::quickstart(), Scenario::quickstart());
    let db = a.path().join("shop.db");
    share(&a, "shop-a", &db);
    share(&b, "shop-b", &db);
    let before = a.state("shop.db");
    for s in [&a, &b] {
        // Accepting also compiles the plugin into each cache, so both reach
        // the lease at about the same time.
        let accepted = s.sluice_with(
            &sluice_e2e::sluice_bin(),
            &["audit", "--accept", "sluice.toml"],
            &env,
        );
        assert_eq!(accepted.code, 0, "{}", accepted.all());
    }

    let children: Vec<_> = [&a, &b]
        .iter()
        .map(|s| {
            Command::new(failpoints_bin())
                .args(["run", "sluice.toml"])
                .current_dir(s.path())
                .env("SLUICE_CACHE_DIR", s.path().join(".cache"))
                .env(URL_VAR, &journal.url)
                // The winner holds its lease a while after taking it.
                .env("SLUICE_FAILPOINT_DELAY", "lease:acquired@1:3000")
                .stdout(Stdio::piped())
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
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            )
        })
        .collect();
    // The quickstart's second step fails its thresholds and is rolled back:
    // the run that proceeds exits 1.
    let codes: Vec<i32> = outcomes.iter().map(|(code, _)| *code).collect();
    let winner = match codes[..] {
        [1, 3] => 0,
        [3, 1] => 1,
        _ => panic!("expected one run to proceed and one to be refused: {outcomes:?}"),
    };
    let (names, loser) = (["shop-a", "shop-b"], 1 - winner);

    // The refusal names the winning run, which the shared journal recorded.
    let won = runs(&journal, names[winner]);
    assert_eq!(won.len(), 1, "{won:?}");
    let refusal = &outcomes[loser].1;
    println!("refused run said:\n{refusal}");
    assert!(
        refusal.contains(&format!("is held by run {}", won[0].0)) && refusal.contains("pid "),
        "{refusal}"
    );
    assert_eq!(
        runs(&journal, names[loser])
            .into_iter()
            .map(|(_, outcome)| outcome)
            .collect::<Vec<_>>(),
        vec![Some("refused: lease held".to_string())]
    );
    assert_eq!(
        count(
            &journal,
            "SELECT count(*) FROM sluice_journal.transitions WHERE namespace = $1",
            names[loser]
        ),
        0,
        "the refused run changed nothing"
    );
    assert!(
        count(
            &journal,
            "SELECT count(*) FROM sluice_journal.transitions WHERE namespace = $1",
            names[winner]
        ) > 0
    );
    // Released on the way out, and no embedded journal anywhere.
    assert_eq!(
        count(
            &journal,
            "SELECT count(*) FROM sluice_journal.leases WHERE namespace = $1",
            names[winner]
        ),
        0
    );
    for s in [&a, &b] {
        assert!(!s.path().join(".sluice/journal.db").exists());
    }

    // Status reads the shared journal: step 1 applied, step 2 rolled back.
    let winner_dir = [&a, &b][winner];
    let status =
        winner_dir.sluice_with(&sluice_e2e::sluice_bin(), &["status", "sluice.toml"], &env);
    assert_eq!(status.code, 0, "{}", status.all());
    assert!(
        status.stdout.contains("completed") && status.stdout.contains("rolled-back"),
        "{}",
        status.stdout
    );
    assert_ne!(a.state("shop.db"), before, "step 1 changed the shared file");

    // `sluice unlock` records who and why in the shared journal.
    let unlock = [&a, &b][loser].sluice_with(
        &sluice_e2e::sluice_bin(),
        &[
            "unlock",
            "sluice.toml",
            "shop",
            "--force",
            "--reason",
            "e2e check",
        ],
        &env,
    );
    assert_eq!(unlock.code, 0, "{}", unlock.all());
    assert_eq!(
        count(
            &journal,
            "SELECT count(*) FROM sluice_journal.lease_events
             WHERE namespace = $1 AND event = 'forced-unlock' AND reason = 'e2e check'",
            names[loser]
        ),
        1
    );
}
