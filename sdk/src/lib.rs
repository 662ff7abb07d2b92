//! Write sluice plugins in plain Rust.
//!
//! A plugin implements one trait per exported interface — [`Plugin`]
//! (describe), [`Preview`], [`Backup`], [`Migrate`], [`Validate`],
//! [`Rollback`] — and calls [`export_plugin!`] once:
//!
//! ```ignore
//! struct MyPlugin;
//! impl sluice_sdk::Plugin for MyPlugin { /* describe */ }
//! impl sluice_sdk::Preview for MyPlugin { /* what a step will do */ }
//! impl sluice_sdk::Backup for MyPlugin { /* ... */ }
//! impl sluice_sdk::Migrate for MyPlugin { /* ... */ }
//! impl sluice_sdk::Validate for MyPlugin { /* ... */ }
//! impl sluice_sdk::Rollback for MyPlugin { /* ... */ }
//! sluice_sdk::export_plugin!(MyPlugin);
//! ```
//!
//! Host capabilities are reached through typed handles: [`sql::Connection`]
//! for the step's target, [`backup_store`] for backup artifacts,
//! [`progress::report`] and [`log`]; named HTTP health probes through
//! [`probe`], whose [`probe::ProbeMetric`] turns one into a metric the same
//! way in every plugin. The generated WIT bindings are private;
//! this crate re-exports exactly the types a plugin needs.
#![deny(missing_docs)]

pub mod backup_store;
pub mod checksum;
pub mod dump;
mod error;
pub mod kv;
pub mod log;
pub mod preview;
pub mod probe;
pub mod progress;
pub mod row;
pub mod sql;
pub mod values;

pub use error::ErrorExt;

/// WIT version this sdk was built against; stamped into every plugin.
pub const WIT_VERSION: &str = "0.1.0";

#[doc(hidden)]
pub mod __private {
    //! Used by [`export_plugin!`](crate::export_plugin); not part of the API.
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../wit",
            world: "plugin",
            pub_export_macro: true,
            export_macro_name: "__export_plugin",
            default_bindings_module: "::sluice_sdk::__private::bindings",
            additional_derives: [PartialEq],
        });
    }
    pub use crate::StepContext;
}

use __private::bindings::exports::sluice::plugin::describe as describe_types;
use __private::bindings::exports::sluice::plugin::preview as preview_types;
use __private::bindings::sluice::plugin::types;

pub use describe_types::{CapabilityNeed, PluginInfo};
pub use preview_types::StepPreview;
pub use types::{
    BackupManifest, ChangeKind, DatastoreError, Error, Metric, PhaseReached, TableState,
};

/// The step a phase call runs for: its id, target and params.
#[derive(Debug, Clone)]
pub struct StepContext {
    /// The step's id in the plan.
    pub step_id: String,
    /// Name of the step's target; pass it to [`sql::Connection::open`].
    pub target: String,
    /// Kind of the target datastore, for example `sqlite`.
    pub target_kind: String,
    params_json: String,
    wanted_metrics: Vec<String>,
}

impl StepContext {
    /// Parses the step's params into the plugin's own type; a mismatch becomes
    /// [`Error::InvalidParams`] naming the param.
    pub fn params<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_str(&self.params_json)
            .map_err(|e| Error::InvalidParams(format!("step `{}`: {e}", self.step_id)))
    }

    /// A context built by hand: for tests run natively, and for plugins that
    /// wrap another plugin's logic with adjusted params.
    pub fn new(step_id: &str, target: &str, target_kind: &str, params_json: &str) -> Self {
        StepContext {
            step_id: step_id.to_string(),
            target: target.to_string(),
            target_kind: target_kind.to_string(),
            params_json: params_json.to_string(),
            wanted_metrics: Vec::new(),
        }
    }

    /// Whether `validate` should measure the metric `name`: the host may ask
    /// for a subset (the `baseline.` metrics it measures before migrate,
    /// when what migrate creates does not exist yet). Skip the others.
    pub fn wants_metric(&self, name: &str) -> bool {
        self.wanted_metrics.is_empty() || self.wanted_metrics.iter().any(|m| m == name)
    }

    /// This context asking only for `metrics` (empty: every metric).
    pub fn wanting_metrics(mut self, metrics: Vec<String>) -> Self {
        self.wanted_metrics = metrics;
        self
    }

    /// Takes the string param `key` out of the params: returns its value and a
    /// context without it. For plugins that wrap another plugin's logic and
    /// read a param of their own.
    pub fn split_param(&self, key: &str) -> (Option<String>, StepContext) {
        let mut params: serde_json::Map<String, serde_json::Value> =
            self.params().unwrap_or_default();
        let value = params
            .remove(key)
            .and_then(|v| v.as_str().map(String::from));
        let rest = serde_json::Value::Object(params).to_string();
        (
            value,
            StepContext::new(&self.step_id, &self.target, &self.target_kind, &rest)
                .wanting_metrics(self.wanted_metrics.clone()),
        )
    }

    /// The params as raw JSON text.
    pub fn params_json(&self) -> &str {
        &self.params_json
    }

    #[doc(hidden)]
    pub fn from_wit(ctx: types::StepContext) -> Self {
        StepContext {
            step_id: ctx.step_id,
            target: ctx.target,
            target_kind: ctx.target_kind,
            params_json: ctx.params,
            wanted_metrics: ctx.metrics,
        }
    }
}

/// Describes the plugin: name, version, datastore kinds and needs.
pub trait Plugin {
    /// Name, version, kinds served and capabilities needed with reasons.
    fn describe() -> PluginInfo;
}

/// Before anything runs: what a step will do, read from its params alone.
///
/// The host calls this with no datastore, files or values granted (only
/// [`log`]), for every step, whenever it checks a plan: parse and check the
/// params here (an [`Error::InvalidParams`] becomes a plan error naming the
/// step), and list the metrics `validate` will report, so the host can
/// reject a threshold naming a metric that will never exist.
pub trait Preview {
    /// What the step will do. The default says the plugin cannot tell
    /// ([`Error::Unsupported`]): the host then shows the step without a
    /// preview and cannot check its thresholds' metric names, so override it.
    fn preview(_ctx: &StepContext) -> Result<StepPreview, Error> {
        Err(Error::Unsupported(
            "this plugin does not preview its steps".to_string(),
        ))
    }
}

/// Phase 1: save what the step will change.
pub trait Backup {
    /// Writes artifacts through [`backup_store`] and returns their manifest.
    fn backup(ctx: &StepContext) -> Result<BackupManifest, Error>;
}

/// Phase 2: make the change.
pub trait Migrate {
    /// Applies the step's change.
    fn migrate(ctx: &StepContext) -> Result<(), Error>;
}

/// Phase 3: measure the result without changing anything (the host gives this
/// phase read-only access).
pub trait Validate {
    /// Returns metrics for the step's thresholds. The default reports none.
    fn validate(_ctx: &StepContext) -> Result<Vec<Metric>, Error> {
        Ok(Vec::new())
    }
}

/// The way back: restore what the backup saved. Must be safe to call twice.
pub trait Rollback {
    /// Restores from `manifest` and returns the restored tables' state.
    /// `reached` is how far the step got before the rollback, as the host's
    /// journal knows it.
    fn rollback(
        ctx: &StepContext,
        manifest: &BackupManifest,
        reached: PhaseReached,
    ) -> Result<Vec<TableState>, Error>;
}

/// Exports a type implementing [`Plugin`], [`Preview`], [`Backup`],
/// [`Migrate`], [`Validate`] and [`Rollback`] as the plugin's component
/// exports.
#[macro_export]
macro_rules! export_plugin {
    ($ty:ident) => {
        const _: () = {
            use $crate::__private::bindings::exports::sluice::plugin as __exports;
            use $crate::__private::bindings::sluice::plugin::types as __types;

            // The sdk stamps the WIT version it was built against into the
            // component, so the host can refuse an incompatible plugin before
            // compiling it.
            #[unsafe(link_section = "sluice-wit-version")]
            #[used]
            static __SLUICE_WIT_VERSION: [u8; $crate::WIT_VERSION.len()] = {
                let s = $crate::WIT_VERSION.as_bytes();
                let mut out = [0u8; $crate::WIT_VERSION.len()];
                let mut i = 0;
                while i < s.len() {
                    out[i] = s[i];
                    i += 1;
                }
                out
            };

            impl __exports::describe::Guest for $ty {
                fn describe() -> __exports::describe::PluginInfo {
                    <$ty as $crate::Plugin>::describe()
                }
            }
            impl __exports::preview::Guest for $ty {
                fn preview(ctx: __types::StepContext) -> Result<__exports::preview::StepPreview, __types::Error> {
                    <$ty as $crate::Preview>::preview(&$crate::__private::StepContext::from_wit(ctx))
                }
            }
            impl __exports::backup::Guest for $ty {
                fn backup(ctx: __types::StepContext) -> Result<__types::BackupManifest, __types::Error> {
                    <$ty as $crate::Backup>::backup(&$crate::__private::StepContext::from_wit(ctx))
                }
            }
            impl __exports::migrate::Guest for $ty {
                fn migrate(ctx: __types::StepContext) -> Result<(), __types::Error> {
                    <$ty as $crate::Migrate>::migrate(&$crate::__private::StepContext::from_wit(ctx))
                }
            }
            impl __exports::validate::Guest for $ty {
                fn validate(ctx: __types::StepContext) -> Result<Vec<__types::Metric>, __types::Error> {
                    <$ty as $crate::Validate>::validate(&$crate::__private::StepContext::from_wit(ctx))
                }
            }
            impl __exports::rollback::Guest for $ty {
                fn rollback(
                    ctx: __types::StepContext,
                    manifest: __types::BackupManifest,
                    reached: __types::PhaseReached,
                ) -> Result<Vec<__types::TableState>, __types::Error> {
                    <$ty as $crate::Rollback>::rollback(
                        &$crate::__private::StepContext::from_wit(ctx),
                        &manifest,
                        reached,
                    )
                }
            }
            $crate::__private::bindings::__export_plugin!($ty with_types_in $crate::__private::bindings);
        };
    };
}
