//! `cargo xtask bench` (sqitch part): a generated sqitch project of
//! `CHANGES` changes (each a table with rows, a verify and a revert),
//! deployed + verified and then reverted by sluice (the `sluice` binary,
//! the sqitch plugin, one step per change: backup, deploy, verify as
//! validate; `sluice rollback`: revert with the host's proof) and by
//! Debian's `sqitch` (`deploy --verify`, `revert -y`), each on its own
//! fresh scratch database. Rounds are interleaved; the medians and the
//! `sluice/sqitch` time ratios are printed (target: ≤ 0.3× sqitch's time).
//!
//! sqitch's path comes from `SLUICE_SQITCH` (`cargo xtask bench` installs
//! it), else `sqitch` on the PATH.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sluice_e2e::services::{pg_scratch, PgScratch};
use sluice_e2e::{plugin, sluice_bin, Scenario};

const CHANGES: usize = 50;
const ROWS: usize = 1_000;
const ROUNDS: usize = 3;

fn main() {
    let sqitch = sqitch_bin();
    let project = tempfile::tempdir().unwrap();
    generate(project.path());
    println!(
        "sqitch bench: {CHANGES} changes of {ROWS} rows each, sluice {} vs {}",
        sluice_bin().display(),
        sqitch.display()
    );
    let mut times: [Vec<Duration>; 4] = Default::default();
    for round in 1..=ROUNDS {
        let (deploy, revert) = sluice_round();
        times[0].push(deploy);
        times[1].push(revert);
        let (deploy, revert) = sqitch_round(&sqitch, project.path());
        times[2].push(deploy);
        times[3].push(revert);
        println!(
            "round {round}: sluice {:.2}s + {:.2}s, sqitch {:.2}s + {:.2}s (deploy+verify + revert)",
            times[0][round - 1].as_secs_f64(),
            times[1][round - 1].as_secs_f64(),
            times[2][round - 1].as_secs_f64(),
            times[3][round - 1].as_secs_f64()
        );
    }
    let [sluice_deploy, sluice_revert, sqitch_deploy, sqitch_revert] =
        times.map(|mut t| median(&mut t));
    println!(
        "sqitch project of {CHANGES} changes: deploy+verify sluice {:.2}s, sqitch {:.2}s; revert sluice {:.2}s, sqitch {:.2}s (medians of {ROUNDS})",
        sluice_deploy.as_secs_f64(),
        sqitch_deploy.as_secs_f64(),
        sluice_revert.as_secs_f64(),
        sqitch_revert.as_secs_f64()
    );
    println!(
        "RATIO sluice/sqitch time, deploy+verify: {:.2}x (target <= 0.3)",
        sluice_deploy.as_secs_f64() / sqitch_deploy.as_secs_f64()
    );
    println!(
        "RATIO sluice/sqitch time, revert: {:.2}x (target <= 0.3)",
        sluice_revert.as_secs_f64() / sqitch_revert.as_secs_f64()
    );
}

/// The project: `c01` … `cNN`, each requiring the one before, its own table.
fn generate(dir: &Path) {
    for sub in ["deploy", "verify", "revert"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(
        dir.join("sqitch.conf"),
        "[core]\n\tengine = pg\n\ttop_dir = .\n\tplan_file = sqitch.plan\n",
    )
    .unwrap();
    let mut plan = String::from("%syntax-version=1.0.0\n%project=bench\n\n");
    for i in 1..=CHANGES {
        let name = format!("c{i:02}");
        let requires = if i > 1 {
            format!("[c{:02}] ", i - 1)
        } else {
            String::new()
        };
        plan.push_str(&format!(
            "{name} {requires}2024-01-01T{:02}:{:02}:00Z Bench <bench@example.org> # change {i}\n",
            i / 60,
            i % 60
        ));
        let table = format!("t{i:02}");
        std::fs::write(
            dir.join(format!("deploy/{name}.sql")),
            format!(
                "-- Deploy bench:{name}\nBEGIN;\nCREATE TABLE {table} (id bigint PRIMARY KEY, name text NOT NULL, created timestamptz NOT NULL DEFAULT now());\nINSERT INTO {table} (id, name) SELECT g, 'row ' || g FROM generate_series(1, {ROWS}) g;\nCOMMIT;\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("verify/{name}.sql")),
            format!("-- Verify bench:{name}\nBEGIN;\nSELECT id, name, created FROM {table} WHERE false;\nROLLBACK;\n"),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("revert/{name}.sql")),
            format!("-- Revert bench:{name}\nBEGIN;\nDROP TABLE {table};\nCOMMIT;\n"),
        )
        .unwrap();
    }
    std::fs::write(dir.join("sqitch.plan"), plan).unwrap();
}

/// One sluice round on a fresh database: `run` (backup, deploy, verify per
/// change) then `rollback` (every change reverted, proven).
fn sluice_round() -> (Duration, Duration) {
    let db = pg_scratch();
    let scenario = Scenario::new();
    // The same generated project, granted from inside the plan's folder.
    generate(&scenario.path().join("bench"));
    let mut steps = String::new();
    for i in 1..=CHANGES {
        steps.push_str(&format!(
            "\n[[steps]]\nid = \"c{i:02}\"\nplugin = \"sqitch\"\ntarget = \"app\"\naccess = \"read-write\"\nfiles = [{{ name = \"bench\", path = \"bench\", access = \"read-only\" }}]\nthresholds = [\"verified == 1\"]\nparams = {{ project = \"bench\", change = \"c{i:02}\" }}\n"
        ));
    }
    scenario.write(
        "sluice.toml",
        &format!(
            "[values]\ndb = {{ env = \"APP_PG_URL\" }}\n\n[targets.app]\nkind = \"postgres\"\nconnection = \"db\"\n\n[plugins.sqitch]\npath = \"{}\"\n{steps}",
            plugin("sqitch.wasm").display()
        ),
    );
    let sluice = |args: &[&str]| {
        let started = Instant::now();
        let out = scenario.sluice_with(&sluice_bin(), args, &[("APP_PG_URL", &db.url)]);
        assert_eq!(out.code, 0, "sluice {args:?}: {}", out.all());
        started.elapsed()
    };
    sluice(&["audit", "--accept", "sluice.toml"]);
    let deploy = sluice(&["run", "sluice.toml"]);
    assert_eq!(
        deployed(&db),
        CHANGES as i64,
        "sluice deployed every change"
    );
    let revert = sluice(&["rollback", "sluice.toml"]);
    assert_eq!(tables(&db), 0, "sluice reverted every change");
    (deploy, revert)
}

/// One sqitch round on a fresh database: `deploy --verify` then `revert -y`.
fn sqitch_round(sqitch: &Path, project: &Path) -> (Duration, Duration) {
    let db = pg_scratch();
    let target = format!("db:pg://{}", db.url.split_once("://").unwrap().1);
    let run = |args: &[&str]| {
        let started = Instant::now();
        let out = Command::new(sqitch)
            .args(args)
            .arg(&target)
            .current_dir(project)
            .env("SQITCH_FULLNAME", "Bench")
            .env("SQITCH_EMAIL", "bench@example.org")
            .env("SQITCH_USER_CONFIG", project.join("no-user.conf"))
            .env("SQITCH_SYSTEM_CONFIG", project.join("no-system.conf"))
            .output()
            .expect("running sqitch");
        let elapsed = started.elapsed();
        assert!(
            out.status.success(),
            "sqitch {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        elapsed
    };
    let deploy = run(&["deploy", "--verify"]);
    assert_eq!(
        deployed(&db),
        CHANGES as i64,
        "sqitch deployed every change"
    );
    let revert = run(&["revert", "-y"]);
    assert_eq!(tables(&db), 0, "sqitch reverted every change");
    (deploy, revert)
}

fn deployed(db: &PgScratch) -> i64 {
    db.client()
        .query_one("SELECT count(*) FROM sqitch.changes", &[])
        .unwrap()
        .get(0)
}

fn tables(db: &PgScratch) -> i64 {
    db.client()
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
            &[],
        )
        .unwrap()
        .get(0)
}

/// sqitch: `SLUICE_SQITCH`, else `sqitch` on the PATH.
fn sqitch_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("SLUICE_SQITCH") {
        return path.into();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("sqitch"))
        .find(|p| p.is_file())
        .expect("sqitch is missing: `cargo xtask bench` installs Debian's `sqitch` and sets SLUICE_SQITCH")
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}
