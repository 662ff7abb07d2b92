//! `sluice report`: the evidence of a run, read back from the journal.

use serde_json::Value;
use sluice_e2e::Scenario;

/// (state, at) of each transition of `step`, oldest first, straight from SQL.
fn times(s: &Scenario, step: &str) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open(s.path().join(".sluice/journal.db")).unwrap();
    let mut stmt = conn
        .prepare("SELECT state, at FROM transitions WHERE step_id = ?1 ORDER BY seq")
        .unwrap();
    stmt.query_map([step], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn step<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("step {id} in {report:#}"))
}

#[test]
fn the_report_of_a_rolled_back_run_shows_phases_thresholds_rollback_and_backups() {
    let s = Scenario::quickstart();
    let run = s.run("sluice.toml");
    assert_eq!(run.code, 1, "{}", run.all());

    let out = s.sluice(&["report", "sluice.toml", "--format", "json"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["run"]["command"], "run");
    assert!(report["plan"]["name"].as_str().is_some());
    assert_eq!(report["plan"]["changed_since_run"], false);
    assert!(
        !out.stdout.contains("shop.db"),
        "no target address: {}",
        out.stdout
    );

    for (id, end) in [
        ("copy-customers", "completed"),
        ("merge-legacy", "rolled-back"),
    ] {
        let st = step(&report, id);
        assert_eq!(st["final_state"], end, "{st:#}");
        assert_eq!(st["target_kind"], "sqlite");
        assert_eq!(st["plugin_digest"].as_str().unwrap().len(), 64);
        // Each phase is timed from its transition to the next, as journaled.
        let journal = times(&s, id);
        let phases = st["phases"].as_array().unwrap();
        assert!(phases.len() >= 3, "{st:#}");
        for p in phases {
            let d = p["duration_ms"].as_i64().expect("every phase ended");
            assert!(d >= 0, "{p}");
            // Two transitions can share a millisecond: match the state too.
            let starts_in = match p["phase"].as_str().unwrap() {
                "backup" => "backing-up",
                "migrate" => "migrating",
                "validate" => "validating",
                _ => "rolling-back",
            };
            let start = journal
                .iter()
                .position(|(state, at)| {
                    state == starts_in && at == p["started_at"].as_str().unwrap()
                })
                .expect("phase starts at a journaled transition");
            assert_eq!(journal[start + 1].1, p["ended_at"].as_str().unwrap());
            assert_eq!(journal[start + 1].0, p["ended_in"].as_str().unwrap());
        }
        let backup = &st["backup"];
        assert!(backup["verification"]
            .as_str()
            .unwrap()
            .starts_with("backup verified"));
        let artifacts = backup["artifacts"].as_array().unwrap();
        assert!(!artifacts.is_empty());
        for a in artifacts {
            let digest = a["digest"].as_str().unwrap();
            assert!(digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()));
            assert!(a["size"].as_u64().is_some());
        }
    }
    let first = step(&report, "copy-customers");
    assert!(first["rollback"].is_null());
    assert!(first["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["held"] == true));

    let second = step(&report, "merge-legacy");
    let failed: Vec<&Value> = second["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["held"] == false)
        .collect();
    assert_eq!(failed.len(), 1, "{second:#}");
    assert_eq!(failed[0]["source"], "duplicates == 0");
    assert!(failed[0]["values"]["duplicates"].as_f64().unwrap() > 0.0);
    let rollback = &second["rollback"];
    assert_eq!(rollback["ended_in"], "rolled-back");
    assert!(rollback["duration_ms"].as_i64().unwrap() >= 0);

    let md = s.sluice(&["report", "sluice.toml"]);
    assert_eq!(md.code, 0, "{}", md.all());
    for needle in [
        "## Step `copy-customers`",
        "## Step `merge-legacy`",
        "`match_rate >= 0.95`",
        "`duplicates == 0` | **no**",
        "### Rollback",
    ] {
        assert!(md.stdout.contains(needle), "{needle} in:\n{}", md.stdout);
    }

    let unknown = s.sluice(&["report", "sluice.toml", "--run", "no-such-run"]);
    assert_eq!(unknown.code, 2, "{}", unknown.all());
    assert!(
        unknown.stderr.contains("no run `no-such-run`"),
        "{}",
        unknown.stderr
    );
}
