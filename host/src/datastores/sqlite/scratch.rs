//! Conformance scratch files: one prepared file (empty, or a `VACUUM INTO`
//! copy of the given file, fixture applied), copied afresh for every check
//! sequence; the original is never written.

use std::path::{Path, PathBuf};

use futures_util::future::BoxFuture;

use super::copy::copy_file;
use crate::datastores::{Endpoint, ScratchSource, ScratchTarget};
use crate::plan::SqliteFiles;

/// The prepared file every sequence starts from.
struct SqliteScratch {
    dir: PathBuf,
    pristine: PathBuf,
}

/// Prepares `dir/pristine.db` from `source` and applies `fixture` (SQL).
pub(super) fn prepare(
    source: ScratchSource,
    fixture: Option<&str>,
    dir: &Path,
) -> Result<Box<dyn ScratchTarget>, String> {
    let pristine = dir.join("pristine.db");
    match source {
        ScratchSource::Empty => {}
        ScratchSource::CopyOf(source) => {
            if !source.is_file() {
                return Err(format!("{}: no such SQLite file", source.display()));
            }
            copy_file(&source, &pristine).map_err(|e| e.to_string())?;
        }
        ScratchSource::Server(url) => {
            return Err(format!(
                "{}: a SQLite scratch target is a file, not a server",
                url.redacted_url()
            ))
        }
    }
    let conn = rusqlite::Connection::open(&pristine)
        .map_err(|e| format!("{}: {e}", pristine.display()))?;
    if let Some(sql) = fixture {
        conn.execute_batch(sql)
            .map_err(|e| format!("fixture (SQL on SQLite): {e}"))?;
    }
    Ok(Box::new(SqliteScratch {
        dir: dir.to_path_buf(),
        pristine,
    }))
}

impl ScratchTarget for SqliteScratch {
    /// A new copy of the prepared file.
    fn fresh(&self, n: usize) -> BoxFuture<'_, Result<Endpoint, String>> {
        Box::pin(async move {
            let path = self.dir.join(format!("check-{n}.db"));
            std::fs::copy(&self.pristine, &path).map_err(|e| {
                format!(
                    "copying {} to {}: {e}",
                    self.pristine.display(),
                    path.display()
                )
            })?;
            Ok(Endpoint::File(SqliteFiles::single(path)))
        })
    }
}
