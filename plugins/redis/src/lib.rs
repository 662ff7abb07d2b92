//! sluice plugin for Redis.
//!
//! - preview: the key operations migrate runs (one by one), the metrics
//!   validate reports and the prefixes the backup saves, from the params;
//! - backup: every key under the `prefixes` param, as `DUMP` payloads with
//!   absolute expiries, written in pipelined batches of `batch_keys`; the
//!   manifest reports each prefix's key count and checksum, which the host
//!   checks against its own;
//! - migrate: key operations (`ops`): set, delete, rename, copy, and renames
//!   and copies of whole prefixes, expiries preserved;
//! - validate: named metrics (`metrics`): keys under a prefix, whether a key
//!   holds an expected value, a key's remaining time-to-live;
//! - rollback: deletes the keys the step created under the backed-up
//!   prefixes, restores every backed-up key with its absolute expiry, and
//!   checks the result against the manifest.

mod artifact;
mod backup;
mod migrate;
mod params;
mod preview;
mod rollback;
mod validate;

use sluice_sdk::{CapabilityNeed, PluginInfo};

pub use params::Params;

/// The Redis plugin.
pub struct RedisPlugin;

impl sluice_sdk::Plugin for RedisPlugin {
    fn describe() -> PluginInfo {
        let need = |capability: &str, reason: &str| CapabilityNeed {
            capability: capability.to_string(),
            reason: reason.to_string(),
        };
        PluginInfo {
            name: "redis".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            kinds: vec!["redis".to_string()],
            needs: vec![
                need(
                    "kv",
                    "reads the keys under the backed-up prefixes; migrate and rollback write them",
                ),
                need(
                    "backup-store",
                    "stores the keys' DUMP payloads and expiries, reads them back in rollback",
                ),
                need("progress", "reports keys backed up and restored"),
                need(
                    "probe",
                    "validate measures the HTTP health checks the step's probe metrics name (GET to the step's granted probes only)",
                ),
                need("log", "records what each phase did"),
            ],
            // A rename cannot run twice.
            idempotent_migrate: false,
        }
    }
}

#[cfg(feature = "export")]
sluice_sdk::export_plugin!(RedisPlugin);
