//! sqitch itself, for the side-by-side test of the sqitch plugin: Debian's
//! `sqitch` package and its PostgreSQL driver, installed when missing.

use std::path::PathBuf;

use anyhow::{Context, Result};

/// Environment variable the side-by-side test reads sqitch's path from.
pub const SQITCH_ENV: &str = "SLUICE_SQITCH";

/// The `sqitch` program, installed first when missing.
pub fn ensure_sqitch() -> Result<PathBuf> {
    if let Some(found) = sqitch() {
        if has_pg_driver() {
            return Ok(found);
        }
    }
    // sqitch's pg engine reads its registry through DBD::Pg (a Recommends
    // that --no-install-recommends would skip) and runs scripts with psql.
    crate::services::apt_install(&["sqitch", "libdbd-pg-perl"])?;
    sqitch().context(
        "the Debian package `sqitch` is installed but no `sqitch` program is on the PATH or in /usr/bin",
    )
}

fn sqitch() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("sqitch"))
        .find(|p| p.is_file())
}

fn has_pg_driver() -> bool {
    std::process::Command::new("perl")
        .args(["-MDBD::Pg", "-e", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
