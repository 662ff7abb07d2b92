//! HTTP health probes: named GET probes to loopback (or allowlisted) hosts
//! as validate metrics, through the real binary, the real SQLite plugin and
//! a real HTTP server on 127.0.0.1 whose status the test switches.

use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sluice_e2e::http::HealthServer;
use sluice_e2e::{plugin, Scenario};

fn seed(s: &Scenario) {
    s.seed(
        "shop.db",
        "CREATE TABLE src (id INTEGER PRIMARY KEY); INSERT INTO src VALUES (1), (2), (3);",
    );
}

/// A plan with `[probes]` (TOML lines), one step `copy` granted `grant`,
/// thresholds and extra step lines, and metrics (TOML `[[steps.params.metrics]]`
/// tables) after its params.
fn plan(s: &Scenario, probes: &str, step: &str, metrics: &str) {
    s.write(
        "sluice.toml",
        &format!(
            r#"[plan]
name = "probes"

[probes]
{probes}

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
{step}

[steps.params]
migrate = "CREATE TABLE dst AS SELECT id FROM src"

{metrics}
"#,
            plugin = plugin("sqlite.wasm").display()
        ),
    );
}

const HEALTH_METRIC: &str = r#"[[steps.params.metrics]]
name = "health"
probe = { name = "api", measure = "ok", expect_status = 200 }
"#;

#[test]
fn a_health_probe_that_turns_500_during_the_watch_window_rolls_the_step_back() {
    let server = HealthServer::start(200);
    let s = Scenario::new();
    seed(&s);
    let before = s.state("shop.db");
    plan(
        &s,
        &format!("api = \"http://127.0.0.1:{}/health\"", server.port),
        "probes = [\"api\"]\nthresholds = [\"health == 1\"]\n\n[steps.watch]\nevery = \"1s\"\nfor = \"30s\"",
        HEALTH_METRIC,
    );
    assert_eq!(s.sluice(&["audit", "--accept", "sluice.toml"]).code, 0);

    let started = Instant::now();
    let child = s.spawn_sluice(&["run", "sluice.toml"]);
    s.wait_for_state("copy", "watching");
    // Validate probed once; let a watch check pass too.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(s.step_state("copy"), "watching", "no breach yet");
    let healthy_probes = server.requests.load(Ordering::SeqCst);
    assert!(
        healthy_probes >= 2,
        "validate and a watch check probed: {healthy_probes}"
    );
    let request = server.last_request.lock().unwrap().clone();
    assert!(request.starts_with("GET /health HTTP/1.1\r\n"), "{request}");
    assert!(
        request
            .to_ascii_lowercase()
            .contains("user-agent: sluice-probe/0.1.0\r\n"),
        "{request}"
    );

    // The service breaks.
    server.status.store(500, Ordering::SeqCst);
    let breached_at = time::OffsetDateTime::now_utc();

    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("breached: threshold `health == 1` not met"),
        "{stdout}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the window ran to its end instead of breaching"
    );

    // Rolled back within about one interval (1 s) plus the check's time.
    let (rolled_at, detail) = s.entered("copy", "rolling-back");
    let lag = rolled_at - breached_at;
    assert!(
        lag <= time::Duration::milliseconds(2500),
        "rollback began {lag} after the service broke"
    );
    println!("rolling-back detail: {detail}");
    // The journal's metric says what the probe saw.
    let report = s.sluice(&["report", "sluice.toml", "--format", "json"]);
    assert_eq!(report.code, 0, "{}", report.all());
    assert!(
        report.stdout.contains("probe `api`: status 500"),
        "{}",
        report.stdout
    );
    assert_eq!(s.step_state("copy"), "rolled-back");
    assert_eq!(s.state("shop.db"), before);
    sluice_e2e::report(
        "probes.txt",
        &format!(
            "probe watch: rollback began {} ms after the health endpoint turned 500 (check every 1 s)",
            lag.whole_milliseconds()
        ),
    );
}

#[test]
fn a_server_that_is_down_measures_unhealthy_and_rolls_back() {
    // A port nothing listens on: bound, then closed.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = Scenario::new();
    seed(&s);
    let before = s.state("shop.db");
    plan(
        &s,
        &format!("api = {{ url = \"http://127.0.0.1:{port}/health\", timeout_ms = 2000 }}"),
        "probes = [\"api\"]\nthresholds = [\"health == 1\"]",
        HEALTH_METRIC,
    );
    let out = s.run("sluice.toml");
    assert_eq!(out.code, 1, "{}", out.all());
    // A threshold not met (health = 0), not a validate error.
    assert!(
        out.stdout.contains("threshold `health == 1` not met"),
        "{}",
        out.all()
    );
    let report = s.sluice(&["report", "sluice.toml", "--format", "json"]);
    assert!(
        report
            .stdout
            .contains("probe `api` got no answer (connect)"),
        "{}",
        report.stdout
    );
    assert_eq!(s.step_state("copy"), "rolled-back");
    assert_eq!(s.state("shop.db"), before);
}

#[test]
fn a_probe_by_hostname_resolving_to_loopback_works() {
    let server = HealthServer::start(200);
    let s = Scenario::new();
    seed(&s);
    plan(
        &s,
        &format!("api = \"http://localhost:{}/ready?deep=1\"", server.port),
        "probes = [\"api\"]\nthresholds = [\"health == 1\", \"code == 200\", \"ms < 5000\"]",
        &format!(
            "{HEALTH_METRIC}\n[[steps.params.metrics]]\nname = \"code\"\nprobe = {{ name = \"api\", measure = \"status\" }}\n\n[[steps.params.metrics]]\nname = \"ms\"\nprobe = {{ name = \"api\", measure = \"latency_ms\" }}\n"
        ),
    );
    // The reviewer sees the probe; the lock records it.
    let audit = s.sluice(&["audit", "sluice.toml"]);
    let url = format!("http://localhost:{}/ready?deep=1", server.port);
    assert!(
        audit.stdout.contains(&format!(
            "granted:   probe `api`: GET {url} (timeout 5000 ms)"
        )),
        "{}",
        audit.stdout
    );
    assert!(
        audit.stdout.contains("named HTTP GET probes"),
        "{}",
        audit.stdout
    );
    assert!(
        !audit.stdout.contains("RISKY:     probe"),
        "{}",
        audit.stdout
    );
    let out = s.run("sluice.toml");
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(s.step_state("copy"), "completed");
    assert!(server.requests.load(Ordering::SeqCst) >= 3);
    let lock = s.read("sluice.lock");
    assert!(lock.contains(&url), "{lock}");

    // Another URL for the same probe name is a grant change: refused until
    // reviewed.
    let plan_text = s.read("sluice.toml");
    s.write("sluice.toml", &plan_text.replace("/ready?deep=1", "/other"));
    let run = s.sluice(&["run", "sluice.toml"]);
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(
        run.stderr
            .contains("+ step copy: probe api = GET http://localhost:"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_metric_naming_an_ungranted_probe_is_a_plan_error() {
    let server = HealthServer::start(200);
    let s = Scenario::new();
    seed(&s);
    let before = s.state("shop.db");
    plan(
        &s,
        &format!(
            "api = \"http://127.0.0.1:{0}/health\"\nadmin = \"http://127.0.0.1:{0}/admin\"",
            server.port
        ),
        "probes = [\"api\"]\nthresholds = [\"health == 1\"]",
        "[[steps.params.metrics]]\nname = \"health\"\nprobe = { name = \"admin\" }\n",
    );
    let check = s.sluice(&["check", "sluice.toml"]);
    assert_eq!(check.code, 2, "{}", check.all());
    assert!(
        check
            .stderr
            .contains("metric `health` probes `admin`, which this step is not granted"),
        "{}",
        check.stderr
    );
    assert!(check.stderr.contains("granted: api"), "{}", check.stderr);
    s.sluice(&["audit", "--accept", "sluice.toml"]);
    let run = s.sluice(&["run", "sluice.toml"]);
    assert_ne!(run.code, 0, "{}", run.all());
    assert!(run.stderr.contains("probes `admin`"), "{}", run.all());
    assert_eq!(s.state("shop.db"), before, "nothing ran");
    assert_eq!(
        server.requests.load(Ordering::SeqCst),
        0,
        "nothing was probed"
    );

    // A grant naming a probe the plan does not define: a plan error at the
    // grant.
    plan(
        &s,
        &format!("api = \"http://127.0.0.1:{}/health\"", server.port),
        "probes = [\"api\", \"nope\"]",
        "",
    );
    let check = s.sluice(&["check", "sluice.toml"]);
    assert_eq!(check.code, 2, "{}", check.all());
    assert!(
        check.stderr.contains(
            "sluice.toml:19:18: step `copy` is granted probe `nope`, which the plan does not define in [probes]; defined: api"
        ),
        "{}",
        check.stderr
    );
}

#[test]
fn probes_beyond_loopback_or_over_https_are_plan_errors() {
    let s = Scenario::new();
    seed(&s);
    for (probes, message) in [
        (
            "x = \"http://10.1.2.3/health\"",
            "sluice.toml:5:5: probe `x`: host `10.1.2.3:80` is not loopback (127.0.0.0/8, ::1, localhost); a probe reaches another host only if the plan lists it: [plan] probe_hosts = [\"10.1.2.3:80\"]",
        ),
        (
            "x = \"https://127.0.0.1/health\"",
            "sluice.toml:5:5: probe `x`: https is not supported yet",
        ),
        (
            "x = \"http://user:secret@127.0.0.1/health\"",
            "probe `x`: a probe URL cannot carry credentials",
        ),
        (
            "x = { url = \"http://127.0.0.1/health\", method = \"POST\" }",
            "probe `x`: unknown key `method`",
        ),
    ] {
        plan(&s, probes, "probes = [\"x\"]", "");
        let check = s.sluice(&["check", "sluice.toml"]);
        assert_eq!(check.code, 2, "{probes}: {}", check.all());
        assert!(check.stderr.contains(message), "{probes}: {}", check.stderr);
    }

    // Allowlisted: the plan loads (nothing is sent while checking), and the
    // audit marks the grant as one to look at twice.
    let text = format!(
        "[plan]\nprobe_hosts = [\"10.1.2.3:80\"]\n\n{}",
        s.read("sluice.toml")
            .replace("[plan]\nname = \"probes\"\n", "")
    )
    .replace(
        "x = { url = \"http://127.0.0.1/health\", method = \"POST\" }",
        "x = \"http://10.1.2.3/health\"",
    );
    s.write("sluice.toml", &text);
    let check = s.sluice(&["check", "sluice.toml"]);
    assert_eq!(check.code, 0, "{}", check.all());
    let audit = s.sluice(&["audit", "sluice.toml"]);
    assert!(
        audit.stdout.contains(
            "RISKY:     probe `x` reaches `10.1.2.3:80` beyond loopback (allowlisted in [plan] probe_hosts)"
        ),
        "{}",
        audit.stdout
    );

    // A malformed allowlist entry, at its location.
    s.write(
        "sluice.toml",
        &text.replace("\"10.1.2.3:80\"]", "\"10.1.2.3\"]"),
    );
    let check = s.sluice(&["check", "sluice.toml"]);
    assert_eq!(check.code, 2, "{}", check.all());
    assert!(
        check
            .stderr
            .contains("sluice.toml:2:17: probe_hosts entry `10.1.2.3` is not `host:port`"),
        "{}",
        check.stderr
    );
}

#[test]
fn a_redis_step_whose_service_answers_503_is_rolled_back() {
    use sluice_e2e::services::redis_scratch;
    let server = HealthServer::start(503);
    let db = redis_scratch();
    let s = Scenario::new();
    s.write(
        "sluice.toml",
        &format!(
            r#"[values]
cache_url = "{url}"

[probes]
api = "http://127.0.0.1:{port}/health"

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
probes = ["api"]
thresholds = ["health == 1", "code == 503"]

[steps.params]
prefixes = ["flags:"]
ops = [{{ op = "set", key = "flags:v2", value = "on" }}]

[[steps.params.metrics]]
name = "health"
probe = {{ name = "api" }}

[[steps.params.metrics]]
name = "code"
probe = {{ name = "api", measure = "status" }}
"#,
            url = db.url,
            port = server.port,
            plugin = plugin("redis.wasm").display(),
        ),
    );
    let out = s.run("sluice.toml");
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stdout.contains("threshold `health == 1` not met"),
        "{}",
        out.all()
    );
    assert!(out.stdout.contains("metric code = 503"), "{}", out.stdout);
    assert_eq!(s.step_state("flags"), "rolled-back");
    let exists: bool = redis::cmd("EXISTS")
        .arg("flags:v2")
        .query(&mut db.conn())
        .unwrap();
    assert!(!exists, "the key the step set was removed by its rollback");
    assert!(server.requests.load(Ordering::SeqCst) >= 2);
}
