//! `sluice conformance`: the plugin contract checked against a scratch
//! target, through the real host — the engine's grants, backup
//! verification and rollback proof, the runtime's limits, the datastores'
//! own enforcement and the host's fingerprints.
//!
//! The plugin runs as the one step of an in-memory plan (read-write on the
//! whole scratch target, read-only backup and validate, as `sluice run`
//! grants) with a private journal and backup store in a temporary
//! directory. Checks run in independent sequences, each on a fresh state of
//! the scratch target ([`scratch`]):
//!
//! 1. backup → migrate → rollback → rollback again: `restores`,
//!    `rollback-twice`, `backup-read-back`;
//! 2. backup → migrate → migrate again → rollback: `idempotent`;
//! 3. backup → migrate → validate → rollback: `validate-read-only`;
//!
//! plus `declared-imports` (from the component's bytes and `describe`) and
//! `deadline` (every phase call of the sequences).

mod scratch;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::capabilities::backup_store::ArtifactOpened;
use crate::datastores::{Endpoint, Fingerprint};
use crate::engine::{exit, Engine, EngineError, EngineOptions};
use crate::grants;
use crate::journal::StoredBackup;
use crate::plan::{
    Access, Address, FileGrant, Limits, Location, Plan, PluginRef, Step, Target, ValueSource,
    DEFAULT_LEASE_SECONDS,
};
use crate::rehearse::copies::{self, Scope};
use crate::runtime::{CallReport, LoadedPlugin, PhaseReached, Runtime};

use scratch::Scratch;
pub use scratch::TargetSpec;

/// The checks, in report order. Names are stable: tests and docs use them.
pub const CHECKS: [&str; 7] = [
    RESTORES,
    ROLLBACK_TWICE,
    IDEMPOTENT,
    VALIDATE_READ_ONLY,
    DECLARED_IMPORTS,
    BACKUP_READ_BACK,
    DEADLINE,
];

const RESTORES: &str = "restores";
const ROLLBACK_TWICE: &str = "rollback-twice";
const IDEMPOTENT: &str = "idempotent";
const VALIDATE_READ_ONLY: &str = "validate-read-only";
const DECLARED_IMPORTS: &str = "declared-imports";
const BACKUP_READ_BACK: &str = "backup-read-back";
const DEADLINE: &str = "deadline";

/// The step id the plugin runs as.
const STEP: &str = "conformance";
/// The scratch target's name in the in-memory plan.
const TARGET: &str = "scratch";

/// What to check, and where.
#[derive(Debug, Clone)]
pub struct ConformanceOptions {
    /// The plugin component.
    pub plugin: PathBuf,
    /// The scratch target.
    pub target: TargetSpec,
    /// Step params (a JSON object).
    pub params: serde_json::Value,
    /// Fixture loaded into the scratch target first: SQL for SQLite and
    /// PostgreSQL, one command per line for Redis.
    pub fixture: Option<String>,
    /// Directories granted read-only to the plugin, by the name it sees.
    pub files: Vec<(String, PathBuf)>,
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// Check name (one of [`CHECKS`]).
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// Why it failed, or what it established.
    pub reason: String,
}

/// The outcome of every check.
#[derive(Debug, Clone, Serialize)]
pub struct ConformanceReport {
    /// The component file.
    pub file: PathBuf,
    /// Plugin name and version from `describe`.
    pub plugin: String,
    /// Plugin version.
    pub version: String,
    /// The scratch target, without credentials.
    pub target: String,
    /// Every check, in [`CHECKS`] order.
    pub checks: Vec<CheckResult>,
}

impl ConformanceReport {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    /// 0 when every check passed, else 1.
    pub fn exit_code(&self) -> i32 {
        if self.passed() {
            exit::OK
        } else {
            exit::STEP_FAILED
        }
    }

    /// The pass/fail table, for people.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "conformance of plugin {} {} ({}) on {}",
            self.plugin,
            self.version,
            self.file.display(),
            self.target
        );
        let width = CHECKS.iter().map(|c| c.len()).max().unwrap_or(0);
        for c in &self.checks {
            let _ = writeln!(
                out,
                "  {:<width$}  {}  {}",
                c.name,
                if c.passed { "pass" } else { "FAIL" },
                c.reason
            );
        }
        let failed = self.checks.iter().filter(|c| !c.passed).count();
        let _ = writeln!(
            out,
            "{}",
            if failed == 0 {
                format!("all {} checks passed", self.checks.len())
            } else {
                format!("{failed} of {} checks failed", self.checks.len())
            }
        );
        out
    }
}

/// Why the checks could not run at all (bad input, or the host failing).
#[derive(Debug, thiserror::Error)]
pub enum ConformanceError {
    /// The plugin file cannot be read.
    #[error("plugin {}: {reason}", path.display())]
    Plugin {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The params are not a JSON object, or the plugin's preview rejects them.
    #[error("params: {0}")]
    Params(String),
    /// The target or the fixture cannot be set up.
    #[error("target {target}: {reason}")]
    Target {
        /// The target, without credentials.
        target: String,
        /// Why.
        reason: String,
    },
    /// A granted directory does not exist.
    #[error("--file {name}={}: {reason}", path.display())]
    Files {
        /// Grant name.
        name: String,
        /// Directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The plugin cannot be loaded, or imports something that cannot be
    /// granted.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// sluice itself failed (temporary directory, fingerprints).
    #[error("{0}")]
    Internal(String),
}

impl ConformanceError {
    /// The documented exit code: 2 for bad input, 70 for sluice failing.
    pub fn exit_code(&self) -> i32 {
        match self {
            ConformanceError::Internal(_)
            | ConformanceError::Engine(
                EngineError::Journal(_) | EngineError::Backup(_) | EngineError::Lease(_),
            ) => exit::INTERNAL,
            _ => exit::PLAN_ERROR,
        }
    }
}

/// Runs every check of [`CHECKS`] on `options.target`.
pub async fn run(
    options: ConformanceOptions,
    runtime: Arc<Runtime>,
) -> Result<ConformanceReport, ConformanceError> {
    // Named by its file, so the plugin's log lines say which one spoke.
    let name = options
        .plugin
        .file_stem()
        .map_or("plugin".into(), |s| s.to_string_lossy().into_owned());
    let plugin = PluginRef::read(&name, &options.plugin).map_err(|e| ConformanceError::Plugin {
        path: options.plugin.clone(),
        reason: e.to_string(),
    })?;
    if !options.params.is_object() {
        return Err(ConformanceError::Params(
            "must be a JSON object (`{…}`)".into(),
        ));
    }
    let params_json = options.params.to_string();
    for (name, path) in &options.files {
        if !path.is_dir() {
            return Err(ConformanceError::Files {
                name: name.clone(),
                path: path.clone(),
                reason: "not a directory".into(),
            });
        }
    }
    let dir = tempfile::Builder::new()
        .prefix("sluice-conformance-")
        .tempdir()
        .map_err(|e| ConformanceError::Internal(format!("temporary directory: {e}")))?;
    let target = options.target.describe();
    let scratch = Scratch::prepare(options.target.clone(), options.fixture.clone(), dir.path())
        .await
        .map_err(|reason| ConformanceError::Target {
            target: target.clone(),
            reason,
        })?;
    let kit = Kit {
        target: target.clone(),
        runtime,
        plugin,
        kind: options.target.kind(),
        params_json,
        files: options
            .files
            .iter()
            .map(|(name, path)| FileGrant {
                name: name.clone(),
                path: std::path::absolute(path).unwrap_or_else(|_| path.clone()),
                access: Access::ReadOnly,
            })
            .collect(),
        dir: dir.path().to_path_buf(),
        scratch,
    };

    // The first engine loads the plugin (and gate one checks its imports);
    // its preview rejects bad params before anything runs.
    let first = kit.engine(0).await?;
    let loaded = first.plugin().clone();
    let plugins = BTreeMap::from([(loaded.name.clone(), loaded.clone())]);
    crate::preview::check(first.engine.plan(), &kit.runtime, &plugins)
        .await
        .map_err(|e| ConformanceError::Params(e.to_string()))?;

    let mut calls = Vec::new();
    let mut results = BTreeMap::new();
    kit.restore_sequence(first, &mut calls, &mut results)
        .await?;
    let second = kit.engine(1).await?;
    kit.idempotent_sequence(second, &mut calls, &mut results)
        .await?;
    let third = kit.engine(2).await?;
    kit.validate_sequence(third, &mut calls, &mut results)
        .await?;
    results.insert(DECLARED_IMPORTS, declared_imports(&loaded));
    results.insert(DEADLINE, deadline(&calls));

    Ok(ConformanceReport {
        file: options.plugin,
        plugin: loaded.info.name.clone(),
        version: loaded.info.version.clone(),
        target,
        checks: CHECKS
            .iter()
            .map(|name| {
                let (passed, reason) = results.remove(name).unwrap_or((
                    false,
                    "not run (sluice bug: no result recorded)".to_string(),
                ));
                CheckResult {
                    name: name.to_string(),
                    passed,
                    reason,
                }
            })
            .collect(),
    })
}

/// A check's outcome before it is named: passed, and why.
type Outcome = (bool, String);

fn pass(reason: impl Into<String>) -> Outcome {
    (true, reason.into())
}

fn fail(reason: impl Into<String>) -> Outcome {
    (false, reason.into())
}

/// One phase call, for the deadline check.
struct Call {
    phase: &'static str,
    elapsed: Duration,
}

/// What every sequence shares.
struct Kit {
    runtime: Arc<Runtime>,
    /// The target, without credentials (for errors).
    target: String,
    plugin: PluginRef,
    kind: crate::plan::TargetKind,
    params_json: String,
    files: Vec<FileGrant>,
    dir: PathBuf,
    scratch: Scratch,
}

/// An engine on a fresh scratch state, with the step and its plugin.
struct Run {
    engine: Engine,
    step: Step,
    endpoint: Endpoint,
}

impl Run {
    fn plugin(&self) -> &LoadedPlugin {
        self.engine
            .loaded_plugin(&self.step.plugin)
            .expect("the plan's one plugin is loaded")
    }
}

impl Kit {
    /// A fresh scratch state for sequence `n`, and an engine whose one-step
    /// plan points at it, with its own journal and backup store.
    async fn engine(&self, n: usize) -> Result<Run, ConformanceError> {
        let endpoint = self
            .scratch
            .fresh(n)
            .await
            .map_err(|reason| ConformanceError::Target {
                target: self.target.clone(),
                reason,
            })?;
        let dir = self.dir.join(format!("state-{n}"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| ConformanceError::Internal(format!("{}: {e}", dir.display())))?;
        let plan = self.plan(&dir, &endpoint);
        let step = plan.steps[0].clone();
        let engine =
            Engine::with_runtime(plan, self.runtime.clone(), EngineOptions::default()).await?;
        Ok(Run {
            engine,
            step,
            endpoint,
        })
    }

    fn plan(&self, dir: &Path, endpoint: &Endpoint) -> Plan {
        let mut values = BTreeMap::new();
        let address = match endpoint {
            Endpoint::File(path) => Address::File(path.clone()),
            Endpoint::Url(url) => {
                values.insert(TARGET.to_string(), ValueSource::Secret(url.clone()));
                Address::Connection(TARGET.to_string())
            }
        };
        let path = dir.join("conformance.toml");
        let location = Location {
            file: path.clone(),
            line: 1,
            column: 1,
        };
        let step = Step {
            id: STEP.into(),
            plugin: self.plugin.name.clone(),
            target: TARGET.into(),
            // What `sluice run` grants a read-write step; backup and
            // validate get read-only from the engine.
            access: Access::ReadWrite,
            tables: None,
            key_prefixes: None,
            files: self.files.clone(),
            values: Vec::new(),
            probes: Vec::new(),
            params_json: self.params_json.clone(),
            params_hash: hex::encode(Sha256::digest(self.params_json.as_bytes())),
            thresholds: Vec::new(),
            bands: Vec::new(),
            approval: None,
            watch: None,
            limits: Limits::default(),
            location,
        };
        Plan {
            path,
            dir: dir.to_path_buf(),
            name: "conformance".into(),
            hash: String::new(),
            targets: BTreeMap::from([(
                TARGET.to_string(),
                Target {
                    name: TARGET.into(),
                    kind: self.kind,
                    address,
                },
            )]),
            plugins: BTreeMap::from([(self.plugin.name.clone(), self.plugin.clone())]),
            steps: vec![step],
            values,
            probes: BTreeMap::new(),
            lease: Duration::from_secs(DEFAULT_LEASE_SECONDS),
            journal: None,
        }
    }

    /// The host's fingerprint of the whole scratch target: every table (or
    /// every key), not only what the backup names.
    async fn whole(&self, run: &Run) -> Result<Fingerprint, ConformanceError> {
        copies::measure(self.kind, &run.endpoint, &Scope(None))
            .await
            .map(|state| {
                let mut fingerprint = state.fingerprint;
                // Redis measures by prefix; the whole store is the empty one,
                // which reads better named.
                if let Some(all) = fingerprint.tables.remove("") {
                    fingerprint.tables.insert("every key".into(), all);
                }
                fingerprint
            })
            .map_err(|e| {
                ConformanceError::Internal(format!("cannot fingerprint the scratch target: {e}"))
            })
    }

    /// Backup → migrate; the verified backup, or why the sequence cannot go
    /// on (and, when migrate failed, after a cleanup rollback).
    async fn forward(&self, run: &Run, calls: &mut Vec<Call>) -> Result<StoredBackup, String> {
        let plugin = run.plugin();
        let (backup, report) = run.engine.take_backup(&run.step, plugin).await;
        calls.push(Call {
            phase: "backup",
            elapsed: report.elapsed,
        });
        let backup = backup.map_err(|f| f.message)?;
        let (migrated, report, _) = run.engine.call_migrate(&run.step, plugin).await;
        calls.push(Call {
            phase: "migrate",
            elapsed: report.elapsed,
        });
        if let Err(e) = migrated {
            self.cleanup(run, &backup, PhaseReached::Migrating, calls)
                .await;
            return Err(e.message);
        }
        Ok(backup)
    }

    /// Rolls back to leave a server target as found for the next sequence;
    /// its result belongs to `restores`, so it is only logged here.
    async fn cleanup(
        &self,
        run: &Run,
        backup: &StoredBackup,
        reached: PhaseReached,
        calls: &mut Vec<Call>,
    ) {
        let (result, report) = match run
            .engine
            .call_rollback(&run.step, run.plugin(), backup, reached)
            .await
        {
            Ok(called) => called,
            Err(refused) => (Err(refused), CallReport::default()),
        };
        calls.push(Call {
            phase: "rollback",
            elapsed: report.elapsed,
        });
        if let Err(e) = result {
            tracing::warn!("conformance: cleanup rollback failed: {e}");
        }
    }

    /// backup → migrate → rollback → rollback: `restores`, `rollback-twice`,
    /// `backup-read-back`.
    async fn restore_sequence(
        &self,
        run: Run,
        calls: &mut Vec<Call>,
        results: &mut BTreeMap<&'static str, Outcome>,
    ) -> Result<(), ConformanceError> {
        let before = self.whole(&run).await?;
        let backup = match self.forward(&run, calls).await {
            Ok(backup) => backup,
            Err(e) => {
                results.insert(RESTORES, fail(e.clone()));
                let not_reached = format!("not reached: {e}");
                results.insert(ROLLBACK_TWICE, fail(not_reached.clone()));
                results.insert(BACKUP_READ_BACK, fail(not_reached));
                return Ok(());
            }
        };
        let migrated = self.whole(&run).await?;
        let plugin = run.plugin();
        let (first, report) = match run
            .engine
            .call_rollback(&run.step, plugin, &backup, PhaseReached::Migrated)
            .await
        {
            Ok(called) => called,
            Err(refused) => (Err(refused), CallReport::default()),
        };
        calls.push(Call {
            phase: "rollback",
            elapsed: report.elapsed,
        });
        let mut opened = report.opened;
        let after_first = self.whole(&run).await?;
        let restores = match &first {
            Err(e) => fail(e.message.clone()),
            Ok(()) => match run.engine.prove_pre_step_state(&run.step, &backup).await {
                Err(e) => fail(format!("after rollback, {e}")),
                Ok(()) => {
                    let outside = before.differences(&after_first);
                    if outside.is_empty() {
                        pass(format!(
                            "backup ({} artifacts, {} bytes) → migrate ({}) → rollback: schema and {} tables equal the state before",
                            backup.artifacts.len(),
                            backup.artifacts.iter().map(|a| a.size).sum::<u64>(),
                            changed(&before, &migrated),
                            after_first.tables.len()
                        ))
                    } else {
                        fail(format!(
                            "after rollback, outside what the backup names: {}",
                            outside.join("; ")
                        ))
                    }
                }
            },
        };
        results.insert(RESTORES, restores);

        let twice = match first {
            Err(e) => fail(format!(
                "the first rollback failed ({e}), so a second cannot be judged"
            )),
            Ok(()) => {
                let (second, report) = match run
                    .engine
                    .call_rollback(&run.step, plugin, &backup, PhaseReached::RollingBack)
                    .await
                {
                    Ok(called) => called,
                    Err(refused) => (Err(refused), CallReport::default()),
                };
                calls.push(Call {
                    phase: "rollback",
                    elapsed: report.elapsed,
                });
                opened.extend(report.opened);
                match second {
                    Err(e) => fail(format!("the second rollback failed: {e}")),
                    Ok(()) => {
                        let after_second = self.whole(&run).await?;
                        let moved = after_first.differences(&after_second);
                        if moved.is_empty() {
                            pass("a second rollback succeeded and left the store as the first did")
                        } else {
                            fail(format!(
                                "the second rollback changed the store the first left: {}",
                                moved.join("; ")
                            ))
                        }
                    }
                }
            }
        };
        results.insert(ROLLBACK_TWICE, twice);
        results.insert(BACKUP_READ_BACK, read_back(&backup, &opened));
        Ok(())
    }

    /// backup → migrate → migrate → rollback: `idempotent`.
    async fn idempotent_sequence(
        &self,
        run: Run,
        calls: &mut Vec<Call>,
        results: &mut BTreeMap<&'static str, Outcome>,
    ) -> Result<(), ConformanceError> {
        let backup = match self.forward(&run, calls).await {
            Ok(backup) => backup,
            Err(e) => {
                results.insert(
                    IDEMPOTENT,
                    fail(format!("the first migrate did not complete: {e}")),
                );
                return Ok(());
            }
        };
        let once = self.whole(&run).await?;
        let (again, report, _) = run.engine.call_migrate(&run.step, run.plugin()).await;
        calls.push(Call {
            phase: "migrate",
            elapsed: report.elapsed,
        });
        let twice = self.whole(&run).await?;
        let moved = once.differences(&twice);
        let declared = run.plugin().info.idempotent_migrate;
        let outcome = match (declared, again, moved.is_empty()) {
            (true, Ok(()), true) => pass("declares idempotent-migrate; a second migrate succeeded and changed nothing"),
            (true, Ok(()), false) => fail(format!(
                "declares idempotent-migrate, but a second migrate changed the store: {}",
                moved.join("; ")
            )),
            (true, Err(e), _) => fail(format!(
                "declares idempotent-migrate, but a second migrate failed: {e}"
            )),
            (false, Ok(()), true) => pass("a second migrate was a no-op"),
            (false, Err(e), true) => pass(format!("a second migrate was refused: {e}")),
            (false, Ok(()), false) => fail(format!(
                "does not declare idempotent-migrate, yet a second migrate ran and changed the store instead of refusing: {}",
                moved.join("; ")
            )),
            (false, Err(e), false) => fail(format!(
                "a second migrate failed ({e}) but left changes: {}",
                moved.join("; ")
            )),
        };
        results.insert(IDEMPOTENT, outcome);
        self.cleanup(&run, &backup, PhaseReached::Migrated, calls)
            .await;
        Ok(())
    }

    /// backup → migrate → validate → rollback: `validate-read-only`.
    async fn validate_sequence(
        &self,
        run: Run,
        calls: &mut Vec<Call>,
        results: &mut BTreeMap<&'static str, Outcome>,
    ) -> Result<(), ConformanceError> {
        let backup = match self.forward(&run, calls).await {
            Ok(backup) => backup,
            Err(e) => {
                results.insert(
                    VALIDATE_READ_ONLY,
                    fail(format!("validate not reached: {e}")),
                );
                return Ok(());
            }
        };
        let before = self.whole(&run).await?;
        let started = std::time::Instant::now();
        let measured = run
            .engine
            .measure(&run.step, run.plugin(), Vec::new())
            .await;
        calls.push(Call {
            phase: "validate",
            elapsed: started.elapsed(),
        });
        let after = self.whole(&run).await?;
        let moved = before.differences(&after);
        let outcome = match measured {
            Err(e) => fail(format!("under the read-only grant, {e}")),
            Ok(_) if !moved.is_empty() => {
                fail(format!("validate changed the store: {}", moved.join("; ")))
            }
            Ok((metrics, _)) => pass(format!(
                "validate reported {} metrics under a read-only grant and changed nothing",
                metrics.len()
            )),
        };
        results.insert(VALIDATE_READ_ONLY, outcome);
        self.cleanup(&run, &backup, PhaseReached::Migrated, calls)
            .await;
        Ok(())
    }
}

/// What migrate changed, in a few words.
fn changed(before: &Fingerprint, after: &Fingerprint) -> String {
    let differences = before.differences(after);
    if differences.is_empty() {
        "changed nothing the host can see".into()
    } else {
        format!("changed: {}", differences.join("; "))
    }
}

/// `backup-read-back`: rollback opened only artifacts this backup wrote.
fn read_back(backup: &StoredBackup, opened: &[ArtifactOpened]) -> Outcome {
    let written: Vec<&str> = backup.artifacts.iter().map(|a| a.name.as_str()).collect();
    let stray: Vec<&ArtifactOpened> = opened.iter().filter(|o| !o.in_backup).collect();
    if let Some(first) = stray.first() {
        return fail(format!(
            "rollback asked for artifact `{}`, which this backup did not write (it wrote: {})",
            first.name,
            written.join(", ")
        ));
    }
    let mut read: Vec<&str> = opened.iter().map(|o| o.name.as_str()).collect();
    read.sort_unstable();
    read.dedup();
    let verified = opened.iter().filter(|o| o.verified).count();
    pass(format!(
        "rollback read {} of the {} artifacts backup wrote, nothing else; {verified} reads ran to the end with the digest rechecked",
        read.len(),
        written.len()
    ))
}

/// `declared-imports`: every import that carries authority is declared in
/// `describe`, every declared need is backed by an import, and every need
/// says why.
fn declared_imports(plugin: &LoadedPlugin) -> Outcome {
    let mut problems = Vec::new();
    let needs = &plugin.info.needs;
    let mut imported = Vec::new();
    for interface in &plugin.facts.imports {
        let Some(need) = grants::declared_need(interface) else {
            continue;
        };
        imported.push(need);
        if !needs.iter().any(|n| n.capability == need) {
            problems.push(format!(
                "imports `{interface}` but describe declares no `{need}` need"
            ));
        }
    }
    for need in needs {
        if !grants::NEED_NAMES.contains(&need.capability.as_str()) {
            problems.push(format!(
                "declares `{}`, which is not a capability (one of: {})",
                need.capability,
                grants::NEED_NAMES.join(", ")
            ));
        } else if !imported.contains(&need.capability.as_str()) {
            problems.push(format!(
                "declares `{}` but imports nothing that needs it",
                need.capability
            ));
        }
        if need.reason.trim().is_empty() {
            problems.push(format!("the `{}` need gives no reason", need.capability));
        }
    }
    if problems.is_empty() {
        pass(format!(
            "{} declared needs match the component's imports, each with a reason",
            needs.len()
        ))
    } else {
        fail(problems.join("; "))
    }
}

/// `deadline`: every phase call finished within the default deadline.
fn deadline(calls: &[Call]) -> Outcome {
    let limit = Duration::from_secs(Limits::default().phase_seconds);
    let over: Vec<String> = calls
        .iter()
        .filter(|c| c.elapsed >= limit)
        .map(|c| {
            format!(
                "{} took {:.1} s, over the {} s deadline by {:.1} s",
                c.phase,
                c.elapsed.as_secs_f64(),
                limit.as_secs(),
                (c.elapsed - limit).as_secs_f64()
            )
        })
        .collect();
    if !over.is_empty() {
        return fail(format!(
            "{} (a plugin that needs longer must say so: operators set `limits.phase_seconds`)",
            over.join("; ")
        ));
    }
    match calls.iter().max_by_key(|c| c.elapsed) {
        None => fail("no phase ran"),
        Some(slowest) => pass(format!(
            "{} phase calls; slowest {} {:.2} s of {} s",
            calls.len(),
            slowest.phase,
            slowest.elapsed.as_secs_f64(),
            limit.as_secs()
        )),
    }
}
