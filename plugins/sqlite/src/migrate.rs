//! Migrate: the step's SQL, in one transaction.

use sluice_sdk::sql::Connection;
use sluice_sdk::{log, Error, StepContext};

use crate::{Params, SqlitePlugin};

impl sluice_sdk::Migrate for SqlitePlugin {
    fn migrate(ctx: &StepContext) -> Result<(), Error> {
        let params = Params::of(ctx)?;
        let script = params
            .migrate
            .ok_or_else(|| Error::InvalidParams("`migrate` (the SQL to run) is missing".into()))?;
        let conn = Connection::open(&ctx.target)?;
        // SQLite DDL is transactional: a failing statement leaves nothing behind.
        conn.transaction(|conn| conn.execute_script(&script))?;
        log::info("migration applied", &[("bytes", &script.len().to_string())]);
        Ok(())
    }
}
