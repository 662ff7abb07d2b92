//! PostgreSQL and Redis for tests: the URLs `cargo xtask test` exports (from
//! the private instances it starts), and scratch databases that one test owns
//! alone and that are dropped with it.
//!
//! The clients here are the synchronous `postgres` and `redis` crates, an
//! independent view of what sluice did. `postgres::Client` runs its own
//! runtime: call these from a plain test thread, not from inside a tokio
//! runtime (there, use `tokio::task::spawn_blocking`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// Environment variable holding the PostgreSQL superuser URL.
pub const PG_URL_VAR: &str = "SLUICE_TEST_PG_URL";
/// Environment variable holding the Redis URL (database 0).
pub const REDIS_URL_VAR: &str = "SLUICE_TEST_REDIS_URL";
/// Redis key in database 0 whose `INCR` hands out scratch database numbers.
const REDIS_COUNTER_KEY: &str = "sluice:test:next-db";

/// The PostgreSQL server's URL, as superuser `sluice` on database `postgres`.
pub fn pg_url() -> String {
    env_url(PG_URL_VAR)
}

/// The Redis server's URL, without a database number.
pub fn redis_url() -> String {
    env_url(REDIS_URL_VAR)
}

fn env_url(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: run through `cargo xtask test`, or start `cargo xtask services` \
             and export the variables it prints"
        )
    })
}

/// `url` with its path (the database) replaced by `path`; a query string is
/// kept.
pub fn with_path(url: &str, path: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority..]
        .find('/')
        .map_or(base.len(), |i| authority + i);
    match query {
        Some(query) => format!("{}/{path}?{query}", &base[..path_start]),
        None => format!("{}/{path}", &base[..path_start]),
    }
}

/// A name no other test, in this process or another, is using.
fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut h = Sha256::new();
    h.update(std::process::id().to_le_bytes());
    h.update(nanos.to_le_bytes());
    h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    hex::encode(&h.finalize()[..8])
}

/// A fresh PostgreSQL database for one test, dropped (with any connections
/// still open to it) when this is dropped.
#[derive(Debug)]
pub struct PgScratch {
    /// URL of the scratch database, as superuser.
    pub url: String,
    /// The database's name, `sluice_t_<random>`.
    pub name: String,
    /// Its test's share of the server (released after the database is dropped).
    _cluster: ClusterUse,
}

/// Tests of this process using the shared server, and whether one holds it
/// alone. sluice's schema proof covers cluster-wide objects (roles, their
/// settings and memberships, databases other than `sluice_*` scratches), so
/// a test that creates one would fail the proof of every other test running
/// at that moment: such a test takes the server alone
/// ([`pg_scratch_exclusive`]). Readers first: an exclusive test waits for a
/// moment with no other PostgreSQL test running.
#[derive(Debug)]
struct ClusterUsers {
    shared: usize,
    exclusive: bool,
}

static CLUSTER_USERS: Mutex<ClusterUsers> = Mutex::new(ClusterUsers {
    shared: 0,
    exclusive: false,
});
static CLUSTER_RELEASED: Condvar = Condvar::new();

/// A test's hold on the shared server, released when dropped.
#[derive(Debug)]
struct ClusterUse {
    exclusive: bool,
}

impl ClusterUse {
    fn take(exclusive: bool) -> ClusterUse {
        let mut users = CLUSTER_USERS.lock().unwrap_or_else(|e| e.into_inner());
        while users.exclusive || (exclusive && users.shared > 0) {
            users = CLUSTER_RELEASED
                .wait(users)
                .unwrap_or_else(|e| e.into_inner());
        }
        if exclusive {
            users.exclusive = true;
        } else {
            users.shared += 1;
        }
        ClusterUse { exclusive }
    }
}

impl Drop for ClusterUse {
    fn drop(&mut self) {
        let mut users = CLUSTER_USERS.lock().unwrap_or_else(|e| e.into_inner());
        if self.exclusive {
            users.exclusive = false;
        } else {
            users.shared -= 1;
        }
        CLUSTER_RELEASED.notify_all();
    }
}

/// Creates a [`PgScratch`] on the server at [`pg_url`], sharing the server
/// with other tests.
pub fn pg_scratch() -> PgScratch {
    scratch(ClusterUse::take(false))
}

/// Creates a [`PgScratch`] for a test that creates, alters or drops
/// cluster-wide objects (roles, databases): no other test of this process
/// uses the server until it is dropped. Such a test holds no other scratch.
pub fn pg_scratch_exclusive() -> PgScratch {
    scratch(ClusterUse::take(true))
}

fn scratch(cluster: ClusterUse) -> PgScratch {
    let admin = pg_url();
    let name = format!("sluice_t_{}", unique_suffix());
    pg_connect(&admin)
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on {admin}: {e}"));
    PgScratch {
        url: with_path(&admin, &name),
        name,
        _cluster: cluster,
    }
}

impl PgScratch {
    /// A new connection to the scratch database.
    pub fn client(&self) -> postgres::Client {
        pg_connect(&self.url)
    }
}

impl Drop for PgScratch {
    fn drop(&mut self) {
        let admin = pg_url();
        let dropped = postgres::Client::connect(&admin, postgres::NoTls).and_then(|mut c| {
            c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
        });
        // Not a panic: this may run while a failing test unwinds.
        if let Err(e) = dropped {
            eprintln!("dropping scratch database {} on {admin}: {e}", self.name);
        }
    }
}

fn pg_connect(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls)
        .unwrap_or_else(|e| panic!("connecting to PostgreSQL at {url}: {e}"))
}

/// A Redis database number for one test, emptied when created and when
/// dropped.
///
/// Numbers 1..N-1 (N: the server's `databases`, 1024 under `cargo xtask`)
/// are handed out round-robin; more than N-1 scratches alive at once would
/// share one.
#[derive(Debug)]
pub struct RedisScratch {
    /// `redis://127.0.0.1:<port>/<db>`.
    pub url: String,
    /// The database number.
    pub db: u32,
}

/// Creates a [`RedisScratch`] on the server at [`redis_url`].
pub fn redis_scratch() -> RedisScratch {
    let base = redis_url();
    let mut admin = redis_connect(&with_path(&base, "0"));
    let config: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("databases")
        .query(&mut admin)
        .unwrap_or_else(|e| panic!("CONFIG GET databases on {base}: {e}"));
    let databases: u64 = config
        .get(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("CONFIG GET databases on {base} answered {config:?}"));
    assert!(
        databases >= 2,
        "Redis at {base} has {databases} database(s); start it with --databases 1024"
    );
    let next: u64 = redis::cmd("INCR")
        .arg(REDIS_COUNTER_KEY)
        .query(&mut admin)
        .unwrap_or_else(|e| panic!("INCR {REDIS_COUNTER_KEY} on {base}: {e}"));
    // Database 0 holds the counter; scratches wrap around 1..databases-1.
    let db = u32::try_from((next - 1) % (databases - 1) + 1).expect("a Redis db number");
    let scratch = RedisScratch {
        url: with_path(&base, &db.to_string()),
        db,
    };
    redis::cmd("FLUSHDB")
        .query::<()>(&mut scratch.conn())
        .unwrap_or_else(|e| panic!("FLUSHDB on {}: {e}", scratch.url));
    scratch
}

impl RedisScratch {
    /// A new connection, with the scratch database selected.
    pub fn conn(&self) -> redis::Connection {
        redis_connect(&self.url)
    }
}

impl Drop for RedisScratch {
    fn drop(&mut self) {
        let flushed = redis::Client::open(self.url.as_str())
            .and_then(|c| c.get_connection())
            .and_then(|mut c| redis::cmd("FLUSHDB").query::<()>(&mut c));
        // Not a panic: this may run while a failing test unwinds.
        if let Err(e) = flushed {
            eprintln!("emptying scratch Redis database {}: {e}", self.url);
        }
    }
}

fn redis_connect(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .unwrap_or_else(|e| panic!("connecting to Redis at {url}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_path_replaces_only_the_database() {
        assert_eq!(
            with_path("postgres://sluice@127.0.0.1:5432/postgres", "x"),
            "postgres://sluice@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_path("postgres://u@h:1/postgres?sslmode=disable", "x"),
            "postgres://u@h:1/x?sslmode=disable"
        );
        assert_eq!(
            with_path("redis://127.0.0.1:6379", "7"),
            "redis://127.0.0.1:6379/7"
        );
        assert_eq!(
            with_path("redis://127.0.0.1:6379/", "7"),
            "redis://127.0.0.1:6379/7"
        );
    }

    #[test]
    fn pg_scratch_is_fresh_and_dropped_even_while_connected() {
        let scratch = pg_scratch();
        let mut client = scratch.client();
        let current: String = client
            .query_one("SELECT current_database()", &[])
            .unwrap()
            .get(0);
        assert_eq!(current, scratch.name);
        client
            .batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
            .unwrap();
        let name = scratch.name.clone();
        // `client` is still open: the drop must force it out.
        drop(scratch);
        let left: i64 = pg_connect(&pg_url())
            .query_one(
                "SELECT count(*) FROM pg_database WHERE datname = $1",
                &[&name],
            )
            .unwrap()
            .get(0);
        assert_eq!(left, 0, "{name} survived its scratch");
        drop(client);
    }

    #[test]
    fn redis_scratches_are_distinct_and_emptied_on_drop() {
        let a = redis_scratch();
        let b = redis_scratch();
        assert_ne!(a.db, b.db);
        assert!(a.db >= 1 && b.db >= 1, "db 0 holds the counter");
        redis::cmd("SET")
            .arg("k")
            .arg("a")
            .query::<()>(&mut a.conn())
            .unwrap();
        let in_b: Option<String> = redis::cmd("GET").arg("k").query(&mut b.conn()).unwrap();
        assert_eq!(in_b, None, "scratches share a database");
        let url = a.url.clone();
        drop(a);
        let left: u64 = redis::cmd("DBSIZE")
            .query(&mut redis_connect(&url))
            .unwrap();
        assert_eq!(left, 0, "{url} was not emptied");
    }
}
