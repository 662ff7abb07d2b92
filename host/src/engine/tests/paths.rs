//! The paths around the phases: approval points and reviews, watch windows,
//! resuming an interrupted step, baselines, drift and the plan check before
//! a run.

use super::*;
use crate::engine::exit;
use scripted::Answer::{self, *};

fn rows(n: f64) -> Answer {
    Metrics(vec![("rows", n), ("errors", 0.0)])
}

// ---- approvals and reviews ----------------------------------------------------

#[tokio::test]
async fn approval_before_pauses_with_nothing_changed() {
    let f = Fixture::new(r#"approval = "before""#);
    let s = f.run().await;
    assert!(
        matches!(first(&s), StepOutcome::AwaitingApproval { .. }),
        "{s:?}"
    );
    assert_eq!(s.exit_code(), exit::AWAITING_APPROVAL);
    assert_eq!(f.states("one"), [AwaitingApproval]);
    assert!(f.plugin.calls().is_empty());
    // Without a decision the next run keeps it paused, recording nothing new.
    let again = f.run().await;
    assert!(matches!(
        first(&again),
        StepOutcome::AwaitingApproval { .. }
    ));
    assert_eq!(f.states("one"), [AwaitingApproval]);
}

#[tokio::test]
async fn approval_before_then_approve_runs_the_step() {
    let f = Fixture::new(r#"approval = "before""#);
    f.run().await;
    f.approve();
    let s = f.run().await;
    assert!(matches!(first(&s), StepOutcome::Applied), "{s:?}");
    let mut expected = vec![AwaitingApproval, Pending];
    expected.extend(FORWARD);
    assert_eq!(f.states("one"), expected);
    assert!(f.transitions("one")[1]
        .detail
        .starts_with("approved by ann"));
    assert!(f.migrated());
}

#[tokio::test]
async fn approval_before_then_reject_leaves_it_pending_and_unchanged() {
    let f = Fixture::new(r#"approval = "before""#);
    f.run().await;
    let s = f
        .engine()
        .reject("one", "ann", Some("not today"))
        .await
        .unwrap();
    let (phase, reason) = failed(first(&s));
    assert_eq!(phase, Phase::Review);
    assert!(
        reason.contains("rejected by ann") && reason.contains("not today"),
        "{reason}"
    );
    assert_eq!(s.exit_code(), exit::OK);
    assert_eq!(f.states("one"), [AwaitingApproval, Pending]);
    assert!(f.plugin.calls().is_empty());
}

#[tokio::test]
async fn approval_after_pauses_for_review_migrated() {
    let f = Fixture::new(r#"approval = "after""#);
    let s = f.run().await;
    let StepOutcome::AwaitingApproval { reason } = first(&s) else {
        panic!("{s:?}")
    };
    assert!(reason.contains("the plan asks for approval after this step"));
    assert_eq!(f.states("one").last(), Some(&AwaitingReview));
    assert!(f.migrated());
}

#[tokio::test]
async fn review_then_approve_completes_without_calling_the_plugin() {
    let f = Fixture::new(r#"approval = "after""#);
    f.run().await;
    f.approve();
    let s = f.run().await;
    assert!(matches!(first(&s), StepOutcome::Applied), "{s:?}");
    assert_eq!(f.states("one")[4..], [AwaitingReview, Completed]);
    assert_eq!(
        f.plugin.calls(),
        [Call::Backup, Call::Migrate, Call::Validate]
    );
    assert!(f.migrated());
}

#[tokio::test]
async fn review_then_reject_rolls_the_step_back() {
    let f = Fixture::new(r#"approval = "after""#);
    f.run().await;
    let s = f.engine().reject("one", "ann", None).await.unwrap();
    assert!(
        matches!(
            first(&s),
            StepOutcome::RolledBack {
                phase: Phase::Review,
                ..
            }
        ),
        "{s:?}"
    );
    assert_eq!(s.exit_code(), exit::OK);
    assert_eq!(
        f.states("one")[4..],
        [AwaitingReview, RollingBack, RolledBack]
    );
    assert!(!f.migrated());
}

#[tokio::test]
async fn review_with_a_changed_plugin_is_drift() {
    let f = Fixture::new(r#"approval = "after""#);
    f.run().await;
    f.approve();
    let s = f
        .engine_with_digest("0ther0000000000000000000000000000000000000000000000000000000000")
        .run()
        .await
        .unwrap();
    let StepOutcome::Drift { what } = first(&s) else {
        panic!("{s:?}")
    };
    assert!(what.contains("while it awaited review"), "{what}");
    assert_eq!(s.exit_code(), exit::REFUSED);
}

#[tokio::test]
async fn rehearsal_passes_approval_points_and_records_it() {
    let f = Fixture::new(r#"approval = "after""#);
    let mut engine = f.engine();
    engine.options.rehearsal = true;
    let s = engine.run().await.unwrap();
    assert!(matches!(first(&s), StepOutcome::Applied), "{s:?}");
    let last = f.transitions("one").pop().unwrap();
    assert_eq!(last.state, Completed);
    assert!(last
        .detail
        .starts_with("rehearsal: would pause for review here"));
}

// ---- watch windows ------------------------------------------------------------

const WATCH: &str = r#"thresholds = ["rows >= 1"]
watch = { every = "5ms", for = "10ms" }"#;

#[tokio::test]
async fn watch_window_that_holds_completes_the_step() {
    let f = Fixture::new(WATCH);
    f.plugin
        .answer(Call::Validate, [rows(4.0), rows(4.0), rows(4.0)]);
    let s = f.run().await;
    assert!(matches!(first(&s), StepOutcome::Applied), "{s:?}");
    assert_eq!(
        f.states("one"),
        [BackingUp, BackedUp, Migrating, Validating, Watching, Completed]
    );
    assert_eq!(f.plugin.calls().len(), 2 + 3, "validate, then two checks");
    assert!(s.steps[0].notes[0].contains("2 checks within thresholds"));
}

#[tokio::test]
async fn watch_breach_rolls_the_step_back() {
    let f = Fixture::new(WATCH);
    f.plugin.answer(Call::Validate, [rows(4.0), rows(0.0)]);
    let s = f.run().await;
    let (phase, reason) = failed(first(&s));
    assert!(matches!(first(&s), StepOutcome::RolledBack { .. }));
    assert_eq!(phase, Phase::Watch);
    assert!(
        reason.starts_with("watch check 1 at +") && reason.contains("breached"),
        "{reason}"
    );
    assert_eq!(
        f.states("one"),
        [
            BackingUp,
            BackedUp,
            Migrating,
            Validating,
            Watching,
            RollingBack,
            RolledBack
        ]
    );
    assert!(!f.migrated());
}

#[tokio::test]
async fn watch_check_that_traps_rolls_the_step_back() {
    let f = Fixture::new(WATCH);
    f.plugin.answer(Call::Validate, [rows(4.0), Trap]);
    let s = f.run().await;
    let (phase, reason) = failed(first(&s));
    assert_eq!(phase, Phase::Watch);
    assert!(reason.contains("plugin trapped"), "{reason}");
    assert!(!f.migrated());
}

#[tokio::test]
async fn review_band_during_the_watch_window_is_not_a_breach() {
    let f = Fixture::new(
        r#"bands = [{ when = "errors > 0", action = "review" }]
watch = { every = "5ms", for = "10ms" }"#,
    );
    f.plugin.answer(
        Call::Validate,
        [
            rows(4.0),
            Metrics(vec![("rows", 4.0), ("errors", 3.0)]),
            rows(4.0),
        ],
    );
    let s = f.run().await;
    assert!(matches!(first(&s), StepOutcome::Applied), "{s:?}");
    assert!(f.migrated());
}

#[tokio::test]
async fn signal_during_the_watch_window_rolls_the_step_back_and_stops() {
    let f = Fixture::new(
        r#"thresholds = ["rows >= 1"]
watch = { every = "50ms", for = "10s" }"#,
    );
    f.plugin
        .answer(Call::Validate, [MetricsThenStop(vec![("rows", 4.0)])]);
    let s = f.run().await;
    assert!(
        matches!(first(&s), StepOutcome::Stopped { rolled_back: true }),
        "{s:?}"
    );
    assert_eq!(s.exit_code(), exit::STOPPED);
    assert_eq!(f.states("one")[4..], [Watching, RollingBack, RolledBack]);
    assert!(!f.migrated());
}

#[tokio::test]
async fn watch_breach_with_on_breach_plan_rolls_back_the_whole_run() {
    let f = Fixture::with_steps(
        "",
        Some(
            r#"thresholds = ["rows >= 1"]
watch = { every = "5ms", for = "10ms", on_breach = "plan" }"#,
        ),
    );
    // Step one validates (no metrics); step two validates, then breaches.
    f.plugin
        .answer(Call::Validate, [Metrics(Vec::new()), rows(4.0), rows(0.0)]);
    let s = f.run().await;
    assert!(
        matches!(
            s.steps[1].outcome,
            StepOutcome::RolledBack {
                phase: Phase::Watch,
                ..
            }
        ),
        "{s:?}"
    );
    assert!(
        matches!(
            s.steps[0].outcome,
            StepOutcome::RolledBack {
                phase: Phase::Rollback,
                ..
            }
        ),
        "{s:?}"
    );
    assert_eq!(f.states("one").last(), Some(&RolledBack));
    assert!(!f.migrated() && !f.migrated_step("two"));
}

// ---- resuming an interrupted step ---------------------------------------------

#[tokio::test]
async fn resume_after_backup_runs_the_step_again() {
    let f = Fixture::new("");
    f.interrupt_in(BackedUp);
    let s = f.run().await;
    assert!(matches!(first(&s), StepOutcome::Applied), "{s:?}");
    assert!(s.steps[0]
        .resumed
        .as_deref()
        .unwrap()
        .ends_with("nothing had changed: ran it again"));
    assert!(f.transitions("one")[1]
        .detail
        .starts_with("resumed: interrupted while backed-up"));
    assert_eq!(
        f.plugin.calls(),
        [Call::Backup, Call::Migrate, Call::Validate]
    );
}

/// A completed step moved back to `state`, as a crash there leaves it, its
/// verified backup recorded.
async fn completed_then_interrupted(f: &Fixture, state: StepState) {
    f.run().await;
    assert!(f.migrated());
    f.interrupt_in(state);
}

#[tokio::test]
async fn resume_during_migrate_restores_then_runs_again() {
    let f = Fixture::new("");
    completed_then_interrupted(&f, Migrating).await;
    let before = f.plugin.calls().len();
    let s = f.run().await;
    assert!(matches!(first(&s), StepOutcome::Applied), "{s:?}");
    assert_eq!(
        f.plugin.calls()[before..],
        [Call::Rollback, Call::Backup, Call::Migrate, Call::Validate]
    );
    assert!(s.steps[0]
        .resumed
        .as_deref()
        .unwrap()
        .contains("restored from the verified backup"));
    assert!(f.migrated());
}

#[tokio::test]
async fn resume_during_an_idempotent_migrate_runs_migrate_again() {
    let f = Fixture::new("").idempotent();
    // The first run fails migrate without changing anything, keeping a backup.
    f.plugin.answer(Call::Migrate, [Fail]);
    f.run().await;
    f.interrupt_in(Migrating);
    let before = f.plugin.calls().len();
    let s = f.run().await;
    assert!(matches!(first(&s), StepOutcome::Applied), "{s:?}");
    assert_eq!(f.plugin.calls()[before..], [Call::Migrate, Call::Validate]);
    assert!(f.migrated());
}

#[tokio::test]
async fn resume_during_validate_validates_without_migrating_again() {
    let f = Fixture::new("");
    completed_then_interrupted(&f, Validating).await;
    let before = f.plugin.calls().len();
    let s = f.run().await;
    assert!(matches!(first(&s), StepOutcome::Applied), "{s:?}");
    assert_eq!(f.plugin.calls()[before..], [Call::Validate]);
    assert!(s.steps[0]
        .resumed
        .as_deref()
        .unwrap()
        .ends_with("migrate had completed: validated it"));
}

#[tokio::test]
async fn resume_during_rollback_finishes_the_rollback() {
    let f = Fixture::new("");
    completed_then_interrupted(&f, RollingBack).await;
    let before = f.plugin.calls().len();
    let s = f.run().await;
    assert!(matches!(first(&s), StepOutcome::RolledBack { .. }), "{s:?}");
    assert_eq!(f.plugin.calls()[before..], [Call::Rollback]);
    assert!(!f.migrated());
}

// ---- baselines, drift, the plan check ------------------------------------------

const BASELINE: &str = r#"thresholds = ["rows >= baseline.rows"]"#;

#[tokio::test]
async fn baseline_is_measured_before_migrate_and_judged_against() {
    let f = Fixture::new(BASELINE);
    f.plugin.answer(Call::Validate, [rows(3.0), rows(4.0)]);
    let s = f.run().await;
    assert!(matches!(first(&s), StepOutcome::Applied), "{s:?}");
    assert_eq!(
        f.plugin.calls(),
        [Call::Backup, Call::Validate, Call::Migrate, Call::Validate]
    );
    assert!(s.steps[0].phases.iter().any(|(p, _)| *p == Phase::Baseline));
}

#[tokio::test]
async fn baseline_that_fails_fails_the_step_unchanged() {
    let f = Fixture::new(BASELINE);
    f.plugin.answer(Call::Validate, [Fail]);
    let s = f.run().await;
    let (phase, reason) = failed(first(&s));
    assert!(matches!(first(&s), StepOutcome::FailedUnchanged { .. }));
    assert_eq!(phase, Phase::Baseline);
    assert!(
        reason.starts_with("baseline (validate before migrate): "),
        "{reason}"
    );
    assert_eq!(f.states("one"), [BackingUp, Failed]);
    assert!(!f.migrated());
}

#[tokio::test]
async fn completed_step_is_skipped_and_its_drift_refused() {
    let f = Fixture::new("");
    f.run().await;
    let again = f.run().await;
    assert!(matches!(first(&again), StepOutcome::AlreadyApplied));
    let drifted = f
        .engine_with_digest("0ther0000000000000000000000000000000000000000000000000000000000")
        .run()
        .await
        .unwrap();
    assert!(matches!(first(&drifted), StepOutcome::Drift { .. }));
    assert_eq!(drifted.exit_code(), exit::REFUSED);
    assert_eq!(f.plugin.calls().len(), 3, "neither run called the plugin");
}

#[tokio::test]
async fn params_the_plugin_rejects_stop_the_run_before_it_starts() {
    let f = Fixture::new("");
    f.plugin.answer(Call::Preview, [Reject]);
    let e = f.engine().run().await.unwrap_err();
    assert!(matches!(e, EngineError::Preview(_)), "{e}");
    assert!(e.to_string().contains("rejects its params"), "{e}");
    assert!(f.plugin.calls().is_empty());
    assert!(crate::journal::open_for(&f.plan)
        .unwrap()
        .runs()
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn threshold_on_a_metric_the_plugin_never_reports_stops_the_run() {
    let f = Fixture::new(r#"thresholds = ["latency_ms < 5"]"#);
    let e = f.engine().run().await.unwrap_err();
    assert!(matches!(e, EngineError::Preview(_)), "{e}");
    assert!(f.plugin.calls().is_empty());
}
