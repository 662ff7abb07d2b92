//! `sluice report`: the evidence an approver signs for one run, built from
//! the plan and the journal only (never from the datastores, and never
//! showing a connection URL).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use serde::Serialize;

use crate::backup::ArtifactRef;
use crate::journal::record::Cause;
use crate::journal::{Journal, JournalError, RunRecord, StepState, Transition};
use crate::plan::{Plan, Step};
use crate::runtime::Metric;

/// Errors building a report.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The journal has no run with this id.
    #[error("the journal of plan `{plan}` has no run `{run}` (known runs: {known})")]
    UnknownRun {
        /// Plan name.
        plan: String,
        /// The id asked for.
        run: String,
        /// The ids it has, newest last.
        known: String,
    },
    /// The plan never ran.
    #[error("plan `{0}` has no recorded run yet")]
    NoRuns(String),
}

/// The evidence of one run of a plan.
#[derive(Debug, Clone, Serialize)]
pub struct Evidence {
    /// The plan as it is now.
    pub plan: PlanEvidence,
    /// The run reported on.
    pub run: RunRecord,
    /// Every step of the plan, in plan order.
    pub steps: Vec<StepEvidence>,
}

/// The plan, and whether it changed since the run.
#[derive(Debug, Clone, Serialize)]
pub struct PlanEvidence {
    /// Plan name.
    pub name: String,
    /// Hash of the plan file now.
    pub hash: String,
    /// Whether the plan file now differs from the one the run ran.
    pub changed_since_run: bool,
}

/// What a step was, was allowed, and did in the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StepEvidence {
    /// Step id.
    pub id: String,
    /// Plugin name.
    pub plugin: String,
    /// Digest of the plugin that ran (the plan's current one if it did not run).
    pub plugin_digest: String,
    /// Target name.
    pub target: String,
    /// Target kind (`postgres`, `redis`, ...).
    pub target_kind: String,
    /// What the plan grants the step.
    pub grants: Grants,
    /// Phases in the order they ran in this run.
    pub phases: Vec<PhaseTiming>,
    /// The verified backup, when this run took one and the journal still has it.
    pub backup: Option<BackupEvidence>,
    /// Metrics of validate, when this run validated.
    pub metrics: Vec<Metric>,
    /// Each threshold and whether it held.
    pub thresholds: Vec<ThresholdEvidence>,
    /// The band the recorded metrics reached and its action, when the step
    /// has bands and validate ran in this run.
    pub band: Option<crate::plan::gate::BandReached>,
    /// Metrics validate measured before migrate (`baseline.` thresholds).
    pub baseline: Vec<Metric>,
    /// Operators' decisions on pauses of this run, and the approval this
    /// run acted on.
    pub approvals: Vec<crate::journal::Approval>,
    /// The rollback of this run, if one ran.
    pub rollback: Option<PhaseTiming>,
    /// The state the run left the step in; `None` if the run did not touch it.
    pub final_state: Option<String>,
    /// The detail of that last transition.
    pub detail: Option<String>,
    /// The cause of that last transition.
    pub cause: Option<Cause>,
    /// How this run resumed the step an earlier run left in flight, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed: Option<ResumedEvidence>,
}

/// The journal's record of a step this run resumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResumedEvidence {
    /// When it was resumed (RFC 3339).
    pub at: String,
    /// What the earlier run left and what this one did about it.
    pub detail: String,
}

/// The grants of a step (names only: no secret and no URL).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Grants {
    /// Access to the target.
    pub access: String,
    /// Tables it may touch, if restricted.
    pub tables: Option<Vec<String>>,
    /// Key prefixes it may touch, if restricted.
    pub key_prefixes: Option<Vec<String>>,
    /// Files: name and access.
    pub files: Vec<(String, String)>,
    /// Names of the values it may read.
    pub values: Vec<String>,
    /// Memory limit (MiB).
    pub memory_mib: u64,
    /// Time limit per phase (seconds).
    pub phase_seconds: u64,
    /// Backup size limit (MiB).
    pub backup_mib: u64,
}

/// One phase of a step: from the transition that started it to the next one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PhaseTiming {
    /// `backup`, `migrate`, `validate` or `rollback`.
    pub phase: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When the next transition was recorded; `None` if there was none.
    pub ended_at: Option<String>,
    /// `ended_at - started_at` in milliseconds.
    pub duration_ms: Option<i64>,
    /// The state that ended it.
    pub ended_in: Option<String>,
    /// The detail of the transition that ended it.
    pub detail: Option<String>,
}

/// A verified backup.
#[derive(Debug, Clone, Serialize)]
pub struct BackupEvidence {
    /// Artifacts with their sha256 digests and sizes.
    pub artifacts: Vec<ArtifactRef>,
    /// The journal's verification line.
    pub verification: Option<String>,
    /// Whether the journal records the backup as verified.
    pub verified: bool,
    /// How migrate changes the target, as the plugin declared.
    pub change: String,
}

/// A threshold and how it came out on the recorded metrics.
#[derive(Debug, Clone, Serialize)]
pub struct ThresholdEvidence {
    /// As written in the plan.
    pub source: String,
    /// Whether it held; `None` when not evaluated or not evaluable.
    pub held: Option<bool>,
    /// The recorded values of the metrics it reads.
    pub values: BTreeMap<String, f64>,
    /// Why it was not evaluated, if it was not.
    pub error: Option<String>,
}

/// The phases of a step's transitions in one run, oldest first: each of
/// backing-up, migrating, validating and rolling-back starts a phase that the
/// next transition ends.
pub fn phases(transitions: &[Transition]) -> Vec<PhaseTiming> {
    let mut out = Vec::new();
    for (i, t) in transitions.iter().enumerate() {
        let phase = match t.state {
            StepState::BackingUp => "backup",
            StepState::Migrating => "migrate",
            StepState::Validating => "validate",
            StepState::RollingBack => "rollback",
            StepState::Watching => "watch",
            _ => continue,
        };
        let end = transitions.get(i + 1);
        out.push(PhaseTiming {
            phase: phase.to_string(),
            started_at: t.at.clone(),
            ended_at: end.map(|e| e.at.clone()),
            duration_ms: end.and_then(|e| millis_between(&t.at, &e.at)),
            ended_in: end.map(|e| e.state.as_str().to_string()),
            detail: end.map(|e| e.detail.clone()),
        });
    }
    out
}

fn millis_between(from: &str, to: &str) -> Option<i64> {
    Some(epoch_millis(to)? - epoch_millis(from)?)
}

/// Milliseconds since the epoch of an RFC 3339 time, as the journal writes it.
pub(crate) fn epoch_millis(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Builds the evidence of `run_id` (default: the latest run) of `plan`.
pub fn build(
    plan: &Plan,
    journal: &dyn Journal,
    run_id: Option<&str>,
) -> Result<Evidence, EvidenceError> {
    let runs = journal.runs()?;
    let run =
        match run_id {
            Some(id) => runs.iter().find(|r| r.id == id).cloned().ok_or_else(|| {
                EvidenceError::UnknownRun {
                    plan: plan.name.clone(),
                    run: id.to_string(),
                    known: if runs.is_empty() {
                        "none".to_string()
                    } else {
                        runs.iter()
                            .map(|r| r.id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                }
            })?,
            None => runs
                .last()
                .cloned()
                .ok_or_else(|| EvidenceError::NoRuns(plan.name.clone()))?,
        };
    let steps = plan
        .steps
        .iter()
        .map(|s| step_evidence(plan, journal, &run, s))
        .collect::<Result<_, _>>()?;
    Ok(Evidence {
        plan: PlanEvidence {
            name: plan.name.clone(),
            hash: plan.hash.clone(),
            changed_since_run: plan.hash != run.plan_hash,
        },
        run,
        steps,
    })
}

fn step_evidence(
    plan: &Plan,
    journal: &dyn Journal,
    run: &RunRecord,
    step: &Step,
) -> Result<StepEvidence, EvidenceError> {
    let all = journal.transitions(&step.id)?;
    let ours: Vec<Transition> = all.iter().filter(|t| t.run_id == run.id).cloned().collect();
    let record = journal.step(&step.id)?;
    // The step row holds the backup and metrics of the run that last started
    // the step (backing-up): they are this run's only if that run is this one.
    let started_last = all
        .iter()
        .rev()
        .find(|t| t.state == StepState::BackingUp)
        .is_some_and(|t| t.run_id == run.id);
    let record = record.filter(|_| started_last);
    let phases = phases(&ours);
    let backup = record
        .as_ref()
        .and_then(|r| r.backup.as_ref())
        .map(|b| BackupEvidence {
            artifacts: b.artifacts.clone(),
            verification: ours
                .iter()
                .rev()
                .find(|t| t.state == StepState::BackedUp)
                .map(|t| t.detail.clone()),
            verified: ours
                .iter()
                .any(|t| t.state == StepState::BackedUp && t.cause == Cause::BackupVerified),
            change: b.manifest.change.as_str().to_string(),
        });
    let metrics = record
        .as_ref()
        .map(|r| r.metrics.clone())
        .unwrap_or_default();
    let validated = ours.iter().any(|t| t.state == StepState::Validating);
    let baseline = record
        .as_ref()
        .and_then(|r| r.backup.as_ref())
        .map(|b| b.baseline.clone())
        .unwrap_or_default();
    let values = crate::journal::outcome::metric_values(&metrics, &baseline);
    let evaluated = validated && record.is_some();
    // The engine's own judgement on the recorded metrics: a report cannot
    // disagree with the run about a threshold or the band reached.
    let judgement = evaluated.then(|| step.judge(&values));
    let thresholds = step
        .thresholds
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let used = t
                .expr
                .metrics()
                .into_iter()
                .filter_map(|m| values.get(m).map(|v| (m.to_string(), *v)))
                .collect();
            let (held, error) = match &judgement {
                None => (
                    None,
                    Some("not evaluated: validate did not run in this run".to_string()),
                ),
                Some(j) => (j.thresholds[i].held, j.thresholds[i].error.clone()),
            };
            ThresholdEvidence {
                source: t.source.clone(),
                held,
                values: used,
                error,
            }
        })
        .collect();
    let band = judgement.and_then(|j| j.band);
    let acted_on = ours
        .iter()
        .find(|t| matches!(t.cause, Cause::Approved { .. }))
        .map(|t| t.at.clone());
    let approvals = journal
        .approvals(&step.id)?
        .into_iter()
        .filter(|a| {
            a.run_id == run.id
                || acted_on.as_ref().is_some_and(|at| {
                    a.decision == crate::journal::Decision::Approve
                        && epoch_millis(&a.at) <= epoch_millis(at)
                })
        })
        .collect::<Vec<_>>();
    // Of the earlier approvals, only the latest is the one this run acted on.
    let approvals = {
        let (mine, earlier): (Vec<_>, Vec<_>) =
            approvals.into_iter().partition(|a| a.run_id == run.id);
        earlier.into_iter().last().into_iter().chain(mine).collect()
    };
    let target = plan.targets.get(&step.target);
    let plugin_digest = match &record {
        Some(r) => r.plugin_digest.clone(),
        None => plan
            .plugins
            .get(&step.plugin)
            .map(|p| p.digest.clone())
            .unwrap_or_default(),
    };
    Ok(StepEvidence {
        id: step.id.clone(),
        plugin: step.plugin.clone(),
        plugin_digest,
        target: step.target.clone(),
        target_kind: target
            .map(|t| t.kind.as_str().to_string())
            .unwrap_or_default(),
        grants: Grants {
            access: step.access.as_str().to_string(),
            tables: step.tables.clone(),
            key_prefixes: step.key_prefixes.clone(),
            files: step
                .files
                .iter()
                .map(|f| (f.name.clone(), f.access.as_str().to_string()))
                .collect(),
            values: step.values.clone(),
            memory_mib: step.limits.memory_mib,
            phase_seconds: step.limits.phase_seconds,
            backup_mib: step.limits.backup_mib,
        },
        rollback: phases.iter().rev().find(|p| p.phase == "rollback").cloned(),
        phases,
        backup,
        metrics,
        thresholds,
        band,
        baseline,
        approvals,
        final_state: ours.last().map(|t| t.state.as_str().to_string()),
        detail: ours.last().map(|t| t.detail.clone()),
        cause: ours.last().map(|t| t.cause.clone()),
        // The engine marks the transition that resumes a step (see `Engine::resume`).
        resumed: ours
            .iter()
            .find(|t| t.cause.is_resumption())
            .map(|t| ResumedEvidence {
                at: t.at.clone(),
                detail: t.detail.clone(),
            }),
    })
}

/// The evidence as pretty JSON.
pub fn json(e: &Evidence) -> String {
    serde_json::to_string_pretty(e).expect("evidence serializes")
}

fn ms(d: Option<i64>) -> String {
    match d {
        Some(d) if d >= 0 => super::duration(Duration::from_millis(d as u64)),
        Some(d) => format!("{d}ms"),
        None => "—".to_string(),
    }
}

/// Markdown cells must not break the table.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The evidence as Markdown: a heading per step, tables for phases, backups
/// and metrics against thresholds.
pub fn markdown(e: &Evidence) -> String {
    let mut o = String::new();
    let r = &e.run;
    let _ = writeln!(o, "# Evidence: plan `{}`, run `{}`\n", e.plan.name, r.id);
    let _ = writeln!(o, "| | |\n|---|---|");
    let _ = writeln!(o, "| Command | `{}` |", r.command);
    let _ = writeln!(o, "| Plan hash | `{}` |", r.plan_hash);
    if e.plan.changed_since_run {
        let _ = writeln!(
            o,
            "| Plan now | **changed since the run** (now `{}`) |",
            e.plan.hash
        );
    } else {
        let _ = writeln!(o, "| Plan now | unchanged |");
    }
    let _ = writeln!(o, "| Started | {} |", r.started_at);
    let _ = writeln!(
        o,
        "| Finished | {} |",
        r.finished_at.as_deref().unwrap_or("— (not recorded)")
    );
    let _ = writeln!(
        o,
        "| Outcome | {} |",
        r.outcome.as_deref().unwrap_or("— (not recorded)")
    );
    for s in &e.steps {
        let _ = writeln!(o, "\n## Step `{}`\n", s.id);
        let _ = writeln!(
            o,
            "- Final state: **{}**{}",
            s.final_state.as_deref().unwrap_or("not run in this run"),
            s.detail
                .as_deref()
                .map(|d| format!(" — {}", cell(d)))
                .unwrap_or_default()
        );
        let _ = writeln!(o, "- Plugin: `{}` sha256 `{}`", s.plugin, s.plugin_digest);
        let _ = writeln!(o, "- Target: `{}` ({})", s.target, s.target_kind);
        let g = &s.grants;
        let _ = writeln!(o, "- Access: {}", g.access);
        if let Some(t) = &g.tables {
            let _ = writeln!(o, "- Tables: {}", t.join(", "));
        }
        if let Some(k) = &g.key_prefixes {
            let _ = writeln!(o, "- Key prefixes: {}", k.join(", "));
        }
        if !g.files.is_empty() {
            let files: Vec<String> = g.files.iter().map(|(n, a)| format!("{n} ({a})")).collect();
            let _ = writeln!(o, "- Files: {}", files.join(", "));
        }
        if !g.values.is_empty() {
            let _ = writeln!(o, "- Values: {}", g.values.join(", "));
        }
        let _ = writeln!(
            o,
            "- Limits: {} MiB memory, {} s per phase, {} MiB backup",
            g.memory_mib, g.phase_seconds, g.backup_mib
        );
        if !s.phases.is_empty() {
            let _ = writeln!(o, "\n### Phases\n\n| Phase | Started | Ended | Duration | Ended in |\n|---|---|---|---|---|");
            for p in &s.phases {
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} | {} |",
                    p.phase,
                    p.started_at,
                    p.ended_at.as_deref().unwrap_or("—"),
                    ms(p.duration_ms),
                    p.ended_in.as_deref().unwrap_or("—")
                );
            }
        }
        if let Some(b) = &s.backup {
            let _ = writeln!(o, "\n### Backup\n");
            if let Some(v) = &b.verification {
                let _ = writeln!(o, "{}; migrate is {}.\n", cell(v), b.change);
            }
            let _ = writeln!(o, "| Artifact | sha256 | Size |\n|---|---|---|");
            for a in &b.artifacts {
                let _ = writeln!(
                    o,
                    "| {} | `{}` | {} |",
                    cell(&a.name),
                    a.digest,
                    super::bytes(a.size)
                );
            }
        }
        if !s.thresholds.is_empty() || !s.metrics.is_empty() {
            let _ = writeln!(o, "\n### Metrics and thresholds\n");
            if !s.metrics.is_empty() {
                let _ = writeln!(o, "| Metric | Value | Detail |\n|---|---|---|");
                for m in &s.metrics {
                    let _ = writeln!(
                        o,
                        "| {} | {} | {} |",
                        cell(&m.name),
                        super::number(m.value),
                        cell(&m.detail)
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
                        .map(|(k, v)| format!("{k} = {}", super::number(*v)))
                        .collect();
                    let _ = writeln!(
                        o,
                        "| `{}` | {} | {} |",
                        cell(&t.source),
                        held,
                        values.join(", ")
                    );
                }
            }
        }
        if let Some(b) = &s.band {
            let _ = writeln!(
                o,
                "\nBand reached: `{}` → **{}**",
                cell(b.when.as_deref().unwrap_or("none (default)")),
                b.action.as_str()
            );
        }
        if !s.baseline.is_empty() {
            let before: Vec<String> = s
                .baseline
                .iter()
                .map(|m| format!("{} = {}", cell(&m.name), super::number(m.value)))
                .collect();
            let _ = writeln!(o, "\nBaseline (before migrate): {}", before.join(", "));
        }
        if !s.approvals.is_empty() {
            let _ = writeln!(
                o,
                "\n### Decisions\n\n| Decision | By | At | Plan | Reason |\n|---|---|---|---|---|"
            );
            for a in &s.approvals {
                let _ = writeln!(
                    o,
                    "| {:?} | {} | {} | `{}` | {} |",
                    a.decision,
                    cell(&a.by),
                    a.at,
                    &a.plan_hash[..a.plan_hash.len().min(12)],
                    cell(a.reason.as_deref().unwrap_or("—"))
                );
            }
        }
        if let Some(rb) = &s.rollback {
            let _ = writeln!(
                o,
                "\n### Rollback\n\nStarted {}, ended in {} after {}{}.",
                rb.started_at,
                rb.ended_in.as_deref().unwrap_or("— (no end recorded)"),
                ms(rb.duration_ms),
                rb.detail
                    .as_deref()
                    .map(|d| format!(": {}", cell(d)))
                    .unwrap_or_default()
            );
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(state: StepState, at: &str) -> Transition {
        Transition {
            run_id: "r".into(),
            step_id: "s".into(),
            state,
            at: at.into(),
            cause: Cause::Unrecorded,
            detail: format!("{state}"),
        }
    }

    #[test]
    fn phases_run_from_their_start_to_the_next_transition() {
        let ts = [
            t(StepState::BackingUp, "2026-01-01T00:00:00.000Z"),
            t(StepState::BackedUp, "2026-01-01T00:00:00.250Z"),
            t(StepState::Migrating, "2026-01-01T00:00:00.300Z"),
            t(StepState::Validating, "2026-01-01T00:00:01.300Z"),
            t(StepState::RollingBack, "2026-01-01T00:00:01.350Z"),
            t(StepState::RolledBack, "2026-01-01T00:00:03.350Z"),
        ];
        let p = phases(&ts);
        let got: Vec<(&str, Option<i64>, Option<&str>)> = p
            .iter()
            .map(|p| (p.phase.as_str(), p.duration_ms, p.ended_in.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("backup", Some(250), Some("backed-up")),
                ("migrate", Some(1000), Some("validating")),
                ("validate", Some(50), Some("rolling-back")),
                ("rollback", Some(2000), Some("rolled-back")),
            ]
        );
        assert_eq!(p[3].started_at, "2026-01-01T00:00:01.350Z");
        assert_eq!(p[3].ended_at.as_deref(), Some("2026-01-01T00:00:03.350Z"));
    }

    #[test]
    fn an_unfinished_phase_has_no_end_and_a_failed_backup_ends_in_failed() {
        let ts = [
            t(StepState::BackingUp, "2026-01-01T00:00:00Z"),
            t(StepState::Failed, "2026-01-01T00:00:00.010Z"),
            t(StepState::BackingUp, "2026-01-01T00:00:05Z"),
        ];
        let p = phases(&ts);
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].duration_ms, p[0].ended_in.as_deref()),
            (Some(10), Some("failed"))
        );
        assert_eq!((p[1].ended_at.as_ref(), p[1].duration_ms), (None, None));
    }

    #[test]
    fn journal_times_read_as_the_time_crate_writes_them() {
        let t = time::OffsetDateTime::from_unix_timestamp(1_790_000_000).unwrap()
            + time::Duration::milliseconds(125);
        let s = t
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        assert_eq!(epoch_millis(&s), Some(1_790_000_000_125));
        assert_eq!(epoch_millis("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(epoch_millis("1970-01-01T01:00:00.5+01:00"), Some(500));
        assert_eq!(epoch_millis("1970-13-01T00:00:00Z"), None);
    }

    #[test]
    fn timestamps_that_do_not_parse_give_no_duration() {
        let ts = [
            t(StepState::Migrating, "yesterday"),
            t(StepState::Validating, "2026-01-01T00:00:00Z"),
        ];
        assert_eq!(phases(&ts)[0].duration_ms, None);
    }
}
