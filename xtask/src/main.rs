//! Build and test orchestration: `cargo xtask build | demo | test | bench |
//! services`.
//!
//! A fresh machine runs `cargo xtask demo` or `cargo xtask test` and nothing
//! else: this program installs what is missing (the wasm32-wasip2 target via
//! rustup, or the offline Debian toolchain; PostgreSQL and Redis from Debian's
//! packages for the tests), builds host and plugins, and runs.

mod browser;
mod examples;
mod services;
mod sqitch;
mod toolchain;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

fn main() {
    if let Err(e) = run() {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    match args.first().map(String::as_str) {
        Some("build") => build(&root).map(|_| ()),
        Some("demo") => demo(&root),
        Some("example") => examples::run(&root, &args[1..]),
        Some("test") => test(&root, &args[1..]),
        Some("bench") => bench(&root),
        Some("services") => services::serve(),
        Some("chromium") => browser::ensure_chromium().map(|p| println!("{}", p.display())),
        // Internal: started by `services::start` to clean up if xtask dies.
        Some("services-reaper") => services::reap(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n\
                 commands:\n  \
                 build   install the wasm toolchain if missing; build the host and every plugin\n  \
                 demo    build, create a sample SQLite database and run examples/quickstart\n  \
                 example <name> [--fail] [--approve]\n          \
                 run examples/<name> (a field runbook, or custom-plugin) end to end; see its README\n  \
                 test    build, check formatting and lints, start PostgreSQL and Redis, run the\n          \
                 whole test suite\n  \
                 bench   build, run the benchmarks and print ratios against baselines\n  \
                 services\n          \
                 start private PostgreSQL and Redis (installing them if missing), print\n          \
                 the env vars tests read, stop them on Ctrl-C or end of input\n  \
                 chromium\n          \
                 install Chromium if missing (the HTML report test renders in it), print\n          \
                 its path for SLUICE_CHROMIUM"
            );
            bail!("unknown or missing command")
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Runs a command, failing with its command line when it fails.
pub fn run_cmd(cmd: &mut Command) -> Result<()> {
    let line = format!("{cmd:?}");
    eprintln!("xtask: $ {}", line.replace('"', ""));
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {line}"))?;
    if !status.success() {
        bail!("{line} failed with {status}");
    }
    Ok(())
}

fn cargo(root: &Path) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root);
    cmd
}

/// Built artifacts.
struct Built {
    sluice: PathBuf,
}

/// Plugin crates: (crate dir, package name, output path relative to target/plugins).
fn plugin_crates(root: &Path) -> Result<Vec<(PathBuf, String, String)>> {
    let mut out = Vec::new();
    for (dir, prefix) in [("plugins", ""), ("tests/fixtures/plugins", "fixtures/")] {
        let mut entries: Vec<_> = std::fs::read_dir(root.join(dir))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .collect();
        entries.sort();
        for path in entries
            .into_iter()
            .filter(|p| p.join("Cargo.toml").is_file())
        {
            let manifest = std::fs::read_to_string(path.join("Cargo.toml"))?;
            let package = manifest
                .lines()
                .find_map(|l| {
                    l.trim()
                        .strip_prefix("name = ")
                        .map(|n| n.trim_matches('"').to_string())
                })
                .with_context(|| format!("no package name in {}", path.display()))?;
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            out.push((path, package, format!("{prefix}{name}.wasm")));
        }
    }
    Ok(out)
}

/// Plugin crates outside the workspace, built as their authors would build
/// them (their own `Cargo.toml`, lock and profile): (crate dir, artifact
/// stem, output name in target/plugins).
const OUTSIDE_PLUGINS: &[(&str, &str, &str)] = &[(
    "examples/custom-plugin",
    "sluice_example_drawers",
    "custom-drawers.wasm",
)];

/// Target dir of plugin crates outside the workspace: shared by them, by
/// `sluice new plugin`'s crates in the e2e tests, never by the workspace
/// (whose build lock a running `cargo test` holds).
const PLUGIN_CRATES_TARGET: &str = "target/plugin-crates";

fn build(root: &Path) -> Result<Built> {
    let guest = toolchain::ensure(root)?;
    let out_dir = root.join("target/plugins");
    std::fs::create_dir_all(out_dir.join("fixtures"))?;
    for (_, package, out) in plugin_crates(root)? {
        // One cargo invocation per plugin: features are resolved per plugin,
        // so a fixture that reuses a plugin's logic does not get its exports.
        let mut cmd = guest.cargo(root);
        cmd.args([
            "build",
            "--quiet",
            "--profile",
            "plugin",
            "--target",
            "wasm32-wasip2",
            "-p",
            &package,
        ]);
        run_cmd(&mut cmd)?;
        let artifact = root
            .join("target/wasm32-wasip2/plugin")
            .join(format!("{}.wasm", package.replace('-', "_")));
        std::fs::copy(&artifact, out_dir.join(&out))
            .with_context(|| format!("copying {}", artifact.display()))?;
        eprintln!("xtask: plugin {package} → target/plugins/{out}");
    }
    for (dir, stem, out) in OUTSIDE_PLUGINS {
        let mut cmd = guest.cargo(&root.join(dir));
        cmd.args(["build", "--quiet", "--release", "--target", "wasm32-wasip2"])
            .arg("--target-dir")
            .arg(root.join(PLUGIN_CRATES_TARGET));
        run_cmd(&mut cmd)?;
        let artifact = root
            .join(PLUGIN_CRATES_TARGET)
            .join(format!("wasm32-wasip2/release/{stem}.wasm"));
        std::fs::copy(&artifact, out_dir.join(out))
            .with_context(|| format!("copying {}", artifact.display()))?;
        eprintln!("xtask: plugin {dir} → target/plugins/{out}");
    }
    // A second binary with test-only failpoints, for the crash tests; built
    // first so the operator binary below is the last one linked.
    run_cmd(cargo(root).args([
        "build",
        "--release",
        "-p",
        "sluice",
        "--features",
        "failpoints",
    ]))?;
    std::fs::copy(
        root.join("target/release/sluice"),
        root.join("target/release/sluice-failpoints"),
    )?;
    run_cmd(cargo(root).args(["build", "--release", "-p", "sluice"]))?;
    Ok(Built {
        sluice: root.join("target/release/sluice"),
    })
}

fn demo(root: &Path) -> Result<()> {
    let built = build(root)?;
    let example = root.join("examples/quickstart");
    let db = example.join("shop.db");
    for stale in [
        db.clone(),
        example.join("shop.db-wal"),
        example.join("shop.db-shm"),
    ] {
        let _ = std::fs::remove_file(stale);
    }
    let _ = std::fs::remove_dir_all(example.join(".sluice"));
    let seed = std::fs::read_to_string(example.join("seed.sql"))?;
    rusqlite::Connection::open(&db)?.execute_batch(&seed)?;
    println!(
        "\n== created {} from seed.sql: 1000 customers, 40 legacy contacts\n",
        db.display()
    );

    let plan = example.join("sluice.toml");
    let _ = std::fs::remove_file(example.join("sluice.lock"));
    println!("== sluice audit --accept examples/quickstart/sluice.toml   (a reviewer accepts what each plugin may touch)\n");
    run_cmd(
        Command::new(&built.sluice)
            .arg("audit")
            .arg("--accept")
            .arg(&plan),
    )?;
    println!("\n== sluice run examples/quickstart/sluice.toml\n");
    let status = Command::new(&built.sluice).arg("run").arg(&plan).status()?;
    println!(
        "\n(exit code {}: 1 means a step failed and was rolled back, as this demo intends)\n",
        status.code().unwrap_or(-1)
    );
    println!("== sluice status examples/quickstart/sluice.toml\n");
    run_cmd(Command::new(&built.sluice).arg("status").arg(&plan))?;

    let conn = rusqlite::Connection::open(&db)?;
    let clientes: i64 = conn.query_row("SELECT count(*) FROM clientes", [], |r| r.get(0))?;
    let legacy: i64 = conn.query_row("SELECT count(*) FROM clientes WHERE id > 5000", [], |r| {
        r.get(0)
    })?;
    println!("\n== afterwards: clientes has {clientes} rows, {legacy} of them from the legacy CRM (step 2 was undone)");
    if status.code() != Some(1) || clientes != 1000 || legacy != 0 {
        bail!("the demo did not end as expected: exit {:?}, clientes {clientes}, legacy rows {legacy}", status.code());
    }
    Ok(())
}

fn test(root: &Path, extra: &[String]) -> Result<()> {
    let built = build(root)?;
    run_cmd(cargo(root).args(["fmt", "--all", "--", "--check"]))?;
    run_cmd(cargo(root).args([
        "clippy",
        "--quiet",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // Plugin crates' own unit tests, natively: their `export` feature (the
    // wasm component exports) is what cannot link outside wasm.
    let mut units = cargo(root);
    units.args(["test", "--release", "--no-default-features", "--lib"]);
    let mut any = false;
    for (path, package, _) in plugin_crates(root)? {
        let manifest = std::fs::read_to_string(path.join("Cargo.toml"))?;
        if manifest
            .lines()
            .any(|l| l.trim_start().starts_with("export = ["))
        {
            units.args(["-p", &package]);
            any = true;
        }
    }
    if any {
        run_cmd(&mut units)?;
    }
    // Plugin crates outside the workspace get the same gates: formatting,
    // lints, and their unit tests, natively (they export their component
    // only on wasm32).
    for (dir, _, _) in OUTSIDE_PLUGINS {
        let dir = root.join(dir);
        let target = root.join(PLUGIN_CRATES_TARGET);
        run_cmd(cargo(&dir).args(["fmt", "--", "--check"]))?;
        run_cmd(
            cargo(&dir)
                .args(["clippy", "--quiet", "--all-targets", "--target-dir"])
                .arg(&target)
                .args(["--", "-D", "warnings"]),
        )?;
        run_cmd(
            cargo(&dir)
                .args(["test", "--quiet", "--lib", "--target-dir"])
                .arg(&target),
        )?;
    }
    // Installs PostgreSQL and Redis if missing; stopped when dropped.
    let services = services::start()?;
    // The HTML report test renders in a real headless Chromium.
    let chromium = browser::ensure_chromium()?;
    // The sqitch plugin's side-by-side test runs sqitch itself.
    let sqitch = sqitch::ensure_sqitch()?;
    let mut cmd = cargo(root);
    cmd.args(["test", "--release", "--workspace"]);
    // Plugin crates are wasm components; their native cdylib cannot link.
    for (_, package, _) in plugin_crates(root)? {
        cmd.args(["--exclude", &package]);
    }
    cmd.env("SLUICE_BIN", &built.sluice)
        .env(
            "SLUICE_FAILPOINTS_BIN",
            root.join("target/release/sluice-failpoints"),
        )
        .env("SLUICE_REPORTS", root.join("target/test-reports"))
        .env("SLUICE_PLUGINS", root.join("target/plugins"))
        .env("SLUICE_PLUGIN_CRATES", root.join(PLUGIN_CRATES_TARGET))
        .env(browser::CHROMIUM_ENV, &chromium)
        .env(sqitch::SQITCH_ENV, &sqitch)
        .env("RUST_BACKTRACE", "0")
        .envs(services.env());
    if !extra.is_empty() {
        cmd.arg("--").args(extra);
    }
    let _ = std::fs::remove_dir_all(root.join("target/test-reports"));
    run_cmd(&mut cmd)?;
    // What tests measured (fault points exercised, trial counts).
    if let Ok(entries) = std::fs::read_dir(root.join("target/test-reports")) {
        for entry in entries.flatten() {
            if let Ok(text) = std::fs::read_to_string(entry.path()) {
                eprint!(
                    "xtask: report {}: {text}",
                    entry.file_name().to_string_lossy()
                );
            }
        }
    }
    Ok(())
}

fn bench(root: &Path) -> Result<()> {
    let built = build(root)?;
    let services = services::start()?;
    // The sqitch bench times sqitch itself against the sqitch plugin.
    let sqitch = sqitch::ensure_sqitch()?;
    for bench in ["sluice", "postgres", "redis", "sqitch"] {
        run_cmd(
            cargo(root)
                .args(["bench", "-p", "sluice-e2e", "--bench", bench])
                .envs(services.env())
                .env("SLUICE_BIN", &built.sluice)
                .env("SLUICE_PLUGINS", root.join("target/plugins"))
                .env(sqitch::SQITCH_ENV, &sqitch),
        )?;
    }
    Ok(())
}
