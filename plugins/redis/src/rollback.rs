//! Rollback: delete what the step created under the backed-up prefixes,
//! restore every backed-up key with its absolute expiry, and check each
//! prefix against the manifest. Safe to run twice: deletes and
//! `RESTORE … REPLACE` give the same result however often they run.

use std::collections::HashSet;

use sluice_sdk::kv::Connection;
use sluice_sdk::{
    backup_store, log, progress, BackupManifest, Error, PhaseReached, StepContext, TableState,
};

use crate::artifact::{KeyReader, KEYS_ARTIFACT};
use crate::backup::{walk, Metadata};
use crate::RedisPlugin;

impl sluice_sdk::Rollback for RedisPlugin {
    fn rollback(
        ctx: &StepContext,
        manifest: &BackupManifest,
        _reached: PhaseReached,
    ) -> Result<Vec<TableState>, Error> {
        let meta: Metadata = serde_json::from_str(&manifest.metadata)
            .map_err(|e| Error::BackupInvalid(format!("manifest metadata: {e}")))?;
        let batch = meta.batch_keys.max(1) as usize;
        let conn = Connection::open(&ctx.target)?;

        // Restore every backed-up key, batch by batch, remembering its name.
        let mut backed_up = HashSet::new();
        let mut reader = KeyReader::new(backup_store::open(KEYS_ARTIFACT)?)?;
        let mut pending = Vec::with_capacity(batch);
        loop {
            let next = reader.next_key()?;
            let end = next.is_none();
            if let Some(d) = next {
                backed_up.insert(d.key.clone());
                pending.push(d);
            }
            if pending.len() >= batch || (end && !pending.is_empty()) {
                conn.restore(&pending)?;
                pending.clear();
                progress::report(backed_up.len() as u64, None, "keys restored");
            }
            if end {
                break;
            }
        }

        // Keys under a backed-up prefix that the backup does not hold were
        // created by the step.
        let mut created = Vec::new();
        for prefix in &meta.prefixes {
            created.extend(
                conn.scan_prefix(prefix)?
                    .into_iter()
                    .filter(|k| !backed_up.contains(k)),
            );
        }
        created.sort();
        created.dedup();
        for chunk in created.chunks(batch) {
            conn.delete(chunk)?;
        }
        log::info(
            "keys restored",
            &[
                ("restored", &backed_up.len().to_string()),
                ("deleted", &created.len().to_string()),
            ],
        );

        // Check before reporting: each prefix as the backup saw it.
        let states = walk(&conn, &meta.prefixes, meta.batch_keys.max(1), |_| Ok(()))?;
        for (state, saved) in states.iter().zip(&manifest.tables) {
            if state != saved {
                return Err(Error::PreconditionFailed(format!(
                    "after restore, prefix `{}` has {} keys (checksum {}), not the {} keys (checksum {}) backed up; was a key changed meanwhile, or did a backed-up key expire?",
                    state.name, state.rows, state.checksum, saved.rows, saved.checksum
                )));
            }
        }
        Ok(states)
    }
}
