//! `cargo xtask bench` (PostgreSQL part): the bulk path, plugin-fed COPY vs
//! `psql \copy`, on the same 1,000,000 rows in the same run.
//!
//! The plugin side runs the `postgres` plugin's migrate phase through
//! sluice's runtime — the same grants, statement checks and capability a
//! `sluice run` uses — with `copy = [{ from = "SELECT * FROM src", into =
//! "dst" }]`: `COPY (…) TO STDOUT` bytes stream into the plugin and back out
//! to `COPY dst FROM STDIN`, with no host call per value. The baseline is
//! what an operator would type: `psql -c '\copy (SELECT * FROM src) TO
//! STDOUT' | psql -c '\copy dst FROM STDIN'`. Rounds are interleaved; the
//! medians and their ratio are printed (target: plugin ≥ 0.7× psql's speed).
//!
//! Then the undo: a step that changes 1,000 rows of a ~0.9 GB table and is
//! rolled back with `sluice rollback` — by its change set, against the same
//! step with a schema change too, which restores the backup (target: the
//! change set ≤ 1 s).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sluice::datastores::Endpoint;
use sluice::plan::{Access, Limits, TargetKind};
use sluice::runtime::{CallGrants, ComponentCache, PhaseInput, Runtime, StepContext};
use sluice::secret::Secret;
use sluice_e2e::services::pg_scratch;

const ROWS: i64 = 1_000_000;
const ROUNDS: usize = 3;

fn main() {
    let db = pg_scratch();
    let started = Instant::now();
    db.client()
        .batch_execute(&format!(
            "CREATE TABLE src (id bigint PRIMARY KEY, name text, email text, score float8, joined timestamptz, balance numeric(12,2));
             INSERT INTO src SELECT g, 'customer ' || g, 'c' || g || '@example.org', g * 0.5,
                 timestamptz '2024-01-01' + g * interval '1 second', g * 1.25
               FROM generate_series(1, {ROWS}) g;
             CREATE TABLE dst (LIKE src);
             ANALYZE src;"
        ))
        .unwrap();
    println!(
        "postgres copy bench: {ROWS} rows loaded in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut plugin_times, mut psql_times) = (Vec::new(), Vec::new());
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(ComponentCache::new(Some(dir.path().join("cache")))).unwrap();
    let plugin = rt
        .block_on(runtime.load(&sluice_e2e::plugin_ref("postgres.wasm")))
        .unwrap();
    let url = Secret::new(db.url.clone());
    // The sync PostgreSQL client used for setup and checks runs outside
    // the async runtime.
    for _ in 0..ROUNDS {
        truncate(&db.url);
        plugin_times.push(rt.block_on(plugin_copy(&runtime, &plugin, &url)));
        assert_eq!(count(&db.url), ROWS, "the plugin copied every row");
        truncate(&db.url);
        psql_times.push(psql_copy(&db.url));
        assert_eq!(count(&db.url), ROWS, "psql copied every row");
    }
    let (plugin, psql) = (median(&mut plugin_times), median(&mut psql_times));
    println!(
        "postgres copy of {ROWS} rows: plugin-fed COPY {:.2}s, psql \\copy {:.2}s (medians of {ROUNDS})",
        plugin.as_secs_f64(),
        psql.as_secs_f64()
    );
    println!(
        "RATIO plugin-fed COPY / psql \\copy speed: {:.2}x (target >= 0.7)",
        psql.as_secs_f64() / plugin.as_secs_f64()
    );
    undo();
}

/// Rows of the undo benchmark's table: 6 M rows of ~150 bytes, about
/// 0.9 GB with its index (`SLUICE_BENCH_PG_UNDO_ROWS` for a smaller run).
fn undo_rows() -> i64 {
    std::env::var("SLUICE_BENCH_PG_UNDO_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6_000_000)
}

/// `sluice rollback` of a completed step that changed `rows / 6000` rows:
/// by change set, and by restore (the same step with a schema change).
fn undo() {
    let rows = undo_rows();
    let time_rollback = |extra: &str| -> (Duration, String) {
        let p = sluice_e2e::pg_plan::PgPlan::new(
            &format!(
                "CREATE TABLE orders (id bigint PRIMARY KEY, customer text NOT NULL, note text NOT NULL, total numeric(12,2));
                 INSERT INTO orders SELECT g, 'customer-' || (g % 10000), md5(g::text) || md5((g * 7)::text), g * 0.5
                   FROM generate_series(1, {rows}) g;
                 ANALYZE orders;"
            ),
            &format!(
                r#"
[[steps]]
id = "mark"
plugin = "pg"
target = "shop"
access = "read-write"
tables = ["orders"]
thresholds = ["orders > 0"]

[steps.params]
tables = ["orders"]
migrate = "{extra}UPDATE orders SET note = 'marked' WHERE id % 6000 = 0"

[[steps.params.metrics]]
name = "orders"
query = "SELECT count(*) FROM orders WHERE id < 10"
"#
            ),
        );
        let size: String =
            p.db.client()
                .query_one(
                    "SELECT pg_size_pretty(pg_total_relation_size('orders'))",
                    &[],
                )
                .unwrap()
                .get(0);
        let run = p.run();
        assert_eq!(run.code, 0, "{}", run.all());
        let t = Instant::now();
        let rolled = p.sluice(&["rollback", "sluice.toml"]);
        let took = t.elapsed();
        assert_eq!(rolled.code, 0, "{}", rolled.all());
        (took, size)
    };
    let (change_set, size) = time_rollback("");
    let (restore, _) = time_rollback("ALTER TABLE orders ADD COLUMN sku text; ");
    println!(
        "undo     {} of {rows} rows ({size}): by change set {:>8.2} s   by restore {:>8.2} s   {:>6.1}× faster   (target ≤ 1 s: {})",
        rows / 6000,
        change_set.as_secs_f64(),
        restore.as_secs_f64(),
        restore.as_secs_f64() / change_set.as_secs_f64(),
        if change_set <= Duration::from_secs(1) { "target met" } else { "TARGET MISSED" }
    );
}

async fn plugin_copy(
    runtime: &Runtime,
    plugin: &sluice::runtime::LoadedPlugin,
    url: &Secret,
) -> Duration {
    let mut grants = CallGrants::none("bench", Limits::default());
    grants.sql = Some(sluice::capabilities::sql::SqlGrant {
        target: "shop".into(),
        kind: TargetKind::Postgres,
        endpoint: Endpoint::Url(url.clone()),
        access: Access::ReadWrite,
        tables: None,
        statement_timeout: Duration::from_secs(600),
        snapshot: None,
        capture: None,
    });
    let ctx = StepContext {
        step_id: "bench".into(),
        target: "shop".into(),
        target_kind: "postgres".into(),
        params: serde_json::json!({ "copy": [{ "from": "SELECT * FROM src", "into": "dst" }] })
            .to_string(),
        metrics: Vec::new(),
    };
    let started = Instant::now();
    let (result, _) = runtime.call(plugin, grants, PhaseInput::Migrate(ctx)).await;
    let elapsed = started.elapsed();
    result.expect("plugin copy");
    elapsed
}

fn psql_copy(url: &str) -> Duration {
    let started = Instant::now();
    let mut out = Command::new("psql")
        .args([
            url,
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "\\copy (SELECT * FROM src) TO STDOUT",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("psql (PostgreSQL's client) is installed with the server");
    let status = Command::new("psql")
        .args([
            url,
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "\\copy dst FROM STDIN",
        ])
        .stdin(out.stdout.take().unwrap())
        .status()
        .unwrap();
    assert!(
        status.success() && out.wait().unwrap().success(),
        "psql \\copy failed"
    );
    started.elapsed()
}

fn truncate(url: &str) {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    c.batch_execute("TRUNCATE dst").unwrap();
}

fn count(url: &str) -> i64 {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    c.query_one("SELECT count(*) FROM dst", &[]).unwrap().get(0)
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}
