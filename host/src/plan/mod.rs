//! The plan file (`sluice.toml`): parsed with locations, validated as a whole
//! before anything runs, and resolved into a [`Plan`].
//!
//! ```toml
//! [plan]
//! name = "quickstart"
//!
//! [targets.shop]
//! kind = "sqlite"
//! path = "shop.db"                     # relative to this file
//!
//! [plugins.sqlite]
//! path = "../../target/plugins/sqlite.wasm"
//! sha256 = "…"                         # optional pin
//!
//! [[steps]]
//! id = "copy-customers"
//! plugin = "sqlite"
//! target = "shop"
//! access = "read-write"                # or "read-only"
//! thresholds = ["match_rate >= 0.95", "duplicates == 0"]
//! limits = { memory_mib = 256, phase_seconds = 300 }
//! [steps.params]                       # handed to the plugin as JSON
//! migrate = { file = "copy.sql" }      # `{ file = … }` inlines a file next to the plan
//! ```

pub mod gate;
pub mod probe;
pub mod threshold;

#[cfg(test)]
mod load_tests;
#[cfg(test)]
mod test_plan;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use crate::secret::Secret;

pub use gate::{Action, ApprovalPoint, Band, BreachScope, Watch};
pub use probe::Probe;
pub use threshold::Expr;

/// A place in a plan file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The plan file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// Why a plan cannot run. Nothing has been executed when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The plan file could not be read.
    #[error("cannot read plan {path}: {source}")]
    Read {
        /// The plan file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Something in the plan is wrong, at a location.
    #[error("{location}: {message}")]
    Invalid {
        /// Where.
        location: Location,
        /// What is wrong and how to fix it.
        message: String,
        /// The offending line of the plan, for display.
        source_line: String,
    },
}

impl PlanError {
    /// The offending plan line with a caret under the column, when known.
    pub fn snippet(&self) -> Option<String> {
        match self {
            PlanError::Invalid {
                location,
                source_line,
                ..
            } => Some(format!(
                "{:>5} | {}\n      | {}^",
                location.line,
                source_line,
                " ".repeat(location.column.saturating_sub(1))
            )),
            PlanError::Read { .. } => None,
        }
    }
}

/// Kinds of datastore a target can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// A SQLite database file.
    Sqlite,
    /// A PostgreSQL database.
    Postgres,
    /// A Redis database.
    Redis,
}

impl TargetKind {
    /// The name used in plan files and passed to plugins.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Sqlite => "sqlite",
            TargetKind::Postgres => "postgres",
            TargetKind::Redis => "redis",
        }
    }

    /// Whether plugins reach it through `sql` (else through `kv`).
    pub fn is_sql(self) -> bool {
        matches!(self, TargetKind::Sqlite | TargetKind::Postgres)
    }
}

/// Where a target's data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A database file, with the files attached to it.
    File(SqliteFiles),
    /// A server, reached by the connection URL held in the named plan value
    /// (never written in the plan itself, never printed).
    Connection(String),
}

/// A SQLite target's files: the database, and the files the host ATTACHes
/// to every session on it under the schema names the plan declares
/// (`attach = { sqitch = "sqitch.db" }`). Plugins can attach nothing
/// themselves; these are part of the target, for grants, scopes
/// (`sqitch.changes`), fingerprints, rehearsal copies and leases alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteFiles {
    /// The database file (absolute).
    pub path: PathBuf,
    /// Schema name → attached database file (absolute).
    pub attach: BTreeMap<String, PathBuf>,
}

impl SqliteFiles {
    /// A database file with nothing attached.
    pub fn single(path: PathBuf) -> Self {
        SqliteFiles {
            path,
            attach: BTreeMap::new(),
        }
    }

    /// For people: the database file, and `(attach: schema = file, …)`.
    pub fn describe(&self) -> String {
        if self.attach.is_empty() {
            return self.path.display().to_string();
        }
        let attached: Vec<String> = self
            .attach
            .iter()
            .map(|(schema, path)| format!("{schema} = {}", path.display()))
            .collect();
        format!("{} (attach: {})", self.path.display(), attached.join(", "))
    }

    /// Every file: the database first, then the attached ones.
    pub fn all(&self) -> impl Iterator<Item = &Path> {
        std::iter::once(self.path.as_path()).chain(self.attach.values().map(PathBuf::as_path))
    }
}

/// Schema names SQLite gives the database itself and its temporary tables.
const RESERVED_SCHEMAS: &[&str] = &["main", "temp"];

/// A datastore a plan changes.
#[derive(Debug, Clone)]
pub struct Target {
    /// Name in the plan.
    pub name: String,
    /// Its kind.
    pub kind: TargetKind,
    /// Where it lives.
    pub address: Address,
}

/// A plugin the plan uses, read and digested.
#[derive(Debug, Clone)]
pub struct PluginRef {
    /// Name in the plan.
    pub name: String,
    /// Component file (absolute).
    pub path: PathBuf,
    /// sha256 of the file (hex).
    pub digest: String,
    /// The component bytes.
    pub bytes: Arc<[u8]>,
}

impl PluginRef {
    /// Reads a component file outside a plan (for `sluice inspect`).
    pub fn read(name: &str, path: &Path) -> std::io::Result<PluginRef> {
        let bytes: Arc<[u8]> = std::fs::read(path)?.into();
        Ok(PluginRef {
            name: name.to_string(),
            path: std::path::absolute(path)?,
            digest: hex::encode(Sha256::digest(&bytes)),
            bytes,
        })
    }
}

/// What a step may do to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// Reads only; enforced by the datastore.
    ReadOnly,
    /// Reads and writes.
    ReadWrite,
}

impl Access {
    /// The plan spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::ReadOnly => "read-only",
            Access::ReadWrite => "read-write",
        }
    }
}

/// Limits on one plugin call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Linear memory a plugin instance may grow to, in MiB.
    #[serde(default = "Limits::default_memory_mib")]
    pub memory_mib: u64,
    /// Wall-clock time one phase may take, in seconds.
    #[serde(default = "Limits::default_phase_seconds")]
    pub phase_seconds: u64,
    /// Total bytes one backup may write, in MiB.
    #[serde(default = "Limits::default_backup_mib")]
    pub backup_mib: u64,
}

impl Limits {
    fn default_memory_mib() -> u64 {
        256
    }
    fn default_phase_seconds() -> u64 {
        600
    }
    fn default_backup_mib() -> u64 {
        64 * 1024
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mib: Self::default_memory_mib(),
            phase_seconds: Self::default_phase_seconds(),
            backup_mib: Self::default_backup_mib(),
        }
    }
}

/// A host directory handed to a step's plugin as a WASI preopen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileGrant {
    /// Name the plugin sees (the guest path).
    pub name: String,
    /// Host directory (absolute); the plugin never learns it.
    pub path: PathBuf,
    /// Read-only or read-write.
    pub access: Access,
}

/// A named value a plan defines; steps are granted values by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueSource {
    /// Written in the plan.
    Literal(String),
    /// Read from the operator's environment variable.
    Env(String),
    /// Read from a file (relative to the plan).
    File(PathBuf),
    /// Held in memory only, never written or printed (`Debug` redacts it):
    /// the URL of a rehearsal's scratch copy.
    Secret(Secret),
}

/// A GO/NO-GO condition on the metrics of a step.
#[derive(Debug, Clone)]
pub struct Threshold {
    /// As written in the plan.
    pub source: String,
    /// Parsed.
    pub expr: Expr,
    /// Where it is written.
    pub location: Location,
}

/// One step of a plan.
#[derive(Debug, Clone)]
pub struct Step {
    /// Unique id.
    pub id: String,
    /// Name of the plugin that runs it.
    pub plugin: String,
    /// Name of the target it changes.
    pub target: String,
    /// Access granted to migrate and rollback.
    pub access: Access,
    /// Tables the step may touch; `None` means every table.
    pub tables: Option<Vec<String>>,
    /// Key prefixes a key-value step may touch; `None` means every key.
    pub key_prefixes: Option<Vec<String>>,
    /// Directories granted to the plugin.
    pub files: Vec<FileGrant>,
    /// Names of the plan values granted to the plugin.
    pub values: Vec<String>,
    /// HTTP probes granted to the plugin (`probes = ["api"]`), resolved
    /// from the plan's `[probes]`.
    pub probes: Vec<Probe>,
    /// Params handed to the plugin, as a JSON object text.
    pub params_json: String,
    /// sha256 of the params (files inlined), for drift detection.
    pub params_hash: String,
    /// GO/NO-GO conditions, all of which must hold.
    pub thresholds: Vec<Threshold>,
    /// Conditions mapped to actions; the first that holds decides.
    pub bands: Vec<Band>,
    /// Where the step waits for an operator's approval, if anywhere.
    pub approval: Option<ApprovalPoint>,
    /// Re-validation after the step, if any.
    pub watch: Option<Watch>,
    /// Limits for each plugin call.
    pub limits: Limits,
    /// Where the step starts in the plan.
    pub location: Location,
}

#[cfg(test)]
impl Step {
    /// A read-write step with no params, grants or gates.
    pub(crate) fn for_tests(id: &str) -> Step {
        Step {
            id: id.into(),
            plugin: "p".into(),
            target: "t".into(),
            access: Access::ReadWrite,
            tables: None,
            key_prefixes: None,
            files: Vec::new(),
            values: Vec::new(),
            probes: Vec::new(),
            params_json: "{}".into(),
            params_hash: String::new(),
            thresholds: Vec::new(),
            bands: Vec::new(),
            approval: None,
            watch: None,
            limits: Limits::default(),
            location: Location {
                file: "sluice.toml".into(),
                line: 1,
                column: 1,
            },
        }
    }
}

/// A validated plan, ready to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The plan file (absolute).
    pub path: PathBuf,
    /// Its directory: relative paths start here, state lives in `.sluice/`.
    pub dir: PathBuf,
    /// Plan name.
    pub name: String,
    /// sha256 of the plan file.
    pub hash: String,
    /// Targets by name.
    pub targets: BTreeMap<String, Target>,
    /// Plugins by name.
    pub plugins: BTreeMap<String, PluginRef>,
    /// Steps in order.
    pub steps: Vec<Step>,
    /// Named values, by name (resolved only when a step runs).
    pub values: BTreeMap<String, ValueSource>,
    /// Named HTTP probes, by name (`[probes]`).
    pub probes: BTreeMap<String, Probe>,
    /// How long a run's lease on its targets lasts unless renewed.
    pub lease: std::time::Duration,
    /// The plan value holding the URL of a shared PostgreSQL journal; `None`
    /// for the embedded SQLite journal in [`Plan::state_dir`].
    pub journal: Option<String>,
}

/// A plan value could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    /// The plan does not define it.
    #[error("the plan defines no value `{0}` in [values]")]
    Undefined(String),
    /// Its environment variable is unset.
    #[error("value `{name}`: environment variable {var} is not set")]
    Unset {
        /// Value name.
        name: String,
        /// The variable.
        var: String,
    },
    /// Its file cannot be read.
    #[error("value `{name}`: cannot read {}: {source}", path.display())]
    File {
        /// Value name.
        name: String,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Default lease: a run that dies on another host blocks its targets at most
/// this long; its heartbeat renews it every third of it.
pub const DEFAULT_LEASE_SECONDS: u64 = 15;

impl Plan {
    /// Directory of the plan's journal and backups.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join(".sluice")
    }

    /// The step with this id.
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// Reads a named value now (environment and files are read at use, not
    /// at load, so a plan can be checked without its secrets).
    pub fn resolve_value(&self, name: &str) -> Result<Secret, ValueError> {
        match self.values.get(name) {
            None => Err(ValueError::Undefined(name.into())),
            Some(ValueSource::Literal(v)) => Ok(Secret::new(v.clone())),
            Some(ValueSource::Secret(v)) => Ok(v.clone()),
            Some(ValueSource::Env(var)) => {
                std::env::var(var)
                    .map(Secret::new)
                    .map_err(|_| ValueError::Unset {
                        name: name.into(),
                        var: var.clone(),
                    })
            }
            Some(ValueSource::File(path)) => std::fs::read_to_string(path)
                .map(|v| Secret::new(v.trim_end()))
                .map_err(|source| ValueError::File {
                    name: name.into(),
                    path: path.clone(),
                    source,
                }),
        }
    }

    /// What a lease on `target` is keyed by: the datastore itself, not the
    /// plan's alias for it, so two plans naming it differently still exclude
    /// each other. For servers: scheme, host, port and database of the URL,
    /// never its credentials.
    pub fn lease_key(&self, target: &Target) -> Result<String, ValueError> {
        Ok(match &target.address {
            Address::File(files) => file_lease_key(target.kind, &files.path),
            Address::Connection(value) => format!(
                "{}:{}",
                target.kind.as_str(),
                self.resolve_value(value)?.redacted_url()
            ),
        })
    }

    /// Every lease a run on `target` takes: [`Plan::lease_key`], plus one per
    /// attached SQLite file, so two plans attaching one registry file to
    /// different databases still exclude each other.
    pub fn lease_keys(&self, target: &Target) -> Result<Vec<String>, ValueError> {
        let mut keys = vec![self.lease_key(target)?];
        if let Address::File(files) = &target.address {
            keys.extend(
                files
                    .attach
                    .values()
                    .map(|p| file_lease_key(target.kind, p)),
            );
        }
        Ok(keys)
    }
}

/// A file's lease key: canonical where the file exists, so `a/../a/shop.db`
/// and `a/shop.db` are one datastore.
fn file_lease_key(kind: TargetKind, path: &Path) -> String {
    format!(
        "{}:{}",
        kind.as_str(),
        std::fs::canonicalize(path)
            .unwrap_or_else(|_| path.to_path_buf())
            .display()
    )
}

// ---- the file as written ----------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    plan: Option<PlanHeader>,
    #[serde(default)]
    targets: BTreeMap<String, Spanned<TargetFile>>,
    #[serde(default)]
    plugins: BTreeMap<String, Spanned<PluginFile>>,
    #[serde(default)]
    steps: Vec<Spanned<StepFile>>,
    #[serde(default)]
    values: BTreeMap<String, Spanned<ValueFile>>,
    #[serde(default)]
    probes: BTreeMap<String, Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ValueFile {
    Literal(String),
    Source(ValueSourceFile),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ValueSourceFile {
    env: Option<String>,
    file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGrantFile {
    name: Spanned<String>,
    path: Spanned<String>,
    access: Access,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanHeader {
    name: Option<String>,
    lease_seconds: Option<u64>,
    journal: Option<Spanned<String>>,
    #[serde(default)]
    probe_hosts: Vec<Spanned<String>>,
    #[allow(dead_code)] // shown by `sluice plan` in a later change; accepted now
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetFile {
    kind: Spanned<String>,
    path: Option<Spanned<String>>,
    connection: Option<Spanned<String>>,
    attach: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginFile {
    path: Spanned<String>,
    sha256: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepFile {
    id: Spanned<String>,
    plugin: Spanned<String>,
    target: Spanned<String>,
    access: Spanned<Access>,
    tables: Option<Vec<Spanned<String>>>,
    key_prefixes: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    files: Vec<Spanned<FileGrantFile>>,
    #[serde(default)]
    values: Vec<Spanned<String>>,
    #[serde(default)]
    probes: Vec<Spanned<String>>,
    #[allow(dead_code)] // free text for readers of the plan
    description: Option<String>,
    params: Option<Spanned<toml::Table>>,
    #[serde(default)]
    thresholds: Vec<Spanned<String>>,
    #[serde(default)]
    bands: Vec<Spanned<BandFile>>,
    approval: Option<ApprovalPoint>,
    watch: Option<Spanned<WatchFile>>,
    limits: Option<Spanned<Limits>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BandFile {
    when: Spanned<String>,
    action: Action,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WatchFile {
    every: Spanned<String>,
    #[serde(rename = "for")]
    duration: Spanned<String>,
    #[serde(default)]
    on_breach: BreachScope,
}

// ---- loading ------------------------------------------------------------------

/// Reads, parses and validates a plan: every reference resolved, every plugin
/// file read and its digest checked, every threshold parsed.
pub fn load(path: &Path) -> Result<Plan, PlanError> {
    let path = std::path::absolute(path).map_err(|source| PlanError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let text = std::fs::read_to_string(&path).map_err(|source| PlanError::Read {
        path: path.clone(),
        source,
    })?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let src = Source {
        path: &path,
        text: &text,
    };

    let file: PlanFile = toml::from_str(&text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        src.error(offset, e.message().trim_end().to_string())
    })?;

    let mut values = BTreeMap::new();
    for (name, value) in &file.values {
        src.check_name(name, value.span().start, "value")?;
        let source = match value.get_ref() {
            ValueFile::Literal(text) => ValueSource::Literal(text.clone()),
            ValueFile::Source(ValueSourceFile { env: Some(var), file: None }) => ValueSource::Env(var.clone()),
            ValueFile::Source(ValueSourceFile { env: None, file: Some(path) }) => ValueSource::File(dir.join(path)),
            ValueFile::Source(_) => {
                return Err(src.error(
                    value.span().start,
                    format!("value `{name}` needs exactly one of `env = \"VAR\"` or `file = \"path\"`, or a literal string"),
                ))
            }
        };
        values.insert(name.clone(), source);
    }

    let probes = load_probes(&src, &file)?;

    let mut targets = BTreeMap::new();
    for (name, target) in &file.targets {
        src.check_name(name, target.span().start, "target")?;
        let t = target.get_ref();
        let kind = match t.kind.get_ref().as_str() {
            "sqlite" => TargetKind::Sqlite,
            "postgres" => TargetKind::Postgres,
            "redis" => TargetKind::Redis,
            other => {
                return Err(src.error(
                    t.kind.span().start,
                    format!("target `{name}` has unknown kind `{other}`; supported kinds: sqlite, postgres, redis"),
                ))
            }
        };
        if let (Some(attach), false) = (&t.attach, kind == TargetKind::Sqlite) {
            return Err(src.error(
                attach.span().start,
                format!("target `{name}`: `attach` adds database files to a sqlite target; this one is {}", kind.as_str()),
            ));
        }
        let address = match (kind, &t.path, &t.connection) {
            (TargetKind::Sqlite, Some(path), None) => {
                Address::File(load_attach(&src, &dir, name, dir.join(path.get_ref()), t.attach.as_ref())?)
            }
            (TargetKind::Sqlite, _, _) => {
                return Err(src.error(
                    target.span().start,
                    format!("target `{name}`: a sqlite target needs `path = \"file.db\"` (and no `connection`)"),
                ))
            }
            (_, None, Some(value)) => {
                if !values.contains_key(value.get_ref()) {
                    return Err(src.error(
                        value.span().start,
                        format!(
                            "target `{name}`: `connection` names value `{}`, which the plan does not define in [values]; defined: {}",
                            value.get_ref(),
                            list(values.keys())
                        ),
                    ));
                }
                Address::Connection(value.get_ref().clone())
            }
            (kind, _, _) => {
                return Err(src.error(
                    target.span().start,
                    format!(
                        "target `{name}`: a {} target needs `connection = \"<value name>\"`, naming a [values] entry that holds its URL (so the URL and its password stay out of the plan); `path` is for sqlite",
                        kind.as_str()
                    ),
                ))
            }
        };
        targets.insert(
            name.clone(),
            Target {
                name: name.clone(),
                kind,
                address,
            },
        );
    }

    let mut plugins = BTreeMap::new();
    for (name, plugin) in &file.plugins {
        src.check_name(name, plugin.span().start, "plugin")?;
        let p = plugin.get_ref();
        let plugin_path = dir.join(p.path.get_ref());
        let bytes: Arc<[u8]> = std::fs::read(&plugin_path)
            .map_err(|e| {
                src.error(
                    p.path.span().start,
                    format!(
                        "plugin `{name}`: cannot read {}: {e}",
                        plugin_path.display()
                    ),
                )
            })?
            .into();
        let digest = hex::encode(Sha256::digest(&bytes));
        if let Some(pinned) = &p.sha256 {
            let want = pinned.get_ref().trim().to_ascii_lowercase();
            if want != digest {
                return Err(src.error(
                    pinned.span().start,
                    format!(
                        "plugin `{name}`: {} has sha256 {digest}, but the plan pins {want}",
                        plugin_path.display()
                    ),
                ));
            }
        }
        plugins.insert(
            name.clone(),
            PluginRef {
                name: name.clone(),
                path: plugin_path,
                digest,
                bytes,
            },
        );
    }

    if file.steps.is_empty() {
        return Err(src.error(0, "the plan has no steps; add a [[steps]] table".into()));
    }
    let mut steps = Vec::new();
    let mut ids = HashSet::new();
    for step in &file.steps {
        let s = step.get_ref();
        let id = s.id.get_ref().clone();
        src.check_name(&id, s.id.span().start, "step id")?;
        if !ids.insert(id.clone()) {
            return Err(src.error(s.id.span().start, format!("step id `{id}` is used twice")));
        }
        if !plugins.contains_key(s.plugin.get_ref()) {
            return Err(src.error(
                s.plugin.span().start,
                format!(
                    "step `{id}` uses plugin `{}`, which is not declared; declared plugins: {}",
                    s.plugin.get_ref(),
                    list(plugins.keys())
                ),
            ));
        }
        if !targets.contains_key(s.target.get_ref()) {
            return Err(src.error(
                s.target.span().start,
                format!(
                    "step `{id}` uses target `{}`, which is not declared; declared targets: {}",
                    s.target.get_ref(),
                    list(targets.keys())
                ),
            ));
        }
        let params = match &s.params {
            Some(params) => inline_files(&src, &dir, params.span().start, params.get_ref())?,
            None => serde_json::Value::Object(Default::default()),
        };
        let params_json = params.to_string();
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
                        format!("step `{id}`: watch checks every {} but lasts only {}: no check would run", w.every.get_ref(), w.duration.get_ref()),
                    ));
                }
                Some(Watch {
                    every,
                    duration: length,
                    on_breach: w.on_breach,
                })
            }
        };
        let tables = s
            .tables
            .as_ref()
            .map(|tables| tables.iter().map(|t| t.get_ref().clone()).collect());
        if let Some(list) = &s.tables {
            if list.is_empty() {
                return Err(src.error(
                    step.span().start,
                    format!("step `{id}`: `tables = []` grants no table; remove it to grant every table"),
                ));
            }
        }
        let target_kind = targets[s.target.get_ref()].kind;
        if let (Some(scoped), Address::File(files)) =
            (&s.tables, &targets[s.target.get_ref()].address)
        {
            // `schema.table` reaches an attached file; a schema the target
            // does not attach would be a scope that can never match.
            for table in scoped {
                if let Some((schema, _)) = table.get_ref().split_once('.') {
                    if !files.attach.contains_key(schema) {
                        return Err(src.error(
                            table.span().start,
                            format!(
                                "step `{id}`: table `{}` names schema `{schema}`, which target `{}` does not attach; attached: {}",
                                table.get_ref(),
                                s.target.get_ref(),
                                list(files.attach.keys())
                            ),
                        ));
                    }
                }
            }
        }
        if let (Some(list), false) = (&s.tables, target_kind.is_sql()) {
            return Err(src.error(
                list.first().map_or(step.span().start, |t| t.span().start),
                format!("step `{id}`: `tables` scopes SQL targets; target `{}` is {}: use `key_prefixes`", s.target.get_ref(), target_kind.as_str()),
            ));
        }
        let key_prefixes = match &s.key_prefixes {
            None => None,
            Some(list) if target_kind.is_sql() => {
                return Err(src.error(
                    list.first().map_or(step.span().start, |t| t.span().start),
                    format!("step `{id}`: `key_prefixes` scopes key-value targets; target `{}` is {}: use `tables`", s.target.get_ref(), target_kind.as_str()),
                ))
            }
            Some(list) => {
                if let Some(empty) = list.iter().find(|p| p.get_ref().is_empty()) {
                    return Err(src.error(
                        empty.span().start,
                        format!("step `{id}`: an empty key prefix would grant every key; remove `key_prefixes` to grant every key"),
                    ));
                }
                if list.is_empty() {
                    return Err(src.error(
                        step.span().start,
                        format!("step `{id}`: `key_prefixes = []` grants no key; remove it to grant every key"),
                    ));
                }
                Some(list.iter().map(|p| p.get_ref().clone()).collect())
            }
        };
        let mut files = Vec::new();
        for f in &s.files {
            let grant = f.get_ref();
            let name = grant.name.get_ref();
            src.check_name(name, grant.name.span().start, "file grant")?;
            let path = dir.join(grant.path.get_ref());
            if !path.is_dir() {
                return Err(src.error(
                    grant.path.span().start,
                    format!(
                        "step `{id}`: file grant `{name}`: {} is not a directory",
                        path.display()
                    ),
                ));
            }
            if files.iter().any(|g: &FileGrant| &g.name == name) {
                return Err(src.error(
                    grant.name.span().start,
                    format!("step `{id}`: file grant `{name}` is given twice"),
                ));
            }
            files.push(FileGrant {
                name: name.clone(),
                path,
                access: grant.access,
            });
        }
        let mut granted_values = Vec::new();
        for v in &s.values {
            if !values.contains_key(v.get_ref()) {
                return Err(src.error(
                    v.span().start,
                    format!(
                        "step `{id}` is granted value `{}`, which the plan does not define in [values]; defined: {}",
                        v.get_ref(),
                        list(values.keys())
                    ),
                ));
            }
            granted_values.push(v.get_ref().clone());
        }
        let mut granted_probes: Vec<Probe> = Vec::new();
        for p in &s.probes {
            let Some(probe) = probes.get(p.get_ref()) else {
                return Err(src.error(
                    p.span().start,
                    format!(
                        "step `{id}` is granted probe `{}`, which the plan does not define in [probes]; defined: {}",
                        p.get_ref(),
                        list(probes.keys())
                    ),
                ));
            };
            if granted_probes.iter().any(|g| g.name == probe.name) {
                return Err(src.error(
                    p.span().start,
                    format!("step `{id}`: probe `{}` is granted twice", probe.name),
                ));
            }
            granted_probes.push(probe.clone());
        }
        let limits = s.limits.as_ref().map(|l| *l.get_ref()).unwrap_or_default();
        if let Some(l) = &s.limits {
            if limits.memory_mib == 0 || limits.phase_seconds == 0 || limits.backup_mib == 0 {
                return Err(src.error(
                    l.span().start,
                    format!("step `{id}`: limits must be greater than 0"),
                ));
            }
        }
        steps.push(Step {
            id,
            plugin: s.plugin.get_ref().clone(),
            target: s.target.get_ref().clone(),
            access: *s.access.get_ref(),
            tables,
            key_prefixes,
            files,
            values: granted_values,
            probes: granted_probes,
            params_hash: hex::encode(Sha256::digest(params_json.as_bytes())),
            params_json,
            thresholds,
            bands,
            approval: s.approval,
            watch,
            limits,
            location: src.location(step.span().start),
        });
    }

    let journal = match file.plan.as_ref().and_then(|p| p.journal.as_ref()) {
        Some(value) if !values.contains_key(value.get_ref()) => {
            return Err(src.error(
                value.span().start,
                format!(
                    "`journal` names value `{}`, which the plan does not define in [values]; it must hold the URL of the shared PostgreSQL journal",
                    value.get_ref()
                ),
            ))
        }
        Some(value) => Some(value.get_ref().clone()),
        None => None,
    };
    let lease_seconds = file
        .plan
        .as_ref()
        .and_then(|p| p.lease_seconds)
        .unwrap_or(DEFAULT_LEASE_SECONDS)
        .max(1);
    let name = file.plan.and_then(|p| p.name).unwrap_or_else(|| {
        dir.file_name()
            .map_or("plan".into(), |n| n.to_string_lossy().into_owned())
    });
    Ok(Plan {
        hash: hex::encode(Sha256::digest(text.as_bytes())),
        path,
        dir,
        name,
        targets,
        plugins,
        steps,
        values,
        probes,
        lease: std::time::Duration::from_secs(lease_seconds),
        journal,
    })
}

/// The plan's `[probes]`, each checked against `[plan] probe_hosts`.
fn load_probes(src: &Source<'_>, file: &PlanFile) -> Result<BTreeMap<String, Probe>, PlanError> {
    let mut allowlist = Vec::new();
    for entry in file.plan.iter().flat_map(|p| &p.probe_hosts) {
        // +1: the entry starts after the opening quote.
        let host = probe::parse_host(entry.get_ref())
            .map_err(|e| src.error(entry.span().start + 1, e.to_string()))?;
        allowlist.push(host);
    }
    let mut probes = BTreeMap::new();
    for (name, entry) in &file.probes {
        src.check_name(name, entry.span().start, "probe")?;
        let shape = || {
            src.error(
                entry.span().start,
                format!("probe `{name}` must be a URL string or a table `{{ url = \"http://…\", timeout_ms = 2000 }}`"),
            )
        };
        let (url, timeout_ms) = match entry.get_ref() {
            toml::Value::String(url) => (url, None),
            toml::Value::Table(t) => {
                if let Some(key) = t.keys().find(|k| *k != "url" && *k != "timeout_ms") {
                    return Err(src.error(
                        entry.span().start,
                        format!("probe `{name}`: unknown key `{key}`; a probe has `url` and an optional `timeout_ms`"),
                    ));
                }
                let Some(toml::Value::String(url)) = t.get("url") else {
                    return Err(shape());
                };
                let timeout_ms = match t.get("timeout_ms") {
                    None => None,
                    Some(toml::Value::Integer(ms)) => {
                        Some(u64::try_from(*ms).map_err(|_| shape())?)
                    }
                    Some(_) => return Err(shape()),
                };
                (url, timeout_ms)
            }
            _ => return Err(shape()),
        };
        let parsed = probe::parse(name, url, timeout_ms, &allowlist)
            .map_err(|e| src.error(entry.span().start, e.to_string()))?;
        probes.insert(name.clone(), parsed);
    }
    Ok(probes)
}

/// A sqlite target's `attach = { schema = "file.db" }`: schema names SQLite
/// accepts unquoted (not `main`/`temp`), files distinct from the database and
/// from each other.
fn load_attach(
    src: &Source<'_>,
    dir: &Path,
    target: &str,
    path: PathBuf,
    attach: Option<&Spanned<BTreeMap<String, Spanned<String>>>>,
) -> Result<SqliteFiles, PlanError> {
    let mut files = SqliteFiles::single(path);
    let Some(attach) = attach else {
        return Ok(files);
    };
    for (schema, file) in attach.get_ref() {
        let plain = schema
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && schema.len() <= 64
            && schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !plain
            || RESERVED_SCHEMAS
                .iter()
                .any(|r| r.eq_ignore_ascii_case(schema))
        {
            return Err(src.error(
                file.span().start,
                format!("target `{target}`: attach schema `{schema}` must be 1–64 letters, digits and `_`, not starting with a digit, and not `main` or `temp`"),
            ));
        }
        let file_path = dir.join(file.get_ref());
        if files.all().any(|p| p == file_path) {
            return Err(src.error(
                file.span().start,
                format!(
                    "target `{target}`: `{}` is attached twice or is the database itself",
                    file.get_ref()
                ),
            ));
        }
        files.attach.insert(schema.clone(), file_path);
    }
    Ok(files)
}

fn list<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// Converts step params to JSON, replacing each `{ file = "…" }` table with the
/// contents of that file (relative to the plan), so the plugin gets the text
/// and drift detection covers the file.
fn inline_files(
    src: &Source<'_>,
    dir: &Path,
    offset: usize,
    table: &toml::Table,
) -> Result<serde_json::Value, PlanError> {
    fn convert(
        src: &Source<'_>,
        dir: &Path,
        offset: usize,
        key: &str,
        value: &toml::Value,
    ) -> Result<serde_json::Value, PlanError> {
        Ok(match value {
            toml::Value::Table(t) if t.len() == 1 && t.contains_key("file") => {
                let Some(toml::Value::String(rel)) = t.get("file") else {
                    return Err(src.error(
                        offset,
                        format!("params.{key}: `file` must be a path string"),
                    ));
                };
                let path = dir.join(rel);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    src.error(
                        offset,
                        format!("params.{key}: cannot read {}: {e}", path.display()),
                    )
                })?;
                serde_json::Value::String(text)
            }
            toml::Value::Table(t) => serde_json::Value::Object(
                t.iter()
                    .map(|(k, v)| {
                        let path = if key.is_empty() {
                            k.clone()
                        } else {
                            format!("{key}.{k}")
                        };
                        Ok((k.clone(), convert(src, dir, offset, &path, v)?))
                    })
                    .collect::<Result<_, PlanError>>()?,
            ),
            toml::Value::Array(a) => serde_json::Value::Array(
                a.iter()
                    .enumerate()
                    .map(|(i, v)| convert(src, dir, offset, &format!("{key}[{i}]"), v))
                    .collect::<Result<_, _>>()?,
            ),
            toml::Value::String(s) => serde_json::Value::String(s.clone()),
            toml::Value::Integer(i) => serde_json::Value::from(*i),
            toml::Value::Float(f) => serde_json::Value::from(*f),
            toml::Value::Boolean(b) => serde_json::Value::Bool(*b),
            toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        })
    }
    let value = toml::Value::Table(table.clone());
    convert(src, dir, offset, "", &value)
}

struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn location(&self, offset: usize) -> Location {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location {
            file: self.path.to_path_buf(),
            line,
            column: self.text[line_start..offset].chars().count() + 1,
        }
    }

    fn error(&self, offset: usize, message: String) -> PlanError {
        let location = self.location(offset);
        let source_line = self
            .text
            .lines()
            .nth(location.line - 1)
            .unwrap_or("")
            .to_string();
        PlanError::Invalid {
            location,
            message,
            source_line,
        }
    }

    fn check_name(&self, name: &str, offset: usize, what: &str) -> Result<(), PlanError> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if ok {
            Ok(())
        } else {
            Err(self.error(
                offset,
                format!("{what} `{name}` must be 1–64 characters of letters, digits, `-` and `_`"),
            ))
        }
    }
}
