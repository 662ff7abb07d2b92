//! `cargo xtask example <name> [--fail] [--approve]`: one command per field
//! runbook example under `examples/<name>/`.
//!
//! For a PostgreSQL example it builds sluice and the plugins, starts the
//! private services ([`crate::services`]), creates a database, loads the
//! example's `seed.sql` (and `fail.sql` with `--fail`, the failure variant),
//! exports `DATABASE_URL` (the plan's `[values] db_url`), then runs
//! `sluice audit --accept`, `sluice rehearse`, `sluice run` — approving each
//! step the run pauses at only when the user passed `--approve` — and writes
//! `sluice report --format html`, printing its path. The services (and the
//! database) are gone when it returns: it is a demonstration, not a deploy.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Examples whose plan targets PostgreSQL through `DATABASE_URL`.
const PG_EXAMPLES: &[&str] = &[
    "001-spanish-schema",
    "002-vacuum-index-tuning",
    "003-clients-to-jsonb",
];

/// The `example` command: `args` are what follows `example`.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let name = args.first().map(String::as_str).unwrap_or_default();
    let flags = &args[args.len().min(1)..];
    for flag in flags {
        if flag != "--fail" && flag != "--approve" {
            bail!("example {name}: unknown option `{flag}` (expected --fail or --approve)");
        }
    }
    let fail = flags.iter().any(|f| f == "--fail");
    let approve = flags.iter().any(|f| f == "--approve");
    if PG_EXAMPLES.contains(&name) {
        return run_pg(root, name, fail, approve);
    }
    if let Some(ex) = REDIS_EXAMPLES.iter().find(|e| e.name == name) {
        return run_redis(root, ex, fail);
    }
    if name == "custom-plugin" {
        return run_custom_plugin(root);
    }
    bail!(
        "usage: cargo xtask example <name> [--fail] [--approve]\n\
         PostgreSQL examples: {}\n\
         PostgreSQL + Redis examples: {}\n\
         SQLite, a plugin written from outside: custom-plugin",
        PG_EXAMPLES.join(", "),
        REDIS_EXAMPLES
            .iter()
            .map(|e| e.name)
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// `examples/custom-plugin`: a plugin built from outside the workspace, on
/// a SQLite file made from its seed: conformance, then the plan.
fn run_custom_plugin(root: &Path) -> Result<()> {
    let built = crate::build(root)?;
    let example = root.join("examples/custom-plugin");
    let db = example.join("coaching.db");
    for stale in [
        "coaching.db",
        "coaching.db-wal",
        "coaching.db-shm",
        "sluice.lock",
    ] {
        let _ = std::fs::remove_file(example.join(stale));
    }
    let _ = std::fs::remove_dir_all(example.join(".sluice"));
    let seed = std::fs::read_to_string(example.join("seed.sql"))?;
    rusqlite::Connection::open(&db)?.execute_batch(&seed)?;
    println!("\n== created {} from seed.sql\n", db.display());
    let plugin = root.join("target/plugins/custom-drawers.wasm");
    println!("== sluice conformance (the plugin's contract, on a scratch copy of the seed)\n");
    crate::run_cmd(
        Command::new(&built.sluice)
            .arg("conformance")
            .arg(&plugin)
            .args(["--target", "sqlite", "--fixture"])
            .arg(example.join("seed.sql"))
            .arg("--params-file")
            .arg(example.join("params.json")),
    )?;
    let plan = example.join("sluice.toml");
    for args in [&["audit", "--accept"][..], &["run"], &["status"]] {
        println!(
            "\n== sluice {} examples/custom-plugin/sluice.toml\n",
            args.join(" ")
        );
        crate::run_cmd(Command::new(&built.sluice).args(args).arg(&plan))?;
    }
    Ok(())
}

/// What every example run starts from: sluice and the plugins built, the
/// example's plan, and a fresh output directory.
struct Prepared {
    built: crate::Built,
    example: PathBuf,
    plan: PathBuf,
    out: PathBuf,
}

/// Builds, and clears the example's journal, lock and last output: each run
/// starts on new databases, so old state would only be drift.
fn prepare(root: &Path, name: &str) -> Result<Prepared> {
    let built = crate::build(root)?;
    let example = root.join("examples").join(name);
    let plan = example.join("sluice.toml");
    let out = root.join("target/examples").join(name);
    let _ = std::fs::remove_dir_all(example.join(".sluice"));
    let _ = std::fs::remove_file(example.join("sluice.lock"));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    Ok(Prepared {
        built,
        example,
        plan,
        out,
    })
}

/// Creates the example's database on the private PostgreSQL, loads `seeds`
/// (files of the example directory) into it, and returns its URL.
fn seeded_database(
    services: &crate::services::Services,
    name: &str,
    example: &Path,
    seeds: &[&str],
) -> Result<String> {
    let admin = services.pg_url();
    let db = format!("example_{}", name.replace('-', "_"));
    let psql = psql()?;
    crate::run_cmd(Command::new(&psql).args([
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        &admin,
        "-c",
        &format!("CREATE DATABASE {db}"),
    ]))?;
    let (server, _) = admin
        .rsplit_once('/')
        .context("the services' PostgreSQL URL has no database")?;
    let url = format!("{server}/{db}");
    for seed in seeds {
        println!("\n== loading {name}/{seed} into database {db}");
        crate::run_cmd(
            Command::new(&psql)
                .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", &url])
                .arg("-f")
                .arg(example.join(seed)),
        )?;
    }
    Ok(url)
}

fn run_pg(root: &Path, name: &str, fail: bool, approve: bool) -> Result<()> {
    let Prepared {
        built,
        example,
        plan,
        out,
    } = prepare(root, name)?;
    let services = crate::services::start()?;
    let seeds: &[&str] = if fail {
        &["seed.sql", "fail.sql"]
    } else {
        &["seed.sql"]
    };
    let url = seeded_database(&services, name, &example, seeds)?;

    let sluice = |args: &[&str]| {
        let mut cmd = Command::new(&built.sluice);
        cmd.args(args).env("DATABASE_URL", &url);
        cmd
    };
    let plan_arg = plan.to_str().context("plan path is not UTF-8")?;
    println!("\n== sluice audit --accept   (a reviewer accepts what each plugin may touch)\n");
    crate::run_cmd(&mut sluice(&["audit", "--accept", plan_arg]))?;

    let rehearsal = out.join("rehearsal");
    println!("\n== sluice rehearse   (the whole plan on a scratch copy, rolled back and proven)\n");
    let rehearsed = sluice(&["rehearse", plan_arg, "--output", path_str(&rehearsal)?])
        .status()?
        .code();
    println!(
        "(rehearsal exit {}; staging report: {})",
        rehearsed.unwrap_or(-1),
        rehearsal.join("rehearsal.md").display()
    );

    let mut code;
    loop {
        println!("\n== sluice run {}\n", plan.display());
        let output = sluice(&["run", plan_arg]).output()?;
        print!("{}", String::from_utf8_lossy(&output.stdout));
        code = output.status.code().unwrap_or(-1);
        if code != 5 {
            break;
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let step = stdout
            .split("PAUSED at step `")
            .nth(1)
            .and_then(|rest| rest.split('`').next())
            .context("the run paused (exit 5) but did not say at which step")?
            .to_string();
        if !approve {
            println!(
                "\n(paused before/after step `{step}` for a decision; run again with --approve \
                 to approve it as the operator)"
            );
            break;
        }
        println!("\n== sluice approve {name} {step}   (--approve: you are the approver)\n");
        crate::run_cmd(&mut sluice(&[
            "approve",
            plan_arg,
            &step,
            "--by",
            "cargo-xtask-example",
            "--reason",
            "approved with cargo xtask example --approve",
        ]))?;
    }

    let report = out.join("report.html");
    crate::run_cmd(&mut sluice(&[
        "report",
        plan_arg,
        "--format",
        "html",
        "--output",
        path_str(&report)?,
    ]))?;
    println!("\n== report: {}", report.display());
    drop(services);

    let expected = if fail {
        1
    } else if approve {
        0
    } else {
        // Every PostgreSQL example has an approval point.
        5
    };
    if code != expected {
        bail!("example {name}: `sluice run` exited {code}, expected {expected}");
    }
    if fail {
        println!("(exit 1: the forced failure was rolled back, as this variant intends)");
    }
    Ok(())
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

/// `psql` from the PATH or from the server's own bin directory (Debian's
/// `postgresql` package, which `services::start` installs when missing).
fn psql() -> Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("psql"))
        .find(|p| p.is_file());
    if let Some(psql) = on_path {
        return Ok(psql);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin/psql"))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found
        .pop()
        .context("psql is not installed: install the Debian package `postgresql-client`")
}

/// An example whose plan targets PostgreSQL (`DATABASE_URL`) and Redis
/// (`REDIS_URL`) and probes a service's health: its name, the Redis database
/// number it seeds, the loopback port its `[probes]` name, and the request
/// paths the stand-in service answers 500 for under `--fail`.
struct RedisExample {
    name: &'static str,
    redis_db: u32,
    probe_port: u16,
    failing_paths: &'static [&'static str],
    /// Under `--fail`: once this Redis key holds this value (a step has
    /// applied it), the stand-in app starts failing: xtask loads the
    /// example's `fail-redis.txt` half a second later, inside the step's
    /// watch window.
    fail_when: Option<(&'static str, &'static str)>,
    /// After the run: `sluice rollback --to <step>`, then `sluice rollback`
    /// (after a failed run, only the total rollback).
    rollback_to: Option<&'static str>,
}

/// Examples whose plans target PostgreSQL and Redis.
const REDIS_EXAMPLES: &[RedisExample] = &[
    RedisExample {
        name: "000-v2-table-and-flag-rollout",
        redis_db: 10,
        probe_port: 18000,
        failing_paths: &[],
        fail_when: Some(("flags:optimizations:rollout_percentage", "50")),
        rollback_to: None,
    },
    RedisExample {
        name: "004-pg-redis-health",
        redis_db: 4,
        probe_port: 18004,
        failing_paths: &["/analytics/"],
        fail_when: None,
        rollback_to: Some("metadata-table"),
    },
];

/// Runs a [`RedisExample`]: services, seed data (`seed.sql`,
/// `seed-redis.txt`), the stand-in health endpoint, `sluice audit --accept`,
/// `sluice run`, the report, then the rollbacks the README describes.
fn run_redis(root: &Path, ex: &RedisExample, fail: bool) -> Result<()> {
    let name = ex.name;
    let Prepared {
        built,
        example,
        plan,
        out,
    } = prepare(root, name)?;

    // Bound before anything slow starts, so a busy port fails fast.
    let health = std::net::TcpListener::bind(("127.0.0.1", ex.probe_port)).with_context(|| {
        format!(
            "the stand-in health endpoint needs 127.0.0.1:{}, which is in use",
            ex.probe_port
        )
    })?;
    let failing: Vec<String> = if fail {
        ex.failing_paths.iter().map(|p| p.to_string()).collect()
    } else {
        Vec::new()
    };
    std::thread::spawn(move || serve_health(health, &failing));
    println!(
        "\n== stand-in service on http://127.0.0.1:{} ({})",
        ex.probe_port,
        if fail {
            format!("answers 500 under {}", ex.failing_paths.join(", "))
        } else {
            "answers 200".to_string()
        }
    );

    let services = crate::services::start()?;
    let db_url = seeded_database(&services, name, &example, &["seed.sql"])?;
    let redis_url = format!("{}/{}", services.redis_url(), ex.redis_db);
    println!(
        "\n== loading {name}/seed-redis.txt into Redis database {}",
        ex.redis_db
    );
    let mut redis = Resp::connect(&services.redis_url(), ex.redis_db)?;
    redis.call(&["FLUSHDB"])?;
    redis.load(&example.join("seed-redis.txt"))?;
    if let (Some((key, value)), true) = (ex.fail_when, fail) {
        let fail_file = example.join("fail-redis.txt");
        let (base, db) = (services.redis_url(), ex.redis_db);
        println!(
            "(--fail: the app starts failing once `{key}` is {value}: {})",
            fail_file.display()
        );
        std::thread::spawn(move || -> Result<()> {
            let mut redis = Resp::connect(&base, db)?;
            while redis.call(&["GET", key])?.as_deref() != Some(value) {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
            redis.load(&fail_file)?;
            println!(
                "\n(--fail: `{key}` is {value}; loaded {})\n",
                fail_file.display()
            );
            Ok(())
        });
    }

    let sluice = |args: &[&str]| {
        let mut cmd = Command::new(&built.sluice);
        cmd.args(args)
            .env("DATABASE_URL", &db_url)
            .env("REDIS_URL", &redis_url);
        cmd
    };
    let plan_arg = path_str(&plan)?;
    println!("\n== sluice audit --accept   (a reviewer accepts what each plugin may touch)\n");
    crate::run_cmd(&mut sluice(&["audit", "--accept", plan_arg]))?;
    println!("\n== sluice run {}\n", plan.display());
    let code = sluice(&["run", plan_arg]).status()?.code().unwrap_or(-1);
    let report = out.join("report.md");
    crate::run_cmd(&mut sluice(&[
        "report",
        plan_arg,
        "--format",
        "md",
        "--output",
        path_str(&report)?,
    ]))?;
    println!("\n== report of the run: {}", report.display());
    let expected = if fail { 1 } else { 0 };
    if code != expected {
        bail!("example {name}: `sluice run` exited {code}, expected {expected}");
    }
    if fail {
        println!("(exit 1: the forced failure was rolled back, as this variant intends)");
    }

    if let (Some(step), false) = (ex.rollback_to, fail) {
        println!(
            "\n== sluice rollback --to {step}   (selective: keep {step} and the steps before it)\n"
        );
        crate::run_cmd(&mut sluice(&["rollback", plan_arg, "--to", step]))?;
    }
    println!("\n== sluice rollback   (total: every step still applied)\n");
    crate::run_cmd(&mut sluice(&["rollback", plan_arg]))?;
    println!("\n== sluice status\n");
    crate::run_cmd(&mut sluice(&["status", plan_arg]))?;
    drop(services);
    Ok(())
}

/// The stand-in for the operator's service: answers every request with 200,
/// or 500 when its path contains one of `failing`. Runs until xtask exits.
fn serve_health(listener: std::net::TcpListener, failing: &[String]) {
    use std::io::{Read, Write};
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let request = String::from_utf8_lossy(&request);
        let path = request.split(' ').nth(1).unwrap_or("");
        let (code, body) = if failing.iter().any(|f| path.contains(f.as_str())) {
            (500, "down")
        } else {
            (200, "ok")
        };
        let _ = write!(
            stream,
            "HTTP/1.1 {code} Status\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        );
    }
}

/// A Redis connection speaking RESP itself: xtask has no Redis client, and
/// `redis-cli` is not always installed with the server.
struct Resp {
    reader: std::io::BufReader<std::net::TcpStream>,
    writer: std::net::TcpStream,
}

impl Resp {
    /// Connects to `url` (`redis://host:port`) and selects database `db`.
    fn connect(url: &str, db: u32) -> Result<Resp> {
        let addr = url
            .strip_prefix("redis://")
            .with_context(|| format!("`{url}` is not a redis:// URL"))?;
        let writer = std::net::TcpStream::connect(addr)
            .with_context(|| format!("connecting to Redis at {addr}"))?;
        let mut resp = Resp {
            reader: std::io::BufReader::new(writer.try_clone()?),
            writer,
        };
        resp.call(&["SELECT", &db.to_string()])?;
        Ok(resp)
    }

    /// Sends one command; returns a string or bulk reply (`None` for nil
    /// and integers), fails on an error reply.
    fn call(&mut self, words: &[&str]) -> Result<Option<String>> {
        use std::io::{BufRead, Read, Write};
        let mut frame = format!("*{}\r\n", words.len());
        for w in words {
            frame.push_str(&format!("${}\r\n{w}\r\n", w.len()));
        }
        self.writer.write_all(frame.as_bytes())?;
        let mut reply = String::new();
        self.reader.read_line(&mut reply)?;
        let reply = reply.trim_end();
        match reply.split_at(reply.len().min(1)) {
            ("+", text) => Ok(Some(text.to_string())),
            (":", _) => Ok(None),
            ("$", "-1") => Ok(None),
            ("$", len) => {
                let len: usize = len
                    .parse()
                    .with_context(|| format!("Redis sent a bad bulk length `{len}`"))?;
                let mut payload = vec![0; len + 2];
                self.reader.read_exact(&mut payload)?;
                payload.truncate(len);
                Ok(Some(String::from_utf8_lossy(&payload).into_owned()))
            }
            _ => bail!("Redis answered `{reply}` to `{}`", words.join(" ")),
        }
    }

    /// Runs a `seed-redis.txt`-style file: one command a line, words split
    /// on spaces, `#` comments.
    fn load(&mut self, file: &Path) -> Result<()> {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        for (n, line) in text.lines().enumerate() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.is_empty() || words[0].starts_with('#') {
                continue;
            }
            self.call(&words)
                .with_context(|| format!("{}:{}", file.display(), n + 1))?;
        }
        Ok(())
    }
}
