//! Operator gates: threshold bands and their actions, approvals (and their
//! invalidation by a plan edit), rejections, baselines and watch windows,
//! through the real binary on real SQLite files.

use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_e2e::{plugin, Scenario};

/// 100 source rows; the step copies the first `copied` into `dst`, so its
/// match rate is `copied / 100`.
fn seed(s: &Scenario) {
    s.seed(
        "shop.db",
        "CREATE TABLE src (id INTEGER PRIMARY KEY);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)
         INSERT INTO src SELECT i FROM n;",
    );
}

/// A plan with one step `copy` and `gates` (TOML lines of the step).
fn plan(s: &Scenario, copied: u32, gates: &str) {
    s.write(
        "sluice.toml",
        &format!(
            r#"[plan]
name = "gates"

[targets.shop]
kind = "sqlite"
path = "shop.db"

[plugins.sqlite]
path = "{plugin}"

[[steps]]
id = "copy"
plugin = "sqlite"
target = "shop"
access = "read-write"
thresholds = ["duplicates == 0"]
{gates}

[steps.params]
migrate = "CREATE TABLE dst AS SELECT id FROM src WHERE id <= {copied}"

[[steps.params.metrics]]
name = "match_rate"
match_rate = {{ source = "SELECT id FROM src", target = "SELECT id FROM dst" }}

[[steps.params.metrics]]
name = "duplicates"
duplicates = {{ table = "dst", key = ["id"] }}
"#,
            plugin = plugin("sqlite.wasm").display()
        ),
    );
}

const THREE_BANDS: &str = r#"
[[steps.bands]]
when = "match_rate < 0.90"
action = "rollback"

[[steps.bands]]
when = "match_rate < 0.95"
action = "review"

[[steps.bands]]
when = "match_rate >= 0.95"
action = "advance"
"#;

fn state(s: &Scenario, step: &str) -> String {
    s.step_state(step)
}

fn report(s: &Scenario) -> Value {
    let out = s.sluice(&["report", "sluice.toml", "--format", "json"]);
    assert_eq!(out.code, 0, "{}", out.all());
    serde_json::from_str(&out.stdout).unwrap()
}

fn has_table(s: &Scenario, table: &str) -> bool {
    s.state("shop.db").tables.contains_key(table)
}

#[test]
fn each_of_three_bands_takes_its_action() {
    // Below 90 %: rolled back, the target proven as before.
    let low = Scenario::new();
    seed(&low);
    let before = low.state("shop.db");
    plan(&low, 80, THREE_BANDS);
    let out = low.run("sluice.toml");
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stdout
            .contains("band reached: match_rate < 0.90 → rollback"),
        "{}",
        out.stdout
    );
    assert_eq!(state(&low, "copy"), "rolled-back");
    assert_eq!(low.state("shop.db"), before);
    let r = report(&low);
    assert_eq!(r["steps"][0]["band"]["action"], "rollback", "{r:#}");

    // 90–95 %: migrated, validated, paused with its evidence; nothing more runs.
    let mid = Scenario::new();
    seed(&mid);
    plan(&mid, 92, THREE_BANDS);
    let out = mid.run("sluice.toml");
    assert_eq!(out.code, 5, "{}", out.all());
    assert!(out.stdout.contains("AWAITING APPROVAL"), "{}", out.stdout);
    assert!(out.stdout.contains("sluice approve"), "{}", out.stdout);
    assert_eq!(state(&mid, "copy"), "awaiting-review");
    assert_eq!(mid.state("shop.db").rows("dst"), 92);
    let r = report(&mid);
    assert_eq!(r["steps"][0]["band"]["action"], "review", "{r:#}");
    assert_eq!(r["steps"][0]["band"]["when"], "match_rate < 0.95");
    let status = mid.sluice(&["status", "sluice.toml"]);
    assert!(
        status
            .stdout
            .contains("awaiting `sluice approve` or `sluice reject`"),
        "{}",
        status.stdout
    );
    // Running again without a decision keeps it paused and changes nothing.
    let again = mid.sluice(&["run", "sluice.toml"]);
    assert_eq!(again.code, 5, "{}", again.all());
    assert_eq!(state(&mid, "copy"), "awaiting-review");

    // 95 % and up: completed.
    let high = Scenario::new();
    seed(&high);
    plan(&high, 97, THREE_BANDS);
    let out = high.run("sluice.toml");
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout
            .contains("band reached: match_rate >= 0.95 → advance"),
        "{}",
        out.stdout
    );
    assert_eq!(state(&high, "copy"), "completed");
}

#[test]
fn an_approval_completes_the_paused_step_and_is_in_the_report() {
    let s = Scenario::new();
    seed(&s);
    plan(&s, 92, THREE_BANDS);
    assert_eq!(s.run("sluice.toml").code, 5);
    let run_id = report(&s)["run"]["id"].as_str().unwrap().to_string();

    // Approving another run than the one that paused is refused.
    let wrong = s.sluice(&[
        "approve",
        "sluice.toml",
        "copy",
        "--run",
        "r-nope",
        "--by",
        "alice",
    ]);
    assert_eq!(wrong.code, 3, "{}", wrong.all());

    let ok = s.sluice(&[
        "approve",
        "sluice.toml",
        "copy",
        "--run",
        &run_id,
        "--by",
        "alice",
        "--reason",
        "92 % is expected: 8 test rows",
    ]);
    assert_eq!(ok.code, 0, "{}", ok.all());
    // Approving twice is harmless; approving a step that is not paused is refused.
    let out = s.sluice(&["run", "sluice.toml"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(state(&s, "copy"), "completed");
    let late = s.sluice(&["approve", "sluice.toml", "copy", "--by", "alice"]);
    assert_eq!(late.code, 3, "{}", late.all());
    assert!(
        late.stderr.contains("not awaiting a decision"),
        "{}",
        late.stderr
    );

    // The pausing run's report carries the decision, who, and the evidence.
    let out = s.sluice(&[
        "report",
        "sluice.toml",
        "--run",
        &run_id,
        "--format",
        "json",
    ]);
    let r: Value = serde_json::from_str(&out.stdout).unwrap();
    let a = &r["steps"][0]["approvals"][0];
    assert_eq!(a["decision"], "approve", "{r:#}");
    assert!(a["by"].as_str().unwrap().starts_with("alice ("), "{a}");
    assert_eq!(a["plan_hash"], r["run"]["plan_hash"]);
    assert_eq!(a["evidence"]["metrics"][0]["name"], "match_rate", "{a}");
    assert_eq!(a["reason"], "92 % is expected: 8 test rows");

    // The page an approver signs shows the band and the decision.
    let html = s.sluice(&[
        "report",
        "sluice.toml",
        "--run",
        &run_id,
        "--format",
        "html",
    ]);
    assert_eq!(html.code, 0, "{}", html.all());
    assert!(
        html.stdout.contains("data-action=\"review\""),
        "{}",
        html.stdout
    );
    assert!(
        html.stdout.contains("<h3>Decisions</h3>"),
        "{}",
        html.stdout
    );
    assert!(html.stdout.contains("<td>alice ("), "{}", html.stdout);
}

#[test]
fn an_approval_recorded_before_a_plan_edit_is_refused_after_it() {
    let s = Scenario::new();
    seed(&s);
    plan(&s, 92, THREE_BANDS);
    assert_eq!(s.run("sluice.toml").code, 5);
    let ok = s.sluice(&["approve", "sluice.toml", "copy", "--by", "alice"]);
    assert_eq!(ok.code, 0, "{}", ok.all());

    // Any edit changes the plan the approver signed.
    let edited = s.read("sluice.toml").replace("0.95", "0.94");
    s.write("sluice.toml", &edited);
    let out = s.run("sluice.toml");
    assert_eq!(out.code, 5, "{}", out.all());
    assert!(
        out.stdout
            .contains("approval refused: the approval by alice"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("the plan is now"), "{}", out.stdout);
    // Judged afresh under the edited plan: still in review, a new pause.
    assert_eq!(state(&s, "copy"), "awaiting-review");

    // An approval attempted for a pause gathered under another plan is
    // refused at once, too.
    let paused = s.read("sluice.toml");
    s.write("sluice.toml", &format!("{paused}\n# reviewed\n"));
    let stale = s.sluice(&["approve", "sluice.toml", "copy", "--by", "bob"]);
    assert_eq!(stale.code, 3, "{}", stale.all());
    assert!(
        stale.stderr.contains("the plan changed since run"),
        "{}",
        stale.stderr
    );
    s.write("sluice.toml", &paused);

    // A fresh approval of the new evidence goes through.
    assert_eq!(
        s.sluice(&["approve", "sluice.toml", "copy", "--by", "bob"])
            .code,
        0
    );
    let out = s.sluice(&["run", "sluice.toml"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(state(&s, "copy"), "completed");
}

#[test]
fn a_rejection_rolls_the_paused_step_back() {
    let s = Scenario::new();
    seed(&s);
    let before = s.state("shop.db");
    plan(&s, 92, THREE_BANDS);
    assert_eq!(s.run("sluice.toml").code, 5);
    assert!(has_table(&s, "dst"));
    let out = s.sluice(&[
        "reject",
        "sluice.toml",
        "copy",
        "--by",
        "carol",
        "--reason",
        "8 % missing",
    ]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("rejected by carol"), "{}", out.stdout);
    assert_eq!(state(&s, "copy"), "rolled-back");
    assert_eq!(s.state("shop.db"), before);
}

#[test]
fn an_approval_point_before_a_step_pauses_before_anything_changes() {
    let s = Scenario::new();
    seed(&s);
    let before = s.state("shop.db");
    plan(&s, 100, "approval = \"before\"");
    let out = s.run("sluice.toml");
    assert_eq!(out.code, 5, "{}", out.all());
    assert_eq!(state(&s, "copy"), "awaiting-approval");
    assert_eq!(s.state("shop.db"), before, "nothing ran");
    assert_eq!(
        s.sluice(&["approve", "sluice.toml", "copy", "--by", "dave"])
            .code,
        0
    );
    let out = s.sluice(&["run", "sluice.toml"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(state(&s, "copy"), "completed");
    assert_eq!(s.state("shop.db").rows("dst"), 100);
}

#[test]
fn baseline_metrics_are_measured_before_migrate() {
    // migrate doubles `src`: rows == 2 × the baseline passes, <= 1.5 × fails.
    for (threshold, code, end) in [
        ("rows == 2 * baseline.rows", 0, "completed"),
        ("rows <= 1.5 * baseline.rows", 1, "rolled-back"),
    ] {
        let s = Scenario::new();
        seed(&s);
        plan(&s, 100, "");
        let text = s
            .read("sluice.toml")
            .replace(
                "migrate = \"CREATE TABLE dst AS SELECT id FROM src WHERE id <= 100\"",
                "migrate = \"CREATE TABLE dst AS SELECT id FROM src; INSERT INTO src SELECT id + 100 FROM src\"",
            )
            .replace(
                "thresholds = [\"duplicates == 0\"]",
                &format!("thresholds = [\"{threshold}\"]"),
            )
            + "\n[[steps.params.metrics]]\nname = \"rows\"\nrow_count = \"src\"\n";
        s.write("sluice.toml", &text);
        let out = s.run("sluice.toml");
        assert_eq!(out.code, code, "{}", out.all());
        assert_eq!(state(&s, "copy"), end);
        let r = report(&s);
        let baseline = &r["steps"][0]["baseline"];
        let rows = baseline
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "rows")
            .unwrap_or_else(|| panic!("baseline rows in {r:#}"));
        assert_eq!(rows["value"], 100.0);
    }
}

#[test]
fn a_watch_window_that_sees_a_breach_rolls_back_within_one_interval() {
    let s = Scenario::new();
    seed(&s);
    let before = s.state("shop.db");
    plan(&s, 100, "");
    // A first step the breach also undoes (`on_breach = "plan"`).
    let text = s.read("sluice.toml").replace(
        "[[steps]]\nid = \"copy\"",
        "[[steps]]\nid = \"flag\"\nplugin = \"sqlite\"\ntarget = \"shop\"\naccess = \"read-write\"\n\n[steps.params]\nmigrate = \"CREATE TABLE flags (name TEXT PRIMARY KEY); INSERT INTO flags VALUES ('v2')\"\n\n[[steps]]\nid = \"copy\"",
    ).replace(
        "thresholds = [\"duplicates == 0\"]",
        "thresholds = [\"duplicates == 0\"]\n\n[steps.watch]\nevery = \"1s\"\nfor = \"60s\"\non_breach = \"plan\"",
    );
    s.write("sluice.toml", &text);
    assert_eq!(s.sluice(&["audit", "--accept", "sluice.toml"]).code, 0);

    let started = Instant::now();
    let child = s.spawn_sluice(&["run", "sluice.toml"]);
    // Wait until the window is open and a first check passed.
    s.wait_for_state("copy", "watching");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(state(&s, "copy"), "watching", "no breach yet");

    // The breach: a duplicate row appears in the copied table.
    let conn = rusqlite::Connection::open(s.path().join("shop.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute("INSERT INTO dst VALUES (7)", []).unwrap();
    let breached_at = time::OffsetDateTime::now_utc();
    drop(conn);

    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("breached: threshold `duplicates == 0` not met"),
        "{stdout}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the window ended early"
    );
    // The verdict names the step that breached, not the earlier one the
    // breach rolled back; the breach is said once under the step and once
    // in the verdict.
    assert!(
        stdout.contains("result: FAILED at step `copy` (watch)"),
        "{stdout}"
    );
    assert_eq!(stdout.matches("breached: threshold").count(), 2, "{stdout}");

    // The rollback started within one interval (1 s) of the breach, plus the
    // check's own validate time.
    let (rolled_at, _) = s.entered("copy", "rolling-back");
    let lag = rolled_at - breached_at;
    assert!(
        lag <= time::Duration::milliseconds(2000),
        "rollback began {lag} after the breach"
    );
    // Both steps are undone, newest first, and the database is as before.
    assert_eq!(state(&s, "copy"), "rolled-back");
    assert_eq!(state(&s, "flag"), "rolled-back");
    assert_eq!(s.state("shop.db"), before);
}

#[test]
fn malformed_gates_are_plan_errors_with_their_location() {
    for (gates, message, line) in [
        (
            "\n[[steps.bands]]\nwhen = \"match_rate <\"\naction = \"review\"\n",
            "band `match_rate <` of step `copy`",
            19,
        ),
        (
            "\n[[steps.bands]]\nwhen = \"match_rate < 0.9\"\naction = \"pause\"\n",
            "unknown variant `pause`",
            20,
        ),
        (
            "\n[steps.watch]\nevery = \"10s\"\nfor = \"5s\"\n",
            "watch checks every 10s but lasts only 5s",
            19,
        ),
        (
            "\n[steps.watch]\nevery = \"often\"\nfor = \"5s\"\n",
            "is not a duration",
            19,
        ),
    ] {
        let s = Scenario::new();
        seed(&s);
        plan(&s, 100, gates);
        let out = s.sluice(&["check", "sluice.toml"]);
        assert_eq!(out.code, 2, "{}", out.all());
        assert!(out.stderr.contains(message), "{gates}: {}", out.stderr);
        assert!(
            out.stderr.contains(&format!("sluice.toml:{line}:")),
            "{gates}: {}",
            out.stderr
        );
    }
}

#[test]
fn a_rehearsal_passes_review_bands_and_approval_points_and_records_them() {
    let s = Scenario::new();
    seed(&s);
    plan(&s, 92, &format!("approval = \"before\"\n{THREE_BANDS}"));
    assert_eq!(s.sluice(&["audit", "--accept", "sluice.toml"]).code, 0);
    let before = std::fs::read(s.path().join("shop.db")).unwrap();
    let out = s.sluice(&["rehearse", "sluice.toml", "--output", "staging"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(std::fs::read(s.path().join("shop.db")).unwrap(), before);
    // The rehearsal's own journal records both gates as passed.
    let journal = rusqlite::Connection::open(s.path().join("staging/.sluice/journal.db")).unwrap();
    let details: Vec<String> = journal
        .prepare("SELECT detail FROM transitions WHERE step_id = 'copy' ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(
        details
            .iter()
            .any(|d| d.starts_with("rehearsal: the approval point before this step is passed")),
        "{details:#?}"
    );
    assert!(
        details.iter().any(|d| d.starts_with(
            "rehearsal: would pause for review here (band `match_rate < 0.95` → review"
        )),
        "{details:#?}"
    );
    // The real journal knows nothing of it.
    assert_eq!(state(&s, "copy"), "");
}

#[test]
fn a_run_killed_during_its_watch_window_resumes_by_judging_and_watching_again() {
    let s = Scenario::new();
    seed(&s);
    plan(&s, 100, "");
    let text = s.read("sluice.toml").replace(
        "thresholds = [\"duplicates == 0\"]",
        "thresholds = [\"duplicates == 0\"]\n\n[steps.watch]\nevery = \"1s\"\nfor = \"2s\"",
    );
    s.write("sluice.toml", &text);
    assert_eq!(s.sluice(&["audit", "--accept", "sluice.toml"]).code, 0);
    assert!(
        s.kill_at(
            &["run", "sluice.toml"],
            "journal:watching:after-commit@1",
            &[]
        ),
        "the run reached its watch window"
    );
    assert_eq!(state(&s, "copy"), "watching");
    let out = s.sluice(&["run", "sluice.toml"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout.contains("migrate had completed: validated it"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("watch window (every 1s for 2s) passed: 2 checks"),
        "{}",
        out.stdout
    );
    assert_eq!(state(&s, "copy"), "completed");
    assert_eq!(s.state("shop.db").rows("dst"), 100);
}
