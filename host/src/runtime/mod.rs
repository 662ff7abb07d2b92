//! The WebAssembly side: one wasmtime engine, the component cache, loaded
//! plugins (an `InstancePre` each, reused for every call) and phase calls.
//!
//! Every phase call gets a fresh store with its own limits: memory through a
//! resource limiter, time through an epoch deadline for guest code and a
//! wall-clock timeout around the whole call (which also interrupts SQL the
//! host is running for the plugin). A store is never reused, so one that
//! trapped or timed out is simply dropped.

pub(crate) mod bindings;
pub mod cache;
pub mod caller;
pub mod context;
mod plugins;

use std::time::{Duration, Instant};

use tracing::Instrument;

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::backup::ArtifactRef;
use crate::capabilities::backup_store::{ArtifactOpened, BackupAccess, BackupCapability};
use crate::capabilities::kv::{KvCapability, KvGrant};
use crate::capabilities::log::LogCapability;
use crate::capabilities::probe::ProbeCapability;
use crate::capabilities::progress::{ProgressCapability, ProgressSink};
use crate::capabilities::sql::{SessionInterrupters, SqlCapability, SqlGrant};
use crate::capabilities::values::ValuesCapability;
use crate::capabilities::{self, describe_error};
use crate::grants::ComponentFacts;
pub use crate::journal::record::{BackupManifest, ChangeKind, Metric, TableState};
use crate::plan::{Access, FileGrant, Limits, PluginRef, Probe};
pub use bindings::{PhaseReached, PluginError, PluginInfo, StepContext, StepPreview};
pub use cache::{CacheOutcome, ComponentCache};
pub use caller::PhaseCaller;
pub use context::{step_context, MAX_METRICS, MAX_METRIC_TEXT};
pub use plugins::PluginSet;
use std::collections::BTreeMap;
use wasmtime_wasi::FsPerms;

/// How often the epoch advances; deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Extra wall-clock time after a phase's deadline before the host gives up on
/// a host call (a long SQL statement) and interrupts it.
const HOST_GRACE: Duration = Duration::from_secs(2);
/// Plugin stdout/stderr kept per call; beyond it writes fail in the plugin.
const MAX_CAPTURED_OUTPUT: usize = 64 * 1024;
/// Time `describe` may take.
const DESCRIBE_DEADLINE: Duration = Duration::from_secs(10);
/// Time `preview` may take: a pure function of the params, it needs no more
/// than `describe` (and no datastore can slow it down).
const PREVIEW_DEADLINE: Duration = Duration::from_secs(10);
/// Wasm stack a plugin may use before a stack-overflow trap.
const MAX_WASM_STACK: usize = 1 << 20;
/// Tables and instances a plugin may create (a component has a handful).
const MAX_INSTANCES: usize = 64;
const MAX_TABLES: usize = 64;
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Errors loading a plugin.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file is not a component this host can run.
    #[error("plugin `{plugin}` ({path}): not a loadable sluice component: {reason}")]
    Invalid {
        /// Plugin name.
        plugin: String,
        /// File.
        path: String,
        /// wasmtime's reason.
        reason: String,
    },
    /// The engine could not be set up.
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
}

/// Why a phase call did not return a value.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PhaseError {
    /// The plugin returned an error.
    #[error("{}", describe_error(.0))]
    Plugin(PluginError),
    /// The plugin trapped (panic, out of bounds, memory limit, …).
    #[error("plugin trapped: {message}")]
    Trap {
        /// The trap and the plugin's last stderr lines.
        message: String,
    },
    /// The phase ran out of time.
    #[error("deadline of {}s exceeded", .limit.as_secs())]
    Timeout {
        /// The limit.
        limit: Duration,
    },
    /// The host failed to run the call.
    #[error("host error: {0}")]
    Host(String),
}

impl PhaseError {
    /// What kind of failure this is, as the journal records it.
    pub fn kind(&self) -> crate::journal::record::FailureKind {
        use crate::journal::record::FailureKind;
        match self {
            PhaseError::Plugin(_) => FailureKind::PluginError,
            PhaseError::Trap { .. } => FailureKind::Trap,
            PhaseError::Timeout { .. } => FailureKind::Timeout,
            PhaseError::Host(_) => FailureKind::Host,
        }
    }
}

/// A compiled plugin, ready to instantiate many times.
#[derive(Clone)]
pub struct LoadedPlugin {
    /// Plan name of the plugin.
    pub name: String,
    /// sha256 of its component file.
    pub digest: String,
    /// What the plugin says about itself.
    pub info: PluginInfo,
    /// Whether the compiled code came from the cache.
    pub cache: CacheOutcome,
    /// What the component file says about itself (imports, WIT version).
    pub facts: ComponentFacts,
    /// The compiled component; `None` only for a scripted plugin in tests.
    pre: Option<bindings::PluginPre<StoreState>>,
}

impl LoadedPlugin {
    /// A plugin with no component behind it, for a [`PhaseCaller`] that
    /// scripts its answers (the engine's state-machine tests).
    #[cfg(test)]
    pub(crate) fn scripted(name: &str, digest: &str, info: PluginInfo) -> Self {
        LoadedPlugin {
            name: name.to_string(),
            digest: digest.to_string(),
            info,
            cache: CacheOutcome::Compiled,
            facts: ComponentFacts {
                sha256: digest.to_string(),
                size: 0,
                wit_version: None,
                imports: Vec::new(),
                exports: Vec::new(),
            },
            pre: None,
        }
    }

    fn pre(&self) -> wasmtime::Result<&bindings::PluginPre<StoreState>> {
        self.pre.as_ref().ok_or_else(|| {
            wasmtime::Error::msg(format!("plugin `{}` has no compiled component", self.name))
        })
    }
}

/// Everything one phase call may use: its grants and limits.
pub struct CallGrants {
    /// Step the call runs for (tags logs).
    pub step_id: String,
    /// SQL datastore access, if any.
    pub sql: Option<SqlGrant>,
    /// Key-value datastore access, if any.
    pub kv: Option<KvGrant>,
    /// Backup store access.
    pub backup: BackupAccess,
    /// Limits.
    pub limits: Limits,
    /// Where progress reports go.
    pub progress: Option<ProgressSink>,
    /// Directories handed over as WASI preopens.
    pub files: Vec<FileGrant>,
    /// Named values, resolved.
    pub values: BTreeMap<String, String>,
    /// Named HTTP probes the plugin may send.
    pub probes: Vec<Probe>,
}

impl CallGrants {
    /// Grants nothing but `limits`.
    pub fn none(step_id: &str, limits: Limits) -> Self {
        CallGrants {
            step_id: step_id.to_string(),
            sql: None,
            kv: None,
            backup: BackupAccess::None,
            limits,
            progress: None,
            files: Vec::new(),
            values: BTreeMap::new(),
            probes: Vec::new(),
        }
    }
}

/// A phase to call, with its inputs.
pub enum PhaseInput {
    /// `backup`.
    Backup(StepContext),
    /// `migrate`.
    Migrate(StepContext),
    /// `validate`.
    Validate(StepContext),
    /// `rollback`, with how far the step got.
    Rollback(StepContext, BackupManifest, PhaseReached),
}

impl PhaseInput {
    /// The phase's name.
    pub fn name(&self) -> &'static str {
        match self {
            PhaseInput::Backup(_) => "backup",
            PhaseInput::Migrate(_) => "migrate",
            PhaseInput::Validate(_) => "validate",
            PhaseInput::Rollback(..) => "rollback",
        }
    }
}

/// What a phase returned.
#[derive(Debug, Clone)]
pub enum PhaseOutput {
    /// From `backup`.
    Backup(BackupManifest),
    /// From `migrate`.
    Migrate,
    /// From `validate`.
    Validate(Vec<Metric>),
    /// From `rollback`.
    Rollback(Vec<TableState>),
}

/// What happened during a call besides its result.
#[derive(Debug, Clone, Default)]
pub struct CallReport {
    /// Artifacts the plugin finished writing.
    pub written: Vec<ArtifactRef>,
    /// Artifacts the plugin asked to open (rollback).
    pub opened: Vec<ArtifactOpened>,
    /// Wall-clock time of the call.
    pub elapsed: Duration,
}

/// State of one store: WASI (granting nothing) and sluice's capabilities.
pub struct StoreState {
    wasi: WasiCtx,
    wasi_table: ResourceTable,
    limits: StoreLimits,
    sql: SqlCapability,
    kv: KvCapability,
    backup: BackupCapability,
    progress: ProgressCapability,
    log: LogCapability,
    values: ValuesCapability,
    probe: ProbeCapability,
    deadlines: bool,
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.wasi_table,
        }
    }
}

/// The engine, its linker and the component cache.
pub struct Runtime {
    engine: Engine,
    linker: Linker<StoreState>,
    cache: ComponentCache,
    enforcement: Enforcement,
}

/// Which limits and checks a runtime enforces. The default — all of them —
/// is the only setting sluice uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enforcement {
    /// Epoch deadlines on guest code.
    pub deadlines: bool,
    /// Memory and table limits on each store.
    pub memory_limits: bool,
    /// SQLite's authorizer enforcing the table scope and schema rules.
    pub sql_authorizer: bool,
}

impl Default for Enforcement {
    fn default() -> Self {
        Enforcement {
            deadlines: true,
            memory_limits: true,
            sql_authorizer: true,
        }
    }
}

impl Enforcement {
    /// Nothing enforced: only for measuring the cost of enforcement.
    pub fn relaxed() -> Self {
        Enforcement {
            deadlines: false,
            memory_limits: false,
            sql_authorizer: false,
        }
    }
}

impl Runtime {
    /// A runtime caching compiled components in `cache`.
    pub fn new(cache: ComponentCache) -> Result<Self, LoadError> {
        Self::with_enforcement(cache, Enforcement::default())
    }

    /// A runtime with chosen enforcement. sluice always uses the default
    /// (everything on); turning parts off exists to measure what they cost.
    pub fn with_enforcement(
        cache: ComponentCache,
        enforcement: Enforcement,
    ) -> Result<Self, LoadError> {
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(enforcement.deadlines)
            .max_wasm_stack(MAX_WASM_STACK);
        let engine = Engine::new(&config).map_err(|e| LoadError::Engine(e.to_string()))?;
        spawn_epoch_ticker(&engine);

        let mut linker = Linker::<StoreState>::new(&engine);
        let link = |r: wasmtime::Result<()>| r.map_err(|e| LoadError::Engine(e.to_string()));
        link(wasmtime_wasi::p2::add_to_linker_async(&mut linker))?;
        link(capabilities::sql::add_to_linker(&mut linker, |s| {
            &mut s.sql
        }))?;
        link(capabilities::kv::add_to_linker(&mut linker, |s| &mut s.kv))?;
        link(capabilities::backup_store::add_to_linker(
            &mut linker,
            |s| &mut s.backup,
        ))?;
        link(capabilities::progress::add_to_linker(&mut linker, |s| {
            &mut s.progress
        }))?;
        link(capabilities::log::add_to_linker(&mut linker, |s| {
            &mut s.log
        }))?;
        link(capabilities::values::add_to_linker(&mut linker, |s| {
            &mut s.values
        }))?;
        link(capabilities::probe::add_to_linker(&mut linker, |s| {
            &mut s.probe
        }))?;
        Ok(Runtime {
            engine,
            linker,
            cache,
            enforcement,
        })
    }

    /// Compiles (or maps from the cache) a plugin, links it and asks it to
    /// describe itself.
    pub async fn load(&self, plugin: &PluginRef) -> Result<LoadedPlugin, LoadError> {
        let invalid = |reason: String| LoadError::Invalid {
            plugin: plugin.name.clone(),
            path: plugin.path.display().to_string(),
            reason,
        };
        // Read before compiling: an incompatible plugin costs no compile.
        let facts = ComponentFacts::read(&plugin.bytes)
            .and_then(|facts| facts.check_wit().map(|()| facts))
            .map_err(|e| invalid(e.to_string()))?;
        let (component, cache) = self
            .compile(&plugin.digest, &plugin.bytes)
            .map_err(|e| invalid(format!("{e:#}")))?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(bindings::PluginPre::new)
            .map_err(|e| invalid(format!("{e:#}")))?;
        let mut loaded = LoadedPlugin {
            name: plugin.name.clone(),
            digest: plugin.digest.clone(),
            info: PluginInfo {
                name: plugin.name.clone(),
                version: String::new(),
                kinds: Vec::new(),
                needs: Vec::new(),
                idempotent_migrate: false,
            },
            cache,
            facts,
            pre: Some(pre),
        };
        loaded.info = self
            .describe(&loaded)
            .await
            .map_err(|e| invalid(format!("describe failed: {e}")))?;
        Ok(loaded)
    }

    /// Compiles a component, or maps it from the cache.
    pub fn compile(
        &self,
        digest: &str,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        self.cache.load(&self.engine, digest, bytes)
    }

    fn new_store(
        &self,
        plugin: &LoadedPlugin,
        grants: CallGrants,
        interrupters: SessionInterrupters,
    ) -> (Store<StoreState>, Captured) {
        let stdout = MemoryOutputPipe::new(MAX_CAPTURED_OUTPUT);
        let stderr = MemoryOutputPipe::new(MAX_CAPTURED_OUTPUT);
        // Deny by default: no environment, no arguments, no network; only the
        // granted directories (through cap-std, so `..`, absolute paths and
        // symlinks cannot leave them) and stdout/stderr, captured.
        let mut wasi = WasiCtx::builder();
        wasi.stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        for grant in &grants.files {
            let perms = match grant.access {
                Access::ReadOnly => FsPerms::ReadOnly,
                Access::ReadWrite => FsPerms::ReadWrite,
            };
            if let Err(e) = wasi.preopened_dir(&grant.path, &grant.name, perms) {
                tracing::warn!(dir = %grant.path.display(), "cannot preopen a granted directory: {e}");
            }
        }
        let wasi = wasi.build();
        let memory = usize::try_from(grants.limits.memory_mib << 20).unwrap_or(usize::MAX);
        let state = StoreState {
            wasi,
            wasi_table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(memory)
                .instances(MAX_INSTANCES)
                .tables(MAX_TABLES)
                .table_elements(MAX_TABLE_ELEMENTS)
                .trap_on_grow_failure(true)
                .build(),
            sql: SqlCapability::new(grants.sql, interrupters, self.enforcement.sql_authorizer),
            kv: KvCapability::new(grants.kv),
            backup: BackupCapability::new(grants.backup),
            progress: ProgressCapability::new(grants.progress),
            log: LogCapability::new(&plugin.name, &grants.step_id),
            values: ValuesCapability::new(grants.values),
            probe: ProbeCapability::new(
                grants.probes,
                Duration::from_secs(grants.limits.phase_seconds),
            ),
            deadlines: self.enforcement.deadlines,
        };
        let mut store = Store::new(&self.engine, state);
        if self.enforcement.memory_limits {
            store.limiter(|s| &mut s.limits);
        }
        (store, Captured { stdout, stderr })
    }

    /// Instantiates a plugin in a fresh store without calling it and returns
    /// how long that took: the fixed cost every phase call pays.
    pub async fn probe(&self, plugin: &LoadedPlugin) -> Result<Duration, PhaseError> {
        let grants = CallGrants::none("-", Limits::default());
        let (mut store, _captured) = self.new_store(plugin, grants, SessionInterrupters::default());
        set_deadline(&mut store, DESCRIBE_DEADLINE);
        let started = Instant::now();
        plugin
            .pre()
            .map_err(|e| PhaseError::Host(format!("{e:#}")))?
            .instantiate_async(&mut store)
            .await
            .map_err(|e| PhaseError::Host(format!("{e:#}")))?;
        Ok(started.elapsed())
    }

    async fn describe(&self, plugin: &LoadedPlugin) -> Result<PluginInfo, PhaseError> {
        let grants = CallGrants::none("-", Limits::default());
        let (mut store, captured) = self.new_store(plugin, grants, SessionInterrupters::default());
        set_deadline(&mut store, DESCRIBE_DEADLINE);
        let call = async {
            let instance = plugin.pre()?.instantiate_async(&mut store).await?;
            instance
                .sluice_plugin_describe()
                .call_describe(&mut store)
                .await
        };
        match tokio::time::timeout(DESCRIBE_DEADLINE + HOST_GRACE, call).await {
            Ok(Ok(info)) => Ok(info),
            Ok(Err(e)) => Err(trap_error(e, DESCRIBE_DEADLINE, &captured)),
            Err(_) => Err(PhaseError::Timeout {
                limit: DESCRIBE_DEADLINE,
            }),
        }
    }

    /// Calls the plugin's `preview` for one step in a fresh store that
    /// grants nothing (no datastore, files or values; only `log`, and the
    /// names of the step's `probes` without sending any), under the step's
    /// memory limit and [`PREVIEW_DEADLINE`].
    pub async fn preview(
        &self,
        plugin: &LoadedPlugin,
        ctx: &StepContext,
        limits: Limits,
        probes: &[Probe],
    ) -> Result<StepPreview, PhaseError> {
        let span = tracing::info_span!("phase", plugin = %plugin.name, step = %ctx.step_id, phase = "preview");
        let grants = CallGrants::none(&ctx.step_id, limits);
        let (mut store, captured) = self.new_store(plugin, grants, SessionInterrupters::default());
        store.data_mut().probe = ProbeCapability::names_only(probes.to_vec());
        set_deadline(&mut store, PREVIEW_DEADLINE);
        let call = async {
            let instance = plugin.pre()?.instantiate_async(&mut store).await?;
            instance
                .sluice_plugin_preview()
                .call_preview(&mut store, ctx)
                .await
        };
        let result = match tokio::time::timeout(PREVIEW_DEADLINE + HOST_GRACE, call)
            .instrument(span)
            .await
        {
            Ok(Ok(Ok(preview))) => Ok(preview),
            Ok(Ok(Err(e))) => Err(PhaseError::Plugin(e)),
            Ok(Err(e)) => Err(trap_error(e, PREVIEW_DEADLINE, &captured)),
            Err(_) => Err(PhaseError::Timeout {
                limit: PREVIEW_DEADLINE,
            }),
        };
        captured.log(&plugin.name);
        result
    }

    /// Calls one phase of a plugin in a fresh store with `grants`.
    pub async fn call(
        &self,
        plugin: &LoadedPlugin,
        grants: CallGrants,
        input: PhaseInput,
    ) -> (Result<PhaseOutput, PhaseError>, CallReport) {
        let span = tracing::info_span!("phase", plugin = %plugin.name, step = %grants.step_id, phase = input.name());
        self.call_in_store(plugin, grants, input)
            .instrument(span)
            .await
    }

    async fn call_in_store(
        &self,
        plugin: &LoadedPlugin,
        grants: CallGrants,
        input: PhaseInput,
    ) -> (Result<PhaseOutput, PhaseError>, CallReport) {
        let limit = Duration::from_secs(grants.limits.phase_seconds);
        let interrupters = SessionInterrupters::default();
        let (mut store, captured) = self.new_store(plugin, grants, interrupters.clone());
        set_deadline(&mut store, limit);
        let started = Instant::now();
        let call = async {
            let instance = plugin.pre()?.instantiate_async(&mut store).await?;
            let result = match input {
                PhaseInput::Backup(ctx) => instance
                    .sluice_plugin_backup()
                    .call_backup(&mut store, &ctx)
                    .await?
                    .map(|manifest| PhaseOutput::Backup(manifest.into())),
                PhaseInput::Migrate(ctx) => instance
                    .sluice_plugin_migrate()
                    .call_migrate(&mut store, &ctx)
                    .await?
                    .map(|()| PhaseOutput::Migrate),
                PhaseInput::Validate(ctx) => instance
                    .sluice_plugin_validate()
                    .call_validate(&mut store, &ctx)
                    .await?
                    .map(|metrics| {
                        PhaseOutput::Validate(metrics.into_iter().map(Into::into).collect())
                    }),
                PhaseInput::Rollback(ctx, manifest, reached) => instance
                    .sluice_plugin_rollback()
                    .call_rollback(&mut store, &ctx, &(&manifest).into(), reached)
                    .await?
                    .map(|tables| {
                        PhaseOutput::Rollback(tables.into_iter().map(Into::into).collect())
                    }),
            };
            wasmtime::Result::Ok(result)
        };
        let result = match tokio::time::timeout(limit + HOST_GRACE, call).await {
            Ok(Ok(Ok(output))) => Ok(output),
            Ok(Ok(Err(e))) => Err(PhaseError::Plugin(e)),
            Ok(Err(e)) => Err(trap_error(e, limit, &captured)),
            Err(_) => {
                // A host call (SQL) outlived the deadline: stop it.
                interrupters.interrupt_all();
                Err(PhaseError::Timeout { limit })
            }
        };
        captured.log(&plugin.name);
        // The store is dropped here, whatever happened; only host-side
        // records of what was written survive.
        let state = store.into_data();
        let report = CallReport {
            written: state.backup.written().to_vec(),
            opened: state.backup.opened().to_vec(),
            elapsed: started.elapsed(),
        };
        if state.log.dropped() > 0 {
            tracing::warn!(plugin = %plugin.name, dropped = state.log.dropped(), "plugin log records dropped (flood limit)");
        }
        (result, report)
    }
}

struct Captured {
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
}

impl Captured {
    fn log(&self, plugin: &str) {
        for (stream, pipe) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let bytes = pipe.contents();
            for line in String::from_utf8_lossy(&bytes)
                .lines()
                .filter(|l| !l.trim().is_empty())
            {
                tracing::info!(target: "plugin", plugin, stream, "{line}");
            }
        }
    }

    fn stderr_tail(&self) -> String {
        let bytes = self.stderr.contents();
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }
}

fn set_deadline(store: &mut Store<StoreState>, limit: Duration) {
    if !store.data().deadlines {
        return;
    }
    let ticks = (limit.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
    store.set_epoch_deadline(ticks);
    store.epoch_deadline_trap();
}

fn trap_error(e: wasmtime::Error, limit: Duration, captured: &Captured) -> PhaseError {
    if let Some(Trap::Interrupt) = e.downcast_ref::<Trap>() {
        return PhaseError::Timeout { limit };
    }
    let mut message = match e.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => format!("{e:#}"),
    };
    let stderr = captured.stderr_tail();
    if !stderr.is_empty() {
        message.push_str(&format!("; plugin stderr: {stderr}"));
    }
    PhaseError::Trap { message }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] while the engine lives.
fn spawn_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("sluice-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch thread");
}
