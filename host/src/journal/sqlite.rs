//! The embedded journal of one plan: an SQLite file in the plan's state
//! directory, with its format checked and older formats migrated on open.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};
use time::OffsetDateTime;

use super::record::{self, Metric, Why, FORMAT};
use super::{
    lease, now, Approval, Journal, JournalError, RawStep, RunRecord, StepRecord, StepState,
    StoredBackup, Transition,
};

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Why a SQLite journal could not be set up.
enum SetupError {
    Sqlite(rusqlite::Error),
    Newer { found: u32, written_by: String },
}

impl From<rusqlite::Error> for SetupError {
    fn from(e: rusqlite::Error) -> Self {
        SetupError::Sqlite(e)
    }
}

/// Format 1 → 2: transitions get their typed cause, read from their words.
fn migrate_sqlite_1_to_2(tx: &rusqlite::Transaction) -> Result<(), rusqlite::Error> {
    let has_cause: bool = tx.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info('transitions') WHERE name = 'cause'",
        [],
        |r| r.get(0),
    )?;
    if !has_cause {
        tx.execute_batch("ALTER TABLE transitions ADD COLUMN cause TEXT")?;
    }
    let rows = {
        let mut stmt =
            tx.prepare("SELECT seq, state, detail FROM transitions WHERE cause IS NULL")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    let mut update = tx.prepare("UPDATE transitions SET cause = ?2 WHERE seq = ?1")?;
    for (seq, state, detail) in rows {
        if let Some(cause) = record::format_1_cause_json(&state, &detail) {
            update.execute(params![seq, cause])?;
        }
    }
    Ok(())
}

/// The embedded journal of one plan: an SQLite file.
pub struct SqliteJournal {
    path: PathBuf,
    conn: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id          TEXT PRIMARY KEY,
    command     TEXT NOT NULL,
    plan_path   TEXT NOT NULL,
    plan_hash   TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    outcome     TEXT
);
CREATE TABLE IF NOT EXISTS steps (
    step_id       TEXT PRIMARY KEY,
    state         TEXT NOT NULL,
    run_id        TEXT NOT NULL,
    plugin_digest TEXT NOT NULL,
    params_hash   TEXT NOT NULL,
    backup        TEXT,
    metrics       TEXT,
    error         TEXT,
    updated_at    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS transitions (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id  TEXT NOT NULL,
    step_id TEXT NOT NULL,
    state   TEXT NOT NULL,
    at      TEXT NOT NULL,
    detail  TEXT NOT NULL,
    cause   TEXT
);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id  TEXT NOT NULL,
    step_id TEXT NOT NULL,
    name    TEXT NOT NULL,
    digest  TEXT NOT NULL,
    size    INTEGER NOT NULL,
    PRIMARY KEY (run_id, step_id, name)
);
CREATE TABLE IF NOT EXISTS approvals (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    step_id TEXT NOT NULL,
    run_id  TEXT NOT NULL,
    record  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

impl SqliteJournal {
    /// Opens (creating if needed) the journal in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Self, JournalError> {
        let path = state_dir.join("journal.db");
        let err = |source| JournalError::Sqlite {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(|source| JournalError::Io {
            path: state_dir.to_path_buf(),
            source,
        })?;
        // Switching a new file to WAL takes an exclusive lock, and SQLite
        // reports contention there without calling the busy handler: when
        // several runs create the journal at once, retry the whole setup.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match Self::setup(&path) {
                Err(SetupError::Sqlite(e))
                    if is_busy(&e) && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(SetupError::Sqlite(e)) => return Err(err(e)),
                Err(SetupError::Newer { found, written_by }) => {
                    return Err(JournalError::Newer {
                        at: path.display().to_string(),
                        found,
                        written_by,
                        ours: env!("CARGO_PKG_VERSION"),
                    })
                }
                Ok(conn) => return Ok(SqliteJournal { path, conn }),
            }
        }
    }

    fn setup(path: &Path) -> Result<Connection, SetupError> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let existing: bool = tx.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'runs'",
            [],
            |r| r.get(0),
        )?;
        let has_meta: bool = tx.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'meta'",
            [],
            |r| r.get(0),
        )?;
        let stored = if has_meta {
            tx.query_row(
                "SELECT (SELECT value FROM meta WHERE key = 'format'),
                        (SELECT value FROM meta WHERE key = 'written_by')",
                [],
                |r| {
                    Ok((
                        r.get::<_, Option<String>>(0)?,
                        r.get::<_, Option<String>>(1)?,
                    ))
                },
            )?
        } else {
            (None, None)
        };
        let found = match &stored.0 {
            Some(v) => v.parse().unwrap_or(u32::MAX),
            None if existing => 1,
            None => FORMAT,
        };
        if found > FORMAT {
            return Err(SetupError::Newer {
                found,
                written_by: stored.1.unwrap_or_else(|| "unknown".into()),
            });
        }
        tx.execute_batch(SCHEMA)?;
        tx.execute_batch(lease::SCHEMA)?;
        if found < FORMAT {
            migrate_sqlite_1_to_2(&tx)?;
        }
        if found < FORMAT || stored.0.is_none() {
            tx.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('format', ?1), ('written_by', ?2)",
                params![FORMAT.to_string(), env!("CARGO_PKG_VERSION")],
            )?;
        }
        tx.commit()?;
        if found < FORMAT {
            tracing::warn!(
                "journal {}: migrated from format {found} to format {FORMAT} (transitions now record their cause); \
                 a sluice older than {} can no longer write to it",
                path.display(),
                env!("CARGO_PKG_VERSION")
            );
        }
        Ok(conn)
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self) -> impl FnOnce(rusqlite::Error) -> JournalError + '_ {
        move |source| JournalError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }
}

impl Journal for SqliteJournal {
    /// Records the start of a run; returns its id.
    fn begin_run(
        &self,
        command: &str,
        plan_path: &Path,
        plan_hash: &str,
    ) -> Result<String, JournalError> {
        let id = format!(
            "{}-{}",
            OffsetDateTime::now_utc().unix_timestamp(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        self.conn
            .execute(
                "INSERT INTO runs (id, command, plan_path, plan_hash, started_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, command, plan_path.display().to_string(), plan_hash, now()],
            )
            .map_err(self.err())?;
        Ok(id)
    }

    /// The command (`run`, `rollback`) of a recorded run.
    fn run_command(&self, run_id: &str) -> Result<Option<String>, JournalError> {
        self.conn
            .query_row(
                "SELECT command FROM runs WHERE id = ?1",
                params![run_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())
    }

    /// Records how a run ended.
    fn finish_run(&self, run_id: &str, outcome: &str) -> Result<(), JournalError> {
        self.conn
            .execute(
                "UPDATE runs SET finished_at = ?2, outcome = ?3 WHERE id = ?1",
                params![run_id, now(), outcome],
            )
            .map_err(self.err())?;
        Ok(())
    }

    fn runs(&self) -> Result<Vec<RunRecord>, JournalError> {
        // Insertion order is start order. (Not `started_at`: RFC 3339 text
        // with a variable fraction, `…:07Z` and `…:07.5Z`, does not sort as
        // time does.)
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, command, plan_hash, started_at, finished_at, outcome FROM runs
                 ORDER BY rowid",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                Ok(RunRecord {
                    id: r.get(0)?,
                    command: r.get(1)?,
                    plan_hash: r.get(2)?,
                    started_at: r.get(3)?,
                    finished_at: r.get(4)?,
                    outcome: r.get(5)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// Moves a step to `state`, recording the transition, in one transaction.
    /// `identity` (plugin digest, params hash) is set when a step (re)starts.
    fn transition(
        &mut self,
        run_id: &str,
        step_id: &str,
        state: StepState,
        why: &Why,
        identity: Option<(&str, &str)>,
    ) -> Result<(), JournalError> {
        let at = now();
        let detail = why.detail.as_str();
        let path = self.path.clone();
        let err = |source| JournalError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let error = state.records_error().then_some(detail);
        match identity {
            Some((digest, params_hash)) => {
                tx.execute(
                    "INSERT INTO steps (step_id, state, run_id, plugin_digest, params_hash, error, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (step_id) DO UPDATE SET state = ?2, run_id = ?3, plugin_digest = ?4,
                        params_hash = ?5, error = ?6, updated_at = ?7, backup = NULL, metrics = NULL",
                    params![step_id, state.as_str(), run_id, digest, params_hash, error, at],
                )
                .map_err(err)?;
            }
            None => {
                tx.execute(
                    "UPDATE steps SET state = ?2, run_id = ?3, error = coalesce(?4, error), updated_at = ?5 WHERE step_id = ?1",
                    params![step_id, state.as_str(), run_id, error, at],
                )
                .map_err(err)?;
            }
        }
        tx.execute(
            "INSERT INTO transitions (run_id, step_id, state, at, detail, cause) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![run_id, step_id, state.as_str(), at, detail, why.cause_json()],
        )
        .map_err(err)?;
        crate::failpoint!(&format!("journal:{state}:before-commit"));
        tx.commit().map_err(err)?;
        crate::failpoint!(&format!("journal:{state}:after-commit"));
        Ok(())
    }

    /// Records a verified backup of a step.
    fn record_backup(
        &mut self,
        run_id: &str,
        step_id: &str,
        backup: &StoredBackup,
    ) -> Result<(), JournalError> {
        let path = self.path.clone();
        let err = |source| JournalError::Sqlite {
            path: path.clone(),
            source,
        };
        let json = serde_json::to_string(backup).expect("backups serialize");
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        tx.execute(
            "UPDATE steps SET backup = ?2 WHERE step_id = ?1",
            params![step_id, json],
        )
        .map_err(err)?;
        for a in &backup.artifacts {
            tx.execute(
                "INSERT OR REPLACE INTO artifacts (run_id, step_id, name, digest, size) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![run_id, step_id, a.name, a.digest, a.size as i64],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// Records the metrics of a step's validate.
    fn record_metrics(&self, step_id: &str, metrics: &[Metric]) -> Result<(), JournalError> {
        let json = serde_json::to_string(metrics).expect("metrics serialize");
        self.conn
            .execute(
                "UPDATE steps SET metrics = ?2 WHERE step_id = ?1",
                params![step_id, json],
            )
            .map_err(self.err())?;
        Ok(())
    }

    fn record_approval(&self, approval: &Approval) -> Result<(), JournalError> {
        let json = serde_json::to_string(approval).expect("approval serializes");
        self.conn
            .execute(
                "INSERT INTO approvals (step_id, run_id, record) VALUES (?1, ?2, ?3)",
                params![approval.step_id, approval.run_id, json],
            )
            .map_err(self.err())?;
        Ok(())
    }

    fn approvals(&self, step_id: &str) -> Result<Vec<Approval>, JournalError> {
        let mut stmt = self
            .conn
            .prepare("SELECT record FROM approvals WHERE step_id = ?1 ORDER BY seq")
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![step_id], |r| r.get::<_, String>(0))
            .map_err(self.err())?;
        rows.map(|row| {
            let json = row.map_err(self.err())?;
            serde_json::from_str(&json).map_err(|e| JournalError::Corrupt {
                path: self.path.clone(),
                step: step_id.to_string(),
                reason: format!("approval record: {e}"),
            })
        })
        .collect()
    }

    /// What the journal knows of a step.
    fn step(&self, step_id: &str) -> Result<Option<StepRecord>, JournalError> {
        let row = self
            .conn
            .query_row(
                "SELECT step_id, state, run_id, plugin_digest, params_hash, backup, metrics, error, updated_at
                 FROM steps WHERE step_id = ?1",
                params![step_id],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, Option<String>>(5)?,
                        r.get::<_, Option<String>>(6)?,
                        r.get::<_, Option<String>>(7)?,
                        r.get::<_, String>(8)?,
                    ))
                },
            )
            .optional()
            .map_err(self.err())?;
        let Some((
            step_id,
            state,
            run_id,
            plugin_digest,
            params_hash,
            backup,
            metrics,
            error,
            updated_at,
        )) = row
        else {
            return Ok(None);
        };
        let raw = RawStep {
            state,
            run_id,
            plugin_digest,
            params_hash,
            backup,
            metrics,
            error,
            updated_at,
        };
        raw.decode(step_id.clone(), |reason| JournalError::Corrupt {
            path: self.path.clone(),
            step: step_id.clone(),
            reason,
        })
        .map(Some)
    }

    /// Every transition of a step, oldest first.
    fn transitions(&self, step_id: &str) -> Result<Vec<Transition>, JournalError> {
        let mut stmt = self
            .conn
            .prepare("SELECT run_id, step_id, state, at, detail, cause FROM transitions WHERE step_id = ?1 ORDER BY seq")
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![step_id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<String>>(5)?,
                ))
            })
            .map_err(self.err())?;
        let mut out = Vec::new();
        for row in rows {
            let (run_id, step_id, state, at, detail, cause) = row.map_err(self.err())?;
            let corrupt = |reason| JournalError::Corrupt {
                path: self.path.clone(),
                step: step_id.clone(),
                reason,
            };
            let state = state.parse().map_err(corrupt)?;
            let cause = record::decode_cause(cause.as_deref(), state, &detail).map_err(corrupt)?;
            out.push(Transition {
                run_id,
                step_id,
                state,
                at,
                cause,
                detail,
            });
        }
        Ok(out)
    }

    fn force_unlock(
        &self,
        target: &str,
        reason: &str,
    ) -> Result<Option<lease::LeaseHolder>, JournalError> {
        lease::force_unlock(&self.path, target, reason)
    }

    fn lease(
        &self,
        targets: &[String],
        run_id: &str,
        duration: std::time::Duration,
    ) -> Result<Box<dyn Send>, lease::LeaseError> {
        Ok(Box::new(lease::Lease::acquire(
            &self.path, targets, run_id, duration,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::outcome::Phase;
    use crate::journal::record::Cause;

    /// A journal as format 1 left it: no `meta`, transitions without causes.
    fn format_1(dir: &Path) {
        let c = Connection::open(dir.join("journal.db")).unwrap();
        c.execute_batch(
            "CREATE TABLE runs (id TEXT PRIMARY KEY, command TEXT NOT NULL, plan_path TEXT NOT NULL,
                plan_hash TEXT NOT NULL, started_at TEXT NOT NULL, finished_at TEXT, outcome TEXT);
             CREATE TABLE transitions (seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL,
                step_id TEXT NOT NULL, state TEXT NOT NULL, at TEXT NOT NULL, detail TEXT NOT NULL);
             INSERT INTO transitions (run_id, step_id, state, at, detail) VALUES
                ('r', 's', 'backing-up', 't0', 'backup started'),
                ('r', 's', 'backed-up', 't1', 'backup verified: 1 artifacts, 9 bytes'),
                ('r', 's', 'rolling-back', 't2', 'validate failed: boom');",
        )
        .unwrap();
    }

    #[test]
    fn a_format_1_journal_gets_causes_and_its_format_once() {
        let dir = tempfile::tempdir().unwrap();
        format_1(dir.path());
        let j = SqliteJournal::open(dir.path()).unwrap();
        let causes: Vec<Cause> = j
            .transitions("s")
            .unwrap()
            .into_iter()
            .map(|t| t.cause)
            .collect();
        assert_eq!(
            causes,
            [
                Cause::Started {
                    phase: Phase::Backup
                },
                Cause::BackupVerified,
                Cause::Failed(record::StepFailure::new(
                    Phase::Rollback,
                    record::FailureKind::Unrecorded,
                    "validate failed: boom"
                )),
            ]
        );
        let stored: (String, i64) = j
            .conn
            .query_row(
                "SELECT (SELECT value FROM meta WHERE key = 'format'),
                        (SELECT count(*) FROM transitions WHERE cause IS NULL)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(stored, (FORMAT.to_string(), 0));
    }

    #[test]
    fn a_newer_format_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        drop(SqliteJournal::open(dir.path()).unwrap());
        let path = dir.path().join("journal.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "UPDATE meta SET value = '7' WHERE key = 'format';
                 UPDATE meta SET value = '2.0.0' WHERE key = 'written_by';",
            )
            .unwrap();
        let err = SqliteJournal::open(dir.path()).err().expect("refused");
        let text = err.to_string();
        assert!(
            text.contains("format 7 (written by sluice 2.0.0)"),
            "{text}"
        );
        assert!(
            text.contains(&format!("this sluice {}", env!("CARGO_PKG_VERSION"))),
            "{text}"
        );
        let format: String = Connection::open(&path)
            .unwrap()
            .query_row("SELECT value FROM meta WHERE key = 'format'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(format, "7");
    }
}
