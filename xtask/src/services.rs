//! Services the tests need, started on loopback by the project itself.
//!
//! The SQLite suite needs none; PostgreSQL and Redis join here when tests use
//! them.

use std::path::Path;

use anyhow::Result;

/// Running services; stopped when dropped.
pub struct Services;

/// Starts every service the test suite needs.
pub fn start(_root: &Path) -> Result<Services> {
    Ok(Services)
}
