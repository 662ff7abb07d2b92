//! Every phase × {ok, plugin error, trap, timeout, threshold not met, review
//! band, signal} and the paths around them (approvals, watch windows,
//! resumes, operator rollbacks, drift).

use super::*;
use crate::engine::exit;
use scripted::Answer::{self, *};

const ROWS_AT_LEAST_ONE: &str = r#"thresholds = ["rows >= 1"]"#;

fn rows(n: f64) -> Answer {
    Metrics(vec![("rows", n), ("errors", 0.0)])
}

// ---- backup ---------------------------------------------------------------

#[tokio::test]
async fn every_phase_ok_completes_the_step() {
    let f = Fixture::new(ROWS_AT_LEAST_ONE);
    f.plugin.answer(Call::Validate, [rows(4.0)]);
    let s = f.run().await;
    assert!(matches!(first(&s), StepOutcome::Applied), "{s:?}");
    assert_eq!(s.exit_code(), exit::OK);
    assert_eq!(f.states("one"), FORWARD);
    assert_eq!(
        f.plugin.calls(),
        [Call::Backup, Call::Migrate, Call::Validate]
    );
    assert!(f.migrated());
    assert_eq!(s.steps[0].backup.map(|b| b.0), Some(1));
}

async fn backup_fails(answer: Answer, says: &str) {
    let f = Fixture::new("");
    f.plugin.answer(Call::Backup, [answer]);
    let s = f.run().await;
    let (phase, reason) = failed(first(&s));
    assert!(matches!(first(&s), StepOutcome::FailedUnchanged { .. }));
    assert_eq!(phase, Phase::Backup);
    assert!(reason.contains(says), "{reason}");
    assert_eq!(s.exit_code(), exit::STEP_FAILED);
    assert_eq!(f.states("one"), [BackingUp, Failed]);
    assert_eq!(f.plugin.calls(), [Call::Backup], "nothing to roll back");
    assert!(!f.migrated());
}

#[tokio::test]
async fn backup_plugin_error_fails_the_step_unchanged() {
    backup_fails(Fail, "backup failed: ").await;
}

#[tokio::test]
async fn backup_trap_fails_the_step_unchanged() {
    backup_fails(Trap, "plugin trapped").await;
}

#[tokio::test]
async fn backup_timeout_fails_the_step_unchanged() {
    backup_fails(Timeout, "deadline").await;
}

#[tokio::test]
async fn backup_whose_checksum_the_host_disagrees_with_is_not_verified() {
    backup_fails(Lie, "backup not verified: the plugin saved `items`").await;
}

#[tokio::test]
async fn signal_during_backup_leaves_the_step_pending_and_unchanged() {
    let f = Fixture::with_steps("", Some(""));
    f.plugin.answer(Call::Backup, [ThenStop]);
    let s = f.run().await;
    assert!(matches!(
        first(&s),
        StepOutcome::Stopped { rolled_back: false }
    ));
    assert!(matches!(s.steps[1].outcome, StepOutcome::NotRun));
    assert_eq!(s.exit_code(), exit::STOPPED);
    assert_eq!(f.states("one"), [BackingUp, BackedUp, Pending]);
    assert_eq!(f.plugin.calls(), [Call::Backup]);
    assert!(!f.migrated());
}

#[tokio::test]
async fn signal_before_the_run_runs_nothing() {
    let f = Fixture::new("");
    f.plugin
        .stop
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let s = f.run().await;
    assert!(matches!(first(&s), StepOutcome::NotRun));
    assert!(f.states("one").is_empty());
    assert!(f.plugin.calls().is_empty());
}

// ---- migrate --------------------------------------------------------------

async fn migrate_fails(answer: Answer, says: &str) {
    let f = Fixture::new("");
    f.plugin.answer(Call::Migrate, [answer]);
    let s = f.run().await;
    assert!(matches!(first(&s), StepOutcome::RolledBack { .. }), "{s:?}");
    let (phase, reason) = failed(first(&s));
    assert_eq!(phase, Phase::Migrate);
    assert!(
        reason.starts_with("migrate failed: ") && reason.contains(says),
        "{reason}"
    );
    assert_eq!(s.exit_code(), exit::STEP_FAILED);
    assert_eq!(f.states("one"), MIGRATE_ROLLED_BACK);
    assert_eq!(
        f.plugin.calls(),
        [Call::Backup, Call::Migrate, Call::Rollback]
    );
    assert!(!f.migrated());
}

#[tokio::test]
async fn migrate_plugin_error_rolls_back() {
    migrate_fails(Fail, "scripted Migrate failure").await;
}

#[tokio::test]
async fn migrate_trap_rolls_back() {
    migrate_fails(Trap, "plugin trapped").await;
}

#[tokio::test]
async fn migrate_timeout_rolls_back() {
    migrate_fails(Timeout, "deadline").await;
}

#[tokio::test]
async fn signal_during_migrate_rolls_the_step_back_and_stops() {
    let f = Fixture::with_steps("", Some(""));
    f.plugin.answer(Call::Migrate, [ThenStop]);
    let s = f.run().await;
    assert!(matches!(
        first(&s),
        StepOutcome::Stopped { rolled_back: true }
    ));
    assert!(matches!(s.steps[1].outcome, StepOutcome::NotRun));
    assert_eq!(s.exit_code(), exit::STOPPED);
    assert_eq!(f.states("one"), MIGRATE_ROLLED_BACK);
    assert_eq!(
        f.plugin.calls(),
        [Call::Backup, Call::Migrate, Call::Rollback]
    );
    assert!(!f.migrated());
}

// ---- validate and the gates -------------------------------------------------

async fn validate_fails(answer: Answer, says: &str) {
    let f = Fixture::new(ROWS_AT_LEAST_ONE);
    f.plugin.answer(Call::Validate, [answer]);
    let s = f.run().await;
    assert!(matches!(first(&s), StepOutcome::RolledBack { .. }), "{s:?}");
    let (phase, reason) = failed(first(&s));
    assert_eq!(phase, Phase::Validate);
    assert!(reason.contains(says), "{reason}");
    assert_eq!(f.states("one"), VALIDATE_ROLLED_BACK);
    assert_eq!(
        f.plugin.calls(),
        [Call::Backup, Call::Migrate, Call::Validate, Call::Rollback]
    );
    assert!(!f.migrated());
}

#[tokio::test]
async fn validate_plugin_error_rolls_back() {
    validate_fails(Fail, "validate failed: ").await;
}

#[tokio::test]
async fn validate_trap_rolls_back() {
    validate_fails(Trap, "plugin trapped").await;
}

#[tokio::test]
async fn validate_timeout_rolls_back() {
    validate_fails(Timeout, "deadline").await;
}

#[tokio::test]
async fn validate_with_too_many_metrics_rolls_back() {
    let many: Vec<(&'static str, f64)> = (0..=crate::runtime::MAX_METRICS)
        .map(|_| ("rows", 1.0))
        .collect();
    validate_fails(Metrics(many), "unusable metrics").await;
}

#[tokio::test]
async fn threshold_not_met_rolls_back() {
    let f = Fixture::new(ROWS_AT_LEAST_ONE);
    f.plugin.answer(Call::Validate, [rows(0.0)]);
    let s = f.run().await;
    let (phase, _) = failed(first(&s));
    assert!(matches!(first(&s), StepOutcome::RolledBack { .. }));
    assert_eq!(phase, Phase::Thresholds);
    assert_eq!(s.exit_code(), exit::STEP_FAILED);
    assert_eq!(f.states("one"), VALIDATE_ROLLED_BACK);
    assert_eq!(s.steps[0].thresholds.len(), 1);
    assert_eq!(s.steps[0].thresholds[0].held, Some(false));
    assert!(!f.migrated());
}

#[tokio::test]
async fn rollback_band_rolls_back() {
    let f = Fixture::new(r#"bands = [{ when = "errors > 0", action = "rollback" }]"#);
    f.plugin.answer(
        Call::Validate,
        [Metrics(vec![("rows", 4.0), ("errors", 2.0)])],
    );
    let s = f.run().await;
    assert_eq!(failed(first(&s)).0, Phase::Thresholds);
    assert!(s.steps[0].band.is_some());
    assert!(!f.migrated());
}

#[tokio::test]
async fn review_band_pauses_the_step_migrated() {
    let f = Fixture::with_steps(
        r#"bands = [{ when = "errors > 0", action = "review" }]"#,
        Some(""),
    );
    f.plugin.answer(
        Call::Validate,
        [Metrics(vec![("rows", 4.0), ("errors", 1.0)])],
    );
    let s = f.run().await;
    assert!(
        matches!(first(&s), StepOutcome::AwaitingApproval { .. }),
        "{s:?}"
    );
    assert!(matches!(s.steps[1].outcome, StepOutcome::NotRun));
    assert_eq!(s.exit_code(), exit::AWAITING_APPROVAL);
    assert_eq!(
        f.states("one"),
        [BackingUp, BackedUp, Migrating, Validating, AwaitingReview]
    );
    assert!(f.migrated(), "a review keeps the change until a decision");
}

#[tokio::test]
async fn signal_during_validate_completes_the_step_and_stops_the_run() {
    let f = Fixture::with_steps(ROWS_AT_LEAST_ONE, Some(""));
    f.plugin
        .answer(Call::Validate, [MetricsThenStop(vec![("rows", 4.0)])]);
    let s = f.run().await;
    // The stop is seen at the next boundary: the gates held, so the step
    // completes and the run stops before the next one.
    assert!(matches!(first(&s), StepOutcome::Applied), "{s:?}");
    assert!(matches!(s.steps[1].outcome, StepOutcome::NotRun));
    assert_eq!(f.states("one"), FORWARD);
    assert!(f.states("two").is_empty());
    assert!(f.migrated());
}

// ---- rollback ---------------------------------------------------------------

async fn rollback_fails(answer: Answer, says: &str) {
    let f = Fixture::new(ROWS_AT_LEAST_ONE);
    f.plugin.answer(Call::Validate, [rows(0.0)]);
    f.plugin.answer(Call::Rollback, [answer]);
    let s = f.run().await;
    let StepOutcome::RollbackFailed {
        phase,
        rollback_error,
        ..
    } = first(&s)
    else {
        panic!("{s:?}")
    };
    assert_eq!(*phase, Phase::Thresholds);
    assert!(rollback_error.contains(says), "{rollback_error}");
    assert_eq!(s.exit_code(), exit::NEEDS_ATTENTION);
    assert_eq!(
        f.states("one"),
        [
            BackingUp,
            BackedUp,
            Migrating,
            Validating,
            RollingBack,
            RollbackFailed
        ]
    );
    assert!(f.migrated(), "the change is left for an operator");
    // The next run refuses to go past it.
    let again = f.run().await;
    assert!(matches!(
        first(&again),
        StepOutcome::Interrupted {
            state: RollbackFailed
        }
    ));
    assert_eq!(again.exit_code(), exit::REFUSED);
}

#[tokio::test]
async fn rollback_plugin_error_needs_attention() {
    rollback_fails(Fail, "rollback failed: ").await;
}

#[tokio::test]
async fn rollback_trap_needs_attention() {
    rollback_fails(Trap, "plugin trapped").await;
}

#[tokio::test]
async fn rollback_timeout_needs_attention() {
    rollback_fails(Timeout, "deadline").await;
}

#[tokio::test]
async fn rollback_the_host_cannot_prove_needs_attention() {
    rollback_fails(Idle, "does not equal its pre-step state").await;
}

#[tokio::test]
async fn operator_rollback_after_a_failed_rollback_finishes_it() {
    let f = Fixture::new(ROWS_AT_LEAST_ONE);
    f.plugin.answer(Call::Validate, [rows(0.0)]);
    f.plugin.answer(Call::Rollback, [Trap]);
    f.run().await;
    let s = f.rollback().await;
    assert!(matches!(
        first(&s),
        StepOutcome::RolledBack {
            phase: Phase::Rollback,
            ..
        }
    ));
    assert_eq!(s.exit_code(), exit::OK);
    assert_eq!(f.states("one").last(), Some(&RolledBack));
    assert!(!f.migrated());
}

#[tokio::test]
async fn operator_rollback_of_a_completed_step_restores_it() {
    let f = Fixture::with_steps("", Some(""));
    f.run().await;
    assert!(f.migrated());
    let s = f.rollback().await;
    let ids: Vec<&str> = s.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["two", "one"], "newest first");
    assert!(s.steps.iter().all(|s| matches!(
        s.outcome,
        StepOutcome::RolledBack {
            phase: Phase::Rollback,
            ..
        }
    )));
    assert_eq!(s.exit_code(), exit::OK);
    assert_eq!(f.states("one")[5..], [RollingBack, RolledBack]);
    assert!(!f.migrated() && !f.migrated_step("two"));
}

#[tokio::test]
async fn read_only_step_is_proven_unchanged_instead_of_rolled_back() {
    let f = Fixture::new("access = \"read-only\"");
    f.plugin.answer(Call::Migrate, [Fail]);
    let s = f.run().await;
    let (phase, _) = failed(first(&s));
    assert!(
        matches!(first(&s), StepOutcome::FailedUnchanged { .. }),
        "{s:?}"
    );
    assert_eq!(phase, Phase::Migrate);
    assert_eq!(
        f.states("one"),
        [BackingUp, BackedUp, Migrating, RollingBack, Failed]
    );
    assert_eq!(
        f.plugin.calls(),
        [Call::Backup, Call::Migrate],
        "no rollback call"
    );
    assert!(f.transitions("one")[4]
        .detail
        .ends_with("(read-only step: target verified unchanged)"));
}

#[tokio::test]
async fn rollback_without_a_recorded_backup_is_refused() {
    let f = Fixture::new("");
    f.interrupt_in(Migrating);
    let s = f.rollback().await;
    let StepOutcome::RollbackFailed { rollback_error, .. } = first(&s) else {
        panic!("{s:?}")
    };
    assert_eq!(
        rollback_error,
        "no verified backup is recorded for this step"
    );
    assert_eq!(s.exit_code(), exit::NEEDS_ATTENTION);
    assert_eq!(f.states("one"), [Migrating, RollingBack, RollbackFailed]);
    assert!(f.plugin.calls().is_empty(), "the plugin is not asked");
}
