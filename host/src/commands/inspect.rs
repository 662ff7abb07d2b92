//! `sluice inspect`: what a plugin is and what it can reach, before it runs.

use std::path::Path;

use crate::exit;

use super::CommandError;

/// Loads the component at `path` and describes it, as text or JSON.
pub async fn run(path: &Path, json: bool) -> Result<i32, CommandError> {
    let plugin = crate::plan::PluginRef::read("plugin", path).map_err(CommandError::usage)?;
    let runtime = super::runtime()?;
    let loaded = runtime.load(&plugin).await.map_err(CommandError::usage)?;
    let inspection = crate::audit::inspect(path, &loaded);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&inspection).expect("serializes")
        );
    } else {
        print!("{}", crate::audit::inspection_text(&inspection));
    }
    Ok(exit::OK)
}
