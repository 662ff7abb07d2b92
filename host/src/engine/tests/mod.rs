//! The step state machine, driven through the [`PhaseCaller`] seam by a
//! scripted plugin, on a real SQLite journal and a real SQLite target in a
//! temporary directory: for each phase and each way it can end, the journal
//! transitions, the outcome, the rollback decision and the target's state.

mod cases;
mod paths;
mod scripted;

use std::sync::Arc;

use super::{Engine, EngineError, EngineOptions, Phase, RunSummary, StepOutcome};
use crate::journal::{StepState, Transition};
use crate::plan::Plan;
use crate::runtime::PhaseCaller;
use scripted::{Call, Scripted};

use StepState::*;

/// A plan of one step `one` (and optionally a second step `two`) on a
/// SQLite target `db` with a table `items` of three rows.
pub(crate) struct Fixture {
    dir: tempfile::TempDir,
    pub(crate) plan: Plan,
    pub(crate) plugin: Scripted,
    idempotent: bool,
}

impl Fixture {
    /// One step, with `step` added to its table (thresholds, bands, …).
    pub(crate) fn new(step: &str) -> Self {
        Self::with_steps(step, None)
    }

    /// Step `one` with `step`, then step `two` with `second`.
    pub(crate) fn with_steps(step: &str, second: Option<&str>) -> Self {
        // On tmpfs where there is one: the journal syncs every transition,
        // and these tests are about the state machine, not the disk.
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .unwrap();
        let db = rusqlite::Connection::open(dir.path().join("target.db")).unwrap();
        db.execute_batch(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
             INSERT INTO items (name) VALUES ('a'), ('b'), ('c');",
        )
        .unwrap();
        drop(db);
        std::fs::write(dir.path().join("scripted.wasm"), b"scripted").unwrap();
        let second = second
            .map(|s| {
                format!(
                    "[[steps]]\nid = \"two\"\nplugin = \"scripted\"\ntarget = \"db\"\naccess = \"read-write\"\n{s}\n[steps.params]\nn = 2\n"
                )
            })
            .unwrap_or_default();
        let toml = format!(
            r#"[plan]
name = "unit"

[targets.db]
kind = "sqlite"
path = "target.db"

[plugins.scripted]
path = "scripted.wasm"

[[steps]]
id = "one"
plugin = "scripted"
target = "db"
{step}

[steps.params]
n = 1

{second}"#
        );
        let toml = if step.contains("access") {
            toml
        } else {
            toml.replacen(
                "target = \"db\"\n",
                "target = \"db\"\naccess = \"read-write\"\n",
                1,
            )
        };
        std::fs::write(dir.path().join("sluice.toml"), toml).unwrap();
        let plan = crate::plan::load(&dir.path().join("sluice.toml")).unwrap();
        let declared = ["rows", "errors"];
        Fixture {
            dir,
            plan,
            plugin: Scripted::new(&declared),
            idempotent: false,
        }
    }

    /// The plugin says running migrate again is harmless.
    pub(crate) fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// An engine as one invocation of `sluice` opens it.
    pub(crate) fn engine(&self) -> Engine {
        self.engine_with_digest(self.digest())
    }

    /// The digest of the plan's plugin file, as the real runtime reports it.
    fn digest(&self) -> &str {
        &self.plan.plugins["scripted"].digest
    }

    pub(crate) fn engine_with_digest(&self, digest: &str) -> Engine {
        let plugins = [(
            "scripted".to_string(),
            Scripted::plugin("scripted", digest, self.idempotent),
        )]
        .into();
        let caller: Arc<dyn PhaseCaller> = Arc::new(self.plugin.clone());
        let options = EngineOptions {
            stop: Some(self.plugin.stop.clone()),
            ..EngineOptions::default()
        };
        Engine::with_plugins(self.plan.clone(), caller, plugins, options).unwrap()
    }

    /// `sluice run`.
    pub(crate) async fn run(&self) -> RunSummary {
        self.engine().run().await.unwrap()
    }

    /// `sluice rollback`.
    pub(crate) async fn rollback(&self) -> RunSummary {
        self.engine().rollback(None).await.unwrap()
    }

    /// `sluice approve one`.
    pub(crate) fn approve(&self) {
        let journal = crate::journal::open_for(&self.plan).unwrap();
        crate::approval::approve(journal.as_ref(), &self.plan, "one", None, "ann", None).unwrap();
    }

    /// The states step `id` entered, in order.
    pub(crate) fn states(&self, id: &str) -> Vec<StepState> {
        self.transitions(id).iter().map(|t| t.state).collect()
    }

    pub(crate) fn transitions(&self, id: &str) -> Vec<Transition> {
        crate::journal::open_for(&self.plan)
            .unwrap()
            .transitions(id)
            .unwrap()
    }

    /// Moves step `one` to `state` as an interrupted run would leave it.
    pub(crate) fn interrupt_in(&self, state: StepState) {
        let mut journal = crate::journal::open_for(&self.plan).unwrap();
        let run = journal
            .begin_run("run", &self.plan.path, &self.plan.hash)
            .unwrap();
        let step = self.plan.step("one").unwrap();
        // A step's identity is recorded when it starts (and resets its record).
        let identity = (self.digest(), step.params_hash.as_str());
        let identity = journal.step("one").unwrap().is_none().then_some(identity);
        journal
            .transition(
                &run,
                "one",
                state,
                &crate::journal::record::words("simulated interruption"),
                identity,
            )
            .unwrap();
    }

    /// Whether step `one`'s migrate is in the target.
    pub(crate) fn migrated(&self) -> bool {
        self.migrated_step("one")
    }

    /// Whether step `id`'s migrate is in the target (a table and a row).
    pub(crate) fn migrated_step(&self, id: &str) -> bool {
        let db = rusqlite::Connection::open(self.dir.path().join("target.db")).unwrap();
        let count = |sql: &str| -> i64 { db.query_row(sql, [id], |r| r.get(0)).unwrap() };
        let table = count("SELECT count(*) FROM sqlite_schema WHERE name = 'added_' || ?1");
        let row = count("SELECT count(*) FROM items WHERE name = ?1");
        assert_eq!(table, row, "step `{id}`'s change is half there");
        table == 1
    }
}

/// The outcome of the first step of a summary.
pub(crate) fn first(summary: &RunSummary) -> &StepOutcome {
    &summary.steps[0].outcome
}

/// The phase and reason of a failed outcome.
pub(crate) fn failed(outcome: &StepOutcome) -> (Phase, &str) {
    match outcome {
        StepOutcome::FailedUnchanged { phase, reason }
        | StepOutcome::RolledBack { phase, reason, .. }
        | StepOutcome::RollbackFailed { phase, reason, .. } => (*phase, reason),
        other => panic!("not a failure: {other:?}"),
    }
}

pub(crate) const FORWARD: [StepState; 5] = [BackingUp, BackedUp, Migrating, Validating, Completed];
pub(crate) const MIGRATE_ROLLED_BACK: [StepState; 5] =
    [BackingUp, BackedUp, Migrating, RollingBack, RolledBack];
pub(crate) const VALIDATE_ROLLED_BACK: [StepState; 6] = [
    BackingUp,
    BackedUp,
    Migrating,
    Validating,
    RollingBack,
    RolledBack,
];
