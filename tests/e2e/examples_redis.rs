//! The runbook examples that use PostgreSQL and Redis (`examples/004-*`,
//! `examples/000-*`), run as shipped: each example folder is copied into a
//! scenario, its targets point at scratch databases, its health probes at a
//! real HTTP server on 127.0.0.1 that this test switches, and its seed data
//! is loaded from the example's own files. The stores are then read with
//! this test's own clients: Redis values, types and absolute expiries, and
//! an md5 of every PostgreSQL table's ordered rows.

use std::collections::BTreeMap;

use sluice_e2e::http::HealthServer;
use sluice_e2e::services::{pg_scratch, redis_scratch, PgScratch, RedisScratch};
use sluice_e2e::{plugin, root, sluice_bin, Outcome, Scenario};

/// An example copied into a scenario, with scratch PostgreSQL and Redis
/// databases seeded from its `seed.sql` and `seed-redis.txt`, and its probes
/// pointed at a [`HealthServer`].
struct Example {
    s: Scenario,
    pg: PgScratch,
    redis: RedisScratch,
    /// Answers the plan's probes for as long as the example lives.
    _server: HealthServer,
}

impl Example {
    /// `name`: the folder under examples/; `port`: the stand-in port its
    /// plan names; `failing`: paths the health server answers 500 for.
    fn load(name: &str, port: u16, failing: &[&str]) -> Example {
        let s = Scenario::new();
        let dir = root().join("examples").join(name);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path
                .extension()
                .is_some_and(|e| e == "sql" || e == "toml" || e == "txt")
                && path.file_name().is_some_and(|n| n != "sluice.lock")
            {
                std::fs::copy(&path, s.path().join(path.file_name().unwrap())).unwrap();
            }
        }
        let server = HealthServer::start_failing(200, failing);
        let plan = s.read("sluice.toml");
        let local = format!("127.0.0.1:{port}");
        assert!(plan.contains(&local), "the plan probes {local}");
        let plan = plan
            .replace(
                "../../target/plugins/postgres.wasm",
                &plugin("postgres.wasm").display().to_string(),
            )
            .replace(
                "../../target/plugins/redis.wasm",
                &plugin("redis.wasm").display().to_string(),
            )
            .replace(&local, &format!("127.0.0.1:{}", server.port));
        s.write("sluice.toml", &plan);

        let pg = pg_scratch();
        pg.client().batch_execute(&s.read("seed.sql")).unwrap();
        let redis = redis_scratch();
        let mut c = redis.conn();
        for line in s.read("seed-redis.txt").lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.is_empty() || words[0].starts_with('#') {
                continue;
            }
            let mut cmd = redis::cmd(words[0]);
            for w in &words[1..] {
                cmd.arg(*w);
            }
            cmd.query::<redis::Value>(&mut c)
                .unwrap_or_else(|e| panic!("seed-redis.txt `{line}`: {e}"));
        }
        let accepted = s.sluice(&["audit", "--accept", "sluice.toml"]);
        assert_eq!(accepted.code, 0, "audit --accept: {}", accepted.all());
        Example {
            s,
            pg,
            redis,
            _server: server,
        }
    }

    /// `sluice <args…>` with the example's named values set as the
    /// one-command run sets them.
    fn sluice(&self, args: &[&str]) -> Outcome {
        self.s.sluice_with(
            &sluice_bin(),
            args,
            &[
                ("DATABASE_URL", self.pg.url.as_str()),
                ("REDIS_URL", self.redis.url.as_str()),
            ],
        )
    }

    /// md5 of each public base table's rows, ordered by their text form.
    fn pg_md5(&self) -> BTreeMap<String, String> {
        let mut c = self.pg.client();
        let tables: Vec<String> = c
            .query(
                "SELECT table_name::text FROM information_schema.tables \
                 WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        tables
            .into_iter()
            .map(|t| {
                let md5: String = c
                    .query_one(
                        &format!(
                            "SELECT md5(coalesce(string_agg(r::text, E'\\n' ORDER BY r::text), '')) \
                             FROM \"{t}\" r"
                        ),
                        &[],
                    )
                    .unwrap()
                    .get(0);
                (t, md5)
            })
            .collect()
    }

    fn pg_count(&self, sql: &str) -> i64 {
        self.pg.client().query_one(sql, &[]).unwrap().get(0)
    }

    /// Every Redis key: type, content in a canonical text form, absolute
    /// expiry (`PEXPIRETIME`, -1 when it persists).
    fn redis_snapshot(&self) -> BTreeMap<String, (String, String, i64)> {
        let mut c = self.redis.conn();
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
        let mut out = BTreeMap::new();
        for key in keys {
            let kind: String = redis::cmd("TYPE").arg(&key).query(&mut c).unwrap();
            let content = match kind.as_str() {
                "string" => redis::cmd("GET").arg(&key).query::<String>(&mut c).unwrap(),
                "hash" => format!(
                    "{:?}",
                    redis::cmd("HGETALL")
                        .arg(&key)
                        .query::<BTreeMap<String, String>>(&mut c)
                        .unwrap()
                ),
                other => panic!("unexpected type {other} of `{key}`"),
            };
            let expiry: i64 = redis::cmd("PEXPIRETIME").arg(&key).query(&mut c).unwrap();
            out.insert(key, (kind, content, expiry));
        }
        out
    }
}

/// The keys of `snapshot` under any of `prefixes`.
fn under(
    snapshot: &BTreeMap<String, (String, String, i64)>,
    prefixes: &[&str],
) -> BTreeMap<String, (String, String, i64)> {
    snapshot
        .iter()
        .filter(|(k, _)| prefixes.iter().any(|p| k.starts_with(p)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

const EX004: &str = "004-pg-redis-health";
/// The port `examples/004-pg-redis-health/sluice.toml` probes.
const EX004_PORT: u16 = 18004;

#[test]
fn example_004_runs_green_then_selective_and_total_rollback_restore_each_store() {
    let ex = Example::load(EX004, EX004_PORT, &[]);
    let pg_before = ex.pg_md5();
    let redis_before = ex.redis_snapshot();
    assert_eq!(ex.pg_count("SELECT count(*) FROM ticker_metadata"), 5);
    assert!(
        redis_before["cache:metadata:T0001"].2 > 0,
        "the seed gives cached metadata an expiry: {redis_before:?}"
    );

    let run = ex.sluice(&["run", "sluice.toml"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains("result: OK — 3 step(s) applied"),
        "{}",
        run.stdout
    );
    for line in [
        "metric match_rate = 1  (500 of 500 source rows found in target)",
        "metric health = 1  (probe `gateway`: status 200",
        "metric analytics_health = 1  (probe `analytics`: status 200",
        "watch window (every 1s for 3s) passed: 3 checks within thresholds",
    ] {
        assert!(
            run.stdout.contains(line),
            "missing `{line}`:\n{}",
            run.stdout
        );
    }
    assert_eq!(ex.pg_count("SELECT count(*) FROM ticker_metadata"), 500);
    assert_eq!(
        ex.pg_count(
            "SELECT count(*) FROM ticker_metadata WHERE enriched_by = 'ticker-metadata-service'"
        ),
        495
    );
    let applied = ex.redis_snapshot();
    assert_eq!(
        applied["routes:metadata"].1,
        "http://ticker-metadata:8010/api/v1/metadata"
    );
    assert_eq!(
        applied["routes:analytics"].1,
        "http://analytics:8007/api/v1"
    );
    assert!(
        under(&applied, &["cache:metadata:"]).is_empty(),
        "{applied:?}"
    );
    assert_eq!(
        applied["sessions:current"],
        redis_before["sessions:current"]
    );

    // Selective (runbook 004, OPCIÓN B): keep metadata-table, undo the rest.
    let back = ex.sluice(&["rollback", "sluice.toml", "--to", "metadata-table"]);
    assert_eq!(back.code, 0, "{}", back.all());
    assert!(
        back.stdout
            .contains("result: OK — 2 step(s) rolled back and verified"),
        "{}",
        back.stdout
    );
    assert_eq!(
        ex.redis_snapshot(),
        redis_before,
        "every Redis value and absolute expiry is back"
    );
    assert_eq!(ex.pg_count("SELECT count(*) FROM ticker_metadata"), 500);
    assert_ne!(ex.pg_md5(), pg_before, "metadata-table stays applied");

    // Total (OPCIÓN A).
    let total = ex.sluice(&["rollback", "sluice.toml"]);
    assert_eq!(total.code, 0, "{}", total.all());
    assert!(
        total
            .stdout
            .contains("result: OK — 1 step(s) rolled back and verified"),
        "{}",
        total.stdout
    );
    assert_eq!(ex.pg_md5(), pg_before, "every table's rows are back");
    assert_eq!(ex.redis_snapshot(), redis_before);
    let status = ex.sluice(&["status", "sluice.toml"]);
    assert_eq!(
        status.stdout.matches("rolled-back").count(),
        3,
        "{}",
        status.stdout
    );
}

#[test]
fn example_004_failure_variant_an_unhealthy_analytics_service_rolls_its_step_back() {
    let ex = Example::load(EX004, EX004_PORT, &["/analytics/"]);
    let pg_before = ex.pg_md5();
    let redis_before = ex.redis_snapshot();
    let step3 = ["routes:scanner", "routes:analytics"];

    let run = ex.sluice(&["run", "sluice.toml"]);
    assert_eq!(run.code, 1, "{}", run.all());
    for line in [
        "metric analytics_health = 0  (probe `analytics`: status 500",
        "result: FAILED at step `scanner-analytics-api` (thresholds): threshold `analytics_health == 1` not met",
        "rollback: restored; schema and table checksums equal the pre-step state",
    ] {
        assert!(run.stdout.contains(line), "missing `{line}`:\n{}", run.stdout);
    }
    // The failed step's keys equal their pre-step state; the two steps
    // before it stay applied.
    let after = ex.redis_snapshot();
    assert_eq!(under(&after, &step3), under(&redis_before, &step3));
    assert_eq!(
        after["routes:metadata"].1,
        "http://ticker-metadata:8010/api/v1/metadata"
    );
    assert_eq!(ex.pg_count("SELECT count(*) FROM ticker_metadata"), 500);

    // Then the operator backs out of Fase 1 too.
    let total = ex.sluice(&["rollback", "sluice.toml"]);
    assert_eq!(total.code, 0, "{}", total.all());
    assert!(
        total
            .stdout
            .contains("result: OK — 2 step(s) rolled back and verified"),
        "{}",
        total.stdout
    );
    assert_eq!(ex.pg_md5(), pg_before);
    assert_eq!(ex.redis_snapshot(), redis_before);
}

const EX000: &str = "000-v2-table-and-flag-rollout";
/// The port `examples/000-v2-table-and-flag-rollout/sluice.toml` probes.
const EX000_PORT: u16 = 18000;

/// What the readers of example 000 see: the view's definition and the
/// public base tables.
fn readers(ex: &Example) -> (String, Vec<String>) {
    let mut c = ex.pg.client();
    let view: String = c
        .query_one(
            "SELECT pg_get_viewdef('document_embeddings_active'::regclass)",
            &[],
        )
        .unwrap()
        .get(0);
    let tables = c
        .query(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    (view, tables)
}

#[test]
fn example_000_builds_v2_switches_the_view_and_rolls_the_flag_out_to_100() {
    let ex = Example::load(EX000, EX000_PORT, &[]);
    let (view_before, tables_before) = readers(&ex);
    assert_eq!(tables_before, ["document_embeddings"]);
    let pg_before = ex.pg_md5();
    let redis_before = ex.redis_snapshot();

    let run = ex.sluice(&["run", "sluice.toml"]);
    assert_eq!(run.code, 0, "{}", run.all());
    for line in [
        "result: OK — 6 step(s) applied",
        "metric match_rate = 1  (2000 of 2000 source rows found in target)",
        "metric served_by_v2 = 1",
        "threshold read_p95_ms <= 2 * baseline.read_p95_ms + 200: met",
        "metric errors = 0  (keys under `stats:err:`)",
        "metric requests = 20  (keys under `stats:req:`)",
    ] {
        assert!(
            run.stdout.contains(line),
            "missing `{line}`:\n{}",
            run.stdout
        );
    }
    assert_eq!(
        run.stdout
            .matches("band reached: none of the bands")
            .count(),
        4
    );
    let (view, tables) = readers(&ex);
    assert!(view.contains("FROM document_embeddings_v2"), "{view}");
    assert_eq!(tables, ["document_embeddings", "document_embeddings_v2"]);
    assert_eq!(
        ex.pg_md5()["document_embeddings"],
        pg_before["document_embeddings"]
    );
    assert_eq!(
        ex.pg_md5()["document_embeddings_v2"],
        pg_before["document_embeddings"],
        "v2 holds the same rows"
    );
    let after = ex.redis_snapshot();
    assert_eq!(after["flags:optimizations:rollout_percentage"].1, "100");
    assert_eq!(after["flags:optimizations:updated_by"].1, "rollout-100");

    // `rollout.sh 0` and rollback-bigquery.sh: the whole plan back.
    let total = ex.sluice(&["rollback", "sluice.toml"]);
    assert_eq!(total.code, 0, "{}", total.all());
    assert_eq!(readers(&ex), (view_before, tables_before));
    assert_eq!(ex.pg_md5(), pg_before);
    assert_eq!(ex.redis_snapshot(), redis_before);
}

#[test]
fn example_000_failure_variant_errors_at_50_percent_roll_the_whole_run_back() {
    let ex = Example::load(EX000, EX000_PORT, &[]);
    let readers_before = readers(&ex);
    let pg_before = ex.pg_md5();
    let redis_before = ex.redis_snapshot();

    let child = std::process::Command::new(sluice_bin())
        .args(["run", "sluice.toml"])
        .current_dir(ex.s.path())
        .env("SLUICE_CACHE_DIR", ex.s.path().join(".cache"))
        .env("DATABASE_URL", &ex.pg.url)
        .env("REDIS_URL", &ex.redis.url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    ex.s.wait_for_state("rollout-50", "watching");
    // The optimization breaks at 50 % of users: the app samples three
    // failed requests (the example's fail-redis.txt), 15 % > 5 %.
    let mut c = ex.redis.conn();
    for line in ex.s.read("fail-redis.txt").lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.is_empty() || words[0].starts_with('#') {
            continue;
        }
        let mut cmd = redis::cmd(words[0]);
        for w in &words[1..] {
            cmd.arg(*w);
        }
        cmd.query::<()>(&mut c).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(
            "breached: band `errors / requests > 0.05` → rollback (errors = 3, requests = 20)"
        ),
        "{stdout}"
    );
    for step in [
        "rollout-50",
        "rollout-25",
        "rollout-5",
        "switch-view",
        "build-v2",
    ] {
        assert_eq!(ex.s.step_state(step), "rolled-back", "{step}: {stdout}");
    }
    assert_ne!(ex.s.step_state("rollout-100"), "completed");

    // Every step of the run is undone: the view points at the original
    // table, v2 is gone, the rows and the flag keys (values and absolute
    // expiries) are as before; only the app's own error samples remain.
    assert_eq!(readers(&ex), readers_before);
    assert_eq!(ex.pg_md5(), pg_before);
    let mut after = ex.redis_snapshot();
    let errors: Vec<String> = after
        .keys()
        .filter(|k| k.starts_with("stats:err:"))
        .cloned()
        .collect();
    assert_eq!(errors.len(), 3);
    for k in errors {
        after.remove(&k);
    }
    assert_eq!(after, redis_before);
}
