//! The session trait the `kv` capability talks to: one open connection of
//! a key-value datastore, whatever the driver. The capability has checked
//! every key against the grant before a call reaches it.

use futures_util::future::BoxFuture;

use super::DatastoreError;

/// A key's serialized value and absolute expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedKey {
    /// The key.
    pub key: String,
    /// The datastore's serialized value (Redis: the `DUMP` payload).
    pub payload: Vec<u8>,
    /// Absolute expiry in Unix ms; `None` when the key persists.
    pub expire_at_ms: Option<u64>,
}

/// A result of a key-value call.
pub type KvResult<'a, T> = BoxFuture<'a, Result<T, DatastoreError>>;

/// One open connection of a key-value datastore.
pub trait KvSession: Send + Sync {
    /// The value of `key`, if it exists.
    fn get<'a>(&'a self, key: &'a str) -> KvResult<'a, Option<Vec<u8>>>;
    /// Sets `key`, expiring after `ttl_ms` when given.
    fn set<'a>(&'a self, key: &'a str, value: &'a [u8], ttl_ms: Option<u64>) -> KvResult<'a, ()>;
    /// Deletes `keys`; returns how many existed.
    fn delete<'a>(&'a self, keys: &'a [String]) -> KvResult<'a, u64>;
    /// Whether each of `keys` exists.
    fn exists<'a>(&'a self, keys: &'a [String]) -> KvResult<'a, Vec<bool>>;
    /// One page of keys starting with `prefix`: the next cursor (0 at the
    /// end) and the keys.
    fn scan<'a>(
        &'a self,
        prefix: &'a str,
        cursor: u64,
        count: usize,
    ) -> KvResult<'a, (u64, Vec<String>)>;
    /// Milliseconds `key` has left; `None` when it persists or is absent.
    fn ttl_ms<'a>(&'a self, key: &'a str) -> KvResult<'a, Option<u64>>;
    /// The serialized value and absolute expiry of each existing key.
    fn dump<'a>(&'a self, keys: &'a [String]) -> KvResult<'a, Vec<DumpedKey>>;
    /// Puts dumped keys back, replacing what is there, expiries absolute.
    fn restore<'a>(&'a self, entries: &'a [DumpedKey]) -> KvResult<'a, ()>;
    /// Renames `source` to `destination`.
    fn rename<'a>(&'a self, source: &'a str, destination: &'a str) -> KvResult<'a, ()>;
    /// Sets every entry.
    fn set_many<'a>(&'a self, entries: &'a [(String, Vec<u8>)]) -> KvResult<'a, ()>;
    /// The value of each key, if it exists.
    fn get_many<'a>(&'a self, keys: &'a [String]) -> KvResult<'a, Vec<Option<Vec<u8>>>>;
}
