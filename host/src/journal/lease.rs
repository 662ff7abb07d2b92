//! Leases: one run at a time per target, without locks that outlive their
//! holder. A lease row names its owner (host, pid, run), is renewed by a
//! heartbeat and expires unless renewed; a holder on this host whose process
//! is gone has expired at once. The guard releases on every path.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{now, JournalError};

/// Who holds a lease.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseHolder {
    /// Run id.
    pub run_id: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// When it was taken (RFC 3339).
    pub since: String,
    /// Last heartbeat (RFC 3339).
    pub heartbeat: String,
    /// Seconds until it expires unless renewed.
    pub expires_in: f64,
}

/// Why a lease could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another run holds it.
    #[error(
        "target `{target}` is held by run {} (host {}, pid {}) since {}; last heartbeat {}; \
         it expires in {:.0}s unless renewed. Wait for that run, or if it is dead on another host, \
         wait for the lease to expire or `sluice unlock <plan> {target} --force --reason \"…\"`",
        .holder.run_id, .holder.host, .holder.pid, .holder.since, .holder.heartbeat, .holder.expires_in
    )]
    Held {
        /// The target.
        target: String,
        /// Its holder.
        holder: Box<LeaseHolder>,
    },
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// This machine's name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS leases (
    target       TEXT PRIMARY KEY,
    run_id       TEXT NOT NULL,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    acquired_at  TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL,
    expires_at   REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS lease_events (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    target TEXT NOT NULL,
    event  TEXT NOT NULL,
    run_id TEXT,
    who    TEXT NOT NULL,
    reason TEXT NOT NULL,
    at     TEXT NOT NULL
);
";

fn open(path: &Path) -> Result<Connection, JournalError> {
    let err = |source| JournalError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open(path).map_err(err)?;
    conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(err)?;
    Ok(conn)
}

/// The current holder of a target's lease, if any.
fn holder_of(conn: &Connection, target: &str) -> rusqlite::Result<Option<LeaseHolder>> {
    conn.query_row(
        "SELECT run_id, host, pid, acquired_at, heartbeat_at, expires_at FROM leases WHERE target = ?1",
        params![target],
        |r| {
            Ok(LeaseHolder {
                run_id: r.get(0)?,
                host: r.get(1)?,
                pid: r.get(2)?,
                since: r.get(3)?,
                heartbeat: r.get(4)?,
                expires_in: r.get::<_, f64>(5)? - unix_now(),
            })
        },
    )
    .optional()
}

/// A held lease; renewed in the background, released when dropped.
pub struct Lease {
    path: PathBuf,
    targets: Vec<String>,
    run_id: String,
    stop: Option<mpsc::Sender<()>>,
    heartbeat: Option<std::thread::JoinHandle<()>>,
}

impl Lease {
    /// Takes the leases of `targets` (all or none) for `run_id`, valid for
    /// `duration` and renewed every third of it.
    pub fn acquire(
        journal: &Path,
        targets: &[String],
        run_id: &str,
        duration: Duration,
    ) -> Result<Lease, LeaseError> {
        let mut conn = open(journal)?;
        let err = |source| JournalError::Sqlite {
            path: journal.to_path_buf(),
            source,
        };
        let (host, pid) = (host_name(), std::process::id());
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        for target in targets {
            let row = holder_of(&tx, target).map_err(err)?;
            if let Some(holder) = row {
                let dead_here = holder.host == host && !process_alive(holder.pid);
                if holder.expires_in > 0.0 && !dead_here {
                    return Err(LeaseError::Held {
                        target: target.clone(),
                        holder: Box::new(holder),
                    });
                }
                let why = if dead_here {
                    "holder process is gone"
                } else {
                    "lease expired"
                };
                tx.execute(
                    "INSERT INTO lease_events (target, event, run_id, who, reason, at) VALUES (?1, 'takeover', ?2, ?3, ?4, ?5)",
                    params![target, run_id, format!("{host}:{pid}"), format!("{why} (was run {})", holder.run_id), now()],
                )
                .map_err(err)?;
            }
            tx.execute(
                "INSERT OR REPLACE INTO leases (target, run_id, host, pid, acquired_at, heartbeat_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)",
                params![target, run_id, host, pid, now(), unix_now() + duration.as_secs_f64()],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        crate::failpoint!("lease:acquired");

        let (stop, stopped) = mpsc::channel::<()>();
        let (path, beat_targets, beat_run) =
            (journal.to_path_buf(), targets.to_vec(), run_id.to_string());
        let heartbeat = std::thread::Builder::new()
            .name("sluice-lease".into())
            .spawn(move || {
                let Ok(conn) = open(&path) else { return };
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(duration / 3) {
                    for target in &beat_targets {
                        let _ = conn.execute(
                            "UPDATE leases SET heartbeat_at = ?3, expires_at = ?4 WHERE target = ?1 AND run_id = ?2",
                            params![target, beat_run, now(), unix_now() + duration.as_secs_f64()],
                        );
                    }
                }
            })
            .ok();
        Ok(Lease {
            path: journal.to_path_buf(),
            targets: targets.to_vec(),
            run_id: run_id.to_string(),
            stop: Some(stop),
            heartbeat,
        })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
        if let Ok(conn) = open(&self.path) {
            for target in &self.targets {
                let _ = conn.execute(
                    "DELETE FROM leases WHERE target = ?1 AND run_id = ?2",
                    params![target, self.run_id],
                );
            }
        }
    }
}

/// Removes a target's lease whoever holds it, recording who and why.
pub fn force_unlock(
    journal: &Path,
    target: &str,
    reason: &str,
) -> Result<Option<LeaseHolder>, JournalError> {
    let mut conn = open(journal)?;
    let err = |source| JournalError::Sqlite {
        path: journal.to_path_buf(),
        source,
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    let holder = holder_of(&tx, target).map_err(err)?;
    tx.execute("DELETE FROM leases WHERE target = ?1", params![target])
        .map_err(err)?;
    let who = format!(
        "{}@{}:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into()),
        host_name(),
        std::process::id()
    );
    tx.execute(
        "INSERT INTO lease_events (target, event, run_id, who, reason, at) VALUES (?1, 'forced-unlock', ?2, ?3, ?4, ?5)",
        params![target, holder.as_ref().map(|h| h.run_id.clone()), who, reason, now()],
    )
    .map_err(err)?;
    tx.commit().map_err(err)?;
    Ok(holder)
}
