//! The staging report of a rehearsal: `rehearsal.json` for machines,
//! `rehearsal.md` for the people who decide whether to run the plan for
//! real, and the one-screen summary. Phase timings come from the rehearsal
//! journal's transitions through [`evidence`], exactly as `sluice report`
//! computes them; the engine's own wall time of each plugin call rides along.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::engine::{exit, Phase, RunSummary, StepOutcome, StepSummary};
use crate::journal::record::Cause;
use crate::plan::{Plan, TargetKind};
use crate::report::evidence::{
    self, BackupEvidence, Evidence, PhaseTiming, StepEvidence, ThresholdEvidence,
};
use crate::runtime::Metric;

use super::copies::TargetState;
use super::RehearsalError;

/// Everything a rehearsal measured.
#[derive(Debug, Clone, Serialize)]
pub struct RehearsalReport {
    /// Plan name.
    pub plan: String,
    /// The plan file.
    pub plan_file: PathBuf,
    /// The rehearsal directory (its journal is `.sluice/journal.db` in it).
    pub output: PathBuf,
    /// When the rehearsal started and finished (RFC 3339).
    pub started_at: String,
    /// When the report was written.
    pub finished_at: String,
    /// How the rehearsed run went, as `sluice run` would exit.
    pub exit_code: i32,
    /// `ok`, `step-failed`, `needs-attention`, …
    pub outcome: String,
    /// Whether the copies were kept (`--keep`).
    pub kept: bool,
    /// The forward run on the copies.
    pub forward_run: RunTiming,
    /// The rollback of every applied step, when a step was applied.
    pub rollback_run: Option<RunTiming>,
    /// Every real target: its copy, and its fingerprints before and after.
    pub targets: Vec<TargetReport>,
    /// Every step, in plan order.
    pub steps: Vec<StepReport>,
    /// Every real target's fingerprints (and SQLite file bytes) are equal
    /// before and after.
    pub production_untouched: bool,
}

/// One run of the engine on the copies.
#[derive(Debug, Clone, Serialize)]
pub struct RunTiming {
    /// Run id in the rehearsal journal.
    pub id: String,
    /// How it ended, as journaled.
    pub outcome: Option<String>,
    /// Its wall time, measured around the engine call (ms).
    pub wall_ms: u64,
}

/// A real target in the rehearsal.
#[derive(Debug, Clone, Serialize)]
pub struct TargetReport {
    /// Name in the plan.
    pub name: String,
    /// Kind.
    pub kind: String,
    /// The copy the steps ran on (no credentials).
    pub copy: String,
    /// How long making the copy took (ms).
    pub copy_ms: u64,
    /// Production before the rehearsal.
    pub before: TargetState,
    /// Production after it.
    pub after: TargetState,
    /// Whether before and after are equal.
    pub unchanged: bool,
    /// After every rollback, how the copy differs from production's
    /// pre-rehearsal state (empty: the plan undoes itself completely);
    /// `None` when it could not be measured.
    pub copy_restored_differences: Option<Vec<String>>,
}

/// One step in the rehearsal.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// Step id.
    pub id: String,
    /// Target name.
    pub target: String,
    /// How the forward run ended for it: `applied`, `rolled-back`, …
    pub forward: String,
    /// Why it failed, when it did.
    pub failure: Option<String>,
    /// Phases of the forward run, timed from the rehearsal journal.
    pub phases: Vec<PhaseTiming>,
    /// The engine's wall time of each plugin call of the forward run (ms).
    pub plugin_calls_ms: Vec<(String, u64)>,
    /// Metrics of validate.
    pub metrics: Vec<Metric>,
    /// Thresholds against those metrics.
    pub thresholds: Vec<ThresholdEvidence>,
    /// The verified backup.
    pub backup: Option<BackupEvidence>,
    /// Artifacts and bytes of that backup.
    pub backup_artifacts: usize,
    /// Bytes of that backup.
    pub backup_bytes: u64,
    /// Its rollback: by the engine when the step failed, else by the
    /// rehearsal's `rollback` run.
    pub rollback: Option<RollbackReport>,
}

/// A step's rollback on its copy.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackReport {
    /// `engine` (the step failed in the forward run) or `rehearsal` (the
    /// rollback of every applied step).
    pub by: String,
    /// Run id.
    pub run_id: String,
    /// Timed from the rehearsal journal.
    pub timing: PhaseTiming,
    /// The engine's wall time of the plugin's rollback call (ms).
    pub plugin_call_ms: Option<u64>,
    /// The host proved the target equal to the pre-step state (schema and
    /// backed-up tables), or, for a read-only step, unchanged.
    pub proven: bool,
}

/// What [`build`] needs.
pub(super) struct Inputs<'a> {
    pub plan: &'a Plan,
    pub output: &'a Path,
    pub started_at: String,
    pub keep: bool,
    pub targets: Vec<TargetInput<'a>>,
    pub forward: &'a (RunSummary, u64),
    pub rollback: Option<&'a (RunSummary, u64)>,
    pub evidences: &'a [Evidence],
}

pub(super) struct TargetInput<'a> {
    pub name: &'a str,
    pub kind: TargetKind,
    pub copy: String,
    pub copy_ms: u64,
    pub before: &'a TargetState,
    pub after: &'a TargetState,
    pub restored: Option<&'a Vec<String>>,
}

/// Now, RFC 3339 UTC, as the journal writes times.
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn run_timing((summary, wall_ms): &(RunSummary, u64), e: Option<&Evidence>) -> RunTiming {
    RunTiming {
        id: summary.run_id.clone(),
        outcome: e.and_then(|e| e.run.outcome.clone()),
        wall_ms: *wall_ms,
    }
}

fn outcome_word(o: &StepOutcome) -> (&'static str, Option<String>) {
    match o {
        StepOutcome::Applied => ("applied", None),
        StepOutcome::AlreadyApplied => ("already-applied", None),
        StepOutcome::AwaitingApproval { reason } => ("awaiting-approval", Some(reason.clone())),
        StepOutcome::Drift { what } => ("drift", Some(what.clone())),
        StepOutcome::Interrupted { state } => ("interrupted", Some(state.to_string())),
        StepOutcome::FailedUnchanged { phase, reason } => (
            "failed-unchanged",
            Some(format!("{}: {reason}", phase.as_str())),
        ),
        StepOutcome::RolledBack { phase, reason, .. } => {
            ("rolled-back", Some(format!("{}: {reason}", phase.as_str())))
        }
        StepOutcome::RollbackFailed {
            phase,
            reason,
            rollback_error,
        } => (
            "rollback-failed",
            Some(format!(
                "{}: {reason}; rollback failed: {rollback_error}",
                phase.as_str()
            )),
        ),
        StepOutcome::RollbackRefused {
            phase,
            reason,
            later_writes,
        } => (
            "rollback-refused",
            Some(format!(
                "{}: {reason}; rollback refused: the target changed after the step: {}",
                phase.as_str(),
                later_writes.join("; ")
            )),
        ),
        StepOutcome::NotRun => ("not-run", None),
        StepOutcome::Stopped { .. } => ("stopped", None),
        // Outcomes the engine grows later are reported by their debug name.
        #[allow(unreachable_patterns)]
        other => ("other", Some(format!("{other:?}"))),
    }
}

fn plugin_ms(s: Option<&StepSummary>, phase: Phase) -> Option<u64> {
    s?.phases
        .iter()
        .rev()
        .find(|(p, _)| *p == phase)
        .map(|(_, d)| d.as_millis() as u64)
}

fn proven(e: &StepEvidence) -> bool {
    match e.final_state.as_deref() {
        Some("rolled-back") => true,
        Some("failed") => matches!(e.cause, Some(Cause::VerifiedUnchanged(_))),
        _ => false,
    }
}

pub(super) fn build(i: Inputs<'_>) -> RehearsalReport {
    let forward_e = &i.evidences[0];
    let rollback_e = i.evidences.get(1);
    let mut code = i.forward.0.exit_code();
    if let Some((r, _)) = i.rollback {
        code = code.max(r.exit_code());
    }
    let steps = i
        .plan
        .steps
        .iter()
        .map(|step| {
            let fs = i.forward.0.steps.iter().find(|s| s.id == step.id);
            let rs = i
                .rollback
                .and_then(|(r, _)| r.steps.iter().find(|s| s.id == step.id));
            let fe = forward_e.steps.iter().find(|s| s.id == step.id);
            let re = rollback_e.and_then(|e| e.steps.iter().find(|s| s.id == step.id));
            let (word, failure) = fs.map_or(("not-run", None), |s| outcome_word(&s.outcome));
            let rollback = match (fe.and_then(|e| e.rollback.clone()), re) {
                (Some(timing), _) => Some(RollbackReport {
                    by: "engine".into(),
                    run_id: i.forward.0.run_id.clone(),
                    timing,
                    plugin_call_ms: plugin_ms(fs, Phase::Rollback),
                    proven: fe.is_some_and(proven),
                }),
                (None, Some(re)) => re.rollback.clone().map(|timing| RollbackReport {
                    by: "rehearsal".into(),
                    run_id: rollback_e.map(|e| e.run.id.clone()).unwrap_or_default(),
                    timing,
                    plugin_call_ms: plugin_ms(rs, Phase::Rollback),
                    proven: proven(re),
                }),
                (None, None) => None,
            };
            let backup = fe.and_then(|e| e.backup.clone());
            StepReport {
                id: step.id.clone(),
                target: step.target.clone(),
                forward: word.to_string(),
                failure,
                phases: fe.map(|e| e.phases.clone()).unwrap_or_default(),
                plugin_calls_ms: fs
                    .map(|s| {
                        s.phases
                            .iter()
                            .map(|(p, d)| (p.as_str().to_string(), d.as_millis() as u64))
                            .collect()
                    })
                    .unwrap_or_default(),
                metrics: fe.map(|e| e.metrics.clone()).unwrap_or_default(),
                thresholds: fe.map(|e| e.thresholds.clone()).unwrap_or_default(),
                backup_artifacts: backup.as_ref().map_or(0, |b| b.artifacts.len()),
                backup_bytes: backup
                    .as_ref()
                    .map_or(0, |b| b.artifacts.iter().map(|a| a.size).sum()),
                backup,
                rollback,
            }
        })
        .collect();
    let targets: Vec<TargetReport> = i
        .targets
        .iter()
        .map(|t| TargetReport {
            name: t.name.to_string(),
            kind: t.kind.as_str().to_string(),
            copy: t.copy.clone(),
            copy_ms: t.copy_ms,
            before: t.before.clone(),
            after: t.after.clone(),
            unchanged: t.before == t.after,
            copy_restored_differences: t.restored.cloned(),
        })
        .collect();
    let production_untouched = targets.iter().all(|t| t.unchanged);
    if !production_untouched {
        code = exit::NEEDS_ATTENTION;
    }
    RehearsalReport {
        plan: i.plan.name.clone(),
        plan_file: i.plan.path.clone(),
        output: i.output.to_path_buf(),
        started_at: i.started_at,
        finished_at: now(),
        exit_code: code,
        outcome: match code {
            exit::OK => "ok",
            exit::STEP_FAILED => "step-failed",
            exit::REFUSED => "refused",
            exit::STOPPED => "stopped",
            _ => "needs-attention",
        }
        .to_string(),
        kept: i.keep,
        forward_run: run_timing(i.forward, Some(forward_e)),
        rollback_run: i.rollback.map(|r| run_timing(r, rollback_e)),
        targets,
        steps,
        production_untouched,
    }
}

fn ms(d: Option<i64>) -> String {
    d.map_or("—".into(), |d| format!("{d} ms"))
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    } else if n >= 1 << 10 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} B")
    }
}

fn state_line(s: &TargetState) -> String {
    let tables: Vec<String> = s
        .fingerprint
        .tables
        .iter()
        .map(|(name, t)| format!("`{name}` {} rows `{}`", t.rows, short(&t.checksum)))
        .collect();
    let mut line = format!(
        "schema `{}`; {}",
        short(&s.fingerprint.schema),
        tables.join(", ")
    );
    if let Some(sha) = &s.file_sha256 {
        line.push_str(&format!("; file sha256 `{sha}`"));
    }
    line
}

fn short(s: &str) -> &str {
    &s[..s.len().min(16)]
}

/// The report as Markdown: the verdict, production's fingerprints, per
/// step its phases, metrics against thresholds, backup and rollback; the
/// evidence of each rehearsal run follows.
pub fn markdown(r: &RehearsalReport, evidences: &[Evidence]) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# Rehearsal: plan `{}`\n", r.plan);
    let _ = writeln!(o, "| | |\n|---|---|");
    let _ = writeln!(o, "| Plan file | `{}` |", r.plan_file.display());
    let _ = writeln!(o, "| Started | {} |", r.started_at);
    let _ = writeln!(o, "| Finished | {} |", r.finished_at);
    let _ = writeln!(o, "| Outcome | **{}** (exit {}) |", r.outcome, r.exit_code);
    let _ = writeln!(
        o,
        "| Forward run | `{}`, {} ms, {} |",
        r.forward_run.id,
        r.forward_run.wall_ms,
        r.forward_run.outcome.as_deref().unwrap_or("—")
    );
    if let Some(rb) = &r.rollback_run {
        let _ = writeln!(
            o,
            "| Rollback run | `{}`, {} ms, {} |",
            rb.id,
            rb.wall_ms,
            rb.outcome.as_deref().unwrap_or("—")
        );
    }
    let _ = writeln!(
        o,
        "| Production | {} |",
        if r.production_untouched {
            "untouched: fingerprints equal"
        } else {
            "**CHANGED during the rehearsal**"
        }
    );
    let _ = writeln!(
        o,
        "| Journal | `{}` |",
        r.output.join(".sluice/journal.db").display()
    );

    let _ = writeln!(o, "\n## Targets\n");
    for t in &r.targets {
        let _ = writeln!(o, "### `{}` ({})\n", t.name, t.kind);
        let _ = writeln!(
            o,
            "- Copy: {} — made in {} ms{}",
            cell(&t.copy),
            t.copy_ms,
            if r.kept { ", kept" } else { ", removed" }
        );
        let _ = writeln!(o, "- Before: {}", state_line(&t.before));
        let _ = writeln!(o, "- After: {}", state_line(&t.after));
        let _ = writeln!(
            o,
            "- Production: {}",
            if t.unchanged {
                "untouched: fingerprints equal"
            } else {
                "**changed**"
            }
        );
        match &t.copy_restored_differences {
            Some(d) if d.is_empty() => {
                let _ = writeln!(
                    o,
                    "- After every rollback the copy equals production's pre-rehearsal state"
                );
            }
            Some(d) => {
                let _ = writeln!(
                    o,
                    "- After every rollback the copy still differs: {}",
                    cell(&d.join("; "))
                );
            }
            None => {}
        }
        let _ = writeln!(o);
    }

    let _ = writeln!(o, "## Steps\n");
    let _ = writeln!(
        o,
        "| Step | Forward | Backup | Migrate | Validate | Rollback | Proven | Backup size |\n|---|---|---|---|---|---|---|---|"
    );
    for s in &r.steps {
        let phase = |name: &str| {
            s.phases
                .iter()
                .find(|p| p.phase == name)
                .map_or("—".to_string(), |p| ms(p.duration_ms))
        };
        let _ = writeln!(
            o,
            "| `{}` | {} | {} | {} | {} | {} | {} | {} in {} artifacts |",
            s.id,
            s.forward,
            phase("backup"),
            phase("migrate"),
            phase("validate"),
            s.rollback.as_ref().map_or("—".to_string(), |rb| format!(
                "{} ({})",
                ms(rb.timing.duration_ms),
                rb.by
            )),
            s.rollback
                .as_ref()
                .map_or("—", |rb| if rb.proven { "yes" } else { "**no**" }),
            bytes(s.backup_bytes),
            s.backup_artifacts
        );
    }
    for s in &r.steps {
        let _ = writeln!(o, "\n### Step `{}`\n", s.id);
        if let Some(f) = &s.failure {
            let _ = writeln!(o, "Failed in the rehearsal: {}\n", cell(f));
        }
        if !s.phases.is_empty() {
            let _ = writeln!(
                o,
                "| Phase | Journal duration | Plugin call | Ended in |\n|---|---|---|---|"
            );
            for p in &s.phases {
                let call = s
                    .plugin_calls_ms
                    .iter()
                    .find(|(name, _)| *name == p.phase)
                    .map_or("—".to_string(), |(_, d)| format!("{d} ms"));
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} |",
                    p.phase,
                    ms(p.duration_ms),
                    call,
                    p.ended_in.as_deref().unwrap_or("—")
                );
            }
            let _ = writeln!(o);
        }
        if !s.thresholds.is_empty() {
            let _ = writeln!(o, "| Threshold | Held | Values |\n|---|---|---|");
            for t in &s.thresholds {
                let held = match (t.held, &t.error) {
                    (Some(true), _) => "yes".to_string(),
                    (Some(false), _) => "**no**".to_string(),
                    (None, Some(e)) => cell(e),
                    (None, None) => "—".to_string(),
                };
                let values: Vec<String> = t
                    .values
                    .iter()
                    .map(|(k, v)| format!("{k} = {}", crate::report::number(*v)))
                    .collect();
                let _ = writeln!(
                    o,
                    "| `{}` | {} | {} |",
                    cell(&t.source),
                    held,
                    values.join(", ")
                );
            }
            let _ = writeln!(o);
        }
        if let Some(rb) = &s.rollback {
            let _ = writeln!(
                o,
                "Rollback ({} run `{}`): {}, ended in {}{}.",
                rb.by,
                rb.run_id,
                ms(rb.timing.duration_ms),
                rb.timing.ended_in.as_deref().unwrap_or("—"),
                rb.timing
                    .detail
                    .as_deref()
                    .map(|d| format!(": {}", cell(d)))
                    .unwrap_or_default()
            );
        }
    }
    for e in evidences {
        let _ = writeln!(o, "\n---\n");
        // The evidence's headings, one level down, under this report.
        for line in evidence::markdown(e).lines() {
            if line.starts_with('#') {
                let _ = writeln!(o, "#{line}");
            } else {
                let _ = writeln!(o, "{line}");
            }
        }
    }
    o
}

/// The one-screen summary printed after a rehearsal.
pub fn summary(r: &RehearsalReport) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "sluice rehearse · plan {} · on copies of {}",
        r.plan,
        r.targets
            .iter()
            .map(|t| format!("{} ({})", t.name, t.kind))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for s in &r.steps {
        let phases: Vec<String> = s
            .phases
            .iter()
            .filter(|p| p.phase != "rollback")
            .map(|p| format!("{} {}", p.phase, ms(p.duration_ms)))
            .collect();
        let mark = match s.forward.as_str() {
            "applied" | "already-applied" => "✓",
            "not-run" => "·",
            _ => "✗",
        };
        let _ = writeln!(
            o,
            "  {mark} {:<24} {:<16} {}",
            s.id,
            s.forward,
            phases.join(" · ")
        );
        if let Some(f) = &s.failure {
            let _ = writeln!(o, "      {}", f.chars().take(160).collect::<String>());
        }
        if let Some(rb) = &s.rollback {
            let _ = writeln!(
                o,
                "      rollback ({}) {} · {}",
                rb.by,
                ms(rb.timing.duration_ms),
                if rb.proven {
                    "pre-step state proven"
                } else {
                    "NOT proven"
                }
            );
        }
    }
    let _ = writeln!(
        o,
        "production {}",
        if r.production_untouched {
            "untouched: fingerprints equal"
        } else {
            "CHANGED during the rehearsal"
        }
    );
    let _ = writeln!(o, "rehearsal: {} (exit {})", r.outcome, r.exit_code);
    o
}

/// Writes `rehearsal.json` and `rehearsal.md` into `output`.
pub(super) fn write(
    r: &RehearsalReport,
    evidences: &[Evidence],
    output: &Path,
) -> Result<(), RehearsalError> {
    let fail = |e: std::io::Error| RehearsalError::Output {
        path: output.to_path_buf(),
        reason: e.to_string(),
    };
    let json = serde_json::to_string_pretty(r).expect("the report serializes");
    std::fs::write(output.join("rehearsal.json"), json + "\n").map_err(fail)?;
    std::fs::write(output.join("rehearsal.md"), markdown(r, evidences)).map_err(fail)?;
    Ok(())
}
