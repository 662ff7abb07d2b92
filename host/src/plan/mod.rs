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

//!
//! [`load`] reads the file in steps, each in its own module and each
//! refusing the plan at the first thing wrong with a [`PlanError`] at its
//! `file:line:column`: `read` (the text, parsed with spans), `values` (named
//! values and probes), `targets`, `plugins` (read and digested), `steps`
//! (with their gates, in `gate`), and `refs`, the cross-references between
//! them.

pub mod gate;
mod number;
mod plugins;
pub mod probe;
mod read;
mod refs;
mod steps;
mod targets;
pub mod threshold;
mod values;

#[cfg(test)]
mod test_plan;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::secret::Secret;

pub use gate::{Action, ApprovalPoint, Band, BreachScope, Watch};
pub use number::number;
pub use plugins::PluginRef;
pub use probe::Probe;
pub use targets::{Address, SqliteFiles, Target, TargetKind};
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

// ---- loading ------------------------------------------------------------------

/// Reads, parses and validates a plan: every reference resolved, every plugin
/// file read and its digest checked, every threshold parsed.
pub fn load(path: &Path) -> Result<Plan, PlanError> {
    let (path, text) = read::read(path)?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let src = read::Source {
        path: &path,
        text: &text,
    };
    let file = read::parse(&src)?;

    let values = values::load_values(&src, &dir, &file.values)?;
    let probes = values::load_probes(&src, &file)?;
    let targets = targets::load(&src, &dir, &file.targets, &values)?;
    let plugins = plugins::load(&src, &dir, &file.plugins)?;
    let declared = steps::Declared {
        targets: &targets,
        plugins: &plugins,
        values: &values,
        probes: &probes,
    };
    let steps = steps::load(&src, &dir, &file.steps, &declared)?;
    let journal = refs::journal(&src, file.plan.as_ref(), &values)?;

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
