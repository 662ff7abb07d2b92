//! `cargo xtask bench` (Redis part): what pipelining buys a Redis backup.
//!
//! Loads 100,000 keys (strings with and without expiry, hashes, lists) into
//! a scratch database, then runs the `redis` plugin's backup phase through
//! sluice's runtime — the same grants, capability checks and backup store a
//! `sluice run` uses — with `batch_keys = 1000` (one pipelined host call and
//! Redis round trip per 1000 keys) and with `batch_keys = 1` (one per key),
//! interleaved, and prints the median of each and their ratio. The host's own
//! fingerprint of the prefix is checked against each manifest, as the engine
//! does before a step may change anything.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::backup::BackupStore;
use sluice::capabilities::backup_store::BackupAccess;
use sluice::capabilities::kv::KvGrant;
use sluice::datastores::{self, Endpoint};
use sluice::plan::{Access, Limits, TargetKind};
use sluice::runtime::{CallGrants, ComponentCache, PhaseInput, PhaseOutput, Runtime, StepContext};
use sluice::secret::Secret;
use sluice_e2e::services::redis_scratch;

const KEYS: usize = 100_000;
const PREFIX: &str = "bench:";
const ROUNDS: usize = 3;

fn main() {
    let db = redis_scratch();
    let started = Instant::now();
    load(&db.url);
    println!(
        "redis backup bench: {KEYS} keys loaded in {:.1}s (db {})",
        started.elapsed().as_secs_f64(),
        db.db
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let runtime = Runtime::new(ComponentCache::new(Some(dir.path().join("cache")))).unwrap();
        let plugin = runtime
            .load(&sluice_e2e::plugin_ref("redis.wasm"))
            .await
            .unwrap();
        let store = Arc::new(BackupStore::open(&dir.path().join("backups")).unwrap());
        let url = Secret::new(db.url.clone());
        let (mut pipelined, mut one_by_one, mut checksums) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let (t, c) = backup(&runtime, &plugin, &store, &url, 1000).await;
            pipelined.push(t);
            checksums.push(c);
            let (t, c) = backup(&runtime, &plugin, &store, &url, 1).await;
            one_by_one.push(t);
            checksums.push(c);
        }
        let host = Instant::now();
        let fingerprint = datastores::fingerprint(
            TargetKind::Redis,
            &Endpoint::Url(url.clone()),
            vec![PREFIX.into()],
        )
        .await
        .unwrap();
        let host = host.elapsed();
        let table = &fingerprint.tables[PREFIX];
        assert_eq!(table.rows, KEYS as u64);
        assert!(
            checksums.iter().all(|c| *c == table.checksum),
            "every manifest matches the host's fingerprint"
        );
        let (p, o) = (median(pipelined), median(one_by_one));
        println!(
            "  backup, batch_keys = 1000: {:>8.0} ms  ({:.0} keys/s)",
            ms(p),
            KEYS as f64 / p.as_secs_f64()
        );
        println!(
            "  backup, batch_keys = 1:    {:>8.0} ms  ({:.0} keys/s)",
            ms(o),
            KEYS as f64 / o.as_secs_f64()
        );
        println!(
            "  pipelined is {:.1}x faster (median of {ROUNDS} interleaved rounds each)",
            o.as_secs_f64() / p.as_secs_f64()
        );
        println!(
            "  host fingerprint of the prefix (verification): {:.0} ms",
            ms(host)
        );
    });
}

/// 100,000 keys: three strings in four expire, one in ten is a hash, one in
/// ten a list — loaded in pipelines of 1000.
fn load(url: &str) {
    let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
    for start in (0..KEYS).step_by(1000) {
        let mut pipe = redis::pipe();
        for i in start..start + 1000 {
            let key = format!("{PREFIX}{i:06}");
            match i % 10 {
                0 => pipe
                    .cmd("HSET")
                    .arg(&key)
                    .arg("name")
                    .arg(format!("n{i}"))
                    .arg("n")
                    .arg(i)
                    .ignore(),
                1 => pipe
                    .cmd("RPUSH")
                    .arg(&key)
                    .arg("a")
                    .arg("b")
                    .arg(i)
                    .ignore(),
                n if n % 4 == 0 => pipe.cmd("SET").arg(&key).arg(format!("value-{i}")).ignore(),
                _ => pipe
                    .cmd("SET")
                    .arg(&key)
                    .arg(format!("value-{i}"))
                    .arg("PX")
                    .arg(3_600_000 + i)
                    .ignore(),
            };
        }
        pipe.query::<()>(&mut conn).unwrap();
    }
}

async fn backup(
    runtime: &Runtime,
    plugin: &sluice::runtime::LoadedPlugin,
    store: &Arc<BackupStore>,
    url: &Secret,
    batch_keys: u32,
) -> (Duration, String) {
    let mut grants = CallGrants::none("bench", Limits::default());
    grants.kv = Some(KvGrant {
        target: "cache".into(),
        url: url.clone(),
        access: Access::ReadOnly,
        prefixes: Some(vec![PREFIX.into()]),
    });
    grants.backup = BackupAccess::Write {
        store: store.clone(),
        max_bytes: 1 << 30,
    };
    let ctx = StepContext {
        step_id: "bench".into(),
        target: "cache".into(),
        target_kind: "redis".into(),
        params: format!(r#"{{"prefixes":["{PREFIX}"],"batch_keys":{batch_keys}}}"#),
        metrics: Vec::new(),
    };
    let (result, report) = runtime.call(plugin, grants, PhaseInput::Backup(ctx)).await;
    match result {
        Ok(PhaseOutput::Backup(manifest)) => {
            assert_eq!(manifest.tables[0].rows, KEYS as u64, "every key backed up");
            (report.elapsed, manifest.tables[0].checksum.clone())
        }
        other => panic!("backup failed: {other:?}"),
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
