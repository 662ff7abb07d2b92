//! GO/NO-GO gates of a step: thresholds that must hold, bands that map the
//! metrics to an action (advance, pause for review, roll back), approval
//! points and watch windows. The engine and the reports judge metrics here,
//! so a run and its report can never disagree about the band reached.
//!
//! ```toml
//! [[steps]]
//! thresholds = ["duplicates == 0"]       # must hold, else roll back
//! approval = "before"                    # pause before the step changes anything
//! [[steps.bands]]                        # first band whose `when` holds decides
//! when = "match_rate < 0.90"
//! action = "rollback"
//! [[steps.bands]]
//! when = "match_rate < 0.95"
//! action = "review"                      # pause until `sluice approve` / `reject`
//! [steps.watch]                          # re-validate after the step
//! every = "5s"
//! for = "2m"
//! on_breach = "plan"                     # roll back this step and earlier ones
//! ```
//!
//! No band holding means advance. `baseline.<metric>` reads the same metric
//! measured by `validate` before migrate ran.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::read::{Source, StepFile};
use super::{Expr, PlanError, Step, Threshold};

/// Prefix of metrics measured before migrate.
pub const BASELINE: &str = "baseline.";

/// What a band does with the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The step completes; the run goes on.
    Advance,
    /// The run pauses with the step migrated until an operator approves
    /// (the step completes) or rejects it (the step is rolled back).
    Review,
    /// The step is rolled back from its backup.
    Rollback,
}

impl Action {
    /// Lower-case name, as written in plans.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Advance => "advance",
            Action::Review => "review",
            Action::Rollback => "rollback",
        }
    }
}

/// A condition on the metrics and the action it leads to.
#[derive(Debug, Clone)]
pub struct Band {
    /// The condition.
    pub when: Threshold,
    /// What happens when it is the first band that holds.
    pub action: Action,
}

/// Where a step waits for a human decision regardless of its metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalPoint {
    /// Before the step backs up or changes anything.
    Before,
    /// After validate, with its metrics as evidence, even when every band
    /// says advance.
    After,
}

/// What a watch breach rolls back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BreachScope {
    /// Only the watched step.
    #[default]
    Step,
    /// The watched step and every earlier step this run applied, newest first.
    Plan,
}

/// Re-validation after a step completed its thresholds.
#[derive(Debug, Clone, Copy)]
pub struct Watch {
    /// Time between checks.
    pub every: Duration,
    /// How long the window lasts after the step.
    pub duration: Duration,
    /// What a breach rolls back.
    pub on_breach: BreachScope,
}

/// How one threshold or band condition came out.
#[derive(Debug, Clone, Serialize)]
pub struct ConditionResult {
    /// As written.
    pub source: String,
    /// Whether it held; `None` when it could not be evaluated.
    pub held: Option<bool>,
    /// Why it could not be evaluated.
    pub error: Option<String>,
}

/// The band a judgement landed in.
#[derive(Debug, Clone, Serialize)]
pub struct BandReached {
    /// The band's condition as written; `None` when no band held (advance).
    pub when: Option<String>,
    /// Its action.
    pub action: Action,
}

/// Metrics judged against a step's thresholds and bands.
#[derive(Debug, Clone, Serialize)]
pub struct Judgement {
    /// Each threshold.
    pub thresholds: Vec<ConditionResult>,
    /// Each band, in plan order, up to and including the one that decided.
    pub bands: Vec<ConditionResult>,
    /// The band reached (`None` when the step has no bands).
    pub band: Option<BandReached>,
    /// What to do.
    pub action: Action,
    /// Why, in words: the failed thresholds or the band and its metrics.
    pub reason: String,
}

impl Step {
    /// Whether any threshold or band reads a `baseline.` metric, so validate
    /// must also run before migrate.
    pub fn needs_baseline(&self) -> bool {
        self.conditions()
            .any(|t| t.expr.metrics().iter().any(|m| m.starts_with(BASELINE)))
    }

    /// Every threshold and band condition of the step.
    pub fn conditions(&self) -> impl Iterator<Item = &Threshold> {
        self.thresholds
            .iter()
            .chain(self.bands.iter().map(|b| &b.when))
    }

    /// Judges measured metrics (with `baseline.` ones, if any): a threshold
    /// that does not hold or cannot be evaluated rolls back; otherwise the
    /// first band that holds decides; none holding advances. A band that
    /// cannot be evaluated rolls back too: a gate never opens on a guess.
    pub fn judge(&self, values: &BTreeMap<String, f64>) -> Judgement {
        let evaluate = |t: &Threshold| match t.expr.holds(values) {
            Ok(held) => ConditionResult {
                source: t.source.clone(),
                held: Some(held),
                error: None,
            },
            Err(e) => ConditionResult {
                source: t.source.clone(),
                held: None,
                error: Some(e.to_string()),
            },
        };
        let thresholds: Vec<ConditionResult> = self.thresholds.iter().map(evaluate).collect();
        let failed: Vec<String> = thresholds
            .iter()
            .zip(&self.thresholds)
            .filter(|(r, _)| r.held != Some(true))
            .map(|(r, t)| match &r.error {
                Some(e) => format!("threshold `{}` cannot be evaluated: {e}", r.source),
                None => format!(
                    "threshold `{}` not met ({})",
                    r.source,
                    metrics_used(&t.expr.metrics(), values)
                ),
            })
            .collect();
        if !failed.is_empty() {
            return Judgement {
                thresholds,
                bands: Vec::new(),
                band: None,
                action: Action::Rollback,
                reason: failed.join("; "),
            };
        }
        let mut bands = Vec::new();
        for band in &self.bands {
            let result = evaluate(&band.when);
            let (held, error) = (result.held, result.error.clone());
            bands.push(result);
            let used = metrics_used(&band.when.expr.metrics(), values);
            match (held, error) {
                (Some(true), _) => {
                    return Judgement {
                        thresholds,
                        bands,
                        band: Some(BandReached {
                            when: Some(band.when.source.clone()),
                            action: band.action,
                        }),
                        action: band.action,
                        reason: format!(
                            "band `{}` → {} ({used})",
                            band.when.source,
                            band.action.as_str()
                        ),
                    }
                }
                (None, Some(e)) => {
                    return Judgement {
                        thresholds,
                        bands,
                        band: None,
                        action: Action::Rollback,
                        reason: format!("band `{}` cannot be evaluated: {e}", band.when.source),
                    }
                }
                _ => {}
            }
        }
        let all: Vec<&str> = values.keys().map(String::as_str).collect();
        Judgement {
            thresholds,
            bands,
            band: (!self.bands.is_empty()).then_some(BandReached {
                when: None,
                action: Action::Advance,
            }),
            action: Action::Advance,
            reason: if all.is_empty() {
                "validated".to_string()
            } else {
                format!("validated: {}", metrics_used(&all, values))
            },
        }
    }
}

/// `name = value` for each name that has a value, comma-separated.
pub fn metrics_used(names: &[&str], values: &BTreeMap<String, f64>) -> String {
    names
        .iter()
        .filter_map(|k| {
            values
                .get(*k)
                .map(|v| format!("{k} = {}", super::number(*v)))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

// ---- loading -----------------------------------------------------------------

/// A step's gates as the plan writes them, parsed.
pub(super) struct StepGates {
    /// `thresholds = [...]`.
    pub(super) thresholds: Vec<Threshold>,
    /// `[[steps.bands]]`.
    pub(super) bands: Vec<Band>,
    /// `watch = { every, for, on_breach }`.
    pub(super) watch: Option<Watch>,
}

/// Step five of loading, for one step: its thresholds and band conditions
/// parsed (an error points into the expression), its watch window's
/// durations read.
pub(super) fn load(src: &Source<'_>, id: &str, s: &StepFile) -> Result<StepGates, PlanError> {
    let condition = |t: &Spanned<String>, what: &str| {
        // +1: the expression starts after the opening quote.
        let start = t.span().start + 1;
        Expr::parse(t.get_ref())
            .map(|expr| Threshold {
                source: t.get_ref().clone(),
                expr,
                location: src.location(start),
            })
            .map_err(|e| {
                src.error(
                    start + e.offset,
                    format!("{what} `{}` of step `{id}`: {}", t.get_ref(), e.message),
                )
            })
    };
    let thresholds = s
        .thresholds
        .iter()
        .map(|t| condition(t, "threshold"))
        .collect::<Result<Vec<_>, _>>()?;
    let bands = s
        .bands
        .iter()
        .map(|b| {
            Ok(Band {
                when: condition(&b.get_ref().when, "band")?,
                action: b.get_ref().action,
            })
        })
        .collect::<Result<Vec<_>, PlanError>>()?;
    let watch = match &s.watch {
        None => None,
        Some(w) => {
            let duration = |d: &Spanned<String>, what: &str| {
                humantime::parse_duration(d.get_ref())
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        src.error(
                            d.span().start,
                            format!("step `{id}`: watch `{what}` = \"{}\" is not a duration such as \"5s\", \"2m\" or \"1h 30m\"", d.get_ref()),
                        )
                    })
            };
            let w = w.get_ref();
            let every = duration(&w.every, "every")?;
            let length = duration(&w.duration, "for")?;
            if every > length {
                return Err(src.error(
                    w.every.span().start,
                    format!(
                        "step `{id}`: watch checks every {} but lasts only {}: no check would run",
                        w.every.get_ref(),
                        w.duration.get_ref()
                    ),
                ));
            }
            Some(Watch {
                every,
                duration: length,
                on_breach: w.on_breach,
            })
        }
    };
    Ok(StepGates {
        thresholds,
        bands,
        watch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::test_plan as plans;
    use crate::plan::{Expr, Location};

    fn condition(text: &str) -> Threshold {
        Threshold {
            source: text.into(),
            expr: Expr::parse(text).unwrap(),
            location: Location {
                file: "sluice.toml".into(),
                line: 1,
                column: 1,
            },
        }
    }

    fn step(thresholds: &[&str], bands: &[(&str, Action)]) -> Step {
        let mut step = Step::for_tests("s");
        step.thresholds = thresholds.iter().map(|t| condition(t)).collect();
        step.bands = bands
            .iter()
            .map(|(w, a)| Band {
                when: condition(w),
                action: *a,
            })
            .collect();
        step
    }

    fn values(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn three_bands_map_to_their_actions() {
        let s = step(
            &["duplicates == 0"],
            &[
                ("match_rate < 0.90", Action::Rollback),
                ("match_rate < 0.95", Action::Review),
            ],
        );
        for (rate, want) in [
            (0.80, Action::Rollback),
            (0.92, Action::Review),
            (0.97, Action::Advance),
        ] {
            let j = s.judge(&values(&[("match_rate", rate), ("duplicates", 0.0)]));
            assert_eq!(j.action, want, "{rate}: {}", j.reason);
            assert_eq!(j.band.as_ref().unwrap().action, want);
        }
        // A failed threshold rolls back whatever the bands say.
        let j = s.judge(&values(&[("match_rate", 0.99), ("duplicates", 2.0)]));
        assert_eq!(j.action, Action::Rollback);
        assert!(j.reason.contains("duplicates = 2"), "{}", j.reason);
    }

    #[test]
    fn a_band_that_cannot_be_evaluated_rolls_back() {
        let s = step(
            &[],
            &[("latency_p95 > 2 * baseline.latency_p95", Action::Rollback)],
        );
        assert!(s.needs_baseline());
        let j = s.judge(&values(&[("latency_p95", 10.0)]));
        assert_eq!(j.action, Action::Rollback);
        assert!(j.reason.contains("baseline.latency_p95"), "{}", j.reason);
        let j = s.judge(&values(&[
            ("latency_p95", 10.0),
            ("baseline.latency_p95", 6.0),
        ]));
        assert_eq!(j.action, Action::Advance, "{}", j.reason);
        let j = s.judge(&values(&[
            ("latency_p95", 13.0),
            ("baseline.latency_p95", 6.0),
        ]));
        assert_eq!(j.action, Action::Rollback, "{}", j.reason);
    }

    #[test]
    fn a_threshold_error_points_into_the_expression() {
        assert_eq!(
            plans::refused(&plans::step(
                "thresholds = [\"rows > 0\", \"duplicates = 0\"]\n"
            )),
            "13:39: threshold `duplicates = 0` of step `s`: `=` is not a comparison; write `==`"
        );
    }

    #[test]
    fn a_band_error_points_into_the_expression() {
        assert_eq!(
            plans::refused(&plans::step(
                "[[steps.bands]]\nwhen = \"rows >\"\naction = \"review\"\n"
            )),
            "14:15: band `rows >` of step `s`: expression ends where a number or metric was expected"
        );
    }

    #[test]
    fn a_watch_every_must_be_a_duration() {
        assert_eq!(plans::refused(&plans::step("watch = { every = \"soon\", for = \"1m\" }\n")), "13:19: step `s`: watch `every` = \"soon\" is not a duration such as \"5s\", \"2m\" or \"1h 30m\"");
    }

    #[test]
    fn a_watch_for_must_be_a_nonzero_duration() {
        assert_eq!(plans::refused(&plans::step("watch = { every = \"1s\", for = \"0s\" }\n")), "13:31: step `s`: watch `for` = \"0s\" is not a duration such as \"5s\", \"2m\" or \"1h 30m\"");
    }

    #[test]
    fn a_watch_must_last_longer_than_it_waits() {
        assert_eq!(
            plans::refused(&plans::step("watch = { every = \"2m\", for = \"1m\" }\n")),
            "13:19: step `s`: watch checks every 2m but lasts only 1m: no check would run"
        );
    }

    #[test]
    fn gates_are_read_with_their_places() {
        let plan = plans::loads(&plans::step("thresholds = [\"rows > 0\"]\napproval = \"after\"\nwatch = { every = \"1s\", for = \"1m\", on_breach = \"plan\" }\n[[steps.bands]]\nwhen = \"rows < 10\"\naction = \"review\"\n"));
        let s = &plan.steps[0];
        assert_eq!(s.thresholds[0].location.line, 13);
        assert_eq!(s.thresholds[0].location.column, 16);
        assert_eq!(s.bands[0].action, Action::Review);
        let w = s.watch.unwrap();
        assert_eq!(w.every, std::time::Duration::from_secs(1));
        assert_eq!(w.on_breach, BreachScope::Plan);
        assert_eq!(s.approval, Some(ApprovalPoint::After));
    }
}
