//! Rehearsal copies of a SQLite target: `VACUUM INTO` from a read-only
//! connection, one read transaction, so the copy is a consistent snapshot
//! even of a live WAL database (a raw `cp` can catch the main file and its
//! WAL at different moments). Attached files are copied alike.

use std::path::{Path, PathBuf};

use futures_util::future::BoxFuture;
use sha2::{Digest, Sha256};

use crate::datastores::{CopyError, DatastoreError, Endpoint, RehearsalCopy};
use crate::plan::SqliteFiles;

/// SQLite files in the rehearsal directory: the database and each attached
/// file that existed.
#[derive(Debug)]
struct SqliteCopy {
    files: SqliteFiles,
}

impl RehearsalCopy for SqliteCopy {
    fn endpoint(&self) -> Endpoint {
        Endpoint::File(self.files.clone())
    }

    fn describe(&self) -> String {
        format!("SQLite file {} (VACUUM INTO)", self.files.describe())
    }

    fn remove(&self) -> BoxFuture<'_, Result<(), DatastoreError>> {
        Box::pin(async move {
            for path in self.files.all() {
                for suffix in ["", "-wal", "-shm", "-journal"] {
                    let mut p = path.to_path_buf().into_os_string();
                    p.push(suffix);
                    match std::fs::remove_file(&p) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(DatastoreError::host(
                                "SLUICE_IO",
                                format!("{}: {e}", PathBuf::from(p).display()),
                            ))
                        }
                    }
                }
            }
            Ok(())
        })
    }
}

/// Copies the target's files into `dir`. Attached files are copied beside
/// the database copy (`<label>.<schema>.db`); one not created yet is not
/// copied, so the rehearsal starts from the same absence.
pub(super) async fn copy(
    source: &SqliteFiles,
    dir: &Path,
    label: &str,
) -> Result<Box<dyn RehearsalCopy>, CopyError> {
    let files = SqliteFiles {
        path: dir.join(format!("{label}.db")),
        attach: source
            .attach
            .keys()
            .map(|schema| (schema.clone(), dir.join(format!("{label}.{schema}.db"))))
            .collect(),
    };
    let (source, dest) = (source.clone(), files.clone());
    tokio::task::spawn_blocking(move || {
        copy_file(&source.path, &dest.path)?;
        for (schema, from) in &source.attach {
            if from.is_file() {
                copy_file(from, &dest.attach[schema])?;
            }
        }
        Ok::<_, CopyError>(())
    })
    .await
    .map_err(|e| CopyError {
        target: label.to_string(),
        reason: e.to_string(),
    })??;
    Ok(Box::new(SqliteCopy { files }))
}

/// Copies one database file with `VACUUM INTO`.
pub(super) fn copy_file(source: &Path, dest: &Path) -> Result<(), CopyError> {
    let fail = |reason: String| CopyError {
        target: source.display().to_string(),
        reason,
    };
    let conn = rusqlite::Connection::open_with_flags(
        source,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| fail(e.to_string()))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(|e| fail(e.to_string()))?;
    let dest_text = dest
        .to_str()
        .ok_or_else(|| fail(format!("{} is not UTF-8", dest.display())))?;
    conn.execute("VACUUM INTO ?1", [dest_text])
        .map_err(|e| fail(format!("VACUUM INTO {}: {e}", dest.display())))?;
    Ok(())
}

/// The sha256 of the database file; with attached files, the sha256 over
/// the database file's digest and each attached file's `schema=digest`
/// (`schema=absent` for one not created yet), so any byte of any of them counts.
pub(super) fn files_sha256(files: &SqliteFiles) -> Result<String, DatastoreError> {
    let digest = |path: &Path| -> Result<Option<String>, DatastoreError> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(Some(hex::encode(Sha256::digest(&bytes)))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(DatastoreError::host(
                "SLUICE_IO",
                format!("{}: {e}", path.display()),
            )),
        }
    };
    let main = digest(&files.path)?.ok_or_else(|| {
        DatastoreError::host(
            "SLUICE_IO",
            format!("{} does not exist", files.path.display()),
        )
    })?;
    if files.attach.is_empty() {
        return Ok(main);
    }
    let mut all = Sha256::new();
    all.update(main.as_bytes());
    for (schema, path) in &files.attach {
        let d = digest(path)?.unwrap_or_else(|| "absent".to_string());
        all.update(format!("\n{schema}={d}").as_bytes());
    }
    Ok(hex::encode(all.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastores::sqlite::fingerprint;

    #[test]
    fn vacuum_into_copies_a_live_wal_database_from_a_read_only_connection() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.db");
        let writer = rusqlite::Connection::open(&src).unwrap();
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL; CREATE TABLE t (x INTEGER); \
                 INSERT INTO t VALUES (1), (2), (3);",
            )
            .unwrap();
        // The writer stays open: the rows live in the WAL, not the main file.
        let dest = dir.path().join("copy.db");
        copy_file(&src, &dest).unwrap();
        let copy = rusqlite::Connection::open(&dest).unwrap();
        let n: i64 = copy
            .query_row("SELECT sum(x) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 6);
        assert_eq!(
            fingerprint(&SqliteFiles::single(src), None).unwrap(),
            fingerprint(&SqliteFiles::single(dest), None).unwrap()
        );
        drop(writer);
    }

    #[tokio::test]
    async fn sqlite_copies_take_attached_files_along() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = SqliteFiles::single(dir.path().join("app.db"));
        files
            .attach
            .insert("sqitch".into(), dir.path().join("sqitch.db"));
        files
            .attach
            .insert("later".into(), dir.path().join("later.db"));
        rusqlite::Connection::open(&files.path)
            .unwrap()
            .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        rusqlite::Connection::open(&files.attach["sqitch"])
            .unwrap()
            .execute_batch("CREATE TABLE changes (id); INSERT INTO changes VALUES ('a');")
            .unwrap();
        let out = dir.path().join("copies");
        std::fs::create_dir(&out).unwrap();
        let copy = copy(&files, &out, "plan-app").await.unwrap();
        let Endpoint::File(copied) = copy.endpoint() else {
            panic!("a file copy")
        };
        assert_eq!(
            fingerprint(&files, None).unwrap(),
            fingerprint(&copied, None).unwrap()
        );
        assert!(copied.attach["sqitch"].starts_with(&out));
        // Not created yet at the source: not created in the copy either.
        assert!(!copied.attach["later"].exists());
        let before = files_sha256(&files).unwrap();
        copy.remove().await.unwrap();
        assert!(!copied.attach["sqitch"].exists() && !copied.path.exists());
        assert_eq!(files_sha256(&files).unwrap(), before);
    }
}
