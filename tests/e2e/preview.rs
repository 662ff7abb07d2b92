//! `sluice plan`: what each step will do, before anything runs, and the
//! threshold metric check `sluice plan` and `sluice check` share.

use serde_json::Value;
use sluice_e2e::services::{pg_scratch, redis_scratch};
use sluice_e2e::{plugin, sluice_bin, DbState, Outcome, Scenario};

/// 1-based line and column where `needle` starts in `text`.
fn line_col(text: &str, needle: &str) -> (usize, usize) {
    let at = text.find(needle).expect("needle in the plan");
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before[before.rfind('\n').map_or(0, |i| i + 1)..]
        .chars()
        .count()
        + 1;
    (line, column)
}

fn json(out: &Outcome) -> Value {
    assert_eq!(out.code, 0, "{}", out.all());
    serde_json::from_str(&out.stdout).expect("`sluice plan --json` prints JSON")
}

#[test]
fn the_quickstart_preview_shows_every_step_and_changes_nothing() {
    let s = Scenario::quickstart();
    let before = DbState::of(&s.path().join("shop.db"));

    let out = s.sluice(&["plan", "sluice.toml"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let text = &out.stdout;
    for want in [
        "step 1/2 copy-customers",
        "step 2/2 merge-legacy",
        "target      shop (sqlite, ",
        "granted     read-write on target `shop`, tables: every table",
        "granted     read-write on target `shop`, tables: clientes, legacy_contacts",
        "RISKY       read-write on every table or key of target `shop`",
        "does        in one transaction, runs 3 statements: CREATE TABLE clientes",
        "change      transactional — one transaction",
        "metrics     match_rate, duplicates",
        "metrics     duplicates, rows",
        "thresholds  match_rate >= 0.95 · duplicates == 0",
        "backup      the whole target, about ",
        "backup      clientes, about ",
        "undo        put back the rows migrate changed and drop what it created (by change set);",
    ] {
        assert!(text.contains(want), "`{want}` in:\n{text}");
    }
    // One screen: the two steps fit in a terminal.
    assert!(text.lines().count() <= 40, "{} lines", text.lines().count());

    let v = json(&s.sluice(&["plan", "--json", "sluice.toml"]));
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    let first = &steps[0];
    assert_eq!(first["step"], "copy-customers");
    assert_eq!(first["change"], "transactional");
    assert_eq!(
        first["metrics"],
        serde_json::json!(["match_rate", "duplicates"])
    );
    assert_eq!(first["backup_scope"], serde_json::json!([]));
    assert_eq!(
        first["undo"],
        "put back the rows migrate changed and drop what it created (by change set); \
         a step that alters or drops existing objects: restore the backup (refused if written since)"
    );
    use sha2::Digest;
    let wasm = std::fs::read(plugin("sqlite.wasm")).unwrap();
    assert_eq!(
        first["plugin"]["sha256"],
        hex::encode(sha2::Sha256::digest(&wasm))
    );
    // 1,000 customers and 40 contacts: the host measured real pages.
    let whole = first["backup_estimate"]["bytes"].as_u64().unwrap();
    assert!(whole >= 16 * 1024, "whole-database estimate {whole}");
    // Step 2 backs up `clientes`, which step 1 creates: nothing yet.
    assert_eq!(steps[1]["backup_scope"], serde_json::json!(["clientes"]));
    assert_eq!(steps[1]["backup_estimate"]["bytes"], 0);

    assert_eq!(DbState::of(&s.path().join("shop.db")), before);
    assert!(
        !s.path().join(".sluice").exists(),
        "a preview writes no journal and no backup"
    );
}

#[test]
fn a_threshold_naming_an_unknown_metric_fails_plan_and_check() {
    let s = Scenario::quickstart();
    let plan = s
        .read("sluice.toml")
        .replace("\"match_rate >= 0.95\"", "\"match_rat >= 0.95\"");
    s.write("sluice.toml", &plan);
    let (line, column) = line_col(&plan, "match_rat >= 0.95");
    for command in ["plan", "check"] {
        let out = s.sluice(&[command, "sluice.toml"]);
        assert_eq!(out.code, 2, "{command}: {}", out.all());
        let err = &out.stderr;
        assert!(
            err.contains(&format!("sluice.toml:{line}:{column}: threshold `match_rat >= 0.95` of step `copy-customers` reads metric `match_rat`")),
            "{command}: the error points at the threshold: {err}"
        );
        assert!(
            err.contains("it reports: match_rate, duplicates; did you mean `match_rate`?"),
            "{command}: {err}"
        );
        assert!(
            err.contains(&format!("{line:>5} | thresholds = [\"match_rat >= 0.95\"")),
            "{command}: the snippet shows the plan line: {err}"
        );
        assert!(out.stdout.is_empty(), "{command}: {}", out.stdout);
    }
    assert!(!s.path().join(".sluice").exists(), "nothing ran");

    // The same plan with the name fixed checks out.
    s.write(
        "sluice.toml",
        &plan.replace("match_rat >=", "match_rate >="),
    );
    let out = s.sluice(&["check", "sluice.toml"]);
    assert_eq!(out.code, 0, "{}", out.all());
}

/// A plan on a PostgreSQL target `shop` whose URL is in `SHOP_PG_URL`, and
/// a target `elsewhere` whose URL variable is never set.
fn pg_plan(steps: &str) -> Scenario {
    let s = Scenario::new();
    s.write(
        "sluice.toml",
        &format!(
            r#"
[values]
db = {{ env = "SHOP_PG_URL" }}
elsewhere_db = {{ env = "SLUICE_PREVIEW_TEST_UNSET_URL" }}

[targets.shop]
kind = "postgres"
connection = "db"

[targets.elsewhere]
kind = "postgres"
connection = "elsewhere_db"

[plugins.pg]
path = "{}"
{steps}
"#,
            plugin("postgres.wasm").display()
        ),
    );
    s
}

const LATENCY_STEP: &str = r#"
[[steps]]
id = "tune"
plugin = "pg"
target = "shop"
access = "read-write"
tables = ["orders"]
thresholds = ["latency_p95 <= 2 * baseline.latency_p95"]

[steps.params]
tables = ["orders"]
migrate = "CREATE INDEX orders_total ON orders (total)"

[[steps.params.metrics]]
name = "latency_p95"
latency = { query = "SELECT count(*) FROM orders", runs = 5, percentile = 95, baseline = true }
"#;

#[test]
fn a_baseline_threshold_is_checked_against_the_metric_it_compares() {
    // `check` asks only the plugin: no server, no URL needed.
    let s = pg_plan(LATENCY_STEP);
    let out = s.sluice(&["check", "sluice.toml"]);
    assert_eq!(
        out.code,
        0,
        "baseline.latency_p95 reads latency_p95: {}",
        out.all()
    );

    let s = pg_plan(&LATENCY_STEP.replace("2 * baseline.latency_p95", "2 * baseline.latency_p99"));
    let out = s.sluice(&["check", "sluice.toml"]);
    assert_eq!(out.code, 2, "{}", out.all());
    let (line, column) = line_col(&s.read("sluice.toml"), "baseline.latency_p99");
    assert!(
        out.stderr.contains(&format!(
            "sluice.toml:{line}:{column}: threshold `latency_p95 <= 2 * baseline.latency_p99` of step `tune` reads metric `latency_p99`"
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("it reports: latency_p95"),
        "{}",
        out.stderr
    );
}

#[test]
fn params_the_plugin_rejects_are_a_plan_error_naming_the_step() {
    let s = pg_plan(
        r#"
[[steps]]
id = "squeeze"
plugin = "pg"
target = "shop"
access = "read-write"

[steps.params]
migrate = "VACUUM FULL orders"
"#,
    );
    let (line, _) = line_col(&s.read("sluice.toml"), "[[steps]]");
    for command in ["plan", "check"] {
        let out = s.sluice(&[command, "sluice.toml"]);
        assert_eq!(out.code, 2, "{command}: {}", out.all());
        assert!(
            out.stderr.contains(&format!("sluice.toml:{line}:")),
            "{command}: at the step: {}",
            out.stderr
        );
        assert!(
            out.stderr
                .contains("step `squeeze`: plugin `pg` rejects its params: params.migrate:"),
            "{command}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains("set `irreversible = true`"),
            "{command}: {}",
            out.stderr
        );
    }
}

#[test]
fn postgres_previews_say_how_each_change_can_be_undone() {
    let db = pg_scratch();
    db.client()
        .batch_execute(
            "CREATE TABLE orders (id bigint PRIMARY KEY, note text);
             INSERT INTO orders SELECT g, repeat('x', 100) || g FROM generate_series(1, 2000) g;
             CREATE TABLE audit_log (id bigint PRIMARY KEY, line text);",
        )
        .unwrap();
    let s = pg_plan(
        r#"
[[steps]]
id = "note-index"
plugin = "pg"
target = "shop"
access = "read-write"
tables = ["orders"]
thresholds = ["index_used == 1"]

[steps.params]
tables = ["orders"]
migrate = "CREATE INDEX CONCURRENTLY orders_note ON orders (note)"
compensate = "DROP INDEX CONCURRENTLY IF EXISTS orders_note"

[[steps.params.metrics]]
name = "index_used"
index_used = { query = "SELECT * FROM orders WHERE note = 'x'", index = "orders_note" }

[[steps]]
id = "squeeze"
plugin = "pg"
target = "shop"
access = "read-write"
tables = ["audit_log"]

[steps.params]
tables = ["audit_log"]
migrate = "VACUUM FULL audit_log"
irreversible = true

[[steps]]
id = "far-away"
plugin = "pg"
target = "elsewhere"
access = "read-write"
tables = ["orders"]

[steps.params]
tables = ["orders"]
migrate = "UPDATE orders SET note = upper(note)"
"#,
    );

    let out = s.sluice_with(
        &sluice_bin(),
        &["plan", "sluice.toml"],
        &[("SHOP_PG_URL", &db.url)],
    );
    assert_eq!(out.code, 0, "{}", out.all());
    let text = &out.stdout;
    // Long summaries wrap: compare with whitespace collapsed.
    let flat = |t: &str| t.split_whitespace().collect::<Vec<_>>().join(" ");
    let flat_text = flat(text);
    for want in [
        "step 1/3 note-index",
        "does        statement by statement (each commits on its own), runs 1 statement: CREATE INDEX",
        "change      non-transactional — statement by statement",
        "compensate: DROP INDEX CONCURRENTLY IF EXISTS orders_note",
        "metrics     index_used",
        "step 2/3 squeeze",
        "change      irreversible — reversible only from backup",
        "backup      audit_log, about ",
        "target      elsewhere (postgres, unresolved: value `elsewhere_db`: environment variable SLUICE_PREVIEW_TEST_UNSET_URL is not set)",
        "backup      orders, size unknown (value `elsewhere_db`: environment variable SLUICE_PREVIEW_TEST_UNSET_URL is not set)",
    ] {
        assert!(flat_text.contains(&flat(want)), "`{want}` in:\n{text}");
    }
    // The address is shown without credentials, never the URL's secret parts.
    assert!(
        text.contains("target      shop (postgres, postgres://"),
        "{text}"
    );

    let v = json(&s.sluice_with(
        &sluice_bin(),
        &["plan", "--json", "sluice.toml"],
        &[("SHOP_PG_URL", &db.url)],
    ));
    let orders = v["steps"][0]["backup_estimate"]["bytes"].as_u64().unwrap();
    // 2,000 rows of ~105 bytes: pg_table_size counts whole 8 KiB pages.
    assert!(orders >= 200 * 1024, "orders estimate {orders}");
    assert_eq!(v["steps"][0]["change"], "non-transactional");
    assert_eq!(v["steps"][1]["change"], "irreversible");
    // An empty table: at most its TOAST table's index page.
    let empty = v["steps"][1]["backup_estimate"]["bytes"].as_u64().unwrap();
    assert!(empty < 64 * 1024, "audit_log estimate {empty}");
    assert!(v["steps"][2]["backup_estimate"]["unknown"].is_string());
}

#[test]
fn redis_previews_measure_the_backed_up_prefixes() {
    let db = redis_scratch();
    let mut conn = db.conn();
    for i in 0..50 {
        redis::cmd("SET")
            .arg(format!("flags:f{i}"))
            .arg("x".repeat(200))
            .query::<()>(&mut conn)
            .unwrap();
    }
    redis::cmd("SET")
        .arg("other:big")
        .arg("y".repeat(100_000))
        .query::<()>(&mut conn)
        .unwrap();
    let s = Scenario::new();
    s.write(
        "sluice.toml",
        &format!(
            r#"
[values]
cache_url = "{url}"

[targets.cache]
kind = "redis"
connection = "cache_url"

[plugins.redis]
path = "{plugin}"

[[steps]]
id = "flags"
plugin = "redis"
target = "cache"
access = "read-write"
key_prefixes = ["flags:"]
thresholds = ["flag_keys == 51"]

[steps.params]
prefixes = ["flags:"]
ops = [{{ op = "set", key = "flags:new", value = "1" }}]

[[steps.params.metrics]]
name = "flag_keys"
count_prefix = "flags:"
"#,
            url = db.url,
            plugin = plugin("redis.wasm").display(),
        ),
    );
    let v = json(&s.sluice(&["plan", "--json", "sluice.toml"]));
    let step = &v["steps"][0];
    assert_eq!(step["change"], "non-transactional");
    assert_eq!(step["backup_scope"], serde_json::json!(["flags:"]));
    assert_eq!(step["metrics"], serde_json::json!(["flag_keys"]));
    assert_eq!(
        step["summary"],
        "runs 1 key operation one by one: set flags:new"
    );
    let bytes = step["backup_estimate"]["bytes"].as_u64().unwrap();
    // 50 keys of 200 bytes; the 100 KB key outside the prefix is not counted.
    assert!(
        (10_000..100_000).contains(&bytes),
        "flags: estimate {bytes}"
    );
    assert!(
        step["grants"][0]
            .as_str()
            .unwrap()
            .contains("key prefixes: flags:"),
        "{step}"
    );
}
