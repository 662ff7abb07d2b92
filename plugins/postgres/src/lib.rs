//! sluice plugin for PostgreSQL.
//!
//! - preview: from the params alone, the statements migrate runs and how
//!   ([`classify`]: one transaction, statement by statement, or
//!   irreversible), the metrics validate reports, the tables backed up;
//! - backup: each table in `tables` (default: every table of `public`) as its
//!   DDL plus its rows streamed with `COPY … TO STDOUT` into the backup store,
//!   with the row count and the checksum the host recomputes the same way;
//! - migrate: the step's SQL (`migrate`) in one transaction, or statement by
//!   statement when it holds statements PostgreSQL refuses in a transaction
//!   ([`classify`]); bulk copies (`copy`) streamed `COPY … TO STDOUT` →
//!   `COPY … FROM STDIN` chunk by chunk;
//! - validate: named metrics (`metrics`): row counts, scalar queries, match
//!   rates, duplicates, index use, latency;
//! - rollback: nothing to do when the tables and schema already equal the
//!   backup (a transactional migrate that failed was undone by PostgreSQL);
//!   else the `compensate` script; else a restore from the backup in one
//!   transaction that commits only after the restored tables' checksums equal
//!   the backup's.

mod backup;
pub mod classify;
mod migrate;
pub mod names;
pub mod params;
mod preview;
mod rollback;
pub mod schema;
mod validate;

use serde::{Deserialize, Serialize};
use sluice_sdk::{CapabilityNeed, PluginInfo};

pub use classify::{classify, Change};
pub use params::Params;

/// The PostgreSQL plugin.
pub struct PostgresPlugin;

/// What the backup records in the manifest's `metadata` (JSON) for rollback.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BackupMetadata {
    /// Format of this record.
    pub format: u32,
    /// Whether `migrate` runs in one transaction.
    pub transactional: bool,
    /// Digest of the schemas of the backed-up tables before the step.
    pub schema_digest: String,
    /// Schemas the digest covers.
    pub schemas: Vec<String>,
    /// Latency baselines measured before the change (`latency.baseline`),
    /// by metric name, in milliseconds.
    pub baselines: std::collections::BTreeMap<String, f64>,
    /// The backed-up tables' sequences as they were at backup, put back by
    /// every rollback path (nextval is not transactional: even a migrate
    /// PostgreSQL undid leaves them advanced). Absent in manifests written
    /// before sequences were saved: then none are put back.
    #[serde(default)]
    pub sequences: Vec<schema::SequenceValue>,
}

impl sluice_sdk::Plugin for PostgresPlugin {
    fn describe() -> PluginInfo {
        let need = |capability: &str, reason: &str| CapabilityNeed {
            capability: capability.to_string(),
            reason: reason.to_string(),
        };
        PluginInfo {
            name: "postgres".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            kinds: vec!["postgres".to_string()],
            needs: vec![
                need(
                    "sql",
                    "reads the tables to back up and validate; migrate and rollback write them",
                ),
                need(
                    "backup-store",
                    "stores table rows and DDL, reads them back in rollback",
                ),
                need(
                    "progress",
                    "reports rows copied during backup, copy and restore",
                ),
                need(
                    "probe",
                    "validate measures the HTTP health checks the step's probe metrics name (GET to the step's granted probes only)",
                ),
                need("log", "records what each phase did"),
            ],
            idempotent_migrate: false,
        }
    }
}

#[cfg(feature = "export")]
sluice_sdk::export_plugin!(PostgresPlugin);
