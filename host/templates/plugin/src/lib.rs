//! {{name}}: a sluice plugin for SQLite. Its step adds a column to a table
//! and fills it from an SQL expression over each row, with a backup that
//! restores the table exactly (rows, rowids, indexes, triggers).
//!
//! Each phase lives in its own file; replace their bodies with your own
//! datastore's logic and keep the shape. `describe` below must list exactly
//! the host capabilities the code uses, each with a reason a reviewer can
//! check: `sluice conformance` compares it with the component's imports.

mod backup;
mod migrate;
mod preview;
mod rollback;
mod validate;

use serde::Deserialize;
use sluice_sdk::{CapabilityNeed, Error, PluginInfo, StepContext};

/// The plugin: a unit type; each phase is one trait impl.
pub struct {{Type}};

/// The step's params: `[steps.params]` in a plan, `params.json` for
/// `./conformance.sh`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The table to change.
    pub table: String,
    /// The column to add.
    pub column: String,
    /// The column's SQLite type.
    #[serde(rename = "type", default = "text")]
    pub column_type: String,
    /// An SQL expression over the table's columns that fills the column,
    /// for example `lower(email)`.
    pub fill: String,
}

fn text() -> String {
    "TEXT".to_string()
}

impl Params {
    /// Parses and checks the params; every phase starts here, so bad params
    /// are refused by `preview` when the plan is checked, before anything runs.
    pub fn of(ctx: &StepContext) -> Result<Self, Error> {
        let params: Params = ctx.params()?;
        for (key, value) in [
            ("table", &params.table),
            ("column", &params.column),
            ("fill", &params.fill),
        ] {
            if value.trim().is_empty() {
                return Err(Error::InvalidParams(format!("`{key}` must not be empty")));
            }
        }
        // The type is spliced into DDL: allow what a type name can hold.
        let allowed = |c: char| c.is_ascii_alphanumeric() || " (),".contains(c);
        if !params.column_type.chars().all(allowed) {
            return Err(Error::InvalidParams(format!(
                "`type` {:?} is not an SQLite type name",
                params.column_type
            )));
        }
        Ok(params)
    }
}

impl sluice_sdk::Plugin for {{Type}} {
    fn describe() -> PluginInfo {
        let need = |capability: &str, reason: &str| CapabilityNeed {
            capability: capability.to_string(),
            reason: reason.to_string(),
        };
        PluginInfo {
            name: "{{name}}".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            kinds: vec!["sqlite".to_string()],
            needs: vec![
                need(
                    "sql",
                    "backup and validate read the step's table; migrate adds and fills the column; rollback rebuilds the table",
                ),
                need(
                    "backup-store",
                    "backup saves the table's schema and rows; rollback reads them back",
                ),
                need("log", "records what each phase did"),
            ],
            // Migrate adds the column only when it is missing and sets every
            // row from the expression: running it again changes nothing.
            idempotent_migrate: true,
        }
    }
}

sluice_sdk::export_plugin!({{Type}});
