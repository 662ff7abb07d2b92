//! An example sluice plugin written from outside the sluice repository: it
//! uses only the published sdk (`sluice-sdk`), no first-party plugin code.
//!
//! The data: a coaching app's legacy collections, exported to SQLite as one
//! JSON document per row (`users`, `questionnaire_responses`,
//! `nutrition_questionnaire_submissions`, `followup_submissions`). A step
//! reshapes them into one "client drawer" document per client in
//! `client_drawers`, as runbook 003 prescribes: only records submitted
//! before the dual-write cutoff, idempotent by logical ids (a drawer the
//! dual-write already holds keeps what it has; follow-ups merge by
//! `followup_id`). Validate measures the match rate and duplicates; the
//! backup saves `client_drawers` and rollback restores it, proven by checksum.

mod backup;
mod drawer;
mod migrate;
mod preview;
mod rollback;
mod validate;

use serde::Deserialize;
use sluice_sdk::{CapabilityNeed, Error, PluginInfo, StepContext};

/// The plugin.
pub struct Drawers;

/// The step's params.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// `dual_write_start_at`: records submitted at or after it are the
    /// dual-write's and are not migrated (ISO 8601, UTC, e.g.
    /// `2025-02-01T00:00:00Z`; compared as text, as the legacy data stores it).
    pub cutoff: String,
}

impl Params {
    /// Parses and checks the params.
    pub fn of(ctx: &StepContext) -> Result<Self, Error> {
        let params: Params = ctx.params()?;
        let c = params.cutoff.as_bytes();
        let digits =
            |range: std::ops::Range<usize>| range.into_iter().all(|i| c[i].is_ascii_digit());
        if c.len() < 10
            || !digits(0..4)
            || c[4] != b'-'
            || !digits(5..7)
            || c[7] != b'-'
            || !digits(8..10)
        {
            return Err(Error::InvalidParams(format!(
                "`cutoff` {:?} is not an ISO 8601 date or time (YYYY-MM-DD…)",
                params.cutoff
            )));
        }
        Ok(params)
    }
}

impl sluice_sdk::Plugin for Drawers {
    fn describe() -> PluginInfo {
        let need = |capability: &str, reason: &str| CapabilityNeed {
            capability: capability.to_string(),
            reason: reason.to_string(),
        };
        PluginInfo {
            name: "drawers".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            kinds: vec!["sqlite".to_string()],
            needs: vec![
                need(
                    "sql",
                    "reads the legacy collections and client_drawers; migrate and rollback write client_drawers only",
                ),
                need(
                    "backup-store",
                    "backup saves client_drawers (schema and rows); rollback reads it back",
                ),
                need("log", "records how many drawers and follow-ups each phase handled"),
            ],
            // Every write is keyed by a logical id and skipped when present.
            idempotent_migrate: true,
        }
    }
}

// Exported only for wasm, so `cargo test` runs the unit tests natively.
#[cfg(target_arch = "wasm32")]
sluice_sdk::export_plugin!(Drawers);
