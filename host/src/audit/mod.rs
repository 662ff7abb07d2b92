//! What a security reviewer reads: `sluice inspect` (one plugin) and
//! `sluice audit` (a plan: requested vs granted, surplus and risky grants),
//! and the lockfile that pins reviewed plugin digests and grants.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::grants::{self, Capability, ComponentFacts};
use crate::plan::{Access, Address, Plan, Step, Target};
use crate::runtime::LoadedPlugin;

/// One import and the capability it needs.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    /// Interface name.
    pub interface: String,
    /// Capability.
    pub capability: Capability,
    /// Human name of the capability.
    pub capability_name: &'static str,
}

/// One need a plugin declares in `describe`.
#[derive(Debug, Clone, Serialize)]
pub struct NeedReport {
    /// Capability name as declared.
    pub capability: String,
    /// Why.
    pub reason: String,
}

/// `sluice inspect`.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// The file.
    pub file: PathBuf,
    /// Plugin name (from describe).
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// Datastore kinds served.
    pub kinds: Vec<String>,
    /// WIT package version it was built against.
    pub wit_version: Option<String>,
    /// sha256 of the file.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// Whether migrate may run twice.
    pub idempotent_migrate: bool,
    /// Exported interfaces.
    pub exports: Vec<String>,
    /// Imported interfaces with their capabilities.
    pub imports: Vec<ImportReport>,
    /// Needs declared by describe, with reasons.
    pub needs: Vec<NeedReport>,
}

/// Builds the inspection of a loaded plugin.
pub fn inspect(file: &Path, plugin: &LoadedPlugin) -> Inspection {
    let facts: &ComponentFacts = &plugin.facts;
    Inspection {
        file: file.to_path_buf(),
        name: plugin.info.name.clone(),
        version: plugin.info.version.clone(),
        kinds: plugin.info.kinds.clone(),
        wit_version: facts.wit_version(),
        sha256: facts.sha256.clone(),
        size: facts.size,
        idempotent_migrate: plugin.info.idempotent_migrate,
        exports: facts.exports.clone(),
        imports: facts
            .imports
            .iter()
            .map(|i| {
                let capability = grants::classify(i);
                ImportReport {
                    interface: i.clone(),
                    capability_name: capability.human(),
                    capability,
                }
            })
            .collect(),
        needs: plugin
            .info
            .needs
            .iter()
            .map(|n| NeedReport {
                capability: n.capability.clone(),
                reason: n.reason.clone(),
            })
            .collect(),
    }
}

/// Renders an inspection for people.
pub fn inspection_text(i: &Inspection) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "plugin   {} {} ({})",
        i.name,
        i.version,
        i.file.display()
    );
    let _ = writeln!(
        out,
        "wit      sluice:plugin {}",
        i.wit_version.as_deref().unwrap_or("unknown")
    );
    let _ = writeln!(out, "sha256   {}", i.sha256);
    let _ = writeln!(out, "size     {} bytes", i.size);
    let _ = writeln!(out, "serves   {}", i.kinds.join(", "));
    let _ = writeln!(
        out,
        "migrate  {}",
        if i.idempotent_migrate {
            "idempotent"
        } else {
            "not idempotent"
        }
    );
    let _ = writeln!(out, "exports");
    for e in &i.exports {
        let _ = writeln!(out, "  {e}");
    }
    let _ = writeln!(out, "imports (what the code can reach)");
    let mut by_cap: BTreeMap<&Capability, Vec<&str>> = BTreeMap::new();
    for imp in &i.imports {
        by_cap
            .entry(&imp.capability)
            .or_default()
            .push(&imp.interface);
    }
    for (cap, names) in by_cap {
        let _ = writeln!(out, "  {}: {}", cap.human(), names.join(", "));
    }
    let _ = writeln!(out, "declared needs (what the author says, and why)");
    for n in &i.needs {
        let _ = writeln!(out, "  {}: {}", n.capability, n.reason);
    }
    out
}

/// The reviewed state of a plan: plugin digests and every step's grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// Plugin name → sha256.
    pub plugins: BTreeMap<String, String>,
    /// Step id → its grants.
    pub steps: BTreeMap<String, LockedStep>,
}

/// A step's grants as reviewed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedStep {
    /// Plugin name.
    pub plugin: String,
    /// Target name.
    pub target: String,
    /// Access mode.
    pub access: String,
    /// Table scope (`["*"]` for every table).
    pub tables: Vec<String>,
    /// Files the host attaches to the SQLite target: schema → path
    /// (relative to the plan); part of what the step may reach.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attach: BTreeMap<String, String>,
    /// Key-prefix scope of a key-value step (empty when not scoped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_prefixes: Vec<String>,
    /// Directories: `name = "access path"` (path relative to the plan).
    pub files: BTreeMap<String, String>,
    /// Granted value names.
    pub values: Vec<String>,
    /// Granted probes: name → what the host sends (`GET <url> (timeout …)`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub probes: BTreeMap<String, String>,
    /// Limits: memory MiB, phase seconds, backup MiB.
    pub limits: [u64; 3],
}

impl Lock {
    /// The lock the plan would have if accepted now.
    pub fn of(plan: &Plan) -> Lock {
        Lock {
            plugins: plan
                .plugins
                .iter()
                .map(|(n, p)| (n.clone(), p.digest.clone()))
                .collect(),
            steps: plan
                .steps
                .iter()
                .map(|s| {
                    (
                        s.id.clone(),
                        LockedStep {
                            plugin: s.plugin.clone(),
                            target: s.target.clone(),
                            access: s.access.as_str().to_string(),
                            tables: s.tables.clone().unwrap_or_else(|| vec!["*".to_string()]),
                            attach: match &plan.targets[&s.target].address {
                                Address::File(files) => files
                                    .attach
                                    .iter()
                                    .map(|(schema, path)| {
                                        let rel = path.strip_prefix(&plan.dir).unwrap_or(path);
                                        (schema.clone(), rel.display().to_string())
                                    })
                                    .collect(),
                                Address::Connection(_) => BTreeMap::new(),
                            },
                            key_prefixes: s.key_prefixes.clone().unwrap_or_default(),
                            files: s
                                .files
                                .iter()
                                .map(|f| {
                                    let rel = f.path.strip_prefix(&plan.dir).unwrap_or(&f.path);
                                    (
                                        f.name.clone(),
                                        format!("{} {}", f.access.as_str(), rel.display()),
                                    )
                                })
                                .collect(),
                            values: s.values.clone(),
                            probes: s
                                .probes
                                .iter()
                                .map(|p| (p.name.clone(), p.describe()))
                                .collect(),
                            limits: [
                                s.limits.memory_mib,
                                s.limits.phase_seconds,
                                s.limits.backup_mib,
                            ],
                        },
                    )
                })
                .collect(),
        }
    }

    /// The lock file of a plan: `<plan stem>.lock` beside it.
    pub fn path(plan: &Plan) -> PathBuf {
        plan.path.with_extension("lock")
    }

    /// Reads the plan's lock file, if there is one.
    pub fn read(plan: &Plan) -> Result<Option<Lock>, String> {
        let path = Self::path(plan);
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text)
                .map(Some)
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Writes the lock file.
    pub fn write(&self, plan: &Plan) -> std::io::Result<()> {
        let text = format!(
            "# Reviewed plugin digests and grants of {}.\n# Written by `sluice audit --accept`; `sluice run` refuses the plan while they differ.\n\n{}",
            plan.path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            toml::to_string_pretty(self).expect("locks serialize")
        );
        let tmp = Self::path(plan).with_extension("lock.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(tmp, Self::path(plan))
    }

    fn lines(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (name, digest) in &self.plugins {
            out.insert(format!("plugin {name}: sha256 {digest}"));
        }
        for (id, s) in &self.steps {
            out.insert(format!("step {id}: plugin {}", s.plugin));
            out.insert(format!("step {id}: {} on target {}", s.access, s.target));
            out.insert(format!("step {id}: tables {}", s.tables.join(", ")));
            for (schema, path) in &s.attach {
                out.insert(format!("step {id}: attach {schema} = {path}"));
            }
            if !s.key_prefixes.is_empty() {
                out.insert(format!(
                    "step {id}: key prefixes {}",
                    s.key_prefixes.join(", ")
                ));
            }
            for (name, grant) in &s.files {
                out.insert(format!("step {id}: files {name} = {grant}"));
            }
            for v in &s.values {
                out.insert(format!("step {id}: value {v}"));
            }
            for (name, probe) in &s.probes {
                out.insert(format!("step {id}: probe {name} = {probe}"));
            }
            out.insert(format!(
                "step {id}: limits memory {} MiB, phase {} s, backup {} MiB",
                s.limits[0], s.limits[1], s.limits[2]
            ));
        }
        out
    }

    /// Lines removed (`-`) and added (`+`) going from `self` to `new`.
    pub fn diff(&self, new: &Lock) -> Vec<String> {
        let (old, new) = (self.lines(), new.lines());
        let mut out: Vec<String> = old.difference(&new).map(|l| format!("- {l}")).collect();
        out.extend(new.difference(&old).map(|l| format!("+ {l}")));
        out
    }
}

/// Whether a plan may run: its plugins and grants equal the reviewed lock.
pub fn check_lock(plan: &Plan) -> Result<(), String> {
    let current = Lock::of(plan);
    let path = Lock::path(plan);
    match Lock::read(plan)? {
        None => Err(format!(
            "{} does not exist: nobody has reviewed this plan's plugins and grants. \
             Review them with `sluice audit {}`, then accept with `sluice audit --accept {}`",
            path.display(),
            plan.path.display(),
            plan.path.display()
        )),
        Some(lock) if lock == current => Ok(()),
        Some(lock) => Err(format!(
            "the plan's plugins or grants differ from {}:\n{}\nReview the change and accept it with `sluice audit --accept {}`",
            path.display(),
            lock.diff(&current).iter().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n"),
            plan.path.display()
        )),
    }
}

/// One step's audit.
#[derive(Debug, Clone, Serialize)]
pub struct StepAudit {
    /// Step id.
    pub step: String,
    /// Plugin name.
    pub plugin: String,
    /// Capabilities the plugin's imports need.
    pub requested: Vec<Capability>,
    /// Grants the plan gives, in words.
    pub granted: Vec<String>,
    /// Granted capabilities the plugin never imports.
    pub surplus: Vec<String>,
    /// Imports the step is not granted (the run is refused).
    pub ungranted: Vec<String>,
    /// Imports `describe` does not declare.
    pub undeclared: Vec<String>,
    /// Grants to look at twice.
    pub risky: Vec<String>,
}

fn needs_name(cap: &Capability, datastore: &'static str) -> Option<&'static str> {
    match cap {
        Capability::Datastore => Some(datastore),
        Capability::Values => Some("values"),
        Capability::Files => Some("files"),
        Capability::Probes => Some("probe"),
        Capability::Network => Some("network"),
        _ => None,
    }
}

/// Audits one step (on `target`, its target) against its plugin.
pub fn audit_step(step: &Step, target: &Target, plugin: &LoadedPlugin) -> StepAudit {
    let requested: BTreeSet<Capability> = plugin
        .facts
        .imports
        .iter()
        .map(|i| grants::classify(i))
        .collect();
    // The datastore interface the plugin imports names its declared need.
    let datastore = if plugin
        .facts
        .imports
        .iter()
        .any(|i| i.starts_with("sluice:plugin/kv"))
    {
        "kv"
    } else {
        "sql"
    };
    let scope = match (datastore, &step.tables, &step.key_prefixes) {
        (_, _, Some(prefixes)) => format!("key prefixes: {}", prefixes.join(", ")),
        ("kv", _, None) => "every key".to_string(),
        (_, Some(tables), _) => format!("tables: {}", tables.join(", ")),
        (_, None, _) => "tables: every table".to_string(),
    };
    let mut granted = vec![format!(
        "{} on target `{}`, {scope}",
        step.access.as_str(),
        step.target,
    )];
    if let Address::File(files) = &target.address {
        granted.extend(files.attach.iter().map(|(schema, path)| {
            format!(
                "attached database `{schema}` = {} ({}, part of target `{}`)",
                path.display(),
                step.access.as_str(),
                step.target
            )
        }));
    }
    granted.extend(step.files.iter().map(|f| {
        format!(
            "directory `{}` ({}), {}",
            f.name,
            f.path.display(),
            f.access.as_str()
        )
    }));
    granted.extend(step.values.iter().map(|v| format!("value `{v}`")));
    granted.extend(
        step.probes
            .iter()
            .map(|p| format!("probe `{}`: {}", p.name, p.describe())),
    );
    granted.push(format!(
        "limits: {} MiB memory, {} s per phase, {} MiB backup",
        step.limits.memory_mib, step.limits.phase_seconds, step.limits.backup_mib
    ));
    let mut surplus = Vec::new();
    if !requested.contains(&Capability::Datastore) {
        surplus.push(format!(
            "datastore access to `{}` (the plugin imports neither sql nor kv)",
            step.target
        ));
    } else if step.access == Access::ReadWrite
        && !plugin.info.needs.iter().any(|n| n.capability == datastore)
    {
        surplus.push("read-write access the plugin does not declare a need for".to_string());
    }
    if !step.files.is_empty() && !requested.contains(&Capability::Files) {
        surplus.push("directories (the plugin does not import wasi:filesystem)".to_string());
    }
    if !step.probes.is_empty() && !requested.contains(&Capability::Probes) {
        surplus.push("probes (the plugin does not import sluice:plugin/probe)".to_string());
    }
    if !step.values.is_empty() && !requested.contains(&Capability::Values) {
        surplus.push("values (the plugin does not import sluice:plugin/values)".to_string());
    }
    let ungranted = plugin
        .facts
        .imports
        .iter()
        .filter(|i| !grants::allows(step, &grants::classify(i)))
        .cloned()
        .collect();
    let undeclared = requested
        .iter()
        .filter_map(|cap| needs_name(cap, datastore).map(|n| (cap, n)))
        .filter(|(_, n)| !plugin.info.needs.iter().any(|need| need.capability == *n))
        .map(|(cap, n)| format!("{n} ({})", cap.human()))
        .collect();
    StepAudit {
        step: step.id.clone(),
        plugin: step.plugin.clone(),
        requested: requested.into_iter().collect(),
        granted,
        surplus,
        ungranted,
        undeclared,
        risky: grants::risks(step),
    }
}

/// Renders an audit for people.
pub fn audit_text(plan: &Plan, steps: &[StepAudit], lock_status: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "audit of plan {} ({})", plan.name, plan.path.display());
    for s in steps {
        let _ = writeln!(out, "\nstep {} — plugin {}", s.step, s.plugin);
        let requested: Vec<&str> = s.requested.iter().map(Capability::human).collect();
        let _ = writeln!(out, "  requested: {}", requested.join("; "));
        for g in &s.granted {
            let _ = writeln!(out, "  granted:   {g}");
        }
        for x in &s.ungranted {
            let _ = writeln!(out, "  UNGRANTED: {x} — the run is refused");
        }
        for x in &s.undeclared {
            let _ = writeln!(
                out,
                "  undeclared need: {x} — imported but not declared by describe"
            );
        }
        for x in &s.surplus {
            let _ = writeln!(out, "  surplus:   {x}");
        }
        for x in &s.risky {
            let _ = writeln!(out, "  RISKY:     {x}");
        }
    }
    let _ = writeln!(out, "\nlock: {lock_status}");
    out
}
