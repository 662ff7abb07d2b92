//! The headless browser the HTML report test renders in: Debian's
//! `chromium`, installed with `apt-get` when it is not on the PATH, like the
//! PostgreSQL and Redis servers in `services.rs`.

use std::path::PathBuf;

use anyhow::{Context, Result};

/// The environment variable that hands the browser's path to the tests.
pub const CHROMIUM_ENV: &str = "SLUICE_CHROMIUM";

/// Finds `chromium`, installing Debian's package (and a font, so a bare
/// machine renders text rather than empty boxes) when it is missing; returns
/// its path.
pub fn ensure_chromium() -> Result<PathBuf> {
    if let Some(found) = chromium() {
        return Ok(found);
    }
    crate::services::apt_install(&["chromium", "fonts-dejavu-core"])?;
    chromium().context(
        "the Debian package `chromium` is installed but no `chromium` program is on the PATH \
         or in /usr/bin",
    )
}

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("chromium"))
        .find(|p| p.is_file())
}
