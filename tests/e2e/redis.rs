//! Redis targets through the real binary and the `redis` plugin: a failed
//! step restores every value and every absolute expiry and removes the keys
//! it created; a key outside the step's `key_prefixes` is refused before
//! Redis sees it; a good step leaves what it intended. Redis is read here by
//! an independent client, never through sluice's code.

use std::collections::BTreeMap;

use sluice_e2e::services::{redis_scratch, RedisScratch};
use sluice_e2e::{plugin, Scenario};

/// A scenario whose plan has one step on a Redis target granted
/// `key_prefixes = ["flags:"]`; `params` and `thresholds` complete it.
fn plan(db: &RedisScratch, thresholds: &str, params: &str) -> Scenario {
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
thresholds = [{thresholds}]

[steps.params]
prefixes = ["flags:"]
{params}
"#,
            url = db.url,
            plugin = plugin("redis.wasm").display(),
        ),
    );
    s
}

/// Keys of several types, with and without expiry, under `flags:`, and one
/// key outside it.
fn seed(db: &RedisScratch) {
    let mut c = db.conn();
    let run = |c: &mut redis::Connection, cmd: &mut redis::Cmd| cmd.query::<()>(c).unwrap();
    run(&mut c, redis::cmd("SET").arg("flags:checkout").arg("on"));
    run(
        &mut c,
        redis::cmd("SET")
            .arg("flags:search")
            .arg("off")
            .arg("PX")
            .arg(3_600_000),
    );
    run(
        &mut c,
        redis::cmd("SET")
            .arg("flags:legacy")
            .arg("1")
            .arg("PX")
            .arg(7_200_000),
    );
    run(
        &mut c,
        redis::cmd("HSET")
            .arg("flags:rollout")
            .arg("eu")
            .arg("10")
            .arg("us")
            .arg("50"),
    );
    run(
        &mut c,
        redis::cmd("PEXPIRE").arg("flags:rollout").arg(5_400_000),
    );
    run(
        &mut c,
        redis::cmd("RPUSH")
            .arg("flags:audit")
            .arg("created")
            .arg("reviewed"),
    );
    run(
        &mut c,
        redis::cmd("SADD")
            .arg("flags:owners")
            .arg("ana")
            .arg("bo")
            .arg("cy"),
    );
    run(&mut c, redis::cmd("SET").arg("users:1").arg("ana"));
}

/// Every key of the database: its type, its content in a canonical text
/// form, and its absolute expiry (`PEXPIRETIME`, -1 when it persists).
fn snapshot(db: &RedisScratch) -> BTreeMap<String, (String, String, i64)> {
    let mut c = db.conn();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    let mut out = BTreeMap::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query(&mut c).unwrap();
        let content = match kind.as_str() {
            "string" => redis::cmd("GET").arg(&key).query::<String>(&mut c).unwrap(),
            "list" => format!(
                "{:?}",
                redis::cmd("LRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .query::<Vec<String>>(&mut c)
                    .unwrap()
            ),
            "hash" => format!(
                "{:?}",
                redis::cmd("HGETALL")
                    .arg(&key)
                    .query::<BTreeMap<String, String>>(&mut c)
                    .unwrap()
            ),
            "set" => {
                let mut m: Vec<String> = redis::cmd("SMEMBERS").arg(&key).query(&mut c).unwrap();
                m.sort();
                format!("{m:?}")
            }
            other => panic!("unexpected type {other} of `{key}`"),
        };
        let expiry: i64 = redis::cmd("PEXPIRETIME").arg(&key).query(&mut c).unwrap();
        out.insert(key, (kind, content, expiry));
    }
    out
}

fn get(db: &RedisScratch, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query(&mut db.conn()).unwrap()
}

#[test]
fn a_failed_threshold_restores_values_and_absolute_expiries_and_removes_created_keys() {
    let db = redis_scratch();
    seed(&db);
    let before = snapshot(&db);
    assert_eq!(before.len(), 7);
    let s = plan(
        &db,
        r#""checkout_on == 1""#,
        r#"
ops = [
  { op = "set", key = "flags:checkout", value = "off" },
  { op = "set", key = "flags:search", value = "on", ttl_ms = 1000 },
  { op = "set", key = "flags:new", value = "created by the step" },
  { op = "rename", from = "flags:legacy", to = "flags:legacy-v2" },
  { op = "copy", from = "flags:rollout", to = "flags:rollout-copy" },
  { op = "delete", key = "flags:audit" },
]
metrics = [{ name = "checkout_on", expect = { key = "flags:checkout", value = "on" } }]
"#,
    );
    let run = s.run("sluice.toml");
    assert_eq!(run.code, 1, "a failed, rolled-back step exits 1");
    assert!(
        run.stdout
            .contains("threshold `checkout_on == 1` not met (checkout_on = 0)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("Rolled back; the target equals its pre-step state"),
        "{}",
        run.stdout
    );
    let after = snapshot(&db);
    assert_eq!(
        after, before,
        "every value and absolute expiry as before; created keys gone"
    );
    assert!(before["flags:search"].2 > 0 && before["flags:rollout"].2 > 0);

    // Rolling back a step that is already rolled back changes nothing.
    let again = s.sluice(&["rollback", "sluice.toml"]);
    assert_eq!(again.code, 0, "{}", again.all());
    assert_eq!(snapshot(&db), before);
}

#[test]
fn a_key_outside_the_granted_prefixes_is_refused_and_redis_is_unchanged() {
    let db = redis_scratch();
    seed(&db);
    let before = snapshot(&db);
    let s = plan(
        &db,
        "",
        r#"
ops = [
  { op = "set", key = "flags:checkout", value = "off" },
  { op = "set", key = "users:1", value = "mallory" },
]
"#,
    );
    let run = s.run("sluice.toml");
    assert_eq!(run.code, 1, "{}", run.all());
    let all = run.all();
    assert!(
        all.contains("access denied") && all.contains("key `users:1`") && all.contains("`flags:`"),
        "the refusal names the key and the granted prefixes: {all}"
    );
    assert_eq!(
        get(&db, "users:1").as_deref(),
        Some("ana"),
        "Redis never saw the write"
    );
    assert_eq!(
        snapshot(&db),
        before,
        "the op before the refused one was rolled back"
    );
}

#[test]
fn a_step_that_passes_its_thresholds_leaves_the_intended_state() {
    let db = redis_scratch();
    seed(&db);
    let before = snapshot(&db);
    let s = plan(
        &db,
        r#""flag_count == 8", "beta_on == 1", "beta_ttl > 0", "search_ttl > 3000000""#,
        r#"
ops = [
  { op = "set", key = "flags:beta", value = "on", ttl_ms = 600000 },
  { op = "rename", from = "flags:search", to = "flags:search-v2" },
  { op = "copy_prefix", from = "flags:roll", to = "flags:archive:roll" },
]
metrics = [
  { name = "flag_count", count_prefix = "flags:" },
  { name = "beta_on", expect = { key = "flags:beta", value = "on" } },
  { name = "beta_ttl", ttl_ms_of = "flags:beta" },
  { name = "search_ttl", ttl_ms_of = "flags:search-v2" },
]
"#,
    );
    // A reviewer sees the key prefixes, and nothing surplus or undeclared.
    let audit = s.sluice(&["audit", "sluice.toml"]);
    assert!(
        audit.stdout.contains("key prefixes: flags:")
            && !audit.stdout.contains("undeclared")
            && !audit.stdout.contains("RISKY")
            && !audit.stdout.contains("surplus"),
        "{}",
        audit.stdout
    );
    let run = s.run("sluice.toml");
    assert_eq!(run.code, 0, "{}", run.all());
    let after = snapshot(&db);
    assert_eq!(get(&db, "flags:beta").as_deref(), Some("on"));
    assert!(after["flags:beta"].2 > 0, "flags:beta expires");
    assert!(!after.contains_key("flags:search"));
    assert_eq!(
        after["flags:search-v2"], before["flags:search"],
        "a rename keeps the value and the absolute expiry"
    );
    assert_eq!(
        after["flags:archive:rollout"], before["flags:rollout"],
        "a prefix copy keeps the value and the absolute expiry"
    );
    assert_eq!(after["users:1"], before["users:1"]);

    // Run again: already applied, nothing changes.
    let again = s.sluice(&["run", "sluice.toml"]);
    assert_eq!(again.code, 0, "{}", again.all());
    assert_eq!(snapshot(&db), after);

    // The operator rolls it back: the pre-step state, proven by the host.
    let back = s.sluice(&["rollback", "sluice.toml"]);
    assert_eq!(back.code, 0, "{}", back.all());
    assert_eq!(snapshot(&db), before);
}

#[test]
fn a_rehearsal_runs_on_an_empty_database_number_and_leaves_the_real_one_alone() {
    let db = redis_scratch();
    seed(&db);
    let before = snapshot(&db);
    let s = plan(
        &db,
        "\"flags >= 7\"",
        "ops = [{ op = \"set\", key = \"flags:new\", value = \"1\" }, { op = \"set\", key = \"flags:checkout\", value = \"off\" }]\n\n[[steps.params.metrics]]\nname = \"flags\"\ncount_prefix = \"flags:\"",
    );
    assert_eq!(s.sluice(&["audit", "--accept", "sluice.toml"]).code, 0);
    let out = s.sluice(&["rehearse", "sluice.toml", "--output", "staging"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(!out.all().contains(&db.url), "the URL is never printed");
    // The real database: every value and absolute expiry as before.
    assert_eq!(snapshot(&db), before);

    let report: serde_json::Value =
        serde_json::from_str(&s.read("staging/rehearsal.json")).unwrap();
    let target = &report["targets"][0];
    assert_eq!(target["unchanged"], true, "{report:#}");
    assert_eq!(
        target["copy_restored_differences"],
        serde_json::json!([]),
        "{report:#}"
    );
    // The copy ran the step (flags:new made the count 7) and is emptied.
    let step = &report["steps"][0];
    assert!(step.to_string().contains("\"flags\""), "{step:#}");
    let copy_db: u32 = target["copy"]
        .as_str()
        // "Redis database redis://host:port/<n> (…)"
        .and_then(|c| c.split_whitespace().find(|w| w.starts_with("redis://")))
        .and_then(|url| url.rsplit('/').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a database number in {target:#}"));
    assert_ne!(copy_db, db.db);
    let mut copy = redis::Client::open(sluice_e2e::services::with_path(
        &sluice_e2e::services::redis_url(),
        &copy_db.to_string(),
    ))
    .unwrap()
    .get_connection()
    .unwrap();
    let left: u64 = redis::cmd("DBSIZE").query(&mut copy).unwrap();
    assert_eq!(left, 0, "the scratch database is emptied");
}
