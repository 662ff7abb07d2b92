//! `sluice plan`: what each step will do, before anything runs.
//!
//! Per step, the host gathers what it knows itself — the plugin and its
//! digest, the target (address redacted), the access and grants as
//! `sluice audit` describes them, the thresholds, and a backup size it
//! measures read-only on the target — and what the plugin's `preview`
//! export says from the params alone: a summary, how migrate changes the
//! target, the metrics validate will report and what the backup will save.
//! `preview` runs with nothing granted but `log`.
//!
//! [`check_metrics`] turns a threshold that reads a metric the plugin will
//! never report into a plan error at the threshold's location, so a typo
//! (`match_rat`) fails the plan instead of the step after its migrate ran.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use serde::Serialize;

use crate::audit;
use crate::datastores::{self, Endpoint};
use crate::plan::{Address, Location, Plan, PlanError, Step, Threshold};
use crate::runtime::bindings::ChangeKind;
use crate::runtime::{
    LoadedPlugin, PhaseCaller, PhaseError, PluginError, StepContext, MAX_METRICS, MAX_METRIC_TEXT,
};

/// Bytes of a plugin's summary kept; a longer one is cut (it is display
/// text, and the plugin controls its length).
pub const MAX_SUMMARY_BYTES: usize = 4_096;
/// Tables or key prefixes a preview may name (a backup scope, not data).
pub const MAX_PREVIEW_TABLES: usize = 10_000;
/// How long the host's backup estimate of one step may take; past it the
/// estimate is "unknown" (an unreachable server must not stall `sluice plan`).
pub const ESTIMATE_TIMEOUT: Duration = Duration::from_secs(30);
/// Prefix of a threshold metric that reads the value measured before migrate.
pub const BASELINE_PREFIX: &str = "baseline.";

/// Whether [`preview`] measures backup sizes on the targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Estimate {
    /// Measure, read-only (`sluice plan`).
    Measure,
    /// Do not touch the targets (`sluice check`, the engine's plan check).
    Skip,
}

/// The plugin running a step.
#[derive(Debug, Clone, Serialize)]
pub struct PluginSummary {
    /// Name in the plan.
    pub name: String,
    /// Name the plugin gives itself.
    pub describes_as: String,
    /// Its version.
    pub version: String,
    /// sha256 of its component file.
    pub sha256: String,
}

/// The target of a step.
#[derive(Debug, Clone, Serialize)]
pub struct TargetSummary {
    /// Name in the plan.
    pub name: String,
    /// `sqlite`, `postgres`, `redis`.
    pub kind: String,
    /// The file, or the server without credentials (`postgres://host:port/db`).
    pub address: String,
}

/// The host's estimate of a step's backup size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupEstimate {
    /// Measured bytes of the data the backup will save.
    Bytes(u64),
    /// Could not be measured, and why.
    Unknown(String),
}

/// What one step will do.
#[derive(Debug, Clone, Serialize)]
pub struct StepPreview {
    /// Step id.
    pub step: String,
    /// Where the step is written in the plan.
    #[serde(skip)]
    pub location: Location,
    /// The plugin.
    pub plugin: PluginSummary,
    /// The target.
    pub target: TargetSummary,
    /// `read-only` or `read-write` (migrate and rollback).
    pub access: String,
    /// The step's grants, as `sluice audit` words them.
    pub grants: Vec<String>,
    /// Grants a reviewer should look at twice.
    pub risky: Vec<String>,
    /// Imports the step is not granted: the run would be refused.
    pub ungranted: Vec<String>,
    /// What the plugin says migrate will do; `None` when it cannot preview.
    pub summary: Option<String>,
    /// `transactional`, `non-transactional` or `irreversible`.
    pub change: Option<String>,
    /// What that means for a failure.
    pub change_meaning: Option<String>,
    /// Metrics validate will report; `None` when the plugin cannot tell.
    pub metrics: Option<Vec<String>>,
    /// What the backup saves (tables or key prefixes); empty: the whole target.
    pub backup_scope: Vec<String>,
    /// The host's estimate of the backup size; `None` when not measured.
    pub backup_estimate: Option<BackupEstimate>,
    /// How a rollback of the step undoes it (the undo contract, README).
    pub undo: String,
    /// The thresholds, as written.
    pub thresholds: Vec<String>,
    /// Why the plugin gave no preview, when it gave none.
    pub no_preview: Option<String>,
}

/// Why a plan cannot be previewed.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    /// The plan is wrong: params the plugin rejects, a threshold naming an
    /// unknown metric.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The plugin's `preview` failed in a way that is not about the params
    /// (trap, timeout, an error it should not return without a datastore).
    #[error("step `{step}`: plugin `{plugin}` failed to preview it: {error}")]
    Plugin {
        /// Step id.
        step: String,
        /// Plugin name in the plan.
        plugin: String,
        /// What went wrong.
        error: PhaseError,
    },
    /// The plugin answered with more than the host accepts.
    #[error("step `{step}`: plugin `{plugin}` returned an oversized preview: {what}")]
    Oversized {
        /// Step id.
        step: String,
        /// Plugin name in the plan.
        plugin: String,
        /// Which bound it broke.
        what: String,
    },
}

/// The context the engine gives every phase call of `step`.
fn context(plan: &Plan, step: &Step) -> StepContext {
    crate::runtime::step_context(plan, step)
}

/// Previews every step: asks each step's plugin (`plugins`, loaded by
/// plan name) for its preview with no grants, and, with
/// [`Estimate::Measure`], measures each backup's size read-only.
pub async fn preview(
    plan: &Plan,
    runtime: &dyn PhaseCaller,
    plugins: &BTreeMap<String, LoadedPlugin>,
    estimate: Estimate,
) -> Result<Vec<StepPreview>, PreviewError> {
    let mut out = Vec::with_capacity(plan.steps.len());
    for step in &plan.steps {
        let plugin = &plugins[&step.plugin];
        let target = &plan.targets[&step.target];
        let answer = runtime
            .preview(plugin, &context(plan, step), step.limits, &step.probes)
            .await;
        let (declared, no_preview) = match answer {
            Ok(p) => (Some(bounded(step, p)?), None),
            Err(PhaseError::Plugin(PluginError::Unsupported(why))) => (None, Some(why)),
            Err(PhaseError::Plugin(PluginError::InvalidParams(why))) => {
                return Err(plan_error(
                    &step.location,
                    format!(
                        "step `{}`: plugin `{}` rejects its params: {why}",
                        step.id, step.plugin
                    ),
                )
                .into())
            }
            Err(error) => {
                return Err(PreviewError::Plugin {
                    step: step.id.clone(),
                    plugin: step.plugin.clone(),
                    error,
                })
            }
        };
        // What the backup saves: as the plugin says, else the step's scope.
        let backup_scope = match &declared {
            Some(p) => p.tables.clone(),
            None => step
                .tables
                .clone()
                .or_else(|| step.key_prefixes.clone())
                .unwrap_or_default(),
        };
        let backup_estimate = match estimate {
            Estimate::Skip => None,
            Estimate::Measure => Some(measure(plan, step, backup_scope.clone()).await),
        };
        let audit = audit::audit_step(step, &plan.targets[&step.target], plugin);
        let change = declared.as_ref().map(|p| p.change);
        out.push(StepPreview {
            step: step.id.clone(),
            location: step.location.clone(),
            plugin: PluginSummary {
                name: step.plugin.clone(),
                describes_as: plugin.info.name.clone(),
                version: plugin.info.version.clone(),
                sha256: plugin.digest.clone(),
            },
            target: TargetSummary {
                name: target.name.clone(),
                kind: target.kind.as_str().to_string(),
                address: address(plan, &target.address),
            },
            access: step.access.as_str().to_string(),
            grants: audit.granted,
            risky: audit.risky,
            ungranted: audit.ungranted,
            summary: declared.as_ref().map(|p| p.summary.clone()),
            change: change.map(|c| change_name(c).to_string()),
            change_meaning: change.map(|c| change_meaning(c).to_string()),
            metrics: declared.map(|p| p.metrics),
            backup_scope,
            backup_estimate,
            undo: undo_words(step.access, target.kind),
            thresholds: step.thresholds.iter().map(|t| t.source.clone()).collect(),
            no_preview,
        });
    }
    Ok(out)
}

/// How a rollback of a step with `access` on a `kind` target undoes it
/// (the undo contract, README).
fn undo_words(access: crate::plan::Access, kind: crate::plan::TargetKind) -> String {
    const RESTORE: &str = "restore the backup (refused if written since)";
    if access == crate::plan::Access::ReadOnly {
        "nothing (read-only)".into()
    } else if crate::datastores::driver(kind).captures_changes() {
        format!(
            "put back the rows migrate changed and drop what it created (by change set); \
             a step that alters or drops existing objects: {RESTORE}"
        )
    } else {
        RESTORE.into()
    }
}

/// The plan check before anything runs (`sluice check`, and the engine
/// before a run): every step previewed without touching its target, bad
/// params and thresholds naming metrics the plugin will not report as plan
/// errors.
pub async fn check(
    plan: &Plan,
    runtime: &dyn PhaseCaller,
    plugins: &BTreeMap<String, LoadedPlugin>,
) -> Result<Vec<StepPreview>, PreviewError> {
    let previews = preview(plan, runtime, plugins, Estimate::Skip).await?;
    check_metrics(plan, &previews)?;
    Ok(previews)
}

/// Checks the plugin's answer against the host's bounds; cuts the summary.
fn bounded(
    step: &Step,
    mut p: crate::runtime::StepPreview,
) -> Result<crate::runtime::StepPreview, PreviewError> {
    let oversized = |what: String| PreviewError::Oversized {
        step: step.id.clone(),
        plugin: step.plugin.clone(),
        what,
    };
    if p.metrics.len() > MAX_METRICS {
        return Err(oversized(format!(
            "{} metric names; the limit is {MAX_METRICS}",
            p.metrics.len()
        )));
    }
    if p.tables.len() > MAX_PREVIEW_TABLES {
        return Err(oversized(format!(
            "{} tables; the limit is {MAX_PREVIEW_TABLES}",
            p.tables.len()
        )));
    }
    if let Some(long) = p
        .metrics
        .iter()
        .chain(&p.tables)
        .find(|n| n.len() > MAX_METRIC_TEXT)
    {
        return Err(oversized(format!(
            "a name of {} bytes (`{}…`); the limit is {MAX_METRIC_TEXT}",
            long.len(),
            long.chars().take(32).collect::<String>()
        )));
    }
    if p.summary.len() > MAX_SUMMARY_BYTES {
        let mut end = MAX_SUMMARY_BYTES;
        while !p.summary.is_char_boundary(end) {
            end -= 1;
        }
        p.summary.truncate(end);
        p.summary.push('…');
    }
    Ok(p)
}

/// The backup size of `step`, measured read-only; "unknown (why)" when the
/// target cannot be reached.
async fn measure(plan: &Plan, step: &Step, scope: Vec<String>) -> BackupEstimate {
    let target = &plan.targets[&step.target];
    let endpoint = match &target.address {
        Address::File(files) => Endpoint::File(files.clone()),
        Address::Connection(value) => match plan.resolve_value(value) {
            Ok(url) => Endpoint::Url(url),
            Err(e) => return BackupEstimate::Unknown(e.to_string()),
        },
    };
    let scope = (!scope.is_empty()).then_some(scope);
    let measuring = datastores::estimate_backup(target.kind, &endpoint, scope);
    match tokio::time::timeout(ESTIMATE_TIMEOUT, measuring).await {
        Ok(Ok(bytes)) => BackupEstimate::Bytes(bytes),
        Ok(Err(e)) => BackupEstimate::Unknown(e.to_string()),
        Err(_) => {
            BackupEstimate::Unknown(format!("no answer within {}s", ESTIMATE_TIMEOUT.as_secs()))
        }
    }
}

/// A target's address for people: the file, or the server URL without its
/// credentials (never the secret itself).
fn address(plan: &Plan, address: &Address) -> String {
    match address {
        Address::File(files) => files.describe(),
        Address::Connection(value) => match plan.resolve_value(value) {
            Ok(url) => url.redacted_url(),
            Err(e) => format!("unresolved: {e}"),
        },
    }
}

fn change_name(change: ChangeKind) -> &'static str {
    match change {
        ChangeKind::Transactional => "transactional",
        ChangeKind::NonTransactional => "non-transactional",
        ChangeKind::Irreversible => "irreversible",
    }
}

fn change_meaning(change: ChangeKind) -> &'static str {
    match change {
        ChangeKind::Transactional => "one transaction: a failing migrate leaves nothing behind",
        ChangeKind::NonTransactional => {
            "statement by statement: a failure may leave part of it applied; rollback compensates or restores from the backup"
        }
        ChangeKind::Irreversible => "reversible only from backup",
    }
}

/// Every metric a threshold reads (a `baseline.` prefix stripped: it reads
/// the same metric measured before migrate) must be one the step's plugin
/// declared in its preview; else a plan error at that threshold, listing the
/// metrics the step will have. Steps whose plugin cannot preview are not
/// checked.
pub fn check_metrics(plan: &Plan, previews: &[StepPreview]) -> Result<(), PlanError> {
    for preview in previews {
        let Some(declared) = &preview.metrics else {
            continue;
        };
        let Some(step) = plan.step(&preview.step) else {
            continue;
        };
        for threshold in &step.thresholds {
            for read in threshold.expr.metrics() {
                let name = read.strip_prefix(BASELINE_PREFIX).unwrap_or(read);
                if declared.iter().any(|d| d == name) {
                    continue;
                }
                return Err(unknown_metric(step, threshold, read, name, declared));
            }
        }
    }
    Ok(())
}

fn unknown_metric(
    step: &Step,
    threshold: &Threshold,
    read: &str,
    name: &str,
    declared: &[String],
) -> PlanError {
    let known = if declared.is_empty() {
        "none (its params define no metrics)".to_string()
    } else {
        declared.join(", ")
    };
    let hint = declared
        .iter()
        .map(|d| (edit_distance(d, name), d))
        .filter(|(distance, _)| *distance <= 2)
        .min()
        .map(|(_, d)| format!("; did you mean `{d}`?"))
        .unwrap_or_default();
    let mut location = threshold.location.clone();
    if let Some(chars) = word_offset(&threshold.source, read) {
        location.column += chars;
    }
    plan_error(
        &location,
        format!(
            "threshold `{}` of step `{}` reads metric `{name}`, which plugin `{}` will not report with these params; it reports: {known}{hint}",
            threshold.source, step.id, step.plugin
        ),
    )
}

/// Character offset of `word` in `text` as a whole identifier (not part of
/// a longer name).
fn word_offset(text: &str, word: &str) -> Option<usize> {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_' || c == '.';
    let mut from = 0;
    while let Some(i) = text[from..].find(word).map(|i| i + from) {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        if !before.is_some_and(is_ident) && !after.is_some_and(is_ident) {
            return Some(text[..i].chars().count());
        }
        from = i + word.len();
    }
    None
}

/// Levenshtein distance, for "did you mean" (names are short).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (previous + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(current + 1);
            previous = current;
        }
    }
    row[b.len()]
}

/// A plan error at `location`, with the plan line it points into.
fn plan_error(location: &Location, message: String) -> PlanError {
    let source_line = std::fs::read_to_string(&location.file)
        .ok()
        .and_then(|text| {
            text.lines()
                .nth(location.line.saturating_sub(1))
                .map(str::to_string)
        })
        .unwrap_or_default();
    PlanError::Invalid {
        location: location.clone(),
        message,
        source_line,
    }
}

/// Renders the previews for people: one block per step.
pub fn text(plan: &Plan, previews: &[StepPreview]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "plan {} ({}): {} steps, nothing runs",
        plan.name,
        plan.path.display(),
        previews.len()
    );
    let n = previews.len();
    for (i, p) in previews.iter().enumerate() {
        let _ = writeln!(out, "\nstep {}/{n} {}", i + 1, p.step);
        let _ = writeln!(
            out,
            "  plugin      {} {} (`{}`, sha256 {})",
            p.plugin.describes_as,
            p.plugin.version,
            p.plugin.name,
            &p.plugin.sha256[..p.plugin.sha256.len().min(16)]
        );
        let _ = writeln!(
            out,
            "  target      {} ({}, {})",
            p.target.name, p.target.kind, p.target.address
        );
        for g in &p.grants {
            let _ = writeln!(out, "  granted     {g}");
        }
        for r in &p.risky {
            let _ = writeln!(out, "  RISKY       {r}");
        }
        for u in &p.ungranted {
            let _ = writeln!(out, "  UNGRANTED   {u} — the run is refused");
        }
        match (&p.summary, &p.no_preview) {
            (Some(summary), _) => {
                let _ = writeln!(out, "  does        {}", wrap(summary, TEXT_WIDTH, 14));
            }
            (None, why) => {
                let _ = writeln!(
                    out,
                    "  does        (no preview: {})",
                    why.as_deref().unwrap_or("the plugin cannot tell")
                );
            }
        }
        if let (Some(change), Some(meaning)) = (&p.change, &p.change_meaning) {
            let _ = writeln!(out, "  change      {change} — {meaning}");
        }
        let scope = if p.backup_scope.is_empty() {
            "the whole target".to_string()
        } else {
            p.backup_scope.join(", ")
        };
        let size = match &p.backup_estimate {
            Some(BackupEstimate::Bytes(b)) => {
                format!(", about {} now", crate::report::bytes(*b))
            }
            Some(BackupEstimate::Unknown(why)) => format!(", size unknown ({why})"),
            None => String::new(),
        };
        let _ = writeln!(out, "  backup      {scope}{size}");
        let _ = writeln!(out, "  undo        {}", wrap(&p.undo, TEXT_WIDTH, 14));
        match &p.metrics {
            Some(m) if m.is_empty() => {
                let _ = writeln!(out, "  metrics     none");
            }
            Some(m) => {
                let _ = writeln!(out, "  metrics     {}", m.join(", "));
            }
            None => {
                let _ = writeln!(
                    out,
                    "  metrics     unknown (not checked against thresholds)"
                );
            }
        }
        if p.thresholds.is_empty() {
            let _ = writeln!(out, "  thresholds  none");
        } else {
            let _ = writeln!(out, "  thresholds  {}", p.thresholds.join(" · "));
        }
    }
    out
}

/// Columns the text output wraps long lines at.
const TEXT_WIDTH: usize = 100;

/// `text` wrapped at word boundaries to `width` columns, continuation lines
/// indented by `indent` spaces (the first line starts after its label).
fn wrap(text: &str, width: usize, indent: usize) -> String {
    let mut out = String::new();
    let mut column = indent;
    for word in text.split_whitespace() {
        let len = word.chars().count();
        if column > indent && column + 1 + len > width {
            out.push('\n');
            out.push_str(&" ".repeat(indent));
            column = indent;
        } else if column > indent {
            out.push(' ');
            column += 1;
        }
        out.push_str(word);
        column += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_found_whole() {
        assert_eq!(word_offset("rows_x >= 1 and rows == 2", "rows"), Some(16));
        assert_eq!(word_offset("match_rat >= 0.95", "match_rat"), Some(0));
        assert_eq!(
            word_offset(
                "latency_p95 <= 2 * baseline.latency_p95",
                "baseline.latency_p95"
            ),
            Some(19)
        );
        assert_eq!(word_offset("rows_x >= 1", "rows"), None);
    }

    #[test]
    fn long_summaries_wrap_under_their_label() {
        let wrapped = wrap("aaa bbb ccc ddd", 10, 2);
        assert_eq!(wrapped, "aaa bbb\n  ccc ddd");
        assert!(wrapped.lines().all(|l| l.chars().count() <= 10));
    }

    #[test]
    fn near_names_are_suggested() {
        assert_eq!(edit_distance("match_rate", "match_rat"), 1);
        assert_eq!(edit_distance("duplicates", "duplicates"), 0);
        assert_eq!(edit_distance("rows", "latency_p95"), 11);
    }
}
