//! Backup: every key under the `prefixes` param, dumped in pipelined
//! batches, with each prefix's key count and checksum for the manifest.

use std::collections::HashSet;

use sluice_sdk::backup_store;
use sluice_sdk::checksum::TableChecksum;
use sluice_sdk::kv::{self, Connection, Dumped};
use sluice_sdk::{log, progress, BackupManifest, ChangeKind, Error, StepContext, TableState};

use crate::artifact::{self, KEYS_ARTIFACT};
use crate::{Params, RedisPlugin};

/// What rollback needs besides the artifact.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Metadata {
    /// The backed-up prefixes, in the order of the manifest's tables.
    pub prefixes: Vec<String>,
    /// Keys per restore call.
    pub batch_keys: u32,
}

impl sluice_sdk::Backup for RedisPlugin {
    fn backup(ctx: &StepContext) -> Result<BackupManifest, Error> {
        let params = Params::of(ctx)?;
        let prefixes = params.backup_prefixes(ctx)?.to_vec();
        let conn = Connection::open(&ctx.target)?;
        let mut out = backup_store::create(KEYS_ARTIFACT)?;
        artifact::write_header(&mut out)?;
        // A key under two overlapping prefixes is counted in both, saved once.
        let mut saved = HashSet::new();
        let mut done = 0u64;
        let tables = walk(&conn, &prefixes, params.batch_keys, |batch| {
            for d in batch {
                if saved.insert(d.key.clone()) {
                    artifact::write_key(&mut out, d)?;
                }
            }
            done += batch.len() as u64;
            progress::report(done, None, "keys backed up");
            Ok(())
        })?;
        let bytes = out.written();
        out.finish()?;
        log::info(
            "keys backed up",
            &[
                ("keys", &saved.len().to_string()),
                ("bytes", &bytes.to_string()),
            ],
        );
        Ok(BackupManifest {
            artifacts: vec![KEYS_ARTIFACT.to_string()],
            tables,
            metadata: serde_json::to_string(&Metadata {
                prefixes,
                batch_keys: params.batch_keys,
            })
            .map_err(|e| Error::Internal(e.to_string()))?,
            // Each key operation applies on its own; rollback restores.
            change: ChangeKind::NonTransactional,
        })
    }
}

/// Dumps every key under each prefix, `batch_keys` per host call, hands
/// each batch to `each`, and returns every prefix's state (key count and
/// the sdk's key checksum — the formula the host fingerprints with).
pub fn walk(
    conn: &Connection,
    prefixes: &[String],
    batch_keys: u32,
    mut each: impl FnMut(&[Dumped]) -> Result<(), Error>,
) -> Result<Vec<TableState>, Error> {
    let mut tables = Vec::new();
    for prefix in prefixes {
        let keys = conn.scan_prefix(prefix)?;
        let mut checksum = TableChecksum::new();
        for chunk in keys.chunks(batch_keys as usize) {
            let batch = conn.dump(chunk)?;
            for d in &batch {
                kv::add_key(&mut checksum, &d.key, &d.payload, d.expire_at_ms)
                    .map_err(|e| Error::Internal(e.to_string()))?;
            }
            each(&batch)?;
        }
        tables.push(TableState {
            name: prefix.clone(),
            rows: checksum.rows(),
            checksum: checksum.hex(),
        });
    }
    Ok(tables)
}
