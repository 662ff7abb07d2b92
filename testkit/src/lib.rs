//! The sluice conformance checks as a library, for a plugin author's
//! `cargo test`: the same checks as `sluice conformance`, run through the
//! real host (this is a thin layer over `sluice::conformance`, their one
//! home).
//!
//! ```no_run
//! use sluice_testkit::{Conformance, Target};
//!
//! let report = Conformance::new("target/plugins/sqlite.wasm")
//!     .target(Target::sqlite_scratch())
//!     .fixture_sql("CREATE TABLE t (id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1);")
//!     .params(serde_json::json!({ "migrate": "ALTER TABLE t ADD COLUMN note TEXT" }))
//!     .run()
//!     .expect("the checks ran");
//! report.assert_passed();
//! ```
#![deny(missing_docs)]

use std::path::PathBuf;
use std::sync::Arc;

use sluice::conformance::{self, ConformanceOptions, ConformanceReport, TargetSpec};
use sluice::runtime::{ComponentCache, Runtime};

pub use sluice::conformance::{CheckResult, ConformanceError, CHECKS};

/// Where the checks run.
#[derive(Debug, Clone)]
pub struct Target(TargetSpec);

impl Target {
    /// A fresh SQLite file in a temporary directory.
    pub fn sqlite_scratch() -> Target {
        Target(TargetSpec::SqliteScratch)
    }

    /// Copies of this SQLite file (the file itself is never written).
    pub fn sqlite_copy(path: impl Into<PathBuf>) -> Target {
        Target(TargetSpec::SqliteCopy(path.into()))
    }

    /// A scratch PostgreSQL database: it will be changed (with a fixture,
    /// emptied and reloaded between checks).
    pub fn postgres(url: &str) -> Target {
        Target(TargetSpec::Postgres(sluice::secret::Secret::new(url)))
    }

    /// A scratch Redis database: it will be changed (with a fixture,
    /// flushed and reloaded between checks).
    pub fn redis(url: &str) -> Target {
        Target(TargetSpec::Redis(sluice::secret::Secret::new(url)))
    }
}

/// Why the checks could not run (a failing check is not one of these: it
/// is in the [`Report`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input or a host failure, as `sluice conformance` reports it.
    #[error(transparent)]
    Conformance(#[from] ConformanceError),
    /// The async runtime or the WebAssembly engine could not start.
    #[error("cannot start the host: {0}")]
    Host(String),
}

/// A conformance run to configure; [`Conformance::run`] runs it.
#[derive(Debug, Clone)]
pub struct Conformance {
    plugin: PathBuf,
    target: Target,
    params: serde_json::Value,
    fixture: Option<String>,
    files: Vec<(String, PathBuf)>,
}

impl Conformance {
    /// Checks the plugin component at `plugin`; by default on a scratch
    /// SQLite file, with empty params, no fixture and no files.
    pub fn new(plugin: impl Into<PathBuf>) -> Conformance {
        Conformance {
            plugin: plugin.into(),
            target: Target::sqlite_scratch(),
            params: serde_json::json!({}),
            fixture: None,
            files: Vec::new(),
        }
    }

    /// Where the checks run.
    pub fn target(mut self, target: Target) -> Self {
        self.target = target;
        self
    }

    /// SQL loaded into the scratch target (SQLite, PostgreSQL) first.
    pub fn fixture_sql(mut self, sql: &str) -> Self {
        self.fixture = Some(sql.to_string());
        self
    }

    /// Redis commands, one per line (`SET k v`, `HSET h f v`), loaded first.
    pub fn fixture_redis(mut self, commands: &str) -> Self {
        self.fixture = Some(commands.to_string());
        self
    }

    /// The step params the plugin runs with (a JSON object).
    pub fn params(mut self, params: serde_json::Value) -> Self {
        self.params = params;
        self
    }

    /// Grants `dir` read-only to the plugin as `name`.
    pub fn file(mut self, name: &str, dir: impl Into<PathBuf>) -> Self {
        self.files.push((name.to_string(), dir.into()));
        self
    }

    /// Runs every check; blocks on its own async runtime.
    pub fn run(self) -> Result<Report, Error> {
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::Host(e.to_string()))?;
        let runtime = Runtime::new(ComponentCache::new(ComponentCache::default_dir()))
            .map_err(|e| Error::Host(e.to_string()))?;
        let options = ConformanceOptions {
            plugin: self.plugin,
            target: self.target.0,
            params: self.params,
            fixture: self.fixture,
            files: self.files,
        };
        let report = tokio.block_on(conformance::run(options, Arc::new(runtime)))?;
        Ok(Report(report))
    }
}

/// The outcome of every check.
#[derive(Debug, Clone)]
pub struct Report(ConformanceReport);

impl Report {
    /// Every check, in [`CHECKS`] order.
    pub fn checks(&self) -> &[CheckResult] {
        &self.0.checks
    }

    /// One check by name.
    pub fn check(&self, name: &str) -> Option<&CheckResult> {
        self.0.checks.iter().find(|c| c.name == name)
    }

    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.0.passed()
    }

    /// The pass/fail table `sluice conformance` prints.
    pub fn text(&self) -> String {
        self.0.text()
    }

    /// Panics with the pass/fail table unless every check passed.
    #[track_caller]
    pub fn assert_passed(&self) {
        assert!(self.passed(), "conformance failed:\n{}", self.text());
    }
}
