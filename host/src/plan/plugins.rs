//! Step four of loading: the plugins a plan uses (`[plugins]`), each
//! component file read and digested now, and checked against its pin.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use toml::Spanned;

use super::read::{PluginFile, Source};
use super::PlanError;

/// A plugin the plan uses, read and digested.
#[derive(Debug, Clone)]
pub struct PluginRef {
    /// Name in the plan.
    pub name: String,
    /// Component file (absolute).
    pub path: PathBuf,
    /// sha256 of the file (hex).
    pub digest: String,
    /// The component bytes.
    pub bytes: Arc<[u8]>,
}

impl PluginRef {
    /// Reads a component file outside a plan (for `sluice inspect`).
    pub fn read(name: &str, path: &Path) -> std::io::Result<PluginRef> {
        let bytes: Arc<[u8]> = std::fs::read(path)?.into();
        Ok(PluginRef {
            name: name.to_string(),
            path: std::path::absolute(path)?,
            digest: hex::encode(Sha256::digest(&bytes)),
            bytes,
        })
    }
}

/// The plan's `[plugins]`, by name, each file read and its digest checked
/// against `sha256` when the plan pins one.
pub(super) fn load(
    src: &Source<'_>,
    dir: &Path,
    plugins: &BTreeMap<String, Spanned<PluginFile>>,
) -> Result<BTreeMap<String, PluginRef>, PlanError> {
    let mut loaded = BTreeMap::new();
    for (name, plugin) in plugins {
        src.check_name(name, plugin.span().start, "plugin")?;
        let p = plugin.get_ref();
        let plugin_path = dir.join(p.path.get_ref());
        let bytes: Arc<[u8]> = std::fs::read(&plugin_path)
            .map_err(|e| {
                src.error(
                    p.path.span().start,
                    format!(
                        "plugin `{name}`: cannot read {}: {e}",
                        plugin_path.display()
                    ),
                )
            })?
            .into();
        let digest = hex::encode(Sha256::digest(&bytes));
        if let Some(pinned) = &p.sha256 {
            let want = pinned.get_ref().trim().to_ascii_lowercase();
            if want != digest {
                return Err(src.error(
                    pinned.span().start,
                    format!(
                        "plugin `{name}`: {} has sha256 {digest}, but the plan pins {want}",
                        plugin_path.display()
                    ),
                ));
            }
        }
        loaded.insert(
            name.clone(),
            PluginRef {
                name: name.clone(),
                path: plugin_path,
                digest,
                bytes,
            },
        );
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use crate::plan::test_plan::*;

    #[test]
    fn a_plugin_name_must_be_plain() {
        assert_eq!(
            refused(&STEP.replace("[plugins.p]", "[plugins.\"p!\"]")),
            "5:1: plugin `p!` must be 1–64 characters of letters, digits, `-` and `_`"
        );
    }

    #[test]
    fn a_missing_plugin_file_is_named() {
        assert_eq!(
            refused(&STEP.replace("p.wasm", "nope.wasm")),
            "6:8: plugin `p`: cannot read <dir>/nope.wasm: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn a_wrong_pin_shows_the_actual_digest() {
        assert_eq!(
            refused(&STEP.replace("path = \"p.wasm\"", "path = \"p.wasm\"\nsha256 = \"00\"")),
            "7:10: plugin `p`: <dir>/p.wasm has sha256 5af342e3312a2ac2db97ed299e06beba2a01b845f66153f90f1bedb178beaacd, but the plan pins 00"
        );
    }

    #[test]
    fn a_pin_matches_in_any_case_and_spacing() {
        let digest = hex::encode(Sha256::digest(PLUGIN));
        let plan = loads(&STEP.replace(
            "path = \"p.wasm\"",
            &format!(
                "path = \"p.wasm\"\nsha256 = \" {} \"",
                digest.to_uppercase()
            ),
        ));
        assert_eq!(plan.plugins["p"].digest, digest);
        assert_eq!(&*plan.plugins["p"].bytes, PLUGIN);
    }
}
