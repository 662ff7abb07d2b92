//! What a plugin can ask for and what a step grants: the first of the two
//! gates. A component's imports are read from its bytes before it is
//! compiled; each maps to a capability; a step whose plugin imports a
//! capability the plan does not grant it is refused before anything runs.
//! The second gate is in each host function (`capabilities/`).

pub mod component;

use std::fmt;

use crate::plan::{Access, Step};

pub use component::{ComponentFacts, FactsError, SUPPORTED_WIT};

/// A kind of authority a plugin can hold.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    /// WASI basics that carry no authority here: streams, clocks, random,
    /// exit, and an environment and stdin the host leaves empty.
    Runtime,
    /// sluice's own protocol: backup store (phase-scoped), progress, log.
    Protocol,
    /// Access to the step's target (`sluice:plugin/sql`, `sluice:plugin/kv`).
    Datastore,
    /// Named values of the plan (`sluice:plugin/values`).
    Values,
    /// Directories handed to the plugin (`wasi:filesystem`).
    Files,
    /// Named HTTP GET probes of the plan (`sluice:plugin/probe`): only the
    /// URLs the plan names, on loopback or allowlisted hosts.
    Probes,
    /// Network access (`wasi:sockets`, `wasi:http`): never granted.
    Network,
    /// An interface sluice does not provide.
    Unknown,
}

impl Capability {
    /// Human name, as shown by `inspect` and `audit`.
    pub fn human(&self) -> &'static str {
        match self {
            Capability::Runtime => "runtime basics (no authority)",
            Capability::Protocol => "sluice protocol (backup store, progress, log)",
            Capability::Datastore => "datastore access (SQL or key-value on the step's target)",
            Capability::Values => "named values from the plan",
            Capability::Files => "files in granted directories",
            Capability::Probes => "named HTTP GET probes (loopback or allowlisted hosts)",
            Capability::Network => "network",
            Capability::Unknown => "an interface sluice does not provide",
        }
    }

    /// What a plan must say to grant it, or why it cannot be granted.
    pub fn how_to_grant(&self) -> &'static str {
        match self {
            Capability::Runtime | Capability::Protocol => "always available",
            Capability::Datastore => {
                "the step's `target` and `access` (and `tables` or `key_prefixes` to scope it)"
            }
            Capability::Values => {
                "`values = [\"name\", …]` on the step, defined in the plan's [values]"
            }
            Capability::Files => {
                "`files = [{ name = \"…\", path = \"…\", access = \"read-only\" }]` on the step"
            }
            Capability::Probes => {
                "`probes = [\"name\", …]` on the step, defined in the plan's [probes]"
            }
            Capability::Network => "nothing: sluice does not grant network access to plugins; name an HTTP health check in [probes] instead",
            Capability::Unknown => "nothing: sluice does not provide this interface",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.human())
    }
}

/// The capability an imported interface (`wasi:cli/stdout@0.2.6`) needs.
pub fn classify(interface: &str) -> Capability {
    let name = interface.split('@').next().unwrap_or(interface);
    let (package, _) = name.split_once('/').unwrap_or((name, ""));
    match (package, name) {
        (_, "sluice:plugin/sql" | "sluice:plugin/kv") => Capability::Datastore,
        (_, "sluice:plugin/values") => Capability::Values,
        (_, "sluice:plugin/probe") => Capability::Probes,
        (
            _,
            "sluice:plugin/backup-store"
            | "sluice:plugin/progress"
            | "sluice:plugin/log"
            | "sluice:plugin/types",
        ) => Capability::Protocol,
        ("wasi:io" | "wasi:cli" | "wasi:clocks" | "wasi:random", _) => Capability::Runtime,
        ("wasi:filesystem", _) => Capability::Files,
        ("wasi:sockets" | "wasi:http", _) => Capability::Network,
        _ => Capability::Unknown,
    }
}

/// Capability names a plugin's `describe` may declare a need for (the WIT
/// `capability-need.capability`).
pub const NEED_NAMES: [&str; 8] = [
    "sql",
    "kv",
    "values",
    "files",
    "probe",
    "backup-store",
    "progress",
    "log",
];

/// The `describe` need an imported interface must be declared under;
/// `None` for imports that carry no authority (WASI basics, shared types)
/// or that no need can declare (network, unknown interfaces: refused anyway).
pub fn declared_need(interface: &str) -> Option<&'static str> {
    let name = interface.split('@').next().unwrap_or(interface);
    match name {
        "sluice:plugin/sql" => Some("sql"),
        "sluice:plugin/kv" => Some("kv"),
        "sluice:plugin/values" => Some("values"),
        "sluice:plugin/probe" => Some("probe"),
        "sluice:plugin/backup-store" => Some("backup-store"),
        "sluice:plugin/progress" => Some("progress"),
        "sluice:plugin/log" => Some("log"),
        _ if classify(interface) == Capability::Files => Some("files"),
        _ => None,
    }
}

/// Whether a step's grants allow a capability.
pub fn allows(step: &Step, capability: &Capability) -> bool {
    match capability {
        Capability::Runtime | Capability::Protocol => true,
        // Every step names its target and access: that is its datastore grant.
        Capability::Datastore => true,
        Capability::Values => !step.values.is_empty(),
        Capability::Files => !step.files.is_empty(),
        // The import alone reaches nothing: every `get` checks the name
        // against the step's `probes` (gate two), and a step granted none
        // can send none. First-party plugins import it for their probe
        // metrics, so requiring a grant here would refuse every step that
        // does not probe.
        Capability::Probes => true,
        Capability::Network | Capability::Unknown => false,
    }
}

/// A plugin needs something its step was not granted.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "step `{step}`: plugin `{plugin}` imports `{interface}` ({capability}), which the step is not granted; \
     to grant it: {how}"
)]
pub struct UngrantedImport {
    /// Step id.
    pub step: String,
    /// Plugin name.
    pub plugin: String,
    /// The imported interface.
    pub interface: String,
    /// What it gives.
    pub capability: Capability,
    /// The grant that would allow it.
    pub how: &'static str,
}

/// Gate one: every import of the step's plugin is granted by the step.
pub fn check_imports(step: &Step, facts: &ComponentFacts) -> Result<(), UngrantedImport> {
    // Name the most serious ungranted import (network before files, …).
    let worst = facts
        .imports
        .iter()
        .map(|interface| (classify(interface), interface))
        .filter(|(capability, _)| !allows(step, capability))
        .max_by(|a, b| a.0.cmp(&b.0));
    match worst {
        None => Ok(()),
        Some((capability, interface)) => Err(UngrantedImport {
            step: step.id.clone(),
            plugin: step.plugin.clone(),
            interface: interface.clone(),
            how: capability.how_to_grant(),
            capability,
        }),
    }
}

/// A grant a reviewer should look at twice.
pub fn risks(step: &Step) -> Vec<String> {
    let mut out = Vec::new();
    if step.access == Access::ReadWrite && step.tables.is_none() && step.key_prefixes.is_none() {
        out.push(format!(
            "read-write on every table or key of target `{}`",
            step.target
        ));
    }
    for p in &step.probes {
        if p.leaves_loopback() {
            out.push(format!(
                "probe `{}` reaches `{}` beyond loopback (allowlisted in [plan] probe_hosts)",
                p.name,
                p.authority()
            ));
        }
    }
    for f in &step.files {
        if f.access == Access::ReadWrite {
            out.push(format!(
                "writable directory `{}` ({})",
                f.name,
                f.path.display()
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interfaces_map_to_capabilities() {
        let cases = [
            ("sluice:plugin/sql@0.1.0", Capability::Datastore),
            ("sluice:plugin/kv@0.1.0", Capability::Datastore),
            ("sluice:plugin/values@0.1.0", Capability::Values),
            ("sluice:plugin/probe@0.1.0", Capability::Probes),
            ("sluice:plugin/backup-store@0.1.0", Capability::Protocol),
            ("sluice:plugin/log@0.1.0", Capability::Protocol),
            ("wasi:cli/stdout@0.2.6", Capability::Runtime),
            ("wasi:cli/environment@0.2.0", Capability::Runtime),
            ("wasi:io/streams@0.2.6", Capability::Runtime),
            ("wasi:filesystem/preopens@0.2.6", Capability::Files),
            ("wasi:sockets/tcp@0.2.6", Capability::Network),
            ("wasi:http/outgoing-handler@0.2.6", Capability::Network),
            ("acme:evil/anything@1.0.0", Capability::Unknown),
            ("sluice:plugin/sqlx@0.1.0", Capability::Unknown),
        ];
        for (interface, want) in cases {
            assert_eq!(classify(interface), want, "{interface}");
        }
    }

    #[test]
    fn imports_map_to_the_need_that_declares_them() {
        let cases = [
            ("sluice:plugin/sql@0.1.0", Some("sql")),
            ("sluice:plugin/kv@0.1.0", Some("kv")),
            ("sluice:plugin/backup-store@0.1.0", Some("backup-store")),
            ("sluice:plugin/log@0.1.0", Some("log")),
            ("sluice:plugin/types@0.1.0", None),
            ("wasi:filesystem/preopens@0.2.6", Some("files")),
            ("wasi:cli/stdout@0.2.6", None),
            ("wasi:sockets/tcp@0.2.6", None),
        ];
        for (interface, want) in cases {
            assert_eq!(declared_need(interface), want, "{interface}");
            if let Some(need) = want {
                assert!(NEED_NAMES.contains(&need), "{need}");
            }
        }
    }
}
