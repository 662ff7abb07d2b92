//! `sluice:plugin/kv`: key-value access (Redis) to the step's granted target,
//! scoped to key prefixes.
//!
//! Gate two, on the first lines of every host function: the connection's
//! target is the granted one; writes need read-write access; every key the
//! plugin names — scan prefixes, rename sources and destinations, dumped and
//! restored keys — lies under a granted prefix. A refused call never reaches
//! Redis. The plugin has no raw-command path, so these checks are complete.
//! Every size a plugin controls is bounded by a constant below.

use std::sync::Arc;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use crate::datastores::{self, DatastoreError, DumpedKey, Endpoint, KvSession};
use crate::plan::{Access, TargetKind};
use crate::runtime::bindings::sluice::plugin::kv::{self as wit, Dumped};
use crate::runtime::bindings::sluice::plugin::types::{DatastoreError as WitDatastoreError, Error};
use crate::secret::Secret;

/// Keys one call may name (delete, exists, dump, restore, set-many,
/// get-many): one pipeline's worth, so a plugin batches instead of making
/// the host hold a whole keyspace at once.
pub const MAX_KEYS_PER_CALL: usize = 10_000;
/// Largest `count` hint one `scan` page passes to Redis.
pub const MAX_SCAN_COUNT: u32 = 10_000;
/// Value bytes one call may send or receive (values set or restored; values
/// returned by get, get-many and dump). A reply over it is dropped and the
/// call fails, telling the plugin to ask for fewer keys.
pub const MAX_PAYLOAD_BYTES: usize = 64 << 20;
/// Longest key accepted: far beyond any sane key, far below Redis's 512 MiB.
pub const MAX_KEY_BYTES: usize = 64 << 10;
/// Connections one phase call may open (each is a socket to Redis).
pub const MAX_CONNECTIONS: usize = 8;

/// Access to one key-value target, granted to one phase of one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvGrant {
    /// Target name in the plan.
    pub target: String,
    /// Connection URL (secret).
    pub url: Secret,
    /// Access mode, enforced by the host before the datastore sees a call.
    pub access: Access,
    /// Key prefixes the plugin may touch (`None`: every key).
    pub prefixes: Option<Vec<String>>,
}

impl KvGrant {
    /// Whether this grant lets a plugin open `target`.
    pub fn allows(&self, target: &str) -> bool {
        self.target == target
    }

    /// Whether `key` lies under a granted prefix. A scan prefix is allowed
    /// by the same rule: a prefix that starts with a granted prefix only
    /// matches keys under it.
    pub fn allows_key(&self, key: &str) -> bool {
        match &self.prefixes {
            None => true,
            Some(prefixes) => prefixes.iter().any(|p| key.starts_with(p.as_str())),
        }
    }

    /// Whether this grant allows writes.
    pub fn allows_writes(&self) -> bool {
        self.access == Access::ReadWrite
    }

    /// Refuses the first key outside the granted prefixes (or too long).
    fn check_keys<'a>(
        &self,
        what: &str,
        keys: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), Error> {
        for key in keys {
            if key.len() > MAX_KEY_BYTES {
                return Err(Error::InvalidParams(format!(
                    "{what}: a key of {} bytes is over the {MAX_KEY_BYTES}-byte limit",
                    key.len()
                )));
            }
            if !self.allows_key(key) {
                let granted = self
                    .prefixes
                    .iter()
                    .flatten()
                    .map(|p| format!("`{p}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(Error::AccessDenied(format!(
                    "{what}: key `{key}` is outside this step's key prefixes ({granted}) on target `{}`",
                    self.target
                )));
            }
        }
        Ok(())
    }

    fn check_write(&self, what: &str) -> Result<(), Error> {
        if self.allows_writes() {
            Ok(())
        } else {
            Err(Error::AccessDenied(format!(
                "{what} writes, and this phase has read-only access to target `{}`",
                self.target
            )))
        }
    }
}

/// An open key-value connection resource.
pub struct KvConnectionHandle {
    session: Arc<dyn KvSession>,
}

/// State of the `kv` capability in one store.
pub struct KvCapability {
    grant: Option<KvGrant>,
    table: ResourceTable,
    opened: usize,
}

impl KvCapability {
    /// A capability serving `grant` (nothing when `None`).
    pub fn new(grant: Option<KvGrant>) -> Self {
        KvCapability {
            grant,
            table: ResourceTable::new(),
            opened: 0,
        }
    }

    /// The grant, for a connection that exists only if it was granted.
    fn grant(&self) -> Result<&KvGrant, Error> {
        self.grant.as_ref().ok_or_else(|| {
            Error::AccessDenied("this phase has no key-value datastore access".into())
        })
    }

    fn session(&self, conn: &Resource<KvConnectionHandle>) -> wasmtime::Result<Arc<dyn KvSession>> {
        Ok(self.table.get(conn)?.session.clone())
    }
}

struct Kv;

impl HasData for Kv {
    type Data<'a> = &'a mut KvCapability;
}

/// Adds `kv` to a linker.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut KvCapability,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, Kv>(linker, get)
}

fn datastore(e: DatastoreError) -> Error {
    Error::Datastore(WitDatastoreError {
        code: e.code,
        message: e.message,
    })
}

fn check_count(what: &str, n: usize) -> Result<(), Error> {
    if n > MAX_KEYS_PER_CALL {
        return Err(Error::InvalidParams(format!(
            "{what}: {n} keys in one call; the limit is {MAX_KEYS_PER_CALL}: split it into batches"
        )));
    }
    Ok(())
}

fn check_bytes(what: &str, n: usize) -> Result<(), Error> {
    if n > MAX_PAYLOAD_BYTES {
        return Err(Error::InvalidParams(format!(
            "{what}: {n} value bytes in one call; the limit is {MAX_PAYLOAD_BYTES}: use fewer keys per call"
        )));
    }
    Ok(())
}

/// Runs a check, turning a refusal into the call's result.
macro_rules! gate {
    ($check:expr) => {
        if let Err(e) = $check {
            return Ok(Err(e));
        }
    };
}

impl wit::Host for KvCapability {
    async fn open(
        &mut self,
        target: String,
    ) -> wasmtime::Result<Result<Resource<KvConnectionHandle>, Error>> {
        let Some(grant) = self.grant.as_ref().filter(|g| g.allows(&target)) else {
            return Ok(Err(Error::AccessDenied(format!(
                "this step is not granted key-value target `{target}`{}",
                match &self.grant {
                    Some(g) => format!(" (it is granted `{}`)", g.target),
                    None => " (this phase has no key-value datastore access)".into(),
                }
            ))));
        };
        if self.opened >= MAX_CONNECTIONS {
            return Ok(Err(Error::InvalidParams(format!(
                "a phase may open at most {MAX_CONNECTIONS} key-value connections"
            ))));
        }
        // A `KvGrant` names no kind: every key-value target is Redis today
        // (`TargetKind::is_sql`). A second key-value kind would put its kind
        // in the grant, as `SqlGrant` does.
        let session = match datastores::driver(TargetKind::Redis)
            .open_kv(&Endpoint::Url(grant.url.clone()))
            .await
        {
            Ok(s) => s,
            Err(e) => return Ok(Err(datastore(e))),
        };
        self.opened += 1;
        Ok(Ok(self.table.push(KvConnectionHandle { session })?))
    }
}

impl wit::HostKvConnection for KvCapability {
    async fn get(
        &mut self,
        conn: Resource<KvConnectionHandle>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        gate!(self
            .grant()
            .and_then(|g| g.check_keys("get", [key.as_str()])));
        let value = match self.session(&conn)?.get(&key).await {
            Ok(v) => v,
            Err(e) => return Ok(Err(datastore(e))),
        };
        gate!(check_bytes("get", value.as_ref().map_or(0, Vec::len)));
        Ok(Ok(value))
    }

    async fn set(
        &mut self,
        conn: Resource<KvConnectionHandle>,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<(), Error>> {
        gate!(self.grant().and_then(|g| {
            g.check_write("set")?;
            g.check_keys("set", [key.as_str()])
        }));
        gate!(check_bytes("set", value.len()));
        let session = self.session(&conn)?;
        Ok(session.set(&key, &value, ttl_ms).await.map_err(datastore))
    }

    async fn delete(
        &mut self,
        conn: Resource<KvConnectionHandle>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        gate!(self.grant().and_then(|g| {
            g.check_write("delete")?;
            check_count("delete", keys.len())?;
            g.check_keys("delete", keys.iter().map(String::as_str))
        }));
        let session = self.session(&conn)?;
        Ok(session.delete(&keys).await.map_err(datastore))
    }

    async fn exists(
        &mut self,
        conn: Resource<KvConnectionHandle>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<bool>, Error>> {
        gate!(self.grant().and_then(|g| {
            check_count("exists", keys.len())?;
            g.check_keys("exists", keys.iter().map(String::as_str))
        }));
        let session = self.session(&conn)?;
        Ok(session.exists(&keys).await.map_err(datastore))
    }

    async fn scan(
        &mut self,
        conn: Resource<KvConnectionHandle>,
        prefix: String,
        cursor: u64,
        count: u32,
    ) -> wasmtime::Result<Result<(u64, Vec<String>), Error>> {
        gate!(self
            .grant()
            .and_then(|g| g.check_keys("scan prefix", [prefix.as_str()])));
        let count = count.clamp(1, MAX_SCAN_COUNT) as usize;
        let session = self.session(&conn)?;
        Ok(session
            .scan(&prefix, cursor, count)
            .await
            .map_err(datastore))
    }

    async fn ttl_ms(
        &mut self,
        conn: Resource<KvConnectionHandle>,
        key: String,
    ) -> wasmtime::Result<Result<Option<u64>, Error>> {
        gate!(self
            .grant()
            .and_then(|g| g.check_keys("ttl-ms", [key.as_str()])));
        let session = self.session(&conn)?;
        Ok(session.ttl_ms(&key).await.map_err(datastore))
    }

    async fn dump(
        &mut self,
        conn: Resource<KvConnectionHandle>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<Dumped>, Error>> {
        gate!(self.grant().and_then(|g| {
            check_count("dump", keys.len())?;
            g.check_keys("dump", keys.iter().map(String::as_str))
        }));
        let dumped = match self.session(&conn)?.dump(&keys).await {
            Ok(d) => d,
            Err(e) => return Ok(Err(datastore(e))),
        };
        gate!(check_bytes(
            "dump",
            dumped.iter().map(|d| d.payload.len()).sum()
        ));
        Ok(Ok(dumped
            .into_iter()
            .map(|d| Dumped {
                key: d.key,
                payload: d.payload,
                expire_at_ms: d.expire_at_ms,
            })
            .collect()))
    }

    async fn restore(
        &mut self,
        conn: Resource<KvConnectionHandle>,
        entries: Vec<Dumped>,
    ) -> wasmtime::Result<Result<(), Error>> {
        gate!(self.grant().and_then(|g| {
            g.check_write("restore")?;
            check_count("restore", entries.len())?;
            g.check_keys("restore", entries.iter().map(|e| e.key.as_str()))
        }));
        gate!(check_bytes(
            "restore",
            entries.iter().map(|e| e.payload.len()).sum()
        ));
        let entries: Vec<DumpedKey> = entries
            .into_iter()
            .map(|e| DumpedKey {
                key: e.key,
                payload: e.payload,
                expire_at_ms: e.expire_at_ms,
            })
            .collect();
        let session = self.session(&conn)?;
        Ok(session.restore(&entries).await.map_err(datastore))
    }

    async fn rename(
        &mut self,
        conn: Resource<KvConnectionHandle>,
        source: String,
        destination: String,
    ) -> wasmtime::Result<Result<(), Error>> {
        gate!(self.grant().and_then(|g| {
            g.check_write("rename")?;
            g.check_keys("rename", [source.as_str(), destination.as_str()])
        }));
        let session = self.session(&conn)?;
        Ok(session
            .rename(&source, &destination)
            .await
            .map_err(datastore))
    }

    async fn set_many(
        &mut self,
        conn: Resource<KvConnectionHandle>,
        entries: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), Error>> {
        gate!(self.grant().and_then(|g| {
            g.check_write("set-many")?;
            check_count("set-many", entries.len())?;
            g.check_keys("set-many", entries.iter().map(|(k, _)| k.as_str()))
        }));
        gate!(check_bytes(
            "set-many",
            entries.iter().map(|(_, v)| v.len()).sum()
        ));
        let session = self.session(&conn)?;
        Ok(session.set_many(&entries).await.map_err(datastore))
    }

    async fn get_many(
        &mut self,
        conn: Resource<KvConnectionHandle>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<Option<Vec<u8>>>, Error>> {
        gate!(self.grant().and_then(|g| {
            check_count("get-many", keys.len())?;
            g.check_keys("get-many", keys.iter().map(String::as_str))
        }));
        let values = match self.session(&conn)?.get_many(&keys).await {
            Ok(v) => v,
            Err(e) => return Ok(Err(datastore(e))),
        };
        gate!(check_bytes(
            "get-many",
            values.iter().flatten().map(Vec::len).sum()
        ));
        Ok(Ok(values))
    }

    async fn drop(&mut self, conn: Resource<KvConnectionHandle>) -> wasmtime::Result<()> {
        self.table.delete(conn)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(access: Access, prefixes: Option<&[&str]>) -> KvGrant {
        KvGrant {
            target: "cache".into(),
            url: Secret::new("redis://:pw@127.0.0.1:6379/3"),
            access,
            prefixes: prefixes.map(|p| p.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn grant_allows_only_its_target() {
        let g = grant(Access::ReadOnly, None);
        for (target, want) in [
            ("cache", true),
            ("Cache", false),
            ("cache2", false),
            ("", false),
        ] {
            assert_eq!(g.allows(target), want, "{target}");
        }
    }

    #[test]
    fn keys_must_lie_under_a_granted_prefix() {
        let g = grant(Access::ReadWrite, Some(&["flags:", "beta:"]));
        let cases = [
            ("flags:a", true),
            ("flags:", true),
            ("beta:x:y", true),
            ("flags", false),
            ("flag:a", false),
            ("", false),
            ("users:1", false),
            ("Flags:a", false),
        ];
        for (key, want) in cases {
            assert_eq!(g.allows_key(key), want, "{key}");
        }
        // A scan prefix narrower than a grant is fine; a wider one is not.
        assert!(g.check_keys("scan prefix", ["flags:new"]).is_ok());
        let refused = g.check_keys("scan prefix", ["fl"]).unwrap_err();
        let Error::AccessDenied(m) = refused else {
            panic!("{refused:?}")
        };
        assert!(m.contains("`fl`") && m.contains("`flags:`, `beta:`"), "{m}");
        // Every key of a call is checked, not only the first.
        assert!(g.check_keys("delete", ["flags:a", "users:1"]).is_err());
        // No prefixes granted: every key.
        assert!(grant(Access::ReadWrite, None).allows_key("anything"));
    }

    #[test]
    fn read_only_grants_refuse_writes() {
        assert!(grant(Access::ReadOnly, None).check_write("set").is_err());
        assert!(grant(Access::ReadWrite, None).check_write("set").is_ok());
    }

    #[test]
    fn limits_are_enforced() {
        assert!(check_count("dump", MAX_KEYS_PER_CALL).is_ok());
        assert!(check_count("dump", MAX_KEYS_PER_CALL + 1).is_err());
        assert!(check_bytes("restore", MAX_PAYLOAD_BYTES + 1).is_err());
        let long = "flags:".to_string() + &"x".repeat(MAX_KEY_BYTES);
        assert!(matches!(
            grant(Access::ReadWrite, None).check_keys("get", [long.as_str()]),
            Err(Error::InvalidParams(_))
        ));
    }

    #[test]
    fn grants_never_print_the_url() {
        let g = grant(Access::ReadOnly, None);
        assert!(!format!("{g:?}").contains("pw"));
    }
}
