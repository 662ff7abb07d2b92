//! Facts read from a component's bytes before it is compiled: its imports,
//! exports and the WIT version the sdk stamped into it.

use sha2::{Digest, Sha256};
use wasmparser::{Parser, Payload};

/// WIT package versions this host runs: `sluice:plugin` 0.1.x.
pub const SUPPORTED_WIT: &str = "0.1";

/// Name of the custom section the sdk writes the WIT version into.
pub const WIT_STAMP_SECTION: &str = "sluice-wit-version";

/// What a component file says about itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ComponentFacts {
    /// sha256 of the file (hex).
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// WIT version stamped by the sdk, if any.
    pub wit_version: Option<String>,
    /// Imported interfaces, as named in the component.
    pub imports: Vec<String>,
    /// Exported interfaces.
    pub exports: Vec<String>,
}

/// Why a file is not a runnable plugin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FactsError {
    /// Not a WebAssembly component.
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    /// Built against a WIT version this host does not run.
    #[error(
        "built against sluice:plugin {found}; this host supports sluice:plugin {SUPPORTED_WIT}.x — rebuild the plugin with a matching sluice-sdk or use a matching sluice"
    )]
    IncompatibleWit {
        /// The stamped version.
        found: String,
    },
}

impl ComponentFacts {
    /// Reads the facts of a component.
    pub fn read(bytes: &[u8]) -> Result<Self, FactsError> {
        if !wasmparser::Parser::is_component(bytes) {
            return Err(FactsError::NotAComponent(
                "the file does not start with a component header (a core module or not wasm at all)".into(),
            ));
        }
        let mut facts = ComponentFacts {
            sha256: hex::encode(Sha256::digest(bytes)),
            size: bytes.len() as u64,
            wit_version: None,
            imports: Vec::new(),
            exports: Vec::new(),
        };
        // parse_all walks nested modules and components inline; only the
        // outermost component's imports and exports are the plugin's.
        let mut depth = 0usize;
        for payload in Parser::new(0).parse_all(bytes) {
            let payload = payload.map_err(|e| FactsError::NotAComponent(e.to_string()))?;
            match payload {
                Payload::Version { .. } => depth += 1,
                Payload::End(_) => depth = depth.saturating_sub(1),
                Payload::ComponentImportSection(section) if depth == 1 => {
                    for import in section {
                        let import =
                            import.map_err(|e| FactsError::NotAComponent(e.to_string()))?;
                        facts.imports.push(import.name.name.to_string());
                    }
                }
                Payload::ComponentExportSection(section) if depth == 1 => {
                    for export in section {
                        let export =
                            export.map_err(|e| FactsError::NotAComponent(e.to_string()))?;
                        facts.exports.push(export.name.name.to_string());
                    }
                }
                Payload::CustomSection(section) if section.name() == WIT_STAMP_SECTION => {
                    facts.wit_version =
                        Some(String::from_utf8_lossy(section.data()).trim().to_string());
                }
                _ => {}
            }
        }
        Ok(facts)
    }

    /// The WIT version this component was built against: the sdk's stamp,
    /// else the version in its `sluice:plugin/…@x.y.z` import or export names.
    pub fn wit_version(&self) -> Option<String> {
        self.wit_version.clone().or_else(|| {
            self.imports.iter().chain(&self.exports).find_map(|name| {
                name.strip_prefix("sluice:plugin/")?
                    .split_once('@')
                    .map(|(_, v)| v.to_string())
            })
        })
    }

    /// Refuses a component built against an unsupported WIT version.
    pub fn check_wit(&self) -> Result<(), FactsError> {
        match self.wit_version() {
            Some(v) if compatible(&v) => Ok(()),
            Some(found) => Err(FactsError::IncompatibleWit { found }),
            None => Err(FactsError::NotAComponent(
                "it neither carries a sluice WIT stamp nor exports sluice:plugin interfaces".into(),
            )),
        }
    }
}

/// 0.x versions are compatible within the same minor (semver for 0.x).
fn compatible(version: &str) -> bool {
    version == SUPPORTED_WIT || version.starts_with(&format!("{SUPPORTED_WIT}."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wit_versions_are_compatible_within_the_minor() {
        for (v, want) in [
            ("0.1.0", true),
            ("0.1.7", true),
            ("0.1", true),
            ("0.2.0", false),
            ("1.0.0", false),
            ("0.10.0", false),
        ] {
            assert_eq!(compatible(v), want, "{v}");
        }
    }

    #[test]
    fn a_core_module_is_not_a_component() {
        let core = b"\0asm\x01\0\0\0";
        assert!(matches!(
            ComponentFacts::read(core),
            Err(FactsError::NotAComponent(_))
        ));
    }
}
