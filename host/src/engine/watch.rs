//! The watch window after a step met its gates: validate again every
//! `every` for `for`; a breach rolls the step back.

use std::time::Duration;

use super::step::STOPPED_AFTER_MIGRATE;
use super::StepSummary;
use super::{Engine, EngineError, Phase};
use crate::journal::outcome::metric_values;
use crate::journal::record::{Cause, FailureKind, StepFailure, Why};
use crate::journal::StepState;
use crate::plan::{Action, Step, Watch};
use crate::runtime::{LoadedPlugin, Metric};

impl Engine {
    /// Re-runs validate every `watch.every` for `watch.duration` after the
    /// step met its gates; the first check that lands in a rollback (a
    /// threshold not met, a rollback band, validate failing) ends the window.
    pub(super) async fn watch(
        &mut self,
        run_id: &str,
        step: &Step,
        plugin: &LoadedPlugin,
        s: &mut StepSummary,
        watch: Watch,
        baseline: &[Metric],
    ) -> Result<Result<String, StepFailure>, EngineError> {
        let window = format!(
            "every {} for {}",
            humantime::format_duration(watch.every),
            humantime::format_duration(watch.duration)
        );
        self.journal.transition(
            run_id,
            &step.id,
            StepState::Watching,
            &Why::new(
                Cause::Watching,
                format!("gates met; watching: validate {window}"),
            ),
            None,
        )?;
        let start = std::time::Instant::now();
        let mut checks = 0u32;
        let outcome = loop {
            let due = watch.every * (checks + 1);
            if due > watch.duration {
                break Ok(format!(
                    "watch window ({window}) passed: {checks} checks within thresholds"
                ));
            }
            // Sleep to the next check in short naps: a signal stops the window.
            while start.elapsed() < due {
                if self.stop_requested() {
                    s.phases.push((Phase::Watch, start.elapsed()));
                    return Ok(Err(StepFailure::new(
                        Phase::Watch,
                        FailureKind::Signal,
                        STOPPED_AFTER_MIGRATE,
                    )));
                }
                let left = due.saturating_sub(start.elapsed());
                tokio::time::sleep(left.min(Duration::from_millis(100))).await;
            }
            checks += 1;
            let at = format!(
                "watch check {checks} at +{:.1}s",
                start.elapsed().as_secs_f64()
            );
            let metrics = match self.measure(step, plugin, Vec::new()).await {
                Ok((metrics, _)) => metrics,
                Err(failure) => {
                    break Err(StepFailure::new(
                        Phase::Watch,
                        failure.kind,
                        format!("{at}: {failure}"),
                    ))
                }
            };
            self.journal.record_metrics(&step.id, &metrics)?;
            let judgement = step.judge(&metric_values(&metrics, baseline));
            s.metrics = metrics;
            s.thresholds = judgement.thresholds;
            s.band = judgement.band;
            match judgement.action {
                Action::Rollback => {
                    break Err(StepFailure::new(
                        Phase::Watch,
                        FailureKind::Thresholds,
                        format!("{at} breached: {}", judgement.reason),
                    ))
                }
                Action::Review => {
                    tracing::warn!(step = %step.id, "{at}: {} (review band during the watch window; not a breach)", judgement.reason)
                }
                Action::Advance => tracing::info!(step = %step.id, "{at}: {}", judgement.reason),
            }
        };
        s.phases.push((Phase::Watch, start.elapsed()));
        // A breach is the step's outcome reason; only a passed window is news.
        if let Ok(passed) = &outcome {
            s.notes.push(passed.clone());
        }
        Ok(outcome)
    }
}
