//! `sluice rehearse`: the whole plan, run by the real engine against copies
//! of its targets, every applied step rolled back again, and a staging
//! report of what each phase took. Production is never touched, and the
//! host proves it: every real target is fingerprinted before and after, and
//! a difference fails the rehearsal.
//!
//! The rehearsal plan is the loaded [`Plan`] with each target pointed at its
//! copy (a server copy bound to a fresh value name), its read-write file
//! grants pointed at copies, and its state (journal and backup store) in the
//! rehearsal directory: never the plan's `.sluice/` nor its shared journal.

pub mod copies;
pub mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::datastores::{DatastoreError, Endpoint};
use crate::engine::{exit, Engine, EngineError, EngineOptions, RunSummary};
use crate::plan::{Access, Address, Plan, ValueSource};
use crate::report::evidence::{self, EvidenceError};

use self::copies::{Scope, TargetCopy, TargetState};
pub use self::report::RehearsalReport;

/// Why a rehearsal could not be carried out (its steps failing is not one
/// of these: that is reported).
#[derive(Debug, thiserror::Error)]
pub enum RehearsalError {
    /// The rehearsal directory cannot be used.
    #[error("rehearsal directory {path}: {reason}")]
    Output {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A target's connection value cannot be read.
    #[error("target `{target}`: {source}")]
    Value {
        /// Target name.
        target: String,
        /// Why.
        source: crate::plan::ValueError,
    },
    /// A real target could not be measured.
    #[error("cannot fingerprint target `{target}`: {source}")]
    Measure {
        /// Target name.
        target: String,
        /// The datastore's error.
        source: DatastoreError,
    },
    /// A copy could not be made (nothing ran).
    #[error("cannot copy target {target}: {reason}")]
    Copy {
        /// The target (name or redacted location).
        target: String,
        /// Why, and what the operator can do.
        reason: String,
    },
    /// A file grant could not be copied.
    #[error("cannot copy the files granted as `{grant}` to step `{step}`: {reason}")]
    Files {
        /// Step id.
        step: String,
        /// Grant name.
        grant: String,
        /// Why.
        reason: String,
    },
    /// The engine failed on the copies.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The rehearsal journal could not be read back.
    #[error(transparent)]
    Evidence(#[from] EvidenceError),
    /// A real target differs after the rehearsal.
    #[error("production changed during rehearsal: {0}")]
    ProductionChanged(String),
}

impl RehearsalError {
    /// The documented exit code for this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            RehearsalError::Output { .. } | RehearsalError::Value { .. } => exit::PLAN_ERROR,
            RehearsalError::Engine(EngineError::Load(_) | EngineError::Ungranted(_)) => {
                exit::PLAN_ERROR
            }
            RehearsalError::Copy { .. }
            | RehearsalError::Files { .. }
            | RehearsalError::Measure { .. } => exit::REFUSED,
            RehearsalError::ProductionChanged(_) => exit::NEEDS_ATTENTION,
            RehearsalError::Engine(_) | RehearsalError::Evidence(_) => exit::INTERNAL,
        }
    }
}

/// How to rehearse.
#[derive(Clone, Default)]
pub struct RehearsalOptions {
    /// Where the report, journal, backups and file copies go (default:
    /// `<plan dir>/.sluice/rehearsals/<UTC time>/`).
    pub output: Option<PathBuf>,
    /// Keep the copies (scratch databases, Redis database, SQLite files).
    pub keep: bool,
    /// Options of the engine that runs the copies.
    pub engine: EngineOptions,
}

/// The default rehearsal directory of a plan, by UTC time.
pub fn default_output(plan: &Plan) -> PathBuf {
    let now = time::OffsetDateTime::now_utc();
    let stamp = now
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second].[subsecond digits:3]Z"
        ))
        .unwrap_or_else(|_| now.unix_timestamp().to_string());
    plan.state_dir().join("rehearsals").join(stamp)
}

/// One real target, measured before and after, and its copy.
struct Rehearsed {
    name: String,
    kind: crate::plan::TargetKind,
    endpoint: Endpoint,
    scope: Scope,
    before: TargetState,
    copy: Option<TargetCopy>,
    copy_ms: u64,
}

/// Rehearses `plan` and writes `rehearsal.md` and `rehearsal.json` into the
/// output directory. The report's [`RehearsalReport::exit_code`] says how
/// the rehearsed run went; an `Err` means the rehearsal itself could not be
/// carried out, or that production changed.
pub async fn rehearse(
    plan: &Plan,
    options: RehearsalOptions,
) -> Result<RehearsalReport, RehearsalError> {
    let started_at = report::now();
    let output = options
        .output
        .clone()
        .unwrap_or_else(|| default_output(plan));
    // Printed and recorded: absolute, whatever the working directory.
    let output = std::path::absolute(&output).unwrap_or(output);
    prepare_output(&output)?;
    let copies_dir = output.join("copies");
    std::fs::create_dir_all(&copies_dir).map_err(|e| RehearsalError::Output {
        path: copies_dir.clone(),
        reason: e.to_string(),
    })?;

    // Production, measured before anything is copied or run.
    let mut targets = Vec::new();
    for (name, scope) in copies::scopes(plan) {
        let target = &plan.targets[&name];
        let endpoint = match &target.address {
            Address::File(files) => Endpoint::File(files.clone()),
            Address::Connection(value) => {
                Endpoint::Url(plan.resolve_value(value).map_err(|source| {
                    RehearsalError::Value {
                        target: name.clone(),
                        source,
                    }
                })?)
            }
        };
        let before = copies::measure(target.kind, &endpoint, &scope)
            .await
            .map_err(|source| RehearsalError::Measure {
                target: name.clone(),
                source,
            })?;
        targets.push(Rehearsed {
            name,
            kind: target.kind,
            endpoint,
            scope,
            before,
            copy: None,
            copy_ms: 0,
        });
    }

    // Copies; on any failure, remove the ones already made.
    for i in 0..targets.len() {
        let t = &targets[i];
        let label = format!("{}_{}", plan.name, t.name);
        let clock = Instant::now();
        match copies::copy(t.kind, &t.endpoint, &t.scope, &copies_dir, &label).await {
            Ok(copy) => {
                tracing::info!(target = %t.name, copy = %copy.describe(), "rehearsal copy made");
                targets[i].copy_ms = clock.elapsed().as_millis() as u64;
                targets[i].copy = Some(copy);
            }
            Err(e) => {
                remove_copies(&targets).await;
                return Err(e);
            }
        }
    }

    let outcome = exercise(plan, &output, &targets, options.engine.clone()).await;

    // Has the copy come back to production's pre-rehearsal state?
    let mut restored = BTreeMap::new();
    if outcome.is_ok() {
        for t in &targets {
            let copy = t.copy.as_ref().expect("every target was copied");
            if let Ok(state) = copies::measure(t.kind, &copy.endpoint(), &t.scope).await {
                restored.insert(
                    t.name.clone(),
                    t.before.fingerprint.differences(&state.fingerprint),
                );
            }
        }
    }
    if !options.keep {
        remove_copies(&targets).await;
    }

    // Production, measured again: it must not have changed.
    let mut after = BTreeMap::new();
    let mut changed = Vec::new();
    for t in &targets {
        let state = copies::measure(t.kind, &t.endpoint, &t.scope)
            .await
            .map_err(|source| RehearsalError::Measure {
                target: t.name.clone(),
                source,
            })?;
        let mut diff = t.before.fingerprint.differences(&state.fingerprint);
        if t.before.file_sha256 != state.file_sha256 {
            diff.push("the database file's bytes differ".into());
        }
        if !diff.is_empty() {
            changed.push(format!("target `{}`: {}", t.name, diff.join("; ")));
        }
        after.insert(t.name.clone(), state);
    }

    let (forward, rollback, evidences) = match outcome {
        Ok(ok) => ok,
        Err(e) if changed.is_empty() => return Err(e),
        Err(e) => {
            return Err(RehearsalError::ProductionChanged(format!(
                "{} (and the rehearsal failed: {e})",
                changed.join("; ")
            )))
        }
    };
    let report = report::build(report::Inputs {
        plan,
        output: &output,
        started_at,
        keep: options.keep,
        targets: targets
            .iter()
            .map(|t| report::TargetInput {
                name: &t.name,
                kind: t.kind,
                copy: t.copy.as_ref().expect("copied").describe(),
                copy_ms: t.copy_ms,
                before: &t.before,
                after: &after[&t.name],
                restored: restored.get(&t.name),
            })
            .collect(),
        forward: &forward,
        rollback: rollback.as_ref(),
        evidences: &evidences,
    });
    report::write(&report, &evidences, &output)?;
    if !changed.is_empty() {
        return Err(RehearsalError::ProductionChanged(format!(
            "{} (report: {})",
            changed.join("; "),
            output.join("rehearsal.md").display()
        )));
    }
    Ok(report)
}

/// The runs on the copies and the evidence of each, read back from the
/// rehearsal journal.
type Exercised = (
    (RunSummary, u64),
    Option<(RunSummary, u64)>,
    Vec<evidence::Evidence>,
);

/// Runs the rehearsal plan forward, then rolls back every step it applied,
/// in reverse order.
async fn exercise(
    plan: &Plan,
    output: &Path,
    targets: &[Rehearsed],
    options: EngineOptions,
) -> Result<Exercised, RehearsalError> {
    let rehearsal = rehearsal_plan(plan, output, targets)?;
    // Approval points and review bands do not stop a rehearsal: they are
    // passed and recorded, so the staging report covers the whole plan.
    let options = EngineOptions {
        rehearsal: true,
        ..options
    };
    let mut engine = Engine::open(rehearsal.clone(), options).await?;
    let clock = Instant::now();
    let forward = engine.run().await?;
    let forward_ms = clock.elapsed().as_millis() as u64;
    let applied = forward
        .steps
        .iter()
        .any(|s| matches!(s.outcome, crate::engine::StepOutcome::Applied));
    let rollback = if applied {
        let clock = Instant::now();
        let summary = engine.rollback(None).await?;
        Some((summary, clock.elapsed().as_millis() as u64))
    } else {
        None
    };
    let mut evidences = vec![evidence::build(
        &rehearsal,
        engine.journal(),
        Some(&forward.run_id),
    )?];
    if let Some((r, _)) = &rollback {
        evidences.push(evidence::build(
            &rehearsal,
            engine.journal(),
            Some(&r.run_id),
        )?);
    }
    Ok(((forward, forward_ms), rollback, evidences))
}

/// The plan as it runs on the copies.
fn rehearsal_plan(
    plan: &Plan,
    output: &Path,
    targets: &[Rehearsed],
) -> Result<Plan, RehearsalError> {
    let mut r = plan.clone();
    // `state_dir()` is `<dir>/.sluice`: the rehearsal's own journal and
    // backups. Every other path in a loaded plan is already absolute.
    r.dir = output.to_path_buf();
    r.journal = None;
    for t in targets {
        let copy = t.copy.as_ref().expect("copied");
        let target = r.targets.get_mut(&t.name).expect("a target of the plan");
        target.address = match copy.endpoint() {
            Endpoint::File(files) => Address::File(files),
            Endpoint::Url(url) => {
                // A fresh name no plan value can have (plan names are TOML keys
                // the plan wrote; this one is ours).
                let value = format!("sluice-rehearsal:{}", t.name);
                // Held only in memory for the engine, which reads it into a
                // `Secret` when it opens; never written or printed.
                r.values
                    .insert(value.clone(), ValueSource::Secret(url.clone()));
                Address::Connection(value)
            }
        };
    }
    // A read-write file grant is production too: the step gets a copy.
    for step in &mut r.steps {
        for grant in &mut step.files {
            if grant.access != Access::ReadWrite {
                continue;
            }
            let dest = output
                .join("files")
                .join(sanitize(&step.id))
                .join(sanitize(&grant.name));
            copy_dir(&grant.path, &dest).map_err(|e| RehearsalError::Files {
                step: step.id.clone(),
                grant: grant.name.clone(),
                reason: e.to_string(),
            })?;
            grant.path = dest;
        }
    }
    Ok(r)
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let dest = to.join(entry.file_name());
        if kind.is_dir() {
            copy_dir(&entry.path(), &dest)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), dest)?;
        }
        // Symlinks are not followed: a grant is the directory itself.
    }
    Ok(())
}

fn prepare_output(output: &Path) -> Result<(), RehearsalError> {
    if output.join(".sluice").exists() {
        return Err(RehearsalError::Output {
            path: output.to_path_buf(),
            reason: "it already holds a rehearsal; choose another --output".into(),
        });
    }
    std::fs::create_dir_all(output).map_err(|e| RehearsalError::Output {
        path: output.to_path_buf(),
        reason: e.to_string(),
    })
}

async fn remove_copies(targets: &[Rehearsed]) {
    for t in targets {
        if let Some(copy) = &t.copy {
            if let Err(e) = copy.remove().await {
                tracing::warn!(target = %t.name, copy = %copy.describe(), "cannot remove the rehearsal copy: {e}");
            }
        }
    }
}
