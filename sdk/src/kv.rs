//! Key-value (Redis) access to the step's target through the host's `kv`
//! capability, and the per-prefix checksum that backups report and the host
//! recomputes.
//!
//! Every key a plugin names must lie under one of the step's granted key
//! prefixes; the host refuses anything else before Redis sees it. Read-only
//! phases (backup, validate) can only read.

pub mod logical;

use crate::__private::bindings::sluice::plugin::kv as wit;
use crate::checksum::TableChecksum;
use crate::row::ValueRef;
use crate::Error;

pub use logical::PayloadError;
pub use wit::Dumped;

/// Keys a [`Connection::scan_prefix`] page asks for unless told otherwise.
pub const DEFAULT_SCAN_COUNT: u32 = 1000;

/// A connection to the step's key-value target.
pub struct Connection {
    inner: wit::KvConnection,
}

impl Connection {
    /// Opens the named target (normally [`StepContext::target`](crate::StepContext)).
    pub fn open(target: &str) -> Result<Self, Error> {
        Ok(Connection {
            inner: wit::open(target)?,
        })
    }

    /// The string value of `key`, or `None` when it does not exist.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.inner.get(key)
    }

    /// Sets a string value, expiring after `ttl_ms` when given.
    pub fn set(&self, key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), Error> {
        self.inner.set(key, value, ttl_ms)
    }

    /// Deletes keys; returns how many existed.
    pub fn delete(&self, keys: &[String]) -> Result<u64, Error> {
        if keys.is_empty() {
            return Ok(0);
        }
        self.inner.delete(keys)
    }

    /// Whether each key exists, in order.
    pub fn exists(&self, keys: &[String]) -> Result<Vec<bool>, Error> {
        self.inner.exists(keys)
    }

    /// One page of keys under `prefix` (start with cursor 0; a returned cursor
    /// of 0 ends the scan; a key may appear in more than one page).
    pub fn scan(&self, prefix: &str, cursor: u64, count: u32) -> Result<(u64, Vec<String>), Error> {
        self.inner.scan(prefix, cursor, count)
    }

    /// Every key under `prefix`, each once, sorted.
    pub fn scan_prefix(&self, prefix: &str) -> Result<Vec<String>, Error> {
        let mut keys = std::collections::BTreeSet::new();
        let mut cursor = 0;
        loop {
            let (next, page) = self.scan(prefix, cursor, DEFAULT_SCAN_COUNT)?;
            keys.extend(page);
            if next == 0 {
                return Ok(keys.into_iter().collect());
            }
            cursor = next;
        }
    }

    /// Remaining time-to-live in milliseconds; `None` when the key persists
    /// or does not exist.
    pub fn ttl_ms(&self, key: &str) -> Result<Option<u64>, Error> {
        self.inner.ttl_ms(key)
    }

    /// Serialized values with absolute expiries (one round trip); keys that
    /// do not exist are left out.
    pub fn dump(&self, keys: &[String]) -> Result<Vec<Dumped>, Error> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.inner.dump(keys)
    }

    /// Restores serialized values with their absolute expiries, replacing
    /// existing keys (one round trip).
    pub fn restore(&self, entries: &[Dumped]) -> Result<(), Error> {
        if entries.is_empty() {
            return Ok(());
        }
        self.inner.restore(entries)
    }

    /// Renames `source` to `destination`, replacing it; the expiry moves along.
    pub fn rename(&self, source: &str, destination: &str) -> Result<(), Error> {
        self.inner.rename(source, destination)
    }

    /// Sets several string keys without expiry (one round trip).
    pub fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), Error> {
        if entries.is_empty() {
            return Ok(());
        }
        self.inner.set_many(entries)
    }

    /// Gets several string keys (one round trip); `None` where a key does not
    /// exist or is not a string.
    pub fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, Error> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.inner.get_many(keys)
    }
}

/// Adds one key to a prefix's checksum: the row (key, logical form of the
/// value, absolute expiry in Unix ms or -1). The host fingerprints Redis
/// targets with this same function, so a backup manifest's per-prefix
/// checksum can be checked against the host's own.
pub fn add_key(
    checksum: &mut TableChecksum,
    key: &str,
    payload: &[u8],
    expire_at_ms: Option<u64>,
) -> Result<(), PayloadError> {
    let form = logical::logical_form(payload)
        .map_err(|e| PayloadError(format!("key `{key}`: {}", e.0)))?;
    let expiry = expire_at_ms.map_or(-1, |ms| i64::try_from(ms).unwrap_or(i64::MAX));
    checksum.add_row([
        ValueRef::Text(key),
        ValueRef::Blob(&form),
        ValueRef::Integer(expiry),
    ]);
    Ok(())
}
