//! Compiled components cached on disk by content digest, so loading an
//! unchanged plugin a second time maps a file instead of compiling.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;

use wasmtime::component::Component;
use wasmtime::Engine;

/// Whether a load compiled or came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Found compiled on disk.
    Hit,
    /// Compiled now (and stored, when the cache is writable).
    Compiled,
}

/// The on-disk cache of compiled components.
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: Option<PathBuf>,
}

impl ComponentCache {
    /// A cache in `dir`; `None` disables caching.
    pub fn new(dir: Option<PathBuf>) -> Self {
        ComponentCache { dir }
    }

    /// The default location: `$SLUICE_CACHE_DIR`, else `$XDG_CACHE_HOME/sluice`,
    /// else `~/.cache/sluice`.
    pub fn default_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("SLUICE_CACHE_DIR") {
            return Some(PathBuf::from(dir));
        }
        if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
            return Some(PathBuf::from(dir).join("sluice"));
        }
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("sluice"))
    }

    fn path(&self, engine: &Engine, digest: &str) -> Option<PathBuf> {
        // The engine's compatibility hash changes with the wasmtime version and
        // every setting that affects compiled code.
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let dir = self.dir.as_ref()?;
        Some(dir.join(format!("{digest}-{:016x}.cwasm", h.finish())))
    }

    /// Loads the component with `digest` from the cache or compiles `bytes`.
    pub fn load(
        &self,
        engine: &Engine,
        digest: &str,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        let path = self.path(engine, digest);
        if let Some(path) = path.as_ref().filter(|p| p.is_file()) {
            // SAFETY: wasmtime requires that deserialized bytes come from
            // `Component::serialize` of a compatible engine. The cache holds
            // only files this function wrote (atomically, below) under a name
            // that includes the engine's compatibility hash; wasmtime also
            // checks the header and refuses an incompatible file.
            match unsafe { Component::deserialize_file(engine, path) } {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "ignoring unusable cached component: {e}")
                }
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Some(path) = path {
            if let Err(e) = store(&component, &path) {
                tracing::warn!(path = %path.display(), "cannot cache the compiled component: {e}");
            }
        }
        Ok((component, CacheOutcome::Compiled))
    }
}

fn store(component: &Component, path: &PathBuf) -> anyhow::Result<()> {
    let dir = path.parent().expect("cache files live in a directory");
    std::fs::create_dir_all(dir)?;
    let bytes = component.serialize().map_err(|e| anyhow::anyhow!("{e}"))?;
    let tmp = dir.join(format!(".{}.tmp", uuid::Uuid::new_v4()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
