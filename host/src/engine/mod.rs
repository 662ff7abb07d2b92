//! The algorithm: each pending step goes backup → verify → migrate →
//! validate → thresholds; any failure rolls the step back from its own
//! verified backup and the host proves the target equals its pre-step state.
//! Plugins supply datastore knowledge; ordering, journaling, verification and
//! rollback decisions live here, once.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::approval::{self, Standing};
use crate::backup::{BackupError, BackupStore};
use crate::capabilities::backup_store::BackupAccess;
use crate::capabilities::kv::KvGrant;
use crate::capabilities::sql::SqlGrant;
use crate::datastores::{self, Endpoint};
use crate::journal::{
    Decision, Journal, JournalError, StepRecord, StepState, StoredBackup, Transition,
};
use crate::plan::gate::{BandReached, ConditionResult, BASELINE};
use crate::plan::{Access, Action, ApprovalPoint, BreachScope, Plan, Step, Watch};
use crate::plan::{Address, ValueError};
use crate::runtime::{
    BackupManifest, CallGrants, CallReport, ComponentCache, LoadError, LoadedPlugin, Metric,
    PhaseInput, PhaseOutput, PhaseReached, Runtime, StepContext,
};

/// Failures that stop the engine before or outside a step's own outcome.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A plugin could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The backup store failed.
    #[error(transparent)]
    Backup(#[from] BackupError),
    /// A step's plugin imports something the step is not granted.
    #[error(transparent)]
    Ungranted(#[from] crate::grants::UngrantedImport),
    /// Another run holds a target.
    #[error(transparent)]
    Lease(#[from] crate::journal::lease::LeaseError),
    /// A plan value (a target's connection URL) cannot be read.
    #[error("{0}")]
    Value(#[from] ValueError),
    /// `--to` names no step of the plan.
    #[error("step `{0}` is not in the plan")]
    UnknownStep(String),
    /// An approval or rejection cannot be recorded.
    #[error(transparent)]
    Approval(#[from] approval::ApprovalError),
    /// A step's preview refused its params or its thresholds name metrics
    /// the plugin will not report.
    #[error(transparent)]
    Preview(#[from] crate::preview::PreviewError),
}

/// The phase a step was in when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Backup or its verification.
    Backup,
    /// Migrate.
    Migrate,
    /// Validate.
    Validate,
    /// Threshold evaluation.
    Thresholds,
    /// Validate before migrate, for `baseline.` metrics.
    Baseline,
    /// The watch window after the step.
    Watch,
    /// An operator's review of a paused step.
    Review,
    /// Rollback.
    Rollback,
}

impl Phase {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Backup => "backup",
            Phase::Migrate => "migrate",
            Phase::Validate => "validate",
            Phase::Thresholds => "thresholds",
            Phase::Baseline => "baseline",
            Phase::Watch => "watch",
            Phase::Review => "review",
            Phase::Rollback => "rollback",
        }
    }
}

/// What happened to one step in this invocation.
#[derive(Debug, Clone)]
pub enum StepOutcome {
    /// Applied and validated.
    Applied,
    /// Already completed with the same plugin and params.
    AlreadyApplied,
    /// Completed earlier with another plugin digest or other params.
    Drift {
        /// What changed.
        what: String,
    },
    /// Left in an unfinished state by an earlier run.
    Interrupted {
        /// The state found.
        state: StepState,
    },
    /// Failed before changing anything.
    FailedUnchanged {
        /// Phase.
        phase: Phase,
        /// Why.
        reason: String,
    },
    /// Failed, rolled back and proven restored.
    RolledBack {
        /// Phase that failed (for `sluice rollback`: `Rollback`).
        phase: Phase,
        /// Why.
        reason: String,
    },
    /// Failed and could not be rolled back: needs attention.
    RollbackFailed {
        /// Phase that failed first.
        phase: Phase,
        /// Why it failed.
        reason: String,
        /// Why the rollback failed or was refused.
        rollback_error: String,
    },
    /// Rollback refused before anything was undone: the target changed after
    /// the step (writes the step did not make would be lost). The step waits
    /// in `rollback-refused` for an operator's decision.
    RollbackRefused {
        /// Phase that failed first (for `sluice rollback`: `Rollback`).
        phase: Phase,
        /// Why the step was being rolled back.
        reason: String,
        /// What changed since the step, one line per table (or why the
        /// journal cannot tell).
        later_writes: Vec<String>,
    },
    /// Not reached because an earlier step stopped the run.
    NotRun,
    /// Paused until an operator approves or rejects it.
    AwaitingApproval {
        /// Why it waits, with the evidence in words.
        reason: String,
    },
    /// Stopped by a signal at a phase boundary; `rolled_back` when migrate
    /// had run and was undone (else nothing had changed).
    Stopped {
        /// Whether the step was rolled back.
        rolled_back: bool,
    },
}

/// One step's part of the summary.
#[derive(Debug, Clone)]
pub struct StepSummary {
    /// Step id.
    pub id: String,
    /// Outcome.
    pub outcome: StepOutcome,
    /// Wall time of each phase run.
    pub phases: Vec<(Phase, Duration)>,
    /// Metrics reported by validate.
    pub metrics: Vec<Metric>,
    /// Threshold results.
    pub thresholds: Vec<ConditionResult>,
    /// The band the metrics reached, when the step has bands.
    pub band: Option<BandReached>,
    /// What else happened to the step worth a line: refused approvals,
    /// watch windows, rollbacks caused by a later step.
    pub notes: Vec<String>,
    /// Artifacts and bytes of the verified backup.
    pub backup: Option<(usize, u64)>,
    /// How an interrupted run of this step was resumed, if it was.
    pub resumed: Option<String>,
}

impl StepSummary {
    fn new(id: &str, outcome: StepOutcome) -> Self {
        StepSummary {
            id: id.to_string(),
            outcome,
            phases: Vec::new(),
            metrics: Vec::new(),
            thresholds: Vec::new(),
            band: None,
            notes: Vec::new(),
            backup: None,
            resumed: None,
        }
    }
}

/// The result of `run` or `rollback`.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Command (`run`, `rollback`).
    pub command: String,
    /// Plan name.
    pub plan: String,
    /// Run id in the journal.
    pub run_id: String,
    /// Per step, in plan order.
    pub steps: Vec<StepSummary>,
}

/// Documented exit codes of the `sluice` binary.
pub mod exit {
    /// Every step completed (or was already applied).
    pub const OK: i32 = 0;
    /// A step failed and was rolled back; the target is in its pre-step state.
    pub const STEP_FAILED: i32 = 1;
    /// The plan or the command line is wrong; nothing ran.
    pub const PLAN_ERROR: i32 = 2;
    /// The journal and the plan disagree (drift, interrupted step); nothing ran.
    pub const REFUSED: i32 = 3;
    /// A rollback failed or was refused: the target needs attention.
    pub const NEEDS_ATTENTION: i32 = 4;
    /// A rollback was refused before it undid anything: the target changed
    /// after the step, and restoring it would discard those later writes.
    /// Decide, then `sluice rollback --discard-later-writes` (or keep the step).
    pub const ROLLBACK_REFUSED: i32 = 6;
    /// A step waits for `sluice approve` or `sluice reject`; the journal
    /// holds its state and evidence. Run again after the decision.
    pub const AWAITING_APPROVAL: i32 = 5;
    /// Stopped by SIGINT/SIGTERM at a phase boundary; the step in progress
    /// was finished or rolled back and the journal is consistent.
    pub const STOPPED: i32 = 130;
    /// sluice itself failed (journal, backup store, engine).
    pub const INTERNAL: i32 = 70;
}

impl RunSummary {
    /// The exit code this summary maps to.
    pub fn exit_code(&self) -> i32 {
        let mut code = exit::OK;
        for s in &self.steps {
            let c = match s.outcome {
                StepOutcome::RollbackFailed { .. } => exit::NEEDS_ATTENTION,
                StepOutcome::RollbackRefused { .. } => exit::ROLLBACK_REFUSED,
                StepOutcome::Drift { .. } | StepOutcome::Interrupted { .. } => exit::REFUSED,
                StepOutcome::Stopped { .. } => exit::STOPPED,
                StepOutcome::AwaitingApproval { .. } => exit::AWAITING_APPROVAL,
                // A rejection undoing what it was asked to is its goal.
                StepOutcome::FailedUnchanged {
                    phase: Phase::Review,
                    ..
                } => exit::OK,
                StepOutcome::FailedUnchanged { .. } => exit::STEP_FAILED,
                StepOutcome::RolledBack { phase, .. }
                    if !matches!(phase, Phase::Rollback | Phase::Review) =>
                {
                    exit::STEP_FAILED
                }
                _ => exit::OK,
            };
            code = code.max(c);
        }
        code
    }

    fn outcome_word(&self) -> &'static str {
        match self.exit_code() {
            exit::OK => "ok",
            exit::STEP_FAILED => "step-failed",
            exit::REFUSED => "refused",
            exit::STOPPED => "stopped",
            exit::AWAITING_APPROVAL => "awaiting-approval",
            exit::ROLLBACK_REFUSED => "rollback-refused",
            _ => "needs-attention",
        }
    }
}

/// Options of the engine.
#[derive(Clone, Default)]
pub struct EngineOptions {
    /// Where progress reports go.
    pub progress: Option<crate::capabilities::progress::ProgressSink>,
    /// Set by a signal handler: stop at the next phase boundary.
    pub stop: Option<Arc<AtomicBool>>,
    /// A rehearsal on copies: approval points and review bands are passed,
    /// and recorded as such, instead of pausing the run.
    pub rehearsal: bool,
    /// The operator's decision for rollbacks that meet writes made after the
    /// step: restore anyway, discarding them (recorded with their count).
    pub discard_later_writes: bool,
}

/// The engine for one plan.
pub struct Engine {
    plan: Plan,
    runtime: Arc<Runtime>,
    plugins: BTreeMap<String, LoadedPlugin>,
    journal: Box<dyn Journal>,
    backups: Arc<BackupStore>,
    options: EngineOptions,
    /// Each target's endpoint, its secrets read once when the engine opens.
    endpoints: BTreeMap<String, Endpoint>,
}

impl Engine {
    /// Loads every plugin of the plan and opens the journal and backup store.
    /// Nothing runs yet.
    pub async fn open(plan: Plan, options: EngineOptions) -> Result<Self, EngineError> {
        let runtime = Arc::new(Runtime::new(ComponentCache::new(
            ComponentCache::default_dir(),
        ))?);
        Self::with_runtime(plan, runtime, options).await
    }

    /// Like [`Engine::open`] with a given runtime.
    pub async fn with_runtime(
        plan: Plan,
        runtime: Arc<Runtime>,
        options: EngineOptions,
    ) -> Result<Self, EngineError> {
        let mut plugins = BTreeMap::new();
        for (name, plugin) in &plan.plugins {
            let loaded = runtime.load(plugin).await?;
            tracing::debug!(plugin = %name, version = %loaded.info.version, cache = ?loaded.cache, "plugin loaded");
            plugins.insert(name.clone(), loaded);
        }
        // Gate one, for every step, before anything runs.
        for step in &plan.steps {
            crate::grants::check_imports(step, &plugins[&step.plugin].facts)?;
        }
        let state = plan.state_dir();
        let journal = crate::journal::open_for(&plan)?;
        let backups = Arc::new(BackupStore::open(&state.join("backups"))?);
        let endpoints = plan
            .targets
            .values()
            .map(|t| {
                let endpoint = match &t.address {
                    Address::File(files) => Endpoint::File(files.clone()),
                    Address::Connection(value) => Endpoint::Url(plan.resolve_value(value)?),
                };
                Ok((t.name.clone(), endpoint))
            })
            .collect::<Result<_, ValueError>>()?;
        Ok(Engine {
            endpoints,
            plan,
            runtime,
            plugins,
            journal,
            backups,
            options,
        })
    }

    /// The journal.
    pub fn journal(&self) -> &dyn Journal {
        self.journal.as_ref()
    }

    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Records a new run and takes its leases (held until the guard drops).
    fn begin(&self, command: &str) -> Result<(RunSummary, Box<dyn Send>), EngineError> {
        let run_id = self
            .journal
            .begin_run(command, &self.plan.path, &self.plan.hash)?;
        let lease = self.lease(&run_id)?;
        let summary = RunSummary {
            command: command.into(),
            plan: self.plan.name.clone(),
            run_id,
            steps: Vec::new(),
        };
        Ok((summary, lease))
    }

    /// Runs every pending step in order; stops at the first failure or
    /// pause.
    pub async fn run(&mut self) -> Result<RunSummary, EngineError> {
        // Params and metric names, from the plugins' previews, before anything
        // runs. Only here: a rollback must stay possible whatever the plan says.
        crate::preview::check(&self.plan, &self.runtime, &self.plugins).await?;
        let (mut summary, _lease) = self.begin("run")?;
        let run_id = summary.run_id.clone();
        let steps = self.plan.steps.clone();
        let mut stopped = false;
        for step in &steps {
            if stopped || self.stop_requested() {
                summary
                    .steps
                    .push(StepSummary::new(&step.id, StepOutcome::NotRun));
                stopped = true;
                continue;
            }
            let plugin = self.plugins[&step.plugin].clone();
            let record = self.journal.step(&step.id)?;
            let step_summary = match record.as_ref().map(|r| r.state) {
                Some(StepState::Completed) => {
                    let record = record.as_ref().expect("matched Some");
                    match drift(record, &plugin, step) {
                        Some(what) => StepSummary::new(&step.id, StepOutcome::Drift { what }),
                        None => {
                            let mut s = StepSummary::new(&step.id, StepOutcome::AlreadyApplied);
                            s.metrics = record.metrics.clone();
                            s
                        }
                    }
                }
                Some(state @ (StepState::RollbackFailed | StepState::RollbackRefused)) => {
                    StepSummary::new(&step.id, StepOutcome::Interrupted { state })
                }
                Some(state) if state.is_in_flight() => {
                    let record = record.expect("matched Some");
                    self.resume(&run_id, step, &plugin, &record).await?
                }
                Some(StepState::AwaitingReview) => {
                    let record = record.expect("matched Some");
                    self.review(&run_id, step, &plugin, &record).await?
                }
                _ => match self.gate_before(&run_id, step, &plugin, record.as_ref())? {
                    Some(paused) => paused,
                    None => self.execute(&run_id, step, &plugin).await?,
                },
            };
            stopped = !matches!(
                step_summary.outcome,
                StepOutcome::Applied | StepOutcome::AlreadyApplied
            );
            let breached_plan = matches!(
                step_summary.outcome,
                StepOutcome::RolledBack {
                    phase: Phase::Watch,
                    ..
                }
            ) && step.watch.is_some_and(|w| w.on_breach == BreachScope::Plan);
            summary.steps.push(step_summary);
            if breached_plan {
                self.roll_back_applied(&run_id, &step.id, &mut summary)
                    .await?;
            }
        }
        self.journal.finish_run(&run_id, summary.outcome_word())?;
        Ok(summary)
    }

    /// After `breached`'s watch window rolled it back, rolls back every
    /// earlier step this run applied, newest first, as the plan asks.
    async fn roll_back_applied(
        &mut self,
        run_id: &str,
        breached: &str,
        summary: &mut RunSummary,
    ) -> Result<(), EngineError> {
        let applied: Vec<usize> = (0..summary.steps.len())
            .rev()
            .filter(|&i| matches!(summary.steps[i].outcome, StepOutcome::Applied))
            .collect();
        for i in applied {
            let step = self
                .plan
                .step(&summary.steps[i].id)
                .expect("summarized steps are in the plan")
                .clone();
            let plugin = self.plugins[&step.plugin].clone();
            let Some(record) = self.journal.step(&step.id)? else {
                continue;
            };
            let reason = format!("the watch window of step `{breached}` breached; the plan rolls back every step of the run");
            let s = &mut summary.steps[i];
            s.outcome = self
                .roll_back(run_id, &step, &plugin, &record, Phase::Rollback, reason, s)
                .await?;
            if matches!(
                s.outcome,
                StepOutcome::RollbackFailed { .. } | StepOutcome::RollbackRefused { .. }
            ) {
                break;
            }
        }
        Ok(())
    }

    /// The approval point before a step (`approval = "before"`): `None` when
    /// the step may run (no such point, or a valid approval of this pause);
    /// otherwise the pause, recorded in the journal.
    fn gate_before(
        &mut self,
        run_id: &str,
        step: &Step,
        plugin: &LoadedPlugin,
        record: Option<&StepRecord>,
    ) -> Result<Option<StepSummary>, EngineError> {
        if step.approval != Some(ApprovalPoint::Before) {
            return Ok(None);
        }
        if self.options.rehearsal {
            self.journal.transition(
                run_id,
                &step.id,
                StepState::Pending,
                "rehearsal: the approval point before this step is passed without a decision",
                Some((plugin.digest.as_str(), step.params_hash.as_str())),
            )?;
            return Ok(None);
        }
        let identity = Some((plugin.digest.as_str(), step.params_hash.as_str()));
        let mut s = StepSummary::new(&step.id, StepOutcome::NotRun);
        let reason = match record.filter(|r| r.state == StepState::AwaitingApproval) {
            Some(record) => {
                match approval::standing(
                    self.journal.as_ref(),
                    &self.plan,
                    step,
                    record,
                    &plugin.digest,
                )? {
                    Standing::Valid(a) => {
                        self.journal.transition(
                            run_id,
                            &step.id,
                            StepState::Pending,
                            &format!("approved by {} at {}", a.by, a.at),
                            identity,
                        )?;
                        return Ok(None);
                    }
                    Standing::Stale(why) => {
                        s.notes.push(format!("approval refused: {why}"));
                        format!("approval required before this step runs (again: {why})")
                    }
                    Standing::None | Standing::Rejected(_) => {
                        s.outcome = StepOutcome::AwaitingApproval {
                            reason: approval::pause_reason(self.journal.as_ref(), record)?
                                .unwrap_or_else(|| {
                                    "approval required before this step runs".into()
                                }),
                        };
                        return Ok(Some(s));
                    }
                }
            }
            None => "approval required before this step runs; nothing has changed".to_string(),
        };
        self.journal.transition(
            run_id,
            &step.id,
            StepState::AwaitingApproval,
            &reason,
            identity,
        )?;
        s.outcome = StepOutcome::AwaitingApproval { reason };
        Ok(Some(s))
    }

    /// A step paused for review: an approval of this pause for the plan,
    /// plugin and params as they are now completes it; an approval given for
    /// something else is refused and the step judged afresh; none keeps it
    /// paused.
    async fn review(
        &mut self,
        run_id: &str,
        step: &Step,
        plugin: &LoadedPlugin,
        record: &StepRecord,
    ) -> Result<StepSummary, EngineError> {
        let mut s = StepSummary::new(&step.id, StepOutcome::NotRun);
        s.metrics = record.metrics.clone();
        if let Some(what) = drift(record, plugin, step) {
            s.outcome = StepOutcome::Drift {
                what: format!("{what} while it awaited review; `sluice reject` rolls it back"),
            };
            return Ok(s);
        }
        let verdict = match approval::standing(
            self.journal.as_ref(),
            &self.plan,
            step,
            record,
            &plugin.digest,
        )? {
            Standing::Valid(a) => Ok(Forward::Advance(format!(
                "approved by {} at {}",
                a.by, a.at
            ))),
            Standing::Stale(why) => {
                s.notes.push(format!("approval refused: {why}"));
                let baseline = baseline_of(record);
                self.judge(run_id, step, plugin, &mut s, &baseline).await?
            }
            Standing::None | Standing::Rejected(_) => {
                s.outcome = StepOutcome::AwaitingApproval {
                    reason: approval::pause_reason(self.journal.as_ref(), record)?
                        .unwrap_or_else(|| "awaiting review".into()),
                };
                return Ok(s);
            }
        };
        s.outcome = self
            .settle(run_id, step, plugin, record, &mut s, verdict)
            .await?;
        Ok(s)
    }

    /// Records an operator's rejection of a paused step and undoes it: a step
    /// paused after migrate is rolled back from its verified backup; one
    /// paused before it ran is left pending, unchanged.
    pub async fn reject(
        &mut self,
        step_id: &str,
        by: &str,
        reason: Option<&str>,
    ) -> Result<RunSummary, EngineError> {
        let step = self
            .plan
            .step(step_id)
            .cloned()
            .ok_or_else(|| EngineError::UnknownStep(step_id.to_string()))?;
        let plugin = self.plugins[&step.plugin].clone();
        let (mut summary, _lease) = self.begin("reject")?;
        let run_id = summary.run_id.clone();
        let record = approval::paused(self.journal.as_ref(), &step.id)?;
        let decision = approval::decide(
            self.journal.as_ref(),
            &self.plan,
            &step,
            &record,
            Decision::Reject,
            by,
            reason,
        )?;
        let why = format!(
            "rejected by {}{}",
            decision.by,
            reason.map(|r| format!(": {r}")).unwrap_or_default()
        );
        let mut s = StepSummary::new(&step.id, StepOutcome::NotRun);
        s.outcome = if record.state == StepState::AwaitingReview {
            self.roll_back(&run_id, &step, &plugin, &record, Phase::Review, why, &mut s)
                .await?
        } else {
            self.journal.transition(
                &run_id,
                &step.id,
                StepState::Pending,
                &format!("{why}; nothing had changed"),
                None,
            )?;
            StepOutcome::FailedUnchanged {
                phase: Phase::Review,
                reason: format!("{why} before it ran; nothing had changed"),
            }
        };
        summary.steps.push(s);
        self.journal.finish_run(&run_id, summary.outcome_word())?;
        Ok(summary)
    }

    /// Rolls back completed (or stranded) steps in reverse order; with `to`,
    /// stops after the step following `to`, which stays applied.
    pub async fn rollback(&mut self, to: Option<&str>) -> Result<RunSummary, EngineError> {
        if let Some(to) = to {
            if self.plan.step(to).is_none() {
                return Err(EngineError::UnknownStep(to.to_string()));
            }
        }
        let (mut summary, _lease) = self.begin("rollback")?;
        let run_id = summary.run_id.clone();
        let steps = self.plan.steps.clone();
        for step in steps.iter().rev() {
            if Some(step.id.as_str()) == to {
                break;
            }
            let Some(record) = self.journal.step(&step.id)? else {
                continue;
            };
            let reversible = matches!(
                record.state,
                StepState::Completed
                    | StepState::BackedUp
                    | StepState::Migrating
                    | StepState::Validating
                    | StepState::Watching
                    | StepState::AwaitingReview
                    | StepState::RollingBack
                    | StepState::RollbackFailed
                    | StepState::RollbackRefused
            );
            if !reversible {
                continue;
            }
            let plugin = self.plugins[&step.plugin].clone();
            let mut s = StepSummary::new(&step.id, StepOutcome::NotRun);
            let reason = format!("operator rollback (step was {})", record.state);
            s.outcome = self
                .roll_back(
                    &run_id,
                    step,
                    &plugin,
                    &record,
                    Phase::Rollback,
                    reason,
                    &mut s,
                )
                .await?;
            let failed = matches!(
                s.outcome,
                StepOutcome::RollbackFailed { .. } | StepOutcome::RollbackRefused { .. }
            );
            summary.steps.push(s);
            if failed {
                break;
            }
        }
        self.journal.finish_run(&run_id, summary.outcome_word())?;
        Ok(summary)
    }

    /// Finishes a step an earlier run left in flight, from the journal alone:
    /// nothing changed yet (backup) → run it afresh; migrate may have run →
    /// restore from the verified backup and run it afresh (or, for a plugin
    /// whose migrate is idempotent, run migrate again); migrate done →
    /// validate and judge; rollback under way → finish the rollback.
    async fn resume(
        &mut self,
        run_id: &str,
        step: &Step,
        plugin: &LoadedPlugin,
        record: &StepRecord,
    ) -> Result<StepSummary, EngineError> {
        let was = format!(
            "interrupted while {} (run {}, {})",
            record.state, record.run_id, record.updated_at
        );
        crate::failpoint!("engine:resume");
        let s = match record.state {
            StepState::BackingUp | StepState::BackedUp => {
                // Backup only reads: the target is as it was before the step.
                self.journal.transition(
                    run_id,
                    &step.id,
                    StepState::Pending,
                    &format!("resumed: {was}; nothing had changed, running it again"),
                    None,
                )?;
                let mut s = self.execute(run_id, step, plugin).await?;
                s.resumed = Some(format!("{was}; nothing had changed: ran it again"));
                s
            }
            StepState::Migrating if plugin.info.idempotent_migrate && record.backup.is_some() => {
                let mut s = StepSummary::new(&step.id, StepOutcome::NotRun);
                self.journal.transition(
                    run_id,
                    &step.id,
                    StepState::BackedUp,
                    &format!("resumed: {was}; migrate is idempotent, running it again"),
                    None,
                )?;
                s.outcome = self
                    .finish_forward(run_id, step, plugin, record, &mut s, true)
                    .await?;
                s.resumed = Some(format!("{was}; migrate is idempotent: ran it again"));
                s
            }
            StepState::Migrating => {
                // Migrate may or may not have committed: restore, then run afresh.
                let mut s = StepSummary::new(&step.id, StepOutcome::NotRun);
                let reason = format!("resumed: {was}");
                let outcome = self
                    .roll_back(run_id, step, plugin, record, Phase::Migrate, reason, &mut s)
                    .await?;
                if !matches!(
                    outcome,
                    StepOutcome::RolledBack { .. } | StepOutcome::FailedUnchanged { .. }
                ) {
                    s.outcome = outcome;
                    s.resumed = Some(was);
                    return Ok(s);
                }
                let phases = std::mem::take(&mut s.phases);
                let mut s = self.execute(run_id, step, plugin).await?;
                s.phases.splice(0..0, phases);
                s.resumed = Some(format!(
                    "{was}; restored from the verified backup, then ran it again"
                ));
                s
            }
            StepState::Validating | StepState::Watching => {
                let mut s = StepSummary::new(&step.id, StepOutcome::NotRun);
                s.outcome = self
                    .finish_forward(run_id, step, plugin, record, &mut s, false)
                    .await?;
                s.resumed = Some(format!("{was}; migrate had completed: validated it"));
                s
            }
            StepState::RollingBack => {
                let mut s = StepSummary::new(&step.id, StepOutcome::NotRun);
                let reason = record.error.clone().unwrap_or_else(|| "rollback".into());
                // A rollback an operator asked for is the goal; one a failing
                // `run` started means the step failed.
                let phase = match self.journal.run_command(&record.run_id)?.as_deref() {
                    Some("rollback") => Phase::Rollback,
                    _ if record.metrics.is_empty() => Phase::Migrate,
                    _ => Phase::Thresholds,
                };
                s.outcome = self
                    .roll_back(run_id, step, plugin, record, phase, reason, &mut s)
                    .await?;
                s.resumed = Some(format!("{was}; finished the rollback"));
                s
            }
            other => unreachable!("{other} is not in flight"),
        };
        Ok(s)
    }

    /// Completes a step from a verified backup: migrate (when `migrate`) then
    /// validate and its gates; rolls back on failure.
    async fn finish_forward(
        &mut self,
        run_id: &str,
        step: &Step,
        plugin: &LoadedPlugin,
        record: &StepRecord,
        s: &mut StepSummary,
        migrate: bool,
    ) -> Result<StepOutcome, EngineError> {
        let baseline = baseline_of(record);
        let verdict = if migrate {
            self.apply(run_id, step, plugin, s, &baseline).await?
        } else {
            self.judge(run_id, step, plugin, s, &baseline).await?
        };
        self.settle(run_id, step, plugin, record, s, verdict).await
    }

    /// Acts on a verdict after migrate: advance (through the watch window,
    /// if any) to completed, pause for review, or roll back.
    async fn settle(
        &mut self,
        run_id: &str,
        step: &Step,
        plugin: &LoadedPlugin,
        record: &StepRecord,
        s: &mut StepSummary,
        verdict: Verdict,
    ) -> Result<StepOutcome, EngineError> {
        let verdict = match (verdict, step.watch) {
            (Ok(Forward::Advance(detail)), Some(watch)) => {
                let baseline = baseline_of(record);
                self.watch(run_id, step, plugin, s, watch, &baseline)
                    .await?
                    .map(|watched| Forward::Advance(format!("{detail}; {watched}")))
            }
            (verdict, _) => verdict,
        };
        Ok(match verdict {
            Ok(Forward::Advance(detail)) => {
                self.journal
                    .transition(run_id, &step.id, StepState::Completed, &detail, None)?;
                StepOutcome::Applied
            }
            Ok(Forward::Review(reason)) if self.options.rehearsal => {
                let detail = format!("rehearsal: would pause for review here ({reason}); passed");
                self.journal
                    .transition(run_id, &step.id, StepState::Completed, &detail, None)?;
                s.notes.push(detail);
                StepOutcome::Applied
            }
            Ok(Forward::Review(reason)) => {
                let reason = format!(
                    "{reason}; awaiting review: `sluice approve` completes the step, `sluice reject` rolls it back"
                );
                self.journal.transition(
                    run_id,
                    &step.id,
                    StepState::AwaitingReview,
                    &reason,
                    None,
                )?;
                StepOutcome::AwaitingApproval { reason }
            }
            Err((phase, reason)) => {
                let stopped = reason == STOPPED_AFTER_MIGRATE;
                match self
                    .roll_back(run_id, step, plugin, record, phase, reason, s)
                    .await?
                {
                    StepOutcome::RolledBack { .. } if stopped => {
                        StepOutcome::Stopped { rolled_back: true }
                    }
                    other => other,
                }
            }
        })
    }

    /// Re-runs validate every `watch.every` for `watch.duration` after the
    /// step met its gates; the first check that lands in a rollback (a
    /// threshold not met, a rollback band, validate failing) ends the window.
    async fn watch(
        &mut self,
        run_id: &str,
        step: &Step,
        plugin: &LoadedPlugin,
        s: &mut StepSummary,
        watch: Watch,
        baseline: &[Metric],
    ) -> Result<Result<String, (Phase, String)>, EngineError> {
        let window = format!(
            "every {} for {}",
            humantime::format_duration(watch.every),
            humantime::format_duration(watch.duration)
        );
        self.journal.transition(
            run_id,
            &step.id,
            StepState::Watching,
            &format!("gates met; watching: validate {window}"),
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
                    return Ok(Err((Phase::Watch, STOPPED_AFTER_MIGRATE.to_string())));
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
                Err(e) => break Err((Phase::Watch, format!("{at}: {e}"))),
            };
            self.journal.record_metrics(&step.id, &metrics)?;
            let judgement = step.judge(&metric_values(&metrics, baseline));
            s.metrics = metrics;
            s.thresholds = judgement.thresholds;
            s.band = judgement.band;
            match judgement.action {
                Action::Rollback => {
                    break Err((Phase::Watch, format!("{at} breached: {}", judgement.reason)))
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

    /// Runs validate read-only; returns the metrics and how long it took,
    /// or why they cannot be used.
    pub(crate) async fn measure(
        &self,
        step: &Step,
        plugin: &LoadedPlugin,
        wanted: Vec<String>,
    ) -> Result<(Vec<Metric>, Duration), String> {
        let grants = self.grants(step, Some(Access::ReadOnly), BackupAccess::None);
        let mut context = self.context(step);
        context.metrics = wanted;
        let (result, report) = self
            .runtime
            .call(plugin, grants, PhaseInput::Validate(context))
            .await;
        let metrics = match result {
            Ok(PhaseOutput::Validate(metrics)) => metrics,
            Ok(_) => unreachable!("validate returns metrics"),
            Err(e) => return Err(format!("validate failed: {e}")),
        };
        check_metrics(&metrics)
            .map_err(|reason| format!("validate returned unusable metrics: {reason}"))?;
        Ok((metrics, report.elapsed))
    }

    /// Takes the leases of every target the plan changes, for this run.
    fn lease(&self, run_id: &str) -> Result<Box<dyn Send>, EngineError> {
        let mut targets: Vec<String> = self
            .plan
            .steps
            .iter()
            .map(|s| self.plan.lease_keys(&self.plan.targets[&s.target]))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect();
        targets.sort();
        targets.dedup();
        let lease = self.journal.lease(&targets, run_id, self.plan.lease);
        if let Err(e) = &lease {
            let _ = self.journal.finish_run(run_id, "refused: lease held");
            tracing::debug!("lease refused: {e}");
        }
        Ok(lease?)
    }

    fn stop_requested(&self) -> bool {
        self.options
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::SeqCst))
    }

    fn grants(&self, step: &Step, access: Option<Access>, backup: BackupAccess) -> CallGrants {
        let target = &self.plan.targets[&step.target];
        let endpoint = &self.endpoints[&step.target];
        CallGrants {
            step_id: step.id.clone(),
            sql: access
                .filter(|_| target.kind.is_sql())
                .map(|access| SqlGrant {
                    target: target.name.clone(),
                    kind: target.kind,
                    endpoint: endpoint.clone(),
                    access,
                    tables: step.tables.clone(),
                    statement_timeout: std::time::Duration::from_secs(step.limits.phase_seconds),
                }),
            kv: access
                .filter(|_| !target.kind.is_sql())
                .and_then(|access| match endpoint {
                    Endpoint::Url(url) => Some(KvGrant {
                        target: target.name.clone(),
                        url: url.clone(),
                        access,
                        prefixes: step.key_prefixes.clone(),
                    }),
                    Endpoint::File(_) => None,
                }),
            backup,
            limits: step.limits,
            progress: self.options.progress.clone(),
            files: step.files.clone(),
            values: self.values_for(step),
            probes: step.probes.clone(),
        }
    }

    /// The plan values granted to a step, resolved now (never logged).
    fn values_for(&self, step: &Step) -> BTreeMap<String, String> {
        step.values
            .iter()
            .filter_map(|name| match self.plan.resolve_value(name) {
                Ok(value) => Some((name.clone(), value.expose().to_string())),
                Err(e) => {
                    tracing::warn!(step = %step.id, "granted value is unavailable: {e}");
                    None
                }
            })
            .collect()
    }

    fn context(&self, step: &Step) -> StepContext {
        step_context(&self.plan, step)
    }

    async fn execute(
        &mut self,
        run_id: &str,
        step: &Step,
        plugin: &LoadedPlugin,
    ) -> Result<StepSummary, EngineError> {
        let mut s = StepSummary::new(&step.id, StepOutcome::NotRun);
        let identity = Some((plugin.digest.as_str(), step.params_hash.as_str()));
        self.journal.transition(
            run_id,
            &step.id,
            StepState::BackingUp,
            "backup started",
            identity,
        )?;

        // Backup, read-only, then verify it before anything may change.
        let (verified, report) = self.take_backup(step, plugin).await;
        s.phases.push((Phase::Backup, report.elapsed));
        let verified = match verified {
            Ok(backup) if step.needs_baseline() => {
                self.baseline(step, plugin, backup, &mut s).await
            }
            other => other.map_err(|reason| (Phase::Backup, reason)),
        };
        let backup = match verified {
            Ok(backup) => backup,
            Err((phase, reason)) => {
                self.journal
                    .transition(run_id, &step.id, StepState::Failed, &reason, None)?;
                s.outcome = StepOutcome::FailedUnchanged { phase, reason };
                return Ok(s);
            }
        };
        s.backup = Some((
            backup.artifacts.len(),
            backup.artifacts.iter().map(|a| a.size).sum(),
        ));
        self.journal.record_backup(run_id, &step.id, &backup)?;
        let detail = format!(
            "backup verified: {} artifacts, {} bytes",
            backup.artifacts.len(),
            backup.artifacts.iter().map(|a| a.size).sum::<u64>()
        );
        self.journal
            .transition(run_id, &step.id, StepState::BackedUp, &detail, None)?;
        let record = self.journal.step(&step.id)?.expect("just written");
        if self.stop_requested() {
            // Nothing has changed yet: leave the step pending.
            self.journal.transition(
                run_id,
                &step.id,
                StepState::Pending,
                "stopped by a signal after backup; nothing changed",
                None,
            )?;
            s.outcome = StepOutcome::Stopped { rolled_back: false };
            return Ok(s);
        }

        s.outcome = self
            .finish_forward(run_id, step, plugin, &record, &mut s, true)
            .await?;
        Ok(s)
    }

    /// Backup, read-only, with write access to the backup store, then the
    /// host's verification of it ([`Engine::verify_backup`]).
    pub(crate) async fn take_backup(
        &self,
        step: &Step,
        plugin: &LoadedPlugin,
    ) -> (Result<StoredBackup, String>, CallReport) {
        let grants = self.grants(
            step,
            Some(Access::ReadOnly),
            BackupAccess::Write {
                store: self.backups.clone(),
                max_bytes: step.limits.backup_mib << 20,
            },
        );
        let (result, report) = self
            .runtime
            .call(plugin, grants, PhaseInput::Backup(self.context(step)))
            .await;
        let verified = match result {
            Ok(PhaseOutput::Backup(manifest)) => {
                self.verify_backup(step, manifest, &report.written).await
            }
            Ok(_) => unreachable!("backup returns a manifest"),
            Err(e) => Err(format!("backup failed: {e}")),
        };
        (verified, report)
    }

    /// Migrate with the step's access.
    pub(crate) async fn call_migrate(
        &self,
        step: &Step,
        plugin: &LoadedPlugin,
    ) -> (Result<(), String>, CallReport) {
        let grants = self.grants(step, Some(step.access), BackupAccess::None);
        let (result, report) = self
            .runtime
            .call(plugin, grants, PhaseInput::Migrate(self.context(step)))
            .await;
        (
            result
                .map(|_| ())
                .map_err(|e| format!("migrate failed: {e}")),
            report,
        )
    }

    /// The forward path after a verified backup: migrate (the step's access),
    /// validate (read-only), thresholds. Returns the completion detail, or
    /// the phase that failed first and why.
    async fn apply(
        &mut self,
        run_id: &str,
        step: &Step,
        plugin: &LoadedPlugin,
        s: &mut StepSummary,
        baseline: &[Metric],
    ) -> Result<Verdict, EngineError> {
        self.journal.transition(
            run_id,
            &step.id,
            StepState::Migrating,
            "migrate started",
            None,
        )?;
        let (result, report) = self.call_migrate(step, plugin).await;
        s.phases.push((Phase::Migrate, report.elapsed));
        if let Err(e) = result {
            return Ok(Err((Phase::Migrate, e)));
        }
        if let Err(e) = self.record_post_step(run_id, step).await? {
            return Ok(Err((Phase::Migrate, e)));
        }
        if self.stop_requested() {
            return Ok(Err((Phase::Migrate, STOPPED_AFTER_MIGRATE.to_string())));
        }
        self.judge(run_id, step, plugin, s, baseline).await
    }

    /// Validate (read-only) and the step's gates, after migrate completed.
    async fn judge(
        &mut self,
        run_id: &str,
        step: &Step,
        plugin: &LoadedPlugin,
        s: &mut StepSummary,
        baseline: &[Metric],
    ) -> Result<Verdict, EngineError> {
        self.journal.transition(
            run_id,
            &step.id,
            StepState::Validating,
            "migrate done; validate started",
            None,
        )?;
        let (metrics, elapsed) = match self.measure(step, plugin, Vec::new()).await {
            Ok(measured) => measured,
            Err(e) => return Ok(Err((Phase::Validate, e))),
        };
        s.phases.push((Phase::Validate, elapsed));
        self.journal.record_metrics(&step.id, &metrics)?;
        let judgement = step.judge(&metric_values(&metrics, baseline));
        s.metrics = metrics;
        s.thresholds = judgement.thresholds;
        s.band = judgement.band;
        Ok(match judgement.action {
            Action::Rollback => Err((Phase::Thresholds, judgement.reason)),
            Action::Review => Ok(Forward::Review(judgement.reason)),
            Action::Advance if step.approval == Some(ApprovalPoint::After) => {
                Ok(Forward::Review(format!(
                    "{}; the plan asks for approval after this step",
                    judgement.reason
                )))
            }
            Action::Advance => Ok(Forward::Advance(judgement.reason)),
        })
    }

    /// Measures the `baseline.` metrics: validate on the target as it is
    /// before migrate, kept with the backup so a resumed step judges against
    /// the same numbers.
    async fn baseline(
        &self,
        step: &Step,
        plugin: &LoadedPlugin,
        mut backup: StoredBackup,
        s: &mut StepSummary,
    ) -> Result<StoredBackup, (Phase, String)> {
        // Only what the gates read as `baseline.`: metrics of what migrate
        // creates cannot be measured yet.
        let wanted = step
            .conditions()
            .flat_map(|t| t.expr.metrics())
            .filter_map(|m| m.strip_prefix(BASELINE))
            .map(str::to_string)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let (metrics, elapsed) = self.measure(step, plugin, wanted).await.map_err(|e| {
            (
                Phase::Baseline,
                format!("baseline (validate before migrate): {e}"),
            )
        })?;
        s.phases.push((Phase::Baseline, elapsed));
        backup.baseline = metrics;
        Ok(backup)
    }

    /// Checks a backup before the step may change anything: every artifact
    /// the manifest names was written by this backup, each one's digest is
    /// recomputed from the stored bytes, and the tables the plugin says it
    /// saved match the host's own checksums of the target.
    async fn verify_backup(
        &self,
        step: &Step,
        manifest: BackupManifest,
        written: &[crate::backup::ArtifactRef],
    ) -> Result<StoredBackup, String> {
        if manifest.artifacts.is_empty() {
            return Err("backup not verified: the manifest names no artifacts".into());
        }
        let mut artifacts = Vec::new();
        let mut seen = HashSet::new();
        for name in &manifest.artifacts {
            if !seen.insert(name) {
                return Err(format!(
                    "backup not verified: the manifest names artifact `{name}` twice"
                ));
            }
            let Some(artifact) = written.iter().find(|a| &a.name == name) else {
                return Err(format!(
                    "backup not verified: the manifest names artifact `{name}`, which this backup never wrote"
                ));
            };
            self.backups
                .verify(artifact)
                .map_err(|e| format!("backup not verified: {e}"))?;
            artifacts.push(artifact.clone());
        }
        if artifacts.iter().all(|a| a.size == 0) {
            return Err("backup not verified: every artifact is empty".into());
        }
        let target = &self.plan.targets[&step.target];
        let tables: Vec<String> = manifest.tables.iter().map(|t| t.name.clone()).collect();
        let fingerprint =
            datastores::fingerprint(target.kind, &self.endpoints[&target.name], tables.clone())
                .await
                .map_err(|e| {
                    format!(
                        "backup not verified: cannot fingerprint target `{}`: {e}",
                        target.name
                    )
                })?;
        for table in &manifest.tables {
            match fingerprint.tables.get(&table.name) {
                Some(host) if host.rows == table.rows && host.checksum == table.checksum => {}
                Some(host) => {
                    return Err(format!(
                        "backup not verified: the plugin saved `{}` as {} rows (checksum {}) but the host counts {} rows (checksum {})",
                        table.name, table.rows, table.checksum, host.rows, host.checksum
                    ))
                }
                None => {
                    return Err(format!(
                        "backup not verified: the manifest names table `{}`, which the target does not have",
                        table.name
                    ))
                }
            }
        }
        Ok(StoredBackup {
            manifest,
            artifacts,
            fingerprint,
            baseline: Vec::new(),
            post_step: None,
        })
    }

    /// Rolls a step back from its verified backup and proves the result.
    #[allow(clippy::too_many_arguments)]
    async fn roll_back(
        &mut self,
        run_id: &str,
        step: &Step,
        plugin: &LoadedPlugin,
        record: &StepRecord,
        phase: Phase,
        reason: String,
        s: &mut StepSummary,
    ) -> Result<StepOutcome, EngineError> {
        // How far the step got, from the journal, before it says rolling-back;
        // and its backup as recorded now (`record` may predate the post-step
        // fingerprint migrate's end added to it).
        let current = self.journal.step(&step.id)?;
        let recorded_backup = current
            .as_ref()
            .and_then(|r| r.backup.clone())
            .or_else(|| record.backup.clone());
        let reached = match current.map(|r| r.state) {
            Some(StepState::Migrating) => PhaseReached::Migrating,
            Some(StepState::Validating | StepState::Watching | StepState::AwaitingReview) => {
                PhaseReached::Migrated
            }
            Some(StepState::Completed) => PhaseReached::Completed,
            Some(StepState::RollingBack | StepState::RollbackFailed) => PhaseReached::RollingBack,
            Some(StepState::RollbackRefused) => PhaseReached::Completed,
            _ => PhaseReached::BackedUp,
        };
        // Before anything is undone: writes made after the step would be
        // lost by a restore. Refuse, unless the operator decided otherwise.
        // An interrupted rollback (rolling-back) passed this check already.
        let mut reason = reason;
        if step.access != Access::ReadOnly && !matches!(reached, PhaseReached::RollingBack) {
            if let Some(backup) = &recorded_backup {
                let later_writes = self.later_writes(step, backup, reached).await;
                if !later_writes.is_empty() {
                    if !self.options.discard_later_writes {
                        let detail = format!(
                            "{reason}; rollback refused, nothing undone: the target changed after the step ({}); \
                             restoring would discard those writes",
                            later_writes.join("; ")
                        );
                        self.journal.transition(
                            run_id,
                            &step.id,
                            StepState::RollbackRefused,
                            &detail,
                            None,
                        )?;
                        return Ok(StepOutcome::RollbackRefused {
                            phase,
                            reason,
                            later_writes,
                        });
                    }
                    reason = format!(
                        "{reason}; discarding writes made after the step, as the operator decided (--discard-later-writes): {}",
                        later_writes.join("; ")
                    );
                }
            }
        }
        self.journal
            .transition(run_id, &step.id, StepState::RollingBack, &reason, None)?;
        let fail = |journal: &mut Box<dyn Journal>,
                    rollback_error: String|
         -> Result<StepOutcome, EngineError> {
            journal.transition(
                run_id,
                &step.id,
                StepState::RollbackFailed,
                &rollback_error,
                None,
            )?;
            Ok(StepOutcome::RollbackFailed {
                phase,
                reason: reason.clone(),
                rollback_error,
            })
        };
        let Some(backup) = record.backup.clone() else {
            return fail(
                &mut self.journal,
                "no verified backup is recorded for this step".into(),
            );
        };
        if step.access == Access::ReadOnly {
            // The datastore refused every write: prove nothing changed instead
            // of asking the plugin to undo what it could not do.
            if let Err(e) = self.prove_pre_step_state(step, &backup).await {
                return fail(&mut self.journal, format!("read-only step: {e}"));
            }
            self.journal.transition(
                run_id,
                &step.id,
                StepState::Failed,
                &format!("{reason} (read-only step: target verified unchanged)"),
                None,
            )?;
            return Ok(StepOutcome::FailedUnchanged { phase, reason });
        }
        let (result, report) = match self.call_rollback(step, plugin, &backup, reached).await {
            Ok(called) => called,
            Err(refused) => return fail(&mut self.journal, refused),
        };
        s.phases.push((Phase::Rollback, report.elapsed));
        if let Err(e) = result {
            return fail(&mut self.journal, e);
        }
        // The host's own proof: schema and backed-up tables equal the pre-step state.
        if let Err(e) = self.prove_pre_step_state(step, &backup).await {
            return fail(&mut self.journal, format!("rollback: {e}"));
        }
        let detail = format!(
            "restored and verified: schema and {} table checksums equal the pre-step state",
            backup.fingerprint.tables.len()
        );
        self.journal
            .transition(run_id, &step.id, StepState::RolledBack, &detail, None)?;
        Ok(StepOutcome::RolledBack { phase, reason })
    }
}

impl Engine {
    /// The plugin's rollback from a verified backup, with read access to
    /// exactly its artifacts; refused when the stored artifacts no longer
    /// match what was verified (the outer `Err`: the plugin was not called).
    /// The caller proves the result.
    pub(crate) async fn call_rollback(
        &self,
        step: &Step,
        plugin: &LoadedPlugin,
        backup: &StoredBackup,
        reached: PhaseReached,
    ) -> Result<(Result<(), String>, CallReport), String> {
        // The backup must still be exactly what was verified.
        for artifact in &backup.artifacts {
            self.backups
                .verify(artifact)
                .map_err(|e| format!("rollback refused: {e}"))?;
        }
        let artifacts = backup
            .artifacts
            .iter()
            .map(|a| (a.name.clone(), a.clone()))
            .collect();
        let grants = self.grants(
            step,
            Some(step.access),
            BackupAccess::Read {
                store: self.backups.clone(),
                artifacts,
            },
        );
        let input = PhaseInput::Rollback(self.context(step), backup.manifest.clone(), reached);
        let (result, report) = self.runtime.call(plugin, grants, input).await;
        Ok((
            result
                .map(|_| ())
                .map_err(|e| format!("rollback failed: {e}")),
            report,
        ))
    }

    /// Fingerprints what the step backed up right after its migrate and
    /// records it with the backup: the state a later rollback must find for
    /// a restore to lose nothing. `Err` (inner): the step cannot go on.
    async fn record_post_step(
        &mut self,
        run_id: &str,
        step: &Step,
    ) -> Result<Result<(), String>, EngineError> {
        if step.access == Access::ReadOnly {
            return Ok(Ok(()));
        }
        let Some(mut backup) = self.journal.step(&step.id)?.and_then(|r| r.backup) else {
            return Ok(Ok(()));
        };
        let target = &self.plan.targets[&step.target];
        let tables: Vec<String> = backup.fingerprint.tables.keys().cloned().collect();
        match datastores::fingerprint(target.kind, &self.endpoints[&target.name], tables).await {
            Ok(after) => {
                backup.post_step = Some(after);
                self.journal.record_backup(run_id, &step.id, &backup)?;
                Ok(Ok(()))
            }
            Err(e) => Ok(Err(format!(
                "cannot fingerprint target `{}` after migrate: {e}",
                target.name
            ))),
        }
    }

    /// What changed in the step's backed-up tables since its migrate, one
    /// line per table; empty when a restore loses nothing. A step that
    /// reached migrate's end without a recorded post-step fingerprint (an
    /// earlier sluice completed it) is treated as changed since.
    async fn later_writes(
        &self,
        step: &Step,
        backup: &StoredBackup,
        reached: PhaseReached,
    ) -> Vec<String> {
        let Some(post_step) = &backup.post_step else {
            return match reached {
                PhaseReached::Completed => vec![
                    "no post-step fingerprint is recorded (the step was completed by an earlier sluice), so later writes cannot be ruled out".into(),
                ],
                // Migrate did not finish: there is no post-step state to compare with.
                _ => Vec::new(),
            };
        };
        let target = &self.plan.targets[&step.target];
        let tables: Vec<String> = post_step.tables.keys().cloned().collect();
        match datastores::fingerprint(target.kind, &self.endpoints[&target.name], tables).await {
            Ok(now) => later_write_lines(&backup.fingerprint, post_step, &now),
            Err(e) => vec![format!(
                "cannot fingerprint target `{}` to rule out later writes: {e}",
                target.name
            )],
        }
    }

    /// A loaded plugin of the plan, by name.
    pub(crate) fn loaded_plugin(&self, name: &str) -> Option<&LoadedPlugin> {
        self.plugins.get(name)
    }

    /// The host's own check that the target's schema and backed-up tables
    /// equal the fingerprint taken at backup.
    pub(crate) async fn prove_pre_step_state(
        &self,
        step: &Step,
        backup: &StoredBackup,
    ) -> Result<(), String> {
        let target = &self.plan.targets[&step.target];
        let tables: Vec<String> = backup.fingerprint.tables.keys().cloned().collect();
        let after = datastores::fingerprint(target.kind, &self.endpoints[&target.name], tables)
            .await
            .map_err(|e| format!("cannot fingerprint target `{}`: {e}", target.name))?;
        let differences = backup.fingerprint.differences(&after);
        if differences.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the target does not equal its pre-step state: {}",
                differences.join("; ")
            ))
        }
    }
}

/// One line per table that changed between the post-step fingerprint and now
/// (saying when the step itself had not changed that table, so a restore of
/// it could only lose the application's writes).
fn later_write_lines(
    pre_step: &datastores::Fingerprint,
    post_step: &datastores::Fingerprint,
    now: &datastores::Fingerprint,
) -> Vec<String> {
    let mut out = Vec::new();
    if post_step.schema != now.schema {
        out.push("the schema changed".to_string());
    }
    for (name, then) in &post_step.tables {
        match now.tables.get(name) {
            None => out.push(format!("table `{name}` was dropped")),
            Some(t) if t != then => out.push(format!(
                "table `{name}`: {} rows now, {} right after the step ({:+} rows, contents changed{})",
                t.rows,
                then.rows,
                t.rows as i64 - then.rows as i64,
                if pre_step.tables.get(name) == Some(then) {
                    "; the step itself did not change this table"
                } else {
                    ""
                }
            )),
            Some(_) => {}
        }
    }
    out
}

/// Why a step is rolled back when a signal arrives after its migrate.
const STOPPED_AFTER_MIGRATE: &str = "stopped by a signal after migrate; rolling the step back";

/// Metrics `validate` may return: far more than any plan's thresholds read,
/// few enough that a plugin cannot bloat the journal and reports.
pub const MAX_METRICS: usize = 1_000;
/// Longest metric name and detail kept.
pub const MAX_METRIC_TEXT: usize = 4_096;

fn check_metrics(metrics: &[Metric]) -> Result<(), String> {
    if metrics.len() > MAX_METRICS {
        return Err(format!(
            "{} metrics; the limit is {MAX_METRICS}",
            metrics.len()
        ));
    }
    if let Some(m) = metrics
        .iter()
        .find(|m| m.name.len() > MAX_METRIC_TEXT || m.detail.len() > MAX_METRIC_TEXT)
    {
        return Err(format!(
            "metric `{}…` has a name or detail over {MAX_METRIC_TEXT} bytes",
            m.name.chars().take(40).collect::<String>()
        ));
    }
    Ok(())
}

fn drift(record: &StepRecord, plugin: &LoadedPlugin, step: &Step) -> Option<String> {
    let mut what = Vec::new();
    if record.plugin_digest != plugin.digest {
        what.push(format!(
            "plugin `{}` was {} and is now {}",
            step.plugin,
            short(&record.plugin_digest),
            short(&plugin.digest)
        ));
    }
    if record.params_hash != step.params_hash {
        what.push("its params changed".to_string());
    }
    (!what.is_empty()).then(|| what.join("; "))
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

/// The context every phase call of `step` gets: every metric wanted.
pub fn step_context(plan: &Plan, step: &Step) -> StepContext {
    let target = &plan.targets[&step.target];
    StepContext {
        step_id: step.id.clone(),
        target: target.name.clone(),
        target_kind: target.kind.as_str().to_string(),
        params: step.params_json.clone(),
        metrics: Vec::new(),
    }
}

/// What the forward path decided after validate, when it did not fail.
enum Forward {
    /// Complete the step; the journal detail.
    Advance(String),
    /// Pause for an operator's review; why.
    Review(String),
}

/// A forward decision, or the phase that failed and why.
type Verdict = Result<Forward, (Phase, String)>;

/// The baseline metrics kept with a step's backup.
fn baseline_of(record: &StepRecord) -> Vec<Metric> {
    record
        .backup
        .as_ref()
        .map(|b| b.baseline.clone())
        .unwrap_or_default()
}

/// Metric values by name, the baseline ones under `baseline.<name>`.
pub fn metric_values(metrics: &[Metric], baseline: &[Metric]) -> BTreeMap<String, f64> {
    metrics
        .iter()
        .map(|m| (m.name.clone(), m.value))
        .chain(
            baseline
                .iter()
                .map(|m| (format!("{BASELINE}{}", m.name), m.value)),
        )
        .collect()
}

/// What `sluice status` shows of a step.
#[derive(Debug, Clone)]
pub struct StepStatus {
    /// Step id.
    pub id: String,
    /// What the journal knows, if the step ever ran.
    pub record: Option<StepRecord>,
    /// When and how the step was last interrupted and resumed, if it was.
    pub resumed: Option<Transition>,
}

/// The state of every step of a plan, from the journal.
pub fn status(plan: &Plan) -> Result<Vec<StepStatus>, EngineError> {
    let journal = crate::journal::open_for(plan)?;
    plan.steps
        .iter()
        .map(|s| {
            let record = journal.step(&s.id)?;
            let resumed = journal
                .transitions(&s.id)?
                .into_iter()
                .rev()
                .find(|t| t.detail.starts_with("resumed:"));
            Ok(StepStatus {
                id: s.id.clone(),
                record,
                resumed,
            })
        })
        .collect()
}
