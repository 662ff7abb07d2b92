//! `cargo xtask bench`: every number is measured against a baseline in the
//! same run and printed as a ratio with its target.
//!
//! - copy: 1,000,000 rows table→table through the SQLite plugin (cursor →
//!   execute-batch across the component boundary) vs the same row-by-row copy
//!   in native rusqlite (target ≥ 0.8×);
//! - load: a plugin from the component cache vs compiling it (target ≥ 100×);
//! - instantiate: p50 of a fresh instance from the reused `InstancePre`
//!   (target ≤ 30 µs);
//! - enforcement: the quickstart run end to end, and the plugin copy, with
//!   every limit and grant check on vs a runtime with them relaxed (target
//!   ≤ 5 % overhead).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::capabilities::backup_store::BackupAccess;
use sluice::capabilities::sql::SqlGrant;
use sluice::engine::{Engine, EngineOptions};
use sluice::plan::{Access, Limits, PluginRef, TargetKind};
use sluice::runtime::{CallGrants, ComponentCache, Enforcement, PhaseInput, Runtime, StepContext};
use sluice_e2e::plugin;

const ROWS: i64 = 1_000_000;
const ROUNDS: usize = 7;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let plugin_ref = plugin_ref();
        println!(
            "sluice benchmarks (release, {} cores)\n",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
        load(dir.path(), &plugin_ref).await;
        instantiate(dir.path(), &plugin_ref).await;
        copy(dir.path(), &plugin_ref).await;
        enforcement(dir.path(), &plugin_ref).await;
    });
    undo();
}

fn plugin_ref() -> PluginRef {
    sluice_e2e::plugin_ref("sqlite.wasm")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "target met"
    } else {
        "TARGET MISSED"
    }
}

async fn load(dir: &Path, plugin: &PluginRef) {
    let cache_dir = dir.join("cache");
    let cold = Runtime::new(ComponentCache::new(None)).unwrap();
    let compile: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            cold.compile(&plugin.digest, &plugin.bytes).unwrap();
            t.elapsed()
        })
        .collect();
    let warm = Runtime::new(ComponentCache::new(Some(cache_dir))).unwrap();
    warm.compile(&plugin.digest, &plugin.bytes).unwrap(); // fills the cache
    let cached: Vec<Duration> = (0..50)
        .map(|_| {
            let t = Instant::now();
            let (_, outcome) = warm.compile(&plugin.digest, &plugin.bytes).unwrap();
            assert_eq!(outcome, sluice::runtime::CacheOutcome::Hit);
            t.elapsed()
        })
        .collect();
    let (compile, cached) = (median(compile), median(cached));
    let ratio = compile.as_secs_f64() / cached.as_secs_f64();
    println!(
        "load     compile {:>9.2} ms   from cache {:>7.3} ms   cache is {ratio:>6.0}× faster   (target ≥ 100×: {})",
        compile.as_secs_f64() * 1e3,
        cached.as_secs_f64() * 1e3,
        verdict(ratio >= 100.0)
    );
}

async fn instantiate(dir: &Path, plugin: &PluginRef) {
    let runtime = Runtime::new(ComponentCache::new(Some(dir.join("cache")))).unwrap();
    let loaded = runtime.load(plugin).await.unwrap();
    for _ in 0..200 {
        runtime.probe(&loaded).await.unwrap();
    }
    let mut times = Vec::new();
    for _ in 0..2000 {
        times.push(runtime.probe(&loaded).await.unwrap());
    }
    times.sort();
    let p50 = times[times.len() / 2];
    let p99 = times[times.len() * 99 / 100];
    println!(
        "instance p50 {:>7.1} µs   p99 {:>7.1} µs                                    (target p50 ≤ 30 µs: {})",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        verdict(p50 <= Duration::from_micros(30))
    );
}

const SCHEMA: &str = "CREATE TABLE src (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL, score REAL);
                      CREATE TABLE dst (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL, score REAL);";

fn fresh_db(path: &Path) {
    let _ = std::fs::remove_file(path);
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    conn.execute_batch(&format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})
         INSERT INTO src SELECT i, 'name ' || i, 'user' || i || '@example.com', i * 0.5 FROM n;"
    ))
    .unwrap();
}

fn reset(path: &Path) {
    rusqlite::Connection::open(path)
        .unwrap()
        .execute_batch("DELETE FROM dst")
        .unwrap();
}

fn native_copy(path: &Path) -> Duration {
    let t = Instant::now();
    let mut conn = rusqlite::Connection::open(path).unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut select = tx
            .prepare("SELECT id, name, email, score FROM src")
            .unwrap();
        let mut insert = tx
            .prepare("INSERT INTO dst VALUES (?1, ?2, ?3, ?4)")
            .unwrap();
        let mut rows = select.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            let cell = |i| rusqlite::types::ToSqlOutput::Borrowed(row.get_ref(i).unwrap());
            insert
                .execute(rusqlite::params![cell(0), cell(1), cell(2), cell(3)])
                .unwrap();
        }
    }
    tx.commit().unwrap();
    t.elapsed()
}

async fn plugin_copy(
    runtime: &Runtime,
    loaded: &sluice::runtime::LoadedPlugin,
    path: &Path,
    tables: Option<Vec<String>>,
) -> Duration {
    let params = serde_json::json!({
        "copy": [{ "select": "SELECT id, name, email, score FROM src", "insert": "INSERT INTO dst VALUES (?1, ?2, ?3, ?4)" }]
    });
    let grants = CallGrants {
        step_id: "bench".into(),
        sql: Some(SqlGrant {
            target: "bench".into(),
            kind: TargetKind::Sqlite,
            endpoint: sluice::datastores::Endpoint::File(sluice::plan::SqliteFiles::single(
                path.to_path_buf(),
            )),
            access: Access::ReadWrite,
            tables,
            statement_timeout: Duration::from_secs(600),
            snapshot: None,
            capture: None,
        }),
        kv: None,
        backup: BackupAccess::None,
        limits: Limits::default(),
        progress: None,
        files: Vec::new(),
        values: Default::default(),
        probes: Vec::new(),
    };
    let ctx = StepContext {
        step_id: "bench".into(),
        target: "bench".into(),
        target_kind: "sqlite".into(),
        params: params.to_string(),
        metrics: Vec::new(),
    };
    let t = Instant::now();
    let (result, _) = runtime.call(loaded, grants, PhaseInput::Migrate(ctx)).await;
    result.expect("the plugin copy succeeds");
    t.elapsed()
}

fn count(path: &Path) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row("SELECT count(*) FROM dst", [], |r| r.get(0))
        .unwrap()
}

async fn copy(dir: &Path, plugin: &PluginRef) {
    let db = dir.join("copy.db");
    fresh_db(&db);
    let runtime = Runtime::new(ComponentCache::new(Some(dir.join("cache")))).unwrap();
    let loaded = runtime.load(plugin).await.unwrap();
    let (mut native, mut through) = (Vec::new(), Vec::new());
    // Alternate the two so both see the same machine state.
    for _ in 0..ROUNDS {
        reset(&db);
        native.push(native_copy(&db));
        assert_eq!(count(&db), ROWS);
        reset(&db);
        through.push(plugin_copy(&runtime, &loaded, &db, None).await);
        assert_eq!(count(&db), ROWS);
    }
    // Each round measures both back to back, so their ratio is paired: its
    // median is robust to the machine getting faster or slower between rounds.
    let mut ratios: Vec<f64> = native
        .iter()
        .zip(&through)
        .map(|(n, t)| n.as_secs_f64() / t.as_secs_f64())
        .collect();
    ratios.sort_by(f64::total_cmp);
    let ratio = ratios[ratios.len() / 2];
    let (native, through) = (median(native), median(through));
    let rate = |d: Duration| ROWS as f64 / d.as_secs_f64();
    println!(
        "copy     native {:>9.0} rows/s   plugin {:>9.0} rows/s   plugin/native {ratio:>5.2}× (rounds {:.2}–{:.2})   (target ≥ 0.8×: {})",
        rate(native),
        rate(through),
        ratios[0],
        ratios[ratios.len() - 1],
        verdict(ratio >= 0.8)
    );
}

/// A fresh quickstart scenario: plan, SQL, seeded database; returns the plan.
fn quickstart(dir: &Path) -> sluice::plan::Plan {
    let example = sluice_e2e::root().join("examples/quickstart");
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    for entry in std::fs::read_dir(&example).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "sql" || e == "toml") {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    let plan = std::fs::read_to_string(dir.join("sluice.toml"))
        .unwrap()
        .replace(
            "../../target/plugins/sqlite.wasm",
            &plugin("sqlite.wasm").display().to_string(),
        );
    std::fs::write(dir.join("sluice.toml"), plan).unwrap();
    let seed = std::fs::read_to_string(dir.join("seed.sql")).unwrap();
    rusqlite::Connection::open(dir.join("shop.db"))
        .unwrap()
        .execute_batch(&seed)
        .unwrap();
    sluice::plan::load(&dir.join("sluice.toml")).unwrap()
}

async fn quickstart_run(dir: &Path, runtime: &Arc<Runtime>) -> Duration {
    let plan = quickstart(dir);
    let t = Instant::now();
    let mut engine = Engine::with_runtime(plan, runtime.clone(), EngineOptions::default())
        .await
        .unwrap();
    let summary = engine.run().await.unwrap();
    let elapsed = t.elapsed();
    assert_eq!(summary.exit_code(), 1, "step 1 applies, step 2 rolls back");
    elapsed
}

async fn enforcement(dir: &Path, plugin_ref: &PluginRef) {
    let cache = || ComponentCache::new(Some(dir.join("cache")));
    let strict = Arc::new(Runtime::new(cache()).unwrap());
    let relaxed = Arc::new(Runtime::with_enforcement(cache(), Enforcement::relaxed()).unwrap());
    let qs = dir.join("quickstart");
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        quickstart_run(&qs, &strict).await;
        quickstart_run(&qs, &relaxed).await;
    }
    for _ in 0..21 {
        on.push(quickstart_run(&qs, &strict).await);
        off.push(quickstart_run(&qs, &relaxed).await);
    }
    let overhead = paired_overhead(&on, &off);
    let (on, off) = (median(on), median(off));
    println!(
        "checks   quickstart run: enforced {:>6.1} ms   relaxed {:>6.1} ms   overhead {:>+5.1}%   (target ≤ 5%: {})",
        on.as_secs_f64() * 1e3,
        off.as_secs_f64() * 1e3,
        overhead * 100.0,
        verdict(overhead <= 0.05)
    );

    let db = dir.join("copy.db");
    let loaded_on = strict.load(plugin_ref).await.unwrap();
    let loaded_off = relaxed.load(plugin_ref).await.unwrap();
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        reset(&db);
        on.push(
            plugin_copy(
                &strict,
                &loaded_on,
                &db,
                Some(vec!["src".into(), "dst".into()]),
            )
            .await,
        );
        reset(&db);
        off.push(plugin_copy(&relaxed, &loaded_off, &db, None).await);
    }
    let overhead = paired_overhead(&on, &off);
    let (on, off) = (median(on), median(off));
    println!(
        "checks   1M-row plugin copy: enforced {:>6.0} ms   relaxed {:>6.0} ms   overhead {:>+5.1}%   (target ≤ 5%: {})",
        on.as_secs_f64() * 1e3,
        off.as_secs_f64() * 1e3,
        overhead * 100.0,
        verdict(overhead <= 0.05)
    );
}

/// Median of per-round `on / off - 1`: rounds are measured back to back, so
/// each ratio compares like with like.
fn paired_overhead(on: &[Duration], off: &[Duration]) -> f64 {
    let mut ratios: Vec<f64> = on
        .iter()
        .zip(off)
        .map(|(a, b)| a.as_secs_f64() / b.as_secs_f64() - 1.0)
        .collect();
    ratios.sort_by(f64::total_cmp);
    ratios[ratios.len() / 2]
}

/// Rows of the undo benchmark's table: 8 M rows of ~125 bytes, about 1 GB
/// (`SLUICE_BENCH_UNDO_ROWS` for a smaller run).
fn undo_rows() -> i64 {
    std::env::var("SLUICE_BENCH_UNDO_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8_000_000)
}

/// A step that changes one row in 8,000 (1,000 of 8 M) of a large table, rolled back with
/// `sluice rollback`: undone by its change set, against the baseline of
/// the same step with a schema change too, which restores the backup.
fn undo() {
    let rows = undo_rows();
    let time_rollback = |extra: &str| -> Duration {
        let s = sluice_e2e::Scenario::new();
        s.seed(
            "big.db",
            &format!(
                "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT NOT NULL, note TEXT NOT NULL, total REAL);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
                 INSERT INTO orders SELECT i, 'customer-' || (i % 10000), hex(randomblob(48)), i * 0.5 FROM n;"
            ),
        );
        s.write(
            "sluice.toml",
            &format!(
                r#"[plan]
name = "undo-bench"

[targets.big]
kind = "sqlite"
path = "big.db"

[plugins.sqlite]
path = "{}"

[[steps]]
id = "mark"
plugin = "sqlite"
target = "big"
access = "read-write"
tables = ["orders"]
thresholds = ["orders > 0"]

[steps.params]
tables = ["orders"]
migrate = "{extra}UPDATE orders SET note = 'marked' WHERE id % 8000 = 0"

[[steps.params.metrics]]
name = "orders"
query = "SELECT count(*) FROM orders WHERE id < 10"
"#,
                plugin("sqlite.wasm").display()
            ),
        );
        let run = s.run("sluice.toml");
        assert_eq!(run.code, 0, "{}", run.all());
        let t = Instant::now();
        let rolled = s.sluice(&["rollback", "sluice.toml"]);
        let took = t.elapsed();
        assert_eq!(rolled.code, 0, "{}", rolled.all());
        took
    };
    let change_set = time_rollback("");
    let restore = time_rollback("ALTER TABLE orders ADD COLUMN sku TEXT; ");
    println!(
        "undo     {} of {rows} rows: by change set {:>8.2} s   by restore {:>8.2} s   {:>6.1}× faster   (target ≤ 1 s: {})",
        rows / 8000,
        change_set.as_secs_f64(),
        restore.as_secs_f64(),
        restore.as_secs_f64() / change_set.as_secs_f64(),
        verdict(change_set <= Duration::from_secs(1))
    );
}
