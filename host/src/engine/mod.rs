//! The algorithm: each pending step goes backup → verify → migrate →
//! validate → thresholds; any failure rolls the step back from its own
//! verified backup and the host proves the target equals its pre-step state.
//! Plugins supply datastore knowledge; ordering, journaling, verification and
//! rollback decisions live here, once.

mod backup;
mod forward;
mod outcome;
mod pause;
mod rollback;
mod run;
mod step;
mod undo;
mod watch;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::approval;
use crate::backup::{BackupError, BackupStore};
use crate::capabilities::backup_store::BackupAccess;
use crate::capabilities::kv::KvGrant;
use crate::capabilities::sql::SqlGrant;
use crate::datastores::Endpoint;
use crate::journal::{Journal, JournalError};
use crate::plan::{Access, Plan, Step};
use crate::plan::{Address, ValueError};
use crate::runtime::{
    CallGrants, ComponentCache, LoadError, LoadedPlugin, PhaseCaller, Runtime, StepContext,
};

pub use crate::journal::outcome::metric_values;
pub use crate::journal::outcome::{Phase, RunSummary, StepOutcome, StepSummary};
pub use crate::runtime::{step_context, MAX_METRICS, MAX_METRIC_TEXT};

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

/// The documented exit codes (their one home is `crate::exit`).
pub use crate::exit;

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
    /// step: restore anyway, discarding them (recorded with what changed).
    pub discard_later_writes: bool,
}

/// The engine for one plan.
pub struct Engine {
    plan: Plan,
    caller: Arc<dyn PhaseCaller>,
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
        Self::with_plugins(plan, runtime, plugins, options)
    }

    /// Like [`Engine::with_runtime`] with the plan's plugins already loaded
    /// (by plan name) and phases called through `caller`.
    pub fn with_plugins(
        plan: Plan,
        caller: Arc<dyn PhaseCaller>,
        plugins: BTreeMap<String, LoadedPlugin>,
        options: EngineOptions,
    ) -> Result<Self, EngineError> {
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
            caller,
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

    /// A loaded plugin of the plan, by name.
    pub(crate) fn loaded_plugin(&self, name: &str) -> Option<&LoadedPlugin> {
        self.plugins.get(name)
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
                    snapshot: None,
                    capture: None,
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
        crate::runtime::step_context(&self.plan, step)
    }
}
