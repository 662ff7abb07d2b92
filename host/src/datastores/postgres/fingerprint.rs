//! The host's own measurements of a PostgreSQL target — fingerprints and
//! backup estimates — and the snapshot a backup is held in while it is
//! taken and verified.

use std::collections::BTreeMap;

use futures_util::StreamExt;
use sluice_sdk::checksum::TableChecksum;

use super::values::TextParam;
use super::{connect_client, pg_error, quote_table, schema_digest, BEGIN_READ_ONLY};
use crate::datastores::{BackupHold, DatastoreError, Fingerprint, TableFingerprint};
use crate::secret::Secret;

/// The host's own measurement of a PostgreSQL target, in one read-only
/// snapshot: a digest of the schema (every catalog object, see
/// [`schema_digest`]), for each of `tables` its row count and the checksum
/// of its `COPY` text lines (the same formula plugins use), and the values
/// of those tables' sequences ([`schema_digest::sequence_values`]).
pub async fn fingerprint(url: &Secret, tables: &[String]) -> Result<Fingerprint, DatastoreError> {
    fingerprint_in(url, tables, None).await
}

/// [`fingerprint`] in an exported snapshot (a held backup's), when given.
pub async fn fingerprint_in(
    url: &Secret,
    tables: &[String],
    snapshot: Option<&str>,
) -> Result<Fingerprint, DatastoreError> {
    let (client, _) = connect_client(url).await?;
    let import = snapshot
        .map(snapshot_import)
        .transpose()?
        .map(|i| format!("; {i}"))
        .unwrap_or_default();
    client
        .batch_execute(&format!("{BEGIN_READ_ONLY}{import}"))
        .await
        .map_err(pg_error)?;
    let catalog = schema_digest::Catalog::read(&client)
        .await
        .map_err(pg_error)?;
    let sequences = schema_digest::sequence_values(&client, tables)
        .await
        .map_err(pg_error)?;
    let mut out = BTreeMap::new();
    for table in tables {
        let exists: bool = client
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL",
                &[&TextParam(sluice_sdk::row::ValueRef::Text(&quote_table(
                    table,
                )))],
            )
            .await
            .map_err(pg_error)?
            .get(0);
        if !exists {
            continue;
        }
        let stream = client
            .copy_out(&format!(
                "COPY (SELECT * FROM {}) TO STDOUT",
                quote_table(table)
            ))
            .await
            .map_err(pg_error)?;
        let mut stream = Box::pin(stream);
        let mut checksum = TableChecksum::new();
        while let Some(chunk) = stream.next().await {
            checksum.add_copy_lines(&chunk.map_err(pg_error)?);
        }
        out.insert(
            table.clone(),
            TableFingerprint {
                rows: checksum.rows(),
                checksum: checksum.hex(),
            },
        );
    }
    client.batch_execute("COMMIT").await.map_err(pg_error)?;
    Ok(Fingerprint {
        schema: catalog.digest(),
        objects: catalog.summary(),
        tables: out,
        sequences,
    })
}

/// Holds a snapshot for a backup: a read-only transaction that exports it
/// and stays open until the hold is dropped. The plugin's read-only
/// sessions and the host's verification import it, so the backup and its
/// check read one state while applications go on writing.
pub async fn hold_for_backup(url: &Secret) -> Result<BackupHold, DatastoreError> {
    let (client, _) = connect_client(url).await?;
    client
        .batch_execute(BEGIN_READ_ONLY)
        .await
        .map_err(pg_error)?;
    let id: String = client
        .query_one("SELECT pg_export_snapshot()", &[])
        .await
        .map_err(pg_error)?
        .get(0);
    Ok(BackupHold::new(Some(id), client))
}

/// `SET TRANSACTION SNAPSHOT` of an exported snapshot's id, which
/// PostgreSQL spells in hex digits and dashes (anything else is refused,
/// never spliced into SQL).
pub(super) fn snapshot_import(id: &str) -> Result<String, DatastoreError> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(DatastoreError::host(
            "SLUICE_SNAPSHOT",
            format!("`{id}` is not an exported snapshot id"),
        ));
    }
    Ok(format!("SET TRANSACTION SNAPSHOT '{id}'"))
}

/// Estimates, read-only, the bytes a backup of `tables` (every user table
/// when `None`) will hold: `pg_table_size` (rows and TOAST, no indexes) of
/// each. Tables that do not exist count 0.
pub async fn estimate_backup(
    url: &Secret,
    tables: Option<&[String]>,
) -> Result<u64, DatastoreError> {
    let (client, _) = connect_client(url).await?;
    client
        .batch_execute(BEGIN_READ_ONLY)
        .await
        .map_err(pg_error)?;
    let total: i64 = match tables {
        None => client
            .query_one(
                "SELECT coalesce(sum(pg_table_size(c.oid)), 0)::bigint FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('r', 'p') \
                 AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'sluice_journal', 'sluice_capture') \
                 AND n.nspname NOT LIKE 'pg_toast%'",
                &[],
            )
            .await
            .map_err(pg_error)?
            .get(0),
        Some(tables) => {
            let mut sum = 0i64;
            for table in tables {
                let quoted = quote_table(table);
                let size: i64 = client
                    .query_one(
                        "SELECT coalesce(pg_table_size(to_regclass($1)), 0)::bigint",
                        &[&TextParam(sluice_sdk::row::ValueRef::Text(&quoted))],
                    )
                    .await
                    .map_err(pg_error)?
                    .get(0);
                sum = sum.saturating_add(size);
            }
            sum
        }
    };
    client.batch_execute("COMMIT").await.map_err(pg_error)?;
    Ok(total.max(0) as u64)
}
