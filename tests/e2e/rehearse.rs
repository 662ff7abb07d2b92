//! `sluice rehearse`: the plan runs on copies, every applied step is rolled
//! back, the staging report's timings are the rehearsal journal's, and the
//! real targets are checked here, with the tests' own clients, to be exactly
//! as they were.

use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha256};
use sluice_e2e::services::pg_scratch;
use sluice_e2e::{plugin, sluice_bin, Scenario};

fn sha256_file(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// (state, at) of each transition of `step` in a journal, oldest first.
fn journal_times(journal: &Path, step: &str) -> Vec<(String, String)> {
    let conn =
        rusqlite::Connection::open_with_flags(journal, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut stmt = conn
        .prepare("SELECT state, at FROM transitions WHERE step_id = ?1 ORDER BY seq")
        .unwrap();
    stmt.query_map([step], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A timing of the report starts at a journaled transition of the state
/// that starts its phase, and ends at the next one; its duration is positive.
fn assert_matches_journal(timing: &Value, journal: &[(String, String)]) {
    let starts_in = match timing["phase"].as_str().unwrap() {
        "backup" => "backing-up",
        "migrate" => "migrating",
        "validate" => "validating",
        _ => "rolling-back",
    };
    let start = journal
        .iter()
        .position(|(state, at)| state == starts_in && at == timing["started_at"].as_str().unwrap())
        .unwrap_or_else(|| panic!("{timing} starts at a journaled transition: {journal:?}"));
    assert_eq!(journal[start + 1].1, timing["ended_at"].as_str().unwrap());
    assert_eq!(journal[start + 1].0, timing["ended_in"].as_str().unwrap());
    let ms = timing["duration_ms"].as_i64().expect("every phase ended");
    assert!(ms > 0, "a phase of zero time: {timing}");
}

fn step<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("step {id} in {report:#}"))
}

fn read_report(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("rehearsal.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn a_rehearsal_of_the_quickstart_times_every_phase_and_leaves_production_byte_identical() {
    let s = Scenario::quickstart();
    let accepted = s.sluice(&["audit", "--accept", "sluice.toml"]);
    assert_eq!(accepted.code, 0, "{}", accepted.all());
    let db = s.path().join("shop.db");
    let journal = s.path().join(".sluice/journal.db");
    let sha_before = sha256_file(&db);
    let state_before = s.state("shop.db");
    assert!(!journal.exists());

    let out = s.sluice(&["rehearse", "sluice.toml", "--output", "staging"]);
    // Step 2 fails its duplicates threshold: a useful rehearsal, exit 1.
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stdout
            .contains("production untouched: fingerprints equal"),
        "{}",
        out.stdout
    );
    let dir = s.path().join("staging");
    assert!(out
        .stdout
        .contains(&dir.join("rehearsal.md").display().to_string()));

    // Production: the file's bytes, its content, and its plan's journal.
    assert_eq!(sha256_file(&db), sha_before, "shop.db changed");
    assert_eq!(s.state("shop.db"), state_before);
    assert!(!journal.exists(), "the real journal was created");

    let report = read_report(&dir);
    assert_eq!(report["production_untouched"], true);
    assert_eq!(report["exit_code"], 1);
    let target = &report["targets"][0];
    assert_eq!(target["name"], "shop");
    assert_eq!(target["before"]["file_sha256"], sha_before.as_str());
    assert_eq!(target["after"]["file_sha256"], sha_before.as_str());
    assert_eq!(
        target["before"]["fingerprint"],
        target["after"]["fingerprint"]
    );
    // Step 1 rolled back by the rehearsal, step 2 by the engine: the copy
    // is back where production is.
    assert_eq!(
        target["copy_restored_differences"],
        serde_json::json!([]),
        "{target:#}"
    );
    // The copy is gone (no --keep).
    let copies: Vec<_> = std::fs::read_dir(dir.join("copies")).unwrap().collect();
    assert!(copies.is_empty(), "{copies:?}");

    let rehearsal_journal = dir.join(".sluice/journal.db");
    for (id, forward, by) in [
        ("copy-customers", "applied", "rehearsal"),
        ("merge-legacy", "rolled-back", "engine"),
    ] {
        let st = step(&report, id);
        assert_eq!(st["forward"], forward, "{st:#}");
        let times = journal_times(&rehearsal_journal, id);
        let phases: Vec<&str> = st["phases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["phase"].as_str().unwrap())
            .collect();
        for phase in ["backup", "migrate", "validate"] {
            assert!(phases.contains(&phase), "{id}: {phases:?}");
        }
        for p in st["phases"].as_array().unwrap() {
            assert_matches_journal(p, &times);
        }
        let rollback = &st["rollback"];
        assert_eq!(rollback["by"], by, "{st:#}");
        assert_eq!(rollback["proven"], true, "{st:#}");
        assert_eq!(rollback["timing"]["ended_in"], "rolled-back");
        assert_matches_journal(&rollback["timing"], &times);
        assert!(st["backup_bytes"].as_u64().unwrap() > 0, "{st:#}");
        assert!(st["backup_artifacts"].as_u64().unwrap() > 0);
        // The engine's own clock of each plugin call rides along.
        let calls: Vec<&str> = st["plugin_calls_ms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[0].as_str().unwrap())
            .collect();
        assert!(
            calls.starts_with(&["backup", "migrate", "validate"]),
            "{calls:?}"
        );
        assert!(rollback["plugin_call_ms"].as_u64().is_some(), "{st:#}");
    }
    let failed = step(&report, "merge-legacy")["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["source"] == "duplicates == 0")
        .unwrap()
        .clone();
    assert_eq!(failed["held"], false);

    let md = std::fs::read_to_string(dir.join("rehearsal.md")).unwrap();
    for needle in [
        "# Rehearsal: plan `quickstart`",
        "untouched: fingerprints equal",
        "| `copy-customers` | applied |",
        "`duplicates == 0` | **no**",
    ] {
        assert!(md.contains(needle), "{needle} in:\n{md}");
    }

    // A second rehearsal into the same directory is refused, nothing touched.
    let again = s.sluice(&["rehearse", "sluice.toml", "--output", "staging"]);
    assert_eq!(again.code, 2, "{}", again.all());

    // Nothing leaked: the real run behaves as on a fresh plan.
    let run = s.sluice(&["run", "sluice.toml"]);
    assert_eq!(run.code, 1, "{}", run.all());
    let states: Vec<String> = s
        .transitions("copy-customers")
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
            "completed"
        ]
    );
    assert!(s.state("shop.db").tables.contains_key("clientes"));
}

/// md5 of every row of every public table, ordered: the database as this
/// test sees it, with its own client.
fn pg_checksums(client: &mut postgres::Client) -> Vec<(String, String)> {
    let tables: Vec<String> = client
        .query(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    tables
        .into_iter()
        .map(|t| {
            let sum: String = client
                .query_one(
                    &format!(
                        "SELECT coalesce(md5(string_agg(r::text, E'\\n' ORDER BY r::text)), '') FROM \"{t}\" r"
                    ),
                    &[],
                )
                .unwrap()
                .get(0);
            (t, sum)
        })
        .collect()
}

#[test]
fn a_postgres_rehearsal_runs_on_a_scratch_database_that_is_dropped_afterwards() {
    let db = pg_scratch();
    db.client()
        .batch_execute(
            "CREATE TABLE orders (id bigint PRIMARY KEY, total numeric(10,2) NOT NULL, note text);
             INSERT INTO orders SELECT g, g * 1.25, CASE WHEN g % 7 = 0 THEN NULL ELSE 'order ' || g END
               FROM generate_series(1, 2000) g;
             CREATE TABLE orders_archive (LIKE orders INCLUDING ALL);
             INSERT INTO orders_archive SELECT * FROM orders WHERE id <= 5;",
        )
        .unwrap();
    let s = Scenario::new();
    s.write(
        "sluice.toml",
        &format!(
            r#"
[plan]
name = "pgrehearse"

[values]
db = {{ env = "SHOP_PG_URL" }}

[targets.shop]
kind = "postgres"
connection = "db"

[plugins.pg]
path = "{}"

[[steps]]
id = "archive-all"
plugin = "pg"
target = "shop"
access = "read-write"
thresholds = ["archived == 1", "duplicates == 0"]

[steps.params]
tables = ["orders_archive"]
copy = [{{ from = "SELECT * FROM orders WHERE id > 5", into = "orders_archive" }}]

[[steps.params.metrics]]
name = "archived"
match_rate = {{ source = "SELECT * FROM orders", target = "SELECT * FROM orders_archive" }}

[[steps.params.metrics]]
name = "duplicates"
duplicates = {{ table = "orders_archive", columns = ["id"] }}
"#,
            plugin("postgres.wasm").display()
        ),
    );
    let env = [("SHOP_PG_URL", db.url.as_str())];
    let sluice = |args: &[&str]| s.sluice_with(&sluice_bin(), args, &env);
    assert_eq!(sluice(&["audit", "--accept", "sluice.toml"]).code, 0);
    let before = pg_checksums(&mut db.client());
    // By exact name: other runs of this test may have scratches of their own.
    let exists = |c: &mut postgres::Client, name: &str| -> bool {
        c.query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .unwrap()
        .get::<_, i64>(0)
            > 0
    };

    // Nothing else connected: the scratch is a template copy. Then with a
    // session held open on the source: the pg_dump | psql copy.
    for (output, held, method) in [
        ("first", false, "TEMPLATE"),
        ("second", true, "pg_dump | psql"),
    ] {
        let session = held.then(|| db.client());
        let out = sluice(&["rehearse", "sluice.toml", "--output", output]);
        assert_eq!(out.code, 0, "{}", out.all());
        assert!(!out.all().contains(&db.url), "the URL is never printed");
        drop(session);

        let mut client = db.client();
        assert_eq!(
            pg_checksums(&mut client),
            before,
            "the real database changed"
        );
        assert_eq!(
            client
                .query_one("SELECT count(*) FROM orders_archive", &[])
                .unwrap()
                .get::<_, i64>(0),
            5
        );
        let report = read_report(&s.path().join(output));
        let copy = report["targets"][0]["copy"].as_str().unwrap();
        let scratch = copy
            .split('/')
            .next_back()
            .and_then(|rest| rest.split(' ').next())
            .unwrap();
        assert!(
            scratch.starts_with("sluice_rehearse_pgrehearse_shop_"),
            "{copy}"
        );
        assert!(
            !exists(&mut client, scratch),
            "{scratch} survived the rehearsal"
        );
        assert_eq!(report["production_untouched"], true);
        let target = &report["targets"][0];
        assert!(
            target["copy"].as_str().unwrap().contains(method),
            "{target:#}"
        );
        assert!(target["copy"]
            .as_str()
            .unwrap()
            .contains("sluice_rehearse_pgrehearse_shop_"));
        assert_eq!(
            target["before"]["fingerprint"],
            target["after"]["fingerprint"]
        );
        assert_eq!(target["copy_restored_differences"], serde_json::json!([]));
        let journal = s.path().join(output).join(".sluice/journal.db");
        let times = journal_times(&journal, "archive-all");
        let st = step(&report, "archive-all");
        assert_eq!(st["forward"], "applied");
        assert_eq!(st["phases"].as_array().unwrap().len(), 3, "{st:#}");
        for p in st["phases"].as_array().unwrap() {
            assert_matches_journal(p, &times);
        }
        assert_eq!(st["rollback"]["by"], "rehearsal");
        assert_eq!(st["rollback"]["proven"], true);
        assert_matches_journal(&st["rollback"]["timing"], &times);
        assert!(st["thresholds"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["held"] == true));
    }
    // The real plan never ran: no journal of its own.
    assert!(!s.path().join(".sluice/journal.db").exists());
}
