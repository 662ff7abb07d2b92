//! One module per WIT import. Each has the same shape: its state type, a
//! private `HasData` marker, the `impl Host` on that state, and
//! `add_to_linker`. Privileged functions check the step's grant first.

pub mod backup_store;
pub mod kv;
pub mod log;
pub mod probe;
pub mod progress;
pub mod sql;
pub mod values;

use crate::runtime::bindings::PluginError;

/// Renders a plugin-facing error for operators.
pub fn describe_error(e: &PluginError) -> String {
    match e {
        PluginError::InvalidParams(m) => format!("invalid params: {m}"),
        PluginError::AccessDenied(m) => format!("access denied: {m}"),
        PluginError::Datastore(d) => format!("datastore error {}: {}", d.code, d.message),
        PluginError::PreconditionFailed(m) => format!("precondition failed: {m}"),
        PluginError::NotFound(m) => format!("not found: {m}"),
        PluginError::BackupInvalid(m) => format!("backup invalid: {m}"),
        PluginError::Unsupported(m) => format!("unsupported: {m}"),
        PluginError::Internal(m) => format!("plugin internal error: {m}"),
    }
}
