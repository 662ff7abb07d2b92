//! Harness for the end-to-end tests and benchmarks: scenario folders in a
//! temporary directory, the real `sluice` binary, real plugin components,
//! and an independent view of SQLite databases.

pub mod http;
pub mod pg_plan;
pub mod services;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The `sluice` binary built by `cargo xtask`.
pub fn sluice_bin() -> PathBuf {
    let bin = std::env::var_os("SLUICE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/release/sluice"));
    assert!(
        bin.is_file(),
        "{} is missing: run the tests with `cargo xtask test`",
        bin.display()
    );
    bin
}

/// A built plugin component, such as `sqlite.wasm` or `fixtures/panics.wasm`.
pub fn plugin(name: &str) -> PathBuf {
    let dir = std::env::var_os("SLUICE_PLUGINS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/plugins"));
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run the tests with `cargo xtask test`",
        path.display()
    );
    path
}

/// A built plugin as a plan would reference it.
pub fn plugin_ref(name: &str) -> sluice::plan::PluginRef {
    sluice::plan::PluginRef::read(name.trim_end_matches(".wasm"), &plugin(name))
        .expect("reading the plugin")
}

/// The `sluice` binary built with test-only failpoints.
pub fn failpoints_bin() -> PathBuf {
    let bin = std::env::var_os("SLUICE_FAILPOINTS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/release/sluice-failpoints"));
    assert!(
        bin.is_file(),
        "{} is missing: run the tests with `cargo xtask test`",
        bin.display()
    );
    bin
}

/// Writes a line of what a test measured to `target/test-reports/<name>`;
/// `cargo xtask test` prints these after the suite.
pub fn report(name: &str, text: &str) {
    let dir = std::env::var_os("SLUICE_REPORTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/test-reports"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), format!("{text}\n")).unwrap();
}

/// What a `sluice` invocation did.
#[derive(Debug)]
pub struct Outcome {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Outcome {
    /// Everything printed, for assertions on messages.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// A scenario folder: a plan, its SQL files and a database, in a temp dir.
pub struct Scenario {
    dir: tempfile::TempDir,
}

impl Default for Scenario {
    fn default() -> Self {
        Self::new()
    }
}

impl Scenario {
    /// An empty scenario folder.
    pub fn new() -> Self {
        Scenario {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// The quickstart example (plan, SQL, a fresh shop.db from seed.sql), with
    /// its plugin path pointing at the built plugin.
    pub fn quickstart() -> Self {
        let s = Self::new();
        let example = root().join("examples/quickstart");
        for entry in std::fs::read_dir(&example).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "sql" || e == "toml") {
                std::fs::copy(&path, s.path().join(path.file_name().unwrap())).unwrap();
            }
        }
        let plan = s.read("sluice.toml").replace(
            "../../target/plugins/sqlite.wasm",
            &plugin("sqlite.wasm").display().to_string(),
        );
        s.write("sluice.toml", &plan);
        s.seed("shop.db", &s.read("seed.sql"));
        s
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Reads a file of the scenario.
    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path().join(name)).unwrap()
    }

    /// Writes a file of the scenario.
    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path().join(name), text).unwrap();
    }

    /// Creates a database from SQL.
    pub fn seed(&self, db: &str, sql: &str) {
        rusqlite::Connection::open(self.path().join(db))
            .unwrap()
            .execute_batch(sql)
            .unwrap();
    }

    /// Runs `sluice <args…>` in the scenario folder.
    pub fn sluice(&self, args: &[&str]) -> Outcome {
        self.sluice_with(&sluice_bin(), args, &[])
    }

    /// Runs a `sluice` binary with extra environment variables.
    pub fn sluice_with(&self, bin: &Path, args: &[&str], envs: &[(&str, &str)]) -> Outcome {
        let out = Command::new(bin)
            .envs(envs.iter().copied())
            .args(args)
            .current_dir(self.path())
            .env("SLUICE_CACHE_DIR", self.path().join(".cache"))
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("running sluice");
        let outcome = Outcome {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        // Shown when a test fails.
        println!(
            "$ sluice {}\n[exit {}]\n{}\n{}",
            args.join(" "),
            outcome.code,
            outcome.stdout,
            outcome.stderr
        );
        outcome
    }

    /// Accepts the plan's plugins and grants into its lock (as a reviewer
    /// would after `sluice audit`), then runs it.
    pub fn run(&self, plan: &str) -> Outcome {
        let accepted = self.sluice(&["audit", "--accept", plan]);
        assert_eq!(accepted.code, 0, "audit --accept: {}", accepted.all());
        self.sluice(&["run", plan])
    }

    /// Starts `sluice-failpoints <args…>` that hangs at `point`, waits for it
    /// to get there, and SIGKILLs it. Returns false if it ended without
    /// reaching the point.
    pub fn kill_at(&self, args: &[&str], point: &str, envs: &[(&str, &str)]) -> bool {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(failpoints_bin())
            .args(args)
            .current_dir(self.path())
            .env("SLUICE_CACHE_DIR", self.path().join(".cache"))
            .env("SLUICE_FAILPOINT", point)
            .envs(envs.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("starting sluice-failpoints");
        let stderr = child.stderr.take().unwrap();
        let mut reached = false;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("SLUICE-FAILPOINT-HIT") {
                reached = true;
                break;
            }
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        reached
    }

    /// The state of a database as the tests see it.
    pub fn state(&self, db: &str) -> DbState {
        DbState::of(&self.path().join(db))
    }

    /// The step's state in the plan's journal; "" before the journal has
    /// it (safe to call while a run is writing).
    pub fn step_state(&self, step: &str) -> String {
        let journal = self.path().join(".sluice/journal.db");
        let Ok(conn) = rusqlite::Connection::open_with_flags(
            journal,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        ) else {
            return String::new();
        };
        conn.query_row("SELECT state FROM steps WHERE step_id = ?1", [step], |r| {
            r.get(0)
        })
        .unwrap_or_default()
    }

    /// Starts `sluice <args…>` in the background, output piped.
    pub fn spawn_sluice(&self, args: &[&str]) -> std::process::Child {
        Command::new(sluice_bin())
            .args(args)
            .current_dir(self.path())
            .env("SLUICE_CACHE_DIR", self.path().join(".cache"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("starting sluice")
    }

    /// Waits (up to a minute) until `step` is in `state`.
    pub fn wait_for_state(&self, step: &str, state: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while self.step_state(step) != state {
            assert!(
                std::time::Instant::now() < deadline,
                "step `{step}` never reached `{state}` (it is `{}`)",
                self.step_state(step)
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// When `step` last entered `state`, and the detail recorded.
    pub fn entered(&self, step: &str, state: &str) -> (time::OffsetDateTime, String) {
        let conn = rusqlite::Connection::open(self.path().join(".sluice/journal.db")).unwrap();
        let (at, detail): (String, String) = conn
            .query_row(
                "SELECT at, detail FROM transitions WHERE step_id = ?1 AND state = ?2 ORDER BY seq DESC LIMIT 1",
                [step, state],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap_or_else(|e| panic!("no `{state}` transition of `{step}`: {e}"));
        let at = time::OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339)
            .unwrap();
        (at, detail)
    }

    /// Rows of the journal's transitions for a step: (state, detail).
    pub fn transitions(&self, step: &str) -> Vec<(String, String)> {
        let conn = rusqlite::Connection::open(self.path().join(".sluice/journal.db")).unwrap();
        let mut stmt = conn
            .prepare("SELECT state, detail FROM transitions WHERE step_id = ?1 ORDER BY seq")
            .unwrap();
        stmt.query_map([step], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }
}

/// Schema and per-table content digests of a SQLite database, computed here
/// independently of the host's own fingerprint code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbState {
    /// (type, name, sql) of every object.
    pub schema: Vec<(String, String, String)>,
    /// Per table: rows and a digest of the sorted rows.
    pub tables: BTreeMap<String, (usize, String)>,
}

impl DbState {
    /// Reads a database.
    pub fn of(path: &Path) -> DbState {
        let conn = rusqlite::Connection::open(path).unwrap();
        let mut stmt = conn
            .prepare("SELECT type, name, coalesce(sql, '') FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name")
            .unwrap();
        let schema: Vec<(String, String, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let mut tables = BTreeMap::new();
        for (kind, name, _) in &schema {
            if kind != "table" {
                continue;
            }
            let mut stmt = conn.prepare(&format!("SELECT * FROM \"{name}\"")).unwrap();
            let width = stmt.column_count();
            let mut rows: Vec<String> = stmt
                .query_map([], |r| {
                    let mut line = String::new();
                    for i in 0..width {
                        let v: rusqlite::types::Value = r.get(i)?;
                        line.push_str(&format!("{v:?}\u{1f}"));
                    }
                    Ok(line)
                })
                .unwrap()
                .map(Result::unwrap)
                .collect();
            rows.sort();
            let mut h = Sha256::new();
            for row in &rows {
                h.update(row.as_bytes());
                h.update(b"\x1e");
            }
            tables.insert(name.clone(), (rows.len(), hex::encode(h.finalize())));
        }
        DbState { schema, tables }
    }

    /// Rows of a table.
    pub fn rows(&self, table: &str) -> usize {
        self.tables.get(table).map_or(0, |t| t.0)
    }
}
