//! A plan's plugins, loaded (compiled or taken from the cache) once.

use std::collections::BTreeMap;

use super::{LoadError, LoadedPlugin, Runtime};
use crate::plan::Plan;

/// Every plugin a plan names, loaded by one [`Runtime`], by plan name.
pub struct PluginSet {
    plugins: BTreeMap<String, LoadedPlugin>,
}

impl PluginSet {
    /// Loads every plugin of `plan`, in name order; the first that cannot
    /// be loaded is the error.
    pub async fn load(runtime: &Runtime, plan: &Plan) -> Result<Self, LoadError> {
        let mut plugins = BTreeMap::new();
        for (name, plugin) in &plan.plugins {
            let loaded = runtime.load(plugin).await?;
            tracing::debug!(plugin = %name, version = %loaded.info.version, cache = ?loaded.cache, "plugin loaded");
            plugins.insert(name.clone(), loaded);
        }
        Ok(Self { plugins })
    }

    /// The loaded plugin the plan names `name`.
    pub fn get(&self, name: &str) -> Option<&LoadedPlugin> {
        self.plugins.get(name)
    }

    /// The plugins by plan name.
    pub fn as_map(&self) -> &BTreeMap<String, LoadedPlugin> {
        &self.plugins
    }

    /// The plugins by plan name, owned.
    pub fn into_map(self) -> BTreeMap<String, LoadedPlugin> {
        self.plugins
    }
}

impl std::ops::Index<&str> for PluginSet {
    type Output = LoadedPlugin;

    fn index(&self, name: &str) -> &LoadedPlugin {
        &self.plugins[name]
    }
}
