//! Conformance scratch databases: the database the URL names is the
//! scratch; with a fixture it is emptied and the fixture loaded again before
//! every check sequence, without one the sequences rely on the plugin's
//! rollback to leave it as found.

use futures_util::future::BoxFuture;

use super::copy::{admin_connect, admin_error};
use crate::datastores::{Endpoint, ScratchSource, ScratchTarget};
use crate::secret::Secret;

/// Drops every schema of the scratch database (the fixture recreates what
/// it needs) and gives back an empty `public`.
const PG_EMPTY: &str = "
DO $$
DECLARE s text;
BEGIN
  FOR s IN SELECT nspname FROM pg_namespace
            WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
              AND nspname NOT LIKE 'pg\\_temp\\_%' AND nspname NOT LIKE 'pg\\_toast\\_temp\\_%'
  LOOP
    EXECUTE format('DROP SCHEMA %I CASCADE', s);
  END LOOP;
END $$;
CREATE SCHEMA public;
";

/// A scratch PostgreSQL database and its fixture.
struct PostgresScratch {
    url: Secret,
    fixture: Option<String>,
}

/// Prepares the database `source` names: loads the fixture once.
pub(super) async fn prepare(
    source: ScratchSource,
    fixture: Option<String>,
) -> Result<Box<dyn ScratchTarget>, String> {
    let ScratchSource::Server(url) = source else {
        return Err("a PostgreSQL scratch target is a server URL".into());
    };
    let scratch = PostgresScratch { url, fixture };
    scratch.reset().await?;
    Ok(Box::new(scratch))
}

impl PostgresScratch {
    /// Empties the database and loads the fixture (nothing without a
    /// fixture: the database as found is the starting state).
    async fn reset(&self) -> Result<(), String> {
        let Some(fixture) = &self.fixture else {
            return Ok(());
        };
        let url = &self.url;
        let client = admin_connect(url).await.map_err(|e| e.to_string())?;
        client
            .batch_execute(PG_EMPTY)
            .await
            .map_err(|e| format!("emptying the scratch database: {}", admin_error(url, e)))?;
        client
            .batch_execute(fixture)
            .await
            .map_err(|e| format!("fixture (SQL on PostgreSQL): {}", admin_error(url, e)))
    }
}

impl ScratchTarget for PostgresScratch {
    fn fresh(&self, n: usize) -> BoxFuture<'_, Result<Endpoint, String>> {
        Box::pin(async move {
            if n > 0 {
                self.reset().await?;
            }
            Ok(Endpoint::Url(self.url.clone()))
        })
    }
}
