//! sqitch itself, for the side-by-side tests of the sqitch plugin: Debian's
//! `sqitch` package with its PostgreSQL and SQLite drivers and the `sqlite3`
//! CLI, installed when missing.

use std::path::PathBuf;

use anyhow::{Context, Result};

/// Environment variable the side-by-side test reads sqitch's path from.
pub const SQITCH_ENV: &str = "SLUICE_SQITCH";

/// The `sqitch` program, installed first when missing.
pub fn ensure_sqitch() -> Result<PathBuf> {
    if let Some(found) = sqitch() {
        if has_perl_module("DBD::Pg") && has_perl_module("DBD::SQLite") && has_sqlite3_cli() {
            return Ok(found);
        }
    }
    // sqitch's pg engine reads its registry through DBD::Pg and runs scripts
    // with psql; its sqlite engine reads through DBD::SQLite and runs scripts
    // with the sqlite3 CLI. The drivers are Recommends that
    // --no-install-recommends would skip.
    crate::services::apt_install(&["sqitch", "libdbd-pg-perl", "libdbd-sqlite3-perl", "sqlite3"])?;
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

fn has_perl_module(module: &str) -> bool {
    std::process::Command::new("perl")
        .arg(format!("-M{module}"))
        .args(["-e", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn has_sqlite3_cli() -> bool {
    std::process::Command::new("sqlite3")
        .arg("-version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
