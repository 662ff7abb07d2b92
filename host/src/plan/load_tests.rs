use super::test_plan::*;
use super::*;

// ---- read ----

#[test]
fn r_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = load(&dir.path().join("nope.toml")).unwrap_err();
    assert!(matches!(err, PlanError::Read { .. }));
    assert_eq!(
        err.to_string()
            .replace(&dir.path().display().to_string(), "<dir>"),
        "cannot read plan <dir>/nope.toml: No such file or directory (os error 2)"
    );
    assert!(err.snippet().is_none());
}

#[test]
fn r_unknown_key() {
    assert_eq!(refused(&step("acess = \"x\"\n")), "13:1: unknown field `acess`, expected one of `id`, `plugin`, `target`, `access`, `tables`, `key_prefixes`, `files`, `values`, `probes`, `description`, `params`, `thresholds`, `bands`, `approval`, `watch`, `limits`");
}

#[test]
fn r_syntax() {
    assert_eq!(
        refused("[targets.db\nkind = \"sqlite\"\n"),
        "1:12: unclosed table, expected `]`"
    );
}

#[test]
fn r_variant() {
    assert_eq!(
        refused(&STEP.replace("\"read-write\"", "\"rw\"")),
        "12:10: unknown variant `rw`, expected `read-only` or `read-write`"
    );
}

#[test]
fn r_missing_field() {
    assert_eq!(
        refused("[targets.db]\npath = \"x\"\n"),
        "1:1: missing field `kind`"
    );
}

#[test]
fn r_name() {
    assert_eq!(
        refused(&STEP.replace("[targets.db]", "[targets.\"d b\"]")),
        "1:1: target `d b` must be 1–64 characters of letters, digits, `-` and `_`"
    );
}

#[test]
fn r_snippet() {
    let dir = write(&step("acess = \"x\"\n"));
    let err = load(&dir.path().join("sluice.toml")).unwrap_err();
    assert_eq!(err.snippet().unwrap(), "   13 | acess = \"x\"\n      | ^");
}

// ---- values ----

#[test]
fn v_neither() {
    assert_eq!(refused("[values]\nurl = { }\n"), "2:7: value `url` needs exactly one of `env = \"VAR\"` or `file = \"path\"`, or a literal string");
}

#[test]
fn v_both() {
    assert_eq!(refused("[values]\nurl = { env = \"A\", file = \"b\" }\n"), "2:7: value `url` needs exactly one of `env = \"VAR\"` or `file = \"path\"`, or a literal string");
}

#[test]
fn v_name() {
    assert_eq!(
        refused("[values]\n\"a b\" = \"x\"\n"),
        "2:9: value `a b` must be 1–64 characters of letters, digits, `-` and `_`"
    );
}

#[test]
fn v_ok() {
    let plan = loads(&format!(
        "[values]\na = \"lit\"\nb = {{ env = \"B\" }}\nc = {{ file = \"c.txt\" }}\n\n{STEP}"
    ));
    assert_eq!(plan.values["a"], ValueSource::Literal("lit".into()));
    assert_eq!(plan.values["b"], ValueSource::Env("B".into()));
    assert_eq!(plan.values["c"], ValueSource::File(plan.dir.join("c.txt")));
}

// ---- probes ----

#[test]
fn p_host() {
    assert_eq!(refused("[plan]\nprobe_hosts = [\"10.1.2.3\"]\n"), "2:17: probe_hosts entry `10.1.2.3` is not `host:port` (for example \"health.internal:8080\")");
}

#[test]
fn p_shape_number() {
    assert_eq!(refused("[probes]\napi = 5\n"), "2:7: probe `api` must be a URL string or a table `{ url = \"http://…\", timeout_ms = 2000 }`");
}

#[test]
fn p_shape_no_url() {
    assert_eq!(refused("[probes]\napi = { timeout_ms = 5 }\n"), "2:7: probe `api` must be a URL string or a table `{ url = \"http://…\", timeout_ms = 2000 }`");
}

#[test]
fn p_shape_negative() {
    assert_eq!(
        refused("[probes]\napi = { url = \"http://127.0.0.1/\", timeout_ms = -1 }\n"),
        "2:7: probe `api` must be a URL string or a table `{ url = \"http://…\", timeout_ms = 2000 }`"
    );
}

#[test]
fn p_shape_timeout_text() {
    assert_eq!(
        refused("[probes]\napi = { url = \"http://127.0.0.1/\", timeout_ms = \"1\" }\n"),
        "2:7: probe `api` must be a URL string or a table `{ url = \"http://…\", timeout_ms = 2000 }`"
    );
}

#[test]
fn p_unknown_key() {
    assert_eq!(
        refused("[probes]\napi = { url = \"http://127.0.0.1/\", method = \"POST\" }\n"),
        "2:7: probe `api`: unknown key `method`; a probe has `url` and an optional `timeout_ms`"
    );
}

#[test]
fn p_parse() {
    assert_eq!(refused("[probes]\napi = \"https://127.0.0.1/\"\n"), "2:7: probe `api`: https is not supported yet (sluice links no TLS stack for probes); use an http:// URL on loopback or on a host listed in [plan] probe_hosts");
}

#[test]
fn p_name() {
    assert_eq!(
        refused("[probes]\n\"a b\" = \"http://127.0.0.1/\"\n"),
        "2:9: probe `a b` must be 1–64 characters of letters, digits, `-` and `_`"
    );
}

// ---- targets ----

#[test]
fn t_kind() {
    assert_eq!(
        refused(&STEP.replace("\"sqlite\"", "\"mysql\"")),
        "2:8: target `db` has unknown kind `mysql`; supported kinds: sqlite, postgres, redis"
    );
}

#[test]
fn t_attach_not_sqlite() {
    assert_eq!(
        refused(&KV_STEP.replace(
            "connection = \"url\"",
            "connection = \"url\"\nattach = { a = \"a.db\" }"
        )),
        "7:10: target `kv`: `attach` adds database files to a sqlite target; this one is redis"
    );
}

#[test]
fn t_sqlite_no_path() {
    assert_eq!(
        refused(&STEP.replace("path = \"db.sqlite\"", "")),
        "1:1: target `db`: a sqlite target needs `path = \"file.db\"` (and no `connection`)"
    );
}

#[test]
fn t_sqlite_connection() {
    assert_eq!(
        refused(&STEP.replace(
            "path = \"db.sqlite\"",
            "path = \"db.sqlite\"\nconnection = \"x\""
        )),
        "1:1: target `db`: a sqlite target needs `path = \"file.db\"` (and no `connection`)"
    );
}

#[test]
fn t_server_path() {
    assert_eq!(
        refused(&KV_STEP.replace("connection = \"url\"", "path = \"x\"")),
        "4:1: target `kv`: a redis target needs `connection = \"<value name>\"`, naming a [values] entry that holds its URL (so the URL and its password stay out of the plan); `path` is for sqlite"
    );
}

#[test]
fn t_connection_undefined() {
    assert_eq!(
        refused(&KV_STEP.replace("connection = \"url\"", "connection = \"nope\"")),
        "6:14: target `kv`: `connection` names value `nope`, which the plan does not define in [values]; defined: url"
    );
}

#[test]
fn t_attach_reserved() {
    assert_eq!(
        refused(&STEP.replace("path = \"db.sqlite\"", "path = \"db.sqlite\"\nattach = { temp = \"x.db\" }")),
        "4:19: target `db`: attach schema `temp` must be 1–64 letters, digits and `_`, not starting with a digit, and not `main` or `temp`"
    );
}

#[test]
fn t_attach_digit() {
    assert_eq!(
        refused(&STEP.replace("path = \"db.sqlite\"", "path = \"db.sqlite\"\nattach = { \"1x\" = \"x.db\" }")),
        "4:19: target `db`: attach schema `1x` must be 1–64 letters, digits and `_`, not starting with a digit, and not `main` or `temp`"
    );
}

#[test]
fn t_attach_twice() {
    assert_eq!(
        refused(&STEP.replace(
            "path = \"db.sqlite\"",
            "path = \"db.sqlite\"\nattach = { a = \"x.db\", b = \"x.db\" }"
        )),
        "4:28: target `db`: `x.db` is attached twice or is the database itself"
    );
}

#[test]
fn t_attach_database() {
    assert_eq!(
        refused(&STEP.replace(
            "path = \"db.sqlite\"",
            "path = \"db.sqlite\"\nattach = { a = \"db.sqlite\" }"
        )),
        "4:16: target `db`: `db.sqlite` is attached twice or is the database itself"
    );
}

#[test]
fn t_name() {
    assert_eq!(
        refused(&STEP.replace("[targets.db]", "[targets.\"d b\"]")),
        "1:1: target `d b` must be 1–64 characters of letters, digits, `-` and `_`"
    );
}

#[test]
fn t_ok() {
    let plan = loads(&STEP.replace(
        "path = \"db.sqlite\"",
        "path = \"db.sqlite\"\nattach = { sqitch = \"sqitch.db\" }",
    ));
    let t = &plan.targets["db"];
    assert_eq!(t.kind, TargetKind::Sqlite);
    let Address::File(files) = &t.address else {
        panic!()
    };
    assert_eq!(files.path, plan.dir.join("db.sqlite"));
    assert_eq!(files.attach["sqitch"], plan.dir.join("sqitch.db"));
}

// ---- plugins ----

#[test]
fn pl_missing() {
    assert_eq!(
        refused(&STEP.replace("p.wasm", "nope.wasm")),
        "6:8: plugin `p`: cannot read <dir>/nope.wasm: No such file or directory (os error 2)"
    );
}

#[test]
fn pl_pin() {
    assert_eq!(
        refused(&STEP.replace("path = \"p.wasm\"", "path = \"p.wasm\"\nsha256 = \"00\"")),
        "7:10: plugin `p`: <dir>/p.wasm has sha256 5af342e3312a2ac2db97ed299e06beba2a01b845f66153f90f1bedb178beaacd, but the plan pins 00"
    );
}

#[test]
fn pl_name() {
    assert_eq!(
        refused(&STEP.replace("[plugins.p]", "[plugins.\"p!\"]")),
        "5:1: plugin `p!` must be 1–64 characters of letters, digits, `-` and `_`"
    );
}

#[test]
fn pl_ok() {
    let digest = hex::encode(Sha256::digest(PLUGIN));
    let plan = loads(&STEP.replace(
        "path = \"p.wasm\"",
        &format!(
            "path = \"p.wasm\"\nsha256 = \" {} \"",
            digest.to_uppercase()
        ),
    ));
    assert_eq!(plan.plugins["p"].digest, digest);
    assert_eq!(&*plan.plugins["p"].bytes, PLUGIN);
}

// ---- steps ----

#[test]
fn s_none() {
    assert_eq!(
        refused(&STEP[..STEP.find("[[steps]]").unwrap()]),
        "1:1: the plan has no steps; add a [[steps]] table"
    );
}

#[test]
fn s_id() {
    assert_eq!(
        refused(&STEP.replace("id = \"s\"", "id = \"s 1\"")),
        "9:6: step id `s 1` must be 1–64 characters of letters, digits, `-` and `_`"
    );
}

#[test]
fn s_id_twice() {
    assert_eq!(
        refused(&format!(
            "{STEP}{}",
            &STEP[STEP.find("[[steps]]").unwrap()..]
        )),
        "14:6: step id `s` is used twice"
    );
}

#[test]
fn s_plugin() {
    assert_eq!(
        refused(&STEP.replace("plugin = \"p\"", "plugin = \"q\"")),
        "10:10: step `s` uses plugin `q`, which is not declared; declared plugins: p"
    );
}

#[test]
fn s_target() {
    assert_eq!(
        refused(&STEP.replace("target = \"db\"", "target = \"kv\"")),
        "11:10: step `s` uses target `kv`, which is not declared; declared targets: db"
    );
}

#[test]
fn s_params_file_type() {
    assert_eq!(
        refused(&step("[steps.params]\nmigrate = { file = 1 }\n")),
        "13:1: params.migrate: `file` must be a path string"
    );
}

#[test]
fn s_params_missing() {
    assert_eq!(
        refused(&step(
            "[steps.params]\nx = [{ y = { file = \"no.sql\" } }]\n"
        )),
        "13:1: params.x[0].y: cannot read <dir>/no.sql: No such file or directory (os error 2)"
    );
}

#[test]
fn s_params_ok() {
    let dir = write(&step(
        "[steps.params]\nmigrate = { file = \"m.sql\" }\nn = [1, 2.5, true]\n",
    ));
    std::fs::write(dir.path().join("m.sql"), "SELECT 1").unwrap();
    let plan = load(&dir.path().join("sluice.toml")).unwrap();
    let s = &plan.steps[0];
    assert_eq!(s.params_json, r#"{"migrate":"SELECT 1","n":[1,2.5,true]}"#);
    assert_eq!(
        s.params_hash,
        hex::encode(Sha256::digest(s.params_json.as_bytes()))
    );
}

#[test]
fn s_tables_empty() {
    assert_eq!(
        refused(&step("tables = []\n")),
        "8:1: step `s`: `tables = []` grants no table; remove it to grant every table"
    );
}

#[test]
fn s_tables_schema() {
    assert_eq!(refused(&step("tables = [\"t\", \"sqitch.changes\"]\n")), "13:16: step `s`: table `sqitch.changes` names schema `sqitch`, which target `db` does not attach; attached: none");
}

#[test]
fn s_tables_kv() {
    assert_eq!(
        refused(&kv_step("tables = [\"t\"]\n")),
        "16:11: step `s`: `tables` scopes SQL targets; target `kv` is redis: use `key_prefixes`"
    );
}

#[test]
fn s_prefixes_sql() {
    assert_eq!(refused(&step("key_prefixes = [\"a:\"]\n")), "13:17: step `s`: `key_prefixes` scopes key-value targets; target `db` is sqlite: use `tables`");
}

#[test]
fn s_prefix_empty() {
    assert_eq!(refused(&kv_step("key_prefixes = [\"a:\", \"\"]\n")), "16:23: step `s`: an empty key prefix would grant every key; remove `key_prefixes` to grant every key");
}

#[test]
fn s_prefixes_none() {
    assert_eq!(
        refused(&kv_step("key_prefixes = []\n")),
        "11:1: step `s`: `key_prefixes = []` grants no key; remove it to grant every key"
    );
}

#[test]
fn s_file_name() {
    assert_eq!(
        refused(&step(
            "files = [{ name = \"a b\", path = \"files\", access = \"read-only\" }]\n"
        )),
        "13:19: file grant `a b` must be 1–64 characters of letters, digits, `-` and `_`"
    );
}

#[test]
fn s_file_not_dir() {
    assert_eq!(
        refused(&step(
            "files = [{ name = \"a\", path = \"p.wasm\", access = \"read-only\" }]\n"
        )),
        "13:31: step `s`: file grant `a`: <dir>/p.wasm is not a directory"
    );
}

#[test]
fn s_file_twice() {
    assert_eq!(
        refused(&step("files = [{ name = \"a\", path = \"files\", access = \"read-only\" },\n { name = \"a\", path = \"files\", access = \"read-write\" }]\n")),
        "14:11: step `s`: file grant `a` is given twice"
    );
}

#[test]
fn s_value() {
    assert_eq!(refused(&step("values = [\"nope\"]\n")), "13:11: step `s` is granted value `nope`, which the plan does not define in [values]; defined: none");
}

#[test]
fn s_probe() {
    assert_eq!(refused(&step("probes = [\"nope\"]\n")), "13:11: step `s` is granted probe `nope`, which the plan does not define in [probes]; defined: none");
}

#[test]
fn s_probe_twice() {
    assert_eq!(
        refused(&format!(
            "[probes]\napi = \"http://127.0.0.1/\"\n\n{}",
            step("probes = [\"api\", \"api\"]\n")
        )),
        "16:18: step `s`: probe `api` is granted twice"
    );
}

#[test]
fn s_limits() {
    assert_eq!(
        refused(&step("limits = { memory_mib = 0 }\n")),
        "13:10: step `s`: limits must be greater than 0"
    );
}

#[test]
fn s_ok() {
    let plan = loads(&kv_step(
        "key_prefixes = [\"a:\"]\nvalues = [\"url\"]\nlimits = { phase_seconds = 5 }\n",
    ));
    let s = &plan.steps[0];
    assert_eq!(s.key_prefixes, Some(vec!["a:".to_string()]));
    assert_eq!(s.values, vec!["url".to_string()]);
    assert_eq!(s.limits.phase_seconds, 5);
    assert_eq!(s.limits.memory_mib, 256);
    assert_eq!(s.location.line, 11);
}

// ---- gates ----

#[test]
fn g_threshold() {
    assert_eq!(
        refused(&step("thresholds = [\"rows > 0\", \"duplicates = 0\"]\n")),
        "13:39: threshold `duplicates = 0` of step `s`: `=` is not a comparison; write `==`"
    );
}

#[test]
fn g_band() {
    assert_eq!(
        refused(&step(
            "[[steps.bands]]\nwhen = \"rows >\"\naction = \"review\"\n"
        )),
        "14:15: band `rows >` of step `s`: expression ends where a number or metric was expected"
    );
}

#[test]
fn g_watch_every() {
    assert_eq!(refused(&step("watch = { every = \"soon\", for = \"1m\" }\n")), "13:19: step `s`: watch `every` = \"soon\" is not a duration such as \"5s\", \"2m\" or \"1h 30m\"");
}

#[test]
fn g_watch_for() {
    assert_eq!(refused(&step("watch = { every = \"1s\", for = \"0s\" }\n")), "13:31: step `s`: watch `for` = \"0s\" is not a duration such as \"5s\", \"2m\" or \"1h 30m\"");
}

#[test]
fn g_watch_order() {
    assert_eq!(
        refused(&step("watch = { every = \"2m\", for = \"1m\" }\n")),
        "13:19: step `s`: watch checks every 2m but lasts only 1m: no check would run"
    );
}

#[test]
fn g_ok() {
    let plan = loads(&step("thresholds = [\"rows > 0\"]\napproval = \"after\"\nwatch = { every = \"1s\", for = \"1m\", on_breach = \"plan\" }\n[[steps.bands]]\nwhen = \"rows < 10\"\naction = \"review\"\n"));
    let s = &plan.steps[0];
    assert_eq!(s.thresholds[0].location.line, 13);
    assert_eq!(s.thresholds[0].location.column, 16);
    assert_eq!(s.bands[0].action, Action::Review);
    let w = s.watch.unwrap();
    assert_eq!(w.every, std::time::Duration::from_secs(1));
    assert_eq!(w.on_breach, BreachScope::Plan);
    assert_eq!(s.approval, Some(ApprovalPoint::After));
}

// ---- refs ----

#[test]
fn j_journal() {
    assert_eq!(refused(&format!("[plan]\njournal = \"pg\"\n\n{STEP}")), "2:11: `journal` names value `pg`, which the plan does not define in [values]; it must hold the URL of the shared PostgreSQL journal");
}

#[test]
fn j_ok() {
    let plan = loads(&format!("[plan]\nname = \"n\"\njournal = \"pg\"\nlease_seconds = 0\n\n[values]\npg = \"postgres://x\"\n\n{STEP}"));
    assert_eq!(plan.journal.as_deref(), Some("pg"));
    assert_eq!(plan.name, "n");
    assert_eq!(plan.lease, std::time::Duration::from_secs(1));
}
