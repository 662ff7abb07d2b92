//! Rehearsal copies of a Redis target: an empty database number on the same
//! instance (the highest one `INFO keyspace` does not list), filled with
//! `DUMP`/`RESTORE … ABSTTL` of the keys under the plan's prefixes, so
//! absolute expiries are kept.

use std::collections::BTreeSet;

use futures_util::future::BoxFuture;

use super::{RedisSession, CONNECT_TIMEOUT};
use crate::datastores::urls::{scrub, with_path};
use crate::datastores::{CopyError, DatastoreError, Endpoint, RehearsalCopy};
use crate::secret::Secret;

/// Keys dumped and restored per pipeline while copying a Redis database.
const REDIS_COPY_BATCH: usize = 1000;

/// A scratch database number on the target's Redis instance.
#[derive(Debug)]
struct RedisCopy {
    /// Its URL (the target's credentials).
    url: Secret,
    /// Keys copied.
    keys: u64,
}

impl RehearsalCopy for RedisCopy {
    fn endpoint(&self) -> Endpoint {
        Endpoint::Url(self.url.clone())
    }

    fn describe(&self) -> String {
        format!(
            "Redis database {} ({} keys, DUMP/RESTORE ABSTTL)",
            self.url.redacted_url(),
            self.keys
        )
    }

    fn remove(&self) -> BoxFuture<'_, Result<(), DatastoreError>> {
        Box::pin(async move {
            let mut conn = admin_connect(&self.url).await?;
            redis::cmd("FLUSHDB")
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| admin_error(&self.url, e))
        })
    }
}

/// A plain connection for the host's own administrative commands.
pub(super) async fn admin_connect(
    url: &Secret,
) -> Result<redis::aio::MultiplexedConnection, DatastoreError> {
    let client = redis::Client::open(url.expose()).map_err(|e| admin_error(url, e))?;
    tokio::time::timeout(
        CONNECT_TIMEOUT * 2,
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| {
        DatastoreError::host(
            "REDIS_TIMEOUT",
            format!("{}: no answer", url.redacted_url()),
        )
    })?
    .map_err(|e| admin_error(url, e))
}

/// An error of an administrative command, naming the redacted URL.
pub(super) fn admin_error(url: &Secret, e: redis::RedisError) -> DatastoreError {
    DatastoreError::host(
        "REDIS",
        format!("{}: {}", url.redacted_url(), scrub(&e.to_string(), url)),
    )
}

/// The database number in a Redis URL's path (0 when absent).
fn redis_db(url: &str) -> u64 {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    rest.split_once('/')
        .and_then(|(_, db)| db.trim_matches('/').parse().ok())
        .unwrap_or(0)
}

/// Database numbers `INFO keyspace` lists (the ones holding keys).
fn used_databases(info: &str) -> BTreeSet<u64> {
    info.lines()
        .filter_map(|l| l.strip_prefix("db")?.split_once(':')?.0.parse().ok())
        .collect()
}

/// Copies the keys under `prefixes` (every key when `None`) into an empty
/// database number; `label` names the copy in errors.
pub(super) async fn copy(
    url: &Secret,
    prefixes: Option<&BTreeSet<String>>,
    label: &str,
) -> Result<Box<dyn RehearsalCopy>, CopyError> {
    let fail = |reason: String| CopyError {
        target: format!("{} ({label})", url.redacted_url()),
        reason,
    };
    let source_db = redis_db(url.expose());
    let mut admin = admin_connect(url).await.map_err(|e| fail(e.to_string()))?;
    let config: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("databases")
        .query_async(&mut admin)
        .await
        .map_err(|e| {
            fail(format!(
                "CONFIG GET databases: {} (a rehearsal needs to know the instance's database count)",
                admin_error(url, e)
            ))
        })?;
    let databases: u64 = config
        .get(1)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| fail(format!("CONFIG GET databases answered {config:?}")))?;
    let info: String = redis::cmd("INFO")
        .arg("keyspace")
        .query_async(&mut admin)
        .await
        .map_err(|e| fail(admin_error(url, e).to_string()))?;
    let used = used_databases(&info);
    // From the top: low numbers are the ones applications and tests take.
    let db = (0..databases)
        .rev()
        .find(|n| *n != source_db && !used.contains(n))
        .ok_or_else(|| {
            fail(format!(
                "every one of the instance's {databases} databases holds keys: there is no empty \
                 database to rehearse in (raise `databases` in redis.conf)"
            ))
        })?;
    let scratch = Secret::new(with_path(url.expose(), &db.to_string()));
    let source = RedisSession::connect(url)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let dest = RedisSession::connect(&scratch)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let prefixes: Vec<String> = match prefixes {
        Some(p) => p.iter().cloned().collect(),
        None => vec![String::new()],
    };
    let mut keys = BTreeSet::new();
    for prefix in &prefixes {
        keys.extend(
            source
                .keys_under(prefix)
                .await
                .map_err(|e| fail(e.to_string()))?,
        );
    }
    let keys: Vec<String> = keys.into_iter().collect();
    let mut copied = 0u64;
    for batch in keys.chunks(REDIS_COPY_BATCH) {
        let dumped = source.dump(batch).await.map_err(|e| fail(e.to_string()))?;
        copied += dumped.len() as u64;
        dest.restore(&dumped)
            .await
            .map_err(|e| fail(e.to_string()))?;
    }
    let copy = RedisCopy {
        url: scratch.clone(),
        keys: copied,
    };
    // Someone else writing into the database we picked would mix their keys
    // into the rehearsal: count what is there.
    let mut conn = admin_connect(&scratch)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let size: u64 = redis::cmd("DBSIZE")
        .query_async(&mut conn)
        .await
        .map_err(|e| fail(admin_error(&scratch, e).to_string()))?;
    if size > copied {
        let _ = copy.remove().await;
        return Err(fail(format!(
            "database {db} holds {size} keys after copying {copied}: something else uses it"
        )));
    }
    Ok(Box::new(copy))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_database() {
        assert_eq!(redis_db("redis://:pw@127.0.0.1:6379/12"), 12);
        assert_eq!(redis_db("redis://127.0.0.1:6379"), 0);
    }

    #[test]
    fn the_keyspace_section_names_the_used_databases() {
        let info =
            "# Keyspace\r\ndb0:keys=3,expires=0,avg_ttl=0\r\ndb17:keys=1,expires=1,avg_ttl=5\r\n";
        assert_eq!(used_databases(info), BTreeSet::from([0, 17]));
    }
}
