//! Redis: connections (tokio, multiplexed), the primitives the `kv`
//! capability serves, and the host's own fingerprint of key prefixes.
//!
//! Dumps and restores are pipelined: one round trip for a whole batch of
//! keys. Expiries travel as absolute Unix milliseconds (`PEXPIRETIME`,
//! `RESTORE … ABSTTL`) so a restore puts back exactly the deadline the key
//! had, however long the step took. Error messages never contain the URL,
//! which may carry a password: only [`Secret::redacted_url`] is shown.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError};
use sluice_sdk::checksum::TableChecksum;

use crate::datastores::{DatastoreError, Fingerprint, TableFingerprint};
use crate::secret::Secret;

mod copy;
mod driver;
mod kv;
mod scratch;

pub use self::driver::Redis;

/// How long connecting may take before the call fails (an unreachable
/// server must not hold a phase until its deadline).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one command or pipeline may wait for its reply.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Keys per `SCAN` page when the host walks a prefix itself.
const FINGERPRINT_SCAN_COUNT: usize = 1000;
/// Keys per pipelined `DUMP` while fingerprinting.
const FINGERPRINT_BATCH: usize = 1000;

/// Redis has no schema; every Redis fingerprint carries this constant.
pub const SCHEMA: &str = "redis: no schema";

pub use crate::datastores::DumpedKey;

/// One connection to a Redis database.
#[derive(Clone)]
pub struct RedisSession {
    conn: MultiplexedConnection,
    /// Where it is connected, without credentials (for messages).
    location: String,
}

impl RedisSession {
    /// Connects within [`CONNECT_TIMEOUT`].
    pub async fn connect(url: &Secret) -> Result<Self, DatastoreError> {
        let location = url.redacted_url();
        let client = redis::Client::open(url.expose()).map_err(|e| {
            DatastoreError::host(
                "REDIS_URL",
                format!("`{location}` is not a usable Redis URL: {}", scrub(&e, url)),
            )
        })?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let connecting = client.get_multiplexed_async_connection_with_config(&config);
        // The driver's own timeout covers the TCP connect; this one also
        // covers a server that accepts but never answers the handshake.
        let conn = match tokio::time::timeout(CONNECT_TIMEOUT * 2, connecting).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                return Err(DatastoreError {
                    code: code(&e),
                    message: format!("cannot connect to {location}: {}", scrub(&e, url)),
                })
            }
            Err(_) => {
                return Err(DatastoreError::host(
                    "REDIS_TIMEOUT",
                    format!(
                        "cannot connect to {location}: no answer within {}s",
                        (CONNECT_TIMEOUT * 2).as_secs()
                    ),
                ))
            }
        };
        Ok(RedisSession { conn, location })
    }

    fn fail(&self, e: RedisError) -> DatastoreError {
        DatastoreError {
            code: code(&e),
            // The URL never reaches a command error; the location is redacted.
            message: format!("{} ({})", e, self.location),
        }
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, DatastoreError> {
        let mut conn = self.conn.clone();
        cmd.query_async(&mut conn).await.map_err(|e| self.fail(e))
    }

    async fn run_pipe<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, DatastoreError> {
        let mut conn = self.conn.clone();
        pipe.query_async(&mut conn).await.map_err(|e| self.fail(e))
    }

    /// `GET`.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, DatastoreError> {
        self.run(redis::cmd("GET").arg(key)).await
    }

    /// `SET`, with `PX` when a time-to-live is given.
    pub async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl_ms: Option<u64>,
    ) -> Result<(), DatastoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        if let Some(ttl) = ttl_ms {
            cmd.arg("PX").arg(ttl.max(1));
        }
        self.run::<()>(&cmd).await
    }

    /// `DEL`; returns how many keys existed.
    pub async fn delete(&self, keys: &[String]) -> Result<u64, DatastoreError> {
        if keys.is_empty() {
            return Ok(0);
        }
        self.run(redis::cmd("DEL").arg(keys)).await
    }

    /// `EXISTS` per key, pipelined.
    pub async fn exists(&self, keys: &[String]) -> Result<Vec<bool>, DatastoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("EXISTS").arg(key);
        }
        self.run_pipe(&pipe).await
    }

    /// One `SCAN` page of keys starting with `prefix`.
    pub async fn scan(
        &self,
        prefix: &str,
        cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<String>), DatastoreError> {
        let (next, keys): (u64, Vec<Vec<u8>>) = self
            .run(
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(match_pattern(prefix))
                    .arg("COUNT")
                    .arg(count),
            )
            .await?;
        let keys = keys
            .into_iter()
            .map(|k| {
                String::from_utf8(k).map_err(|k| {
                    DatastoreError::host(
                        "SLUICE_KEY_NOT_UTF8",
                        format!(
                            "a key under `{prefix}` is not UTF-8 ({:?}); sluice handles UTF-8 keys only",
                            String::from_utf8_lossy(k.as_bytes())
                        ),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok((next, keys))
    }

    /// Remaining time-to-live (`PTTL`); `None` when the key persists or
    /// does not exist.
    pub async fn ttl_ms(&self, key: &str) -> Result<Option<u64>, DatastoreError> {
        let ttl: i64 = self.run(redis::cmd("PTTL").arg(key)).await?;
        Ok(u64::try_from(ttl).ok())
    }

    /// `DUMP` and `PEXPIRETIME` of every key, in one pipeline; keys that do
    /// not exist are left out.
    pub async fn dump(&self, keys: &[String]) -> Result<Vec<DumpedKey>, DatastoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("DUMP").arg(key).cmd("PEXPIRETIME").arg(key);
        }
        let replies: Vec<(Option<Vec<u8>>, i64)> = self.run_pipe(&pipe).await?;
        Ok(keys
            .iter()
            .zip(replies)
            .filter_map(|(key, (payload, expiry))| {
                payload.map(|payload| DumpedKey {
                    key: key.clone(),
                    payload,
                    // -1: no expiry; -2: the key vanished between the two
                    // commands of the pipeline (it expired), kept as persisting
                    // only if DUMP saw it, which it did.
                    expire_at_ms: u64::try_from(expiry).ok(),
                })
            })
            .collect())
    }

    /// `RESTORE key ttl payload REPLACE [ABSTTL]` per entry, in one pipeline.
    /// An entry whose absolute expiry has already passed is not created
    /// (Redis's own rule for `ABSTTL` in the past), so it is deleted instead.
    pub async fn restore(&self, entries: &[DumpedKey]) -> Result<(), DatastoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for e in entries {
            let cmd = pipe.cmd("RESTORE").arg(&e.key);
            match e.expire_at_ms {
                Some(at) => cmd.arg(at).arg(&e.payload).arg("REPLACE").arg("ABSTTL"),
                None => cmd.arg(0).arg(&e.payload).arg("REPLACE"),
            };
            pipe.ignore();
        }
        self.run_pipe::<()>(&pipe).await
    }

    /// `RENAME`.
    pub async fn rename(&self, source: &str, destination: &str) -> Result<(), DatastoreError> {
        self.run::<()>(redis::cmd("RENAME").arg(source).arg(destination))
            .await
    }

    /// `SET` per entry, pipelined.
    pub async fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), DatastoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (key, value) in entries {
            pipe.cmd("SET").arg(key).arg(value).ignore();
        }
        self.run_pipe::<()>(&pipe).await
    }

    /// `GET` per key, pipelined; `None` where a key is missing or is not a
    /// string (`WRONGTYPE`).
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, DatastoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("GET").arg(key);
        }
        pipe.ignore_errors();
        let replies: Vec<redis::RedisResult<Option<Vec<u8>>>> = self.run_pipe(&pipe).await?;
        Ok(replies.into_iter().map(|r| r.ok().flatten()).collect())
    }

    /// Every key under `prefix`, each once (`SCAN` may repeat keys).
    pub async fn keys_under(&self, prefix: &str) -> Result<BTreeSet<String>, DatastoreError> {
        let mut keys = BTreeSet::new();
        let mut cursor = 0;
        loop {
            let (next, page) = self.scan(prefix, cursor, FINGERPRINT_SCAN_COUNT).await?;
            keys.extend(page);
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }
}

/// The host's own view of key prefixes: per prefix, the number of keys and
/// the checksum of (key, logical value, absolute expiry) —
/// [`sluice_sdk::kv::add_key`], the same formula a plugin's backup manifest
/// reports. `schema` is the constant [`SCHEMA`].
pub async fn fingerprint(url: &Secret, prefixes: &[String]) -> Result<Fingerprint, DatastoreError> {
    let session = RedisSession::connect(url).await?;
    let mut tables = BTreeMap::new();
    for prefix in prefixes {
        let keys: Vec<String> = session.keys_under(prefix).await?.into_iter().collect();
        let mut checksum = TableChecksum::new();
        for batch in keys.chunks(FINGERPRINT_BATCH) {
            for d in session.dump(batch).await? {
                sluice_sdk::kv::add_key(&mut checksum, &d.key, &d.payload, d.expire_at_ms)
                    .map_err(|e| DatastoreError::host("SLUICE_DUMP_PAYLOAD", e.to_string()))?;
            }
        }
        tables.insert(
            prefix.clone(),
            TableFingerprint {
                rows: checksum.rows(),
                checksum: checksum.hex(),
            },
        );
    }
    Ok(Fingerprint {
        schema: SCHEMA.to_string(),
        objects: BTreeMap::new(),
        tables,
        sequences: BTreeMap::new(),
    })
}

/// A `MATCH` pattern for keys starting with `prefix`: glob metacharacters in
/// the prefix are escaped, so `a*` matches keys starting with `a*` only.
pub fn match_pattern(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 2);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('*');
    out
}

/// The driver's code: the server's error code (`WRONGTYPE`, `ERR`, …) or
/// the kind of client failure.
fn code(e: &RedisError) -> String {
    match e.code() {
        Some(code) => code.to_string(),
        None if e.is_timeout() => "REDIS_TIMEOUT".into(),
        None if e.is_io_error() => "REDIS_IO".into(),
        None => format!("REDIS_{:?}", e.kind()).to_uppercase(),
    }
}

/// A driver message with the URL (and so any password) removed, in case a
/// driver ever echoes it.
fn scrub(e: &RedisError, url: &Secret) -> String {
    e.to_string().replace(url.expose(), &url.redacted_url())
}

/// Keys whose `MEMORY USAGE` a backup estimate measures; beyond them the
/// average so far stands for the rest, so a huge keyspace costs one `SCAN`.
const ESTIMATE_SAMPLE_KEYS: usize = 10_000;

/// Estimates, read-only, the bytes a backup of the keys under `prefixes`
/// (every key when empty) will hold: `MEMORY USAGE` of each key, pipelined,
/// over at most [`ESTIMATE_SAMPLE_KEYS`] keys and extrapolated to the rest.
pub async fn estimate_backup(url: &Secret, prefixes: &[String]) -> Result<u64, DatastoreError> {
    let session = RedisSession::connect(url).await?;
    let every_key = [String::new()];
    let prefixes = if prefixes.is_empty() {
        &every_key[..]
    } else {
        prefixes
    };
    let mut keys = BTreeSet::new();
    for prefix in prefixes {
        keys.extend(session.keys_under(prefix).await?);
    }
    let sample: Vec<&String> = keys.iter().take(ESTIMATE_SAMPLE_KEYS).collect();
    let mut measured: u64 = 0;
    for batch in sample.chunks(FINGERPRINT_BATCH) {
        let mut pipe = redis::pipe();
        for key in batch {
            pipe.cmd("MEMORY").arg("USAGE").arg(key.as_str());
        }
        // A key deleted between SCAN and MEMORY USAGE answers nil.
        let sizes: Vec<Option<u64>> = session.run_pipe(&pipe).await?;
        measured = measured.saturating_add(sizes.into_iter().flatten().sum::<u64>());
    }
    if sample.is_empty() || keys.len() == sample.len() {
        return Ok(measured);
    }
    Ok(measured / sample.len() as u64 * keys.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_escaped_in_match_patterns() {
        let cases = [
            ("flags:", "flags:*"),
            ("a*b", "a\\*b*"),
            ("q?[x]", "q\\?\\[x\\]*"),
            ("back\\slash", "back\\\\slash*"),
            ("", "*"),
        ];
        for (prefix, want) in cases {
            assert_eq!(match_pattern(prefix), want, "{prefix}");
        }
    }

    /// A fresh Redis database for one test, from SLUICE_TEST_REDIS_URL; the
    /// test is skipped (with a note) when no Redis is configured. Numbers
    /// come from the counter the e2e harness uses (`sluice_e2e::services`),
    /// so concurrent tests never share a database.
    async fn scratch() -> Option<(Secret, RedisSession)> {
        let Ok(base) = std::env::var("SLUICE_TEST_REDIS_URL") else {
            eprintln!("SLUICE_TEST_REDIS_URL is not set: skipping a Redis test");
            return None;
        };
        let base = base.trim_end_matches('/');
        let admin = RedisSession::connect(&Secret::new(format!("{base}/0")))
            .await
            .expect("connecting to the test Redis");
        let config: Vec<String> = admin
            .run(redis::cmd("CONFIG").arg("GET").arg("databases"))
            .await
            .unwrap();
        let databases: u64 = config[1].parse().unwrap();
        let next: u64 = admin
            .run(redis::cmd("INCR").arg("sluice:test:next-db"))
            .await
            .unwrap();
        let db = (next - 1) % (databases - 1) + 1;
        let url = Secret::new(format!("{base}/{db}"));
        let session = RedisSession::connect(&url).await.unwrap();
        session.run::<()>(&redis::cmd("FLUSHDB")).await.unwrap();
        Some((url, session))
    }

    #[tokio::test]
    async fn fingerprints_survive_dump_and_restore_for_every_type() {
        let Some((url, s)) = scratch().await else {
            return;
        };
        let c = |name: &str| redis::cmd(name);
        s.run::<()>(c("SET").arg("t:str").arg("hello"))
            .await
            .unwrap();
        s.run::<()>(c("SET").arg("t:int").arg("12345").arg("PX").arg(600_000))
            .await
            .unwrap();
        s.run::<()>(c("SET").arg("t:long").arg("ab".repeat(500)))
            .await
            .unwrap();
        s.run::<()>(
            c("HSET")
                .arg("t:hash")
                .arg("a")
                .arg("1")
                .arg("b")
                .arg("two"),
        )
        .await
        .unwrap();
        s.run::<()>(c("RPUSH").arg("t:list").arg("x").arg("7").arg("-300"))
            .await
            .unwrap();
        s.run::<()>(c("SADD").arg("t:set").arg("a").arg("b").arg("c").arg("dd"))
            .await
            .unwrap();
        s.run::<()>(c("SADD").arg("t:iset").arg(1).arg(2).arg(-70000))
            .await
            .unwrap();
        s.run::<()>(c("ZADD").arg("t:z").arg(1).arg("a").arg(2.5).arg("b"))
            .await
            .unwrap();
        // Large encodings: hashtable set and hash, skiplist zset, big list.
        for i in 0..300 {
            s.run::<()>(c("SADD").arg("t:bigset").arg(format!("member-{i}")))
                .await
                .unwrap();
            s.run::<()>(c("HSET").arg("t:bighash").arg(format!("f{i}")).arg(i))
                .await
                .unwrap();
            s.run::<()>(
                c("ZADD")
                    .arg("t:bigz")
                    .arg(i as f64 / 3.0)
                    .arg(format!("m{i}")),
            )
            .await
            .unwrap();
            s.run::<()>(c("RPUSH").arg("t:biglist").arg(format!("item-{i}")))
                .await
                .unwrap();
        }
        let prefixes = vec!["t:".to_string()];
        let before = fingerprint(&url, &prefixes).await.unwrap();
        assert_eq!(before.tables["t:"].rows, 12);

        let keys: Vec<String> = s.keys_under("t:").await.unwrap().into_iter().collect();
        let dumped = s.dump(&keys).await.unwrap();
        assert_eq!(dumped.len(), keys.len());
        s.delete(&keys).await.unwrap();
        assert_ne!(fingerprint(&url, &prefixes).await.unwrap(), before);
        s.restore(&dumped).await.unwrap();
        assert_eq!(
            fingerprint(&url, &prefixes).await.unwrap(),
            before,
            "restored keys fingerprint as before"
        );
        // The absolute expiry came back exactly.
        let again = s.dump(&["t:int".to_string()]).await.unwrap();
        let original = dumped.iter().find(|d| d.key == "t:int").unwrap();
        assert_eq!(again[0].expire_at_ms, original.expire_at_ms);
        assert!(original.expire_at_ms.is_some());

        // A changed value, a changed expiry, an extra key: each is seen.
        s.set("t:str", b"hullo", None).await.unwrap();
        assert_ne!(fingerprint(&url, &prefixes).await.unwrap(), before);
        s.restore(&dumped).await.unwrap();
        s.run::<()>(c("PEXPIRE").arg("t:hash").arg(900_000))
            .await
            .unwrap();
        assert_ne!(fingerprint(&url, &prefixes).await.unwrap(), before);
        s.restore(&dumped).await.unwrap();
        s.set("t:new", b"x", None).await.unwrap();
        assert_ne!(fingerprint(&url, &prefixes).await.unwrap(), before);
        s.delete(&["t:new".to_string()]).await.unwrap();
        assert_eq!(fingerprint(&url, &prefixes).await.unwrap(), before);
    }

    #[tokio::test]
    async fn glob_characters_in_prefixes_match_literally() {
        let Some((_url, s)) = scratch().await else {
            return;
        };
        for key in ["a*1", "ab", "a?x", "a[1]", "a\\z"] {
            s.set(key, b"v", None).await.unwrap();
        }
        let keys = |p: &'static str| {
            let s = s.clone();
            async move {
                s.keys_under(p)
                    .await
                    .unwrap()
                    .into_iter()
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(keys("a*").await, vec!["a*1"]);
        assert_eq!(keys("a?").await, vec!["a?x"]);
        assert_eq!(keys("a[").await, vec!["a[1]"]);
        assert_eq!(keys("a\\").await, vec!["a\\z"]);
        assert_eq!(keys("a").await.len(), 5);
    }

    #[tokio::test]
    async fn errors_never_show_the_password() {
        let url = Secret::new("redis://:hunter2@127.0.0.1:1/0");
        let e = RedisSession::connect(&url)
            .await
            .err()
            .expect("nothing listens on port 1");
        assert!(!e.message.contains("hunter2"), "{e}");
        assert!(e.message.contains("redis://127.0.0.1:1/0"), "{e}");
    }
}
