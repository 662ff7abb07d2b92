//! A [`RedisSession`] as the `kv` capability sees it: [`KvSession`].

use super::RedisSession;
use crate::datastores::{DumpedKey, KvResult, KvSession};

impl KvSession for RedisSession {
    fn get<'a>(&'a self, key: &'a str) -> KvResult<'a, Option<Vec<u8>>> {
        Box::pin(RedisSession::get(self, key))
    }

    fn set<'a>(&'a self, key: &'a str, value: &'a [u8], ttl_ms: Option<u64>) -> KvResult<'a, ()> {
        Box::pin(RedisSession::set(self, key, value, ttl_ms))
    }

    fn delete<'a>(&'a self, keys: &'a [String]) -> KvResult<'a, u64> {
        Box::pin(RedisSession::delete(self, keys))
    }

    fn exists<'a>(&'a self, keys: &'a [String]) -> KvResult<'a, Vec<bool>> {
        Box::pin(RedisSession::exists(self, keys))
    }

    fn scan<'a>(
        &'a self,
        prefix: &'a str,
        cursor: u64,
        count: usize,
    ) -> KvResult<'a, (u64, Vec<String>)> {
        Box::pin(RedisSession::scan(self, prefix, cursor, count))
    }

    fn ttl_ms<'a>(&'a self, key: &'a str) -> KvResult<'a, Option<u64>> {
        Box::pin(RedisSession::ttl_ms(self, key))
    }

    fn dump<'a>(&'a self, keys: &'a [String]) -> KvResult<'a, Vec<DumpedKey>> {
        Box::pin(RedisSession::dump(self, keys))
    }

    fn restore<'a>(&'a self, entries: &'a [DumpedKey]) -> KvResult<'a, ()> {
        Box::pin(RedisSession::restore(self, entries))
    }

    fn rename<'a>(&'a self, source: &'a str, destination: &'a str) -> KvResult<'a, ()> {
        Box::pin(RedisSession::rename(self, source, destination))
    }

    fn set_many<'a>(&'a self, entries: &'a [(String, Vec<u8>)]) -> KvResult<'a, ()> {
        Box::pin(RedisSession::set_many(self, entries))
    }

    fn get_many<'a>(&'a self, keys: &'a [String]) -> KvResult<'a, Vec<Option<Vec<u8>>>> {
        Box::pin(RedisSession::get_many(self, keys))
    }
}
