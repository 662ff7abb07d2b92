//! sluice plugin for sqitch projects: an existing sqitch project directory,
//! granted read-only, runs unchanged on PostgreSQL or SQLite ([`sqlite`]:
//! sqitch's registry file attached to the target by the host), one sluice
//! step per sqitch change. A golang-migrate directory (`N_name.up.sql` /
//! `N_name.down.sql`, params `format = "golang-migrate"`) runs the same way,
//! one step per migration ([`golang`]).
//!
//! - preview: from the params alone, which change of which project;
//! - backup: the PostgreSQL plugin's backup of `tables` (default: the
//!   existing tables the deploy and revert scripts can write, [`touched`];
//!   every table of every schema (extension-owned tables aside) when that cannot be bounded) plus the
//!   registry's state tables when the registry exists, and whether it did;
//! - migrate: checks dependencies and conflicts against sqitch's registry
//!   in the target database, then runs the deploy script (psql-isms
//!   resolved, [`psql`]) and writes sqitch's registry rows, in one
//!   transaction when the script allows; a change already in the registry
//!   is left alone;
//! - validate: the verify script, read-only; metric `verified` is 1 when it
//!   runs cleanly, 0 (with the error in the detail) when it raises;
//! - rollback: nothing when the change was already deployed before the step
//!   (the backup saw it in the registry, so migrate applied nothing: undo
//!   only what was done); otherwise the revert script and the registry rows
//!   removed (a `revert` event logged), in one transaction; then the
//!   PostgreSQL plugin's rollback confirms the backed-up tables equal the
//!   backup, or restores them from it.

mod backup;
pub mod conf;
pub mod golang;
mod migrate;
pub mod plan;
mod preview;
pub mod project;
pub mod psql;
pub mod registry;
mod rollback;
pub mod script;
mod sha1;
pub mod sqlite;
pub mod sqlite_registry;
pub mod sqlite_script;
pub mod touched;
mod trigger_body;
mod validate;

use serde::{Deserialize, Serialize};
use sluice_sdk::{CapabilityNeed, PluginInfo, StepContext};

pub use project::{Params, Project};

/// The sqitch plugin.
pub struct SqitchPlugin;

/// What the backup records in the manifest's `metadata` for rollback.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupMetadata {
    /// Format of this record.
    pub format: u32,
    /// The PostgreSQL plugin's own metadata for its backup.
    pub postgres: String,
    /// The tables backed up (as the PostgreSQL plugin was asked).
    pub tables: Vec<String>,
    /// Whether sqitch's registry existed before the step: if not, rollback
    /// drops the registry schema the deploy created.
    pub registry_existed: bool,
    /// The change's sqitch id.
    pub change_id: String,
    /// Whether the registry already listed the change as deployed at
    /// backup time: the step's migrate then applies nothing, so its
    /// rollback undoes nothing ([`NOTHING_TO_UNDO`]). Absent (false) in
    /// manifests written before this field existed.
    #[serde(default)]
    pub already_deployed: bool,
}

/// What rollback logs when the change was deployed before its step.
pub const NOTHING_TO_UNDO: &str =
    "rollback: the change was already deployed before this step, so its migrate applied nothing: nothing to undo";

/// The context the PostgreSQL plugin's logic runs with: the same step,
/// asked to save (or check) exactly `tables`.
pub(crate) fn postgres_context(ctx: &StepContext, tables: &[String]) -> StepContext {
    // No table bounded: the PostgreSQL plugin's default (every table of
    // `public`), which an explicit empty list would refuse.
    let params = if tables.is_empty() {
        serde_json::json!({})
    } else {
        serde_json::json!({ "tables": tables })
    };
    StepContext::new(
        &ctx.step_id,
        &ctx.target,
        &ctx.target_kind,
        &params.to_string(),
    )
}

/// Refuses targets this plugin cannot deploy to (SQLite targets are
/// dispatched to [`sqlite`] before this check).
pub(crate) fn check_target(ctx: &StepContext) -> Result<(), sluice_sdk::Error> {
    if ctx.target_kind != "postgres" {
        return Err(sluice_sdk::Error::Unsupported(format!(
            "target kind `{}`: the sqitch plugin deploys to PostgreSQL (sqitch's `pg` engine) and SQLite (`sqlite`) targets",
            ctx.target_kind
        )));
    }
    Ok(())
}

impl sluice_sdk::Plugin for SqitchPlugin {
    fn describe() -> PluginInfo {
        let need = |capability: &str, reason: &str| CapabilityNeed {
            capability: capability.to_string(),
            reason: reason.to_string(),
        };
        PluginInfo {
            name: "sqitch".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            kinds: vec!["postgres".to_string(), "sqlite".to_string()],
            needs: vec![
                need(
                    "sql",
                    "reads sqitch's registry and the tables to back up; migrate and rollback run the change's deploy and revert scripts and write the registry",
                ),
                need(
                    "files",
                    "reads the sqitch project (sqitch.conf, sqitch.plan, deploy/revert/verify scripts) from its granted directory",
                ),
                need(
                    "backup-store",
                    "stores table rows and DDL, reads them back in rollback",
                ),
                need("progress", "reports rows saved and restored"),
                need("log", "records what each phase did"),
            ],
            idempotent_migrate: true,
        }
    }
}

#[cfg(feature = "export")]
sluice_sdk::export_plugin!(SqitchPlugin);
