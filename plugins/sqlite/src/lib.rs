//! sluice plugin for SQLite.
//!
//! - preview: the statements migrate runs (one transaction), the metrics
//!   validate reports and the tables the backup saves, from the params alone;
//! - backup: a consistent snapshot (one read transaction) of the tables the
//!   step touches (`tables`, default: all) plus the whole schema;
//! - migrate: the step's SQL (`migrate`), inside one transaction;
//! - validate: named metrics (`metrics`): row counts, a scalar query,
//!   duplicates on key columns, match rate between a source and a target query;
//! - rollback: drops what the step created, restores the snapshot, and proves
//!   it by row counts and checksums before committing.

mod backup;
mod migrate;
mod params;
mod preview;
mod rollback;
mod schema;
mod validate;

use sluice_sdk::{CapabilityNeed, PluginInfo};

pub use params::Params;

/// The SQLite plugin.
pub struct SqlitePlugin;

impl sluice_sdk::Plugin for SqlitePlugin {
    fn describe() -> PluginInfo {
        let need = |capability: &str, reason: &str| CapabilityNeed {
            capability: capability.to_string(),
            reason: reason.to_string(),
        };
        PluginInfo {
            name: "sqlite".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            kinds: vec!["sqlite".to_string()],
            needs: vec![
                need(
                    "sql",
                    "reads the tables to back up and validate; migrate and rollback write them",
                ),
                need(
                    "backup-store",
                    "stores table snapshots and the schema, reads them back in rollback",
                ),
                need("progress", "reports rows copied during backup and restore"),
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
sluice_sdk::export_plugin!(SqlitePlugin);
