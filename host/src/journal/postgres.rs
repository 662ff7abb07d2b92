//! The shared journal: PostgreSQL, so several hosts and several plans can
//! record their runs in one database and lease targets from each other.
//!
//! Same records and the same state machine as [`SqliteJournal`](super::SqliteJournal),
//! in the `sluice_journal` schema; every row is keyed by a namespace (the
//! plan's name) so plans share a database without seeing each other. Each
//! transition is one transaction, committed with `synchronous_commit = on`
//! before the engine goes on.
//!
//! The engine calls the journal synchronously from async tasks, where the
//! blocking `postgres` client (which drives a runtime of its own) must not
//! run; so each connection lives on a thread of its own that serves requests
//! sent over a channel, like the SQLite datastore sessions.
//!
//! Leases: a target's lease is a session-level advisory lock on a key derived
//! from the target (the first 8 bytes of its sha256, so it does not depend on
//! PostgreSQL's `hashtext`), held by a connection the lease guard owns, plus a
//! row naming the holder. PostgreSQL releases the lock when the holder's
//! session ends, however its process died, so a lock that can be taken while
//! a row exists means a dead holder: taken over at once. A holder whose
//! session lingers (its host vanished and the server has not seen the socket
//! close) stops renewing its row; once the row has expired, its backend is
//! terminated and the lease taken over, as the embedded journal does.

use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use postgres::config::Host;
use postgres::{Client, Config, GenericClient, NoTls};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::lease::{host_name, LeaseError, LeaseHolder};
use super::record::{decode_cause, format_1_cause_json, Metric, Why, FORMAT};
use super::{
    now, Approval, Journal, JournalError, RawStep, RunRecord, StepRecord, StepState, StoredBackup,
    Transition,
};

/// The tables, created once per database under an advisory transaction lock
/// (two hosts opening a new database at once would otherwise race on the
/// catalog). `lease_events` comes last: its presence means all are there.
const SCHEMA: &str = "
CREATE SCHEMA IF NOT EXISTS sluice_journal;
CREATE TABLE IF NOT EXISTS sluice_journal.runs (
    namespace   TEXT NOT NULL,
    id          TEXT NOT NULL,
    command     TEXT NOT NULL,
    plan_path   TEXT NOT NULL,
    plan_hash   TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    outcome     TEXT,
    PRIMARY KEY (namespace, id)
);
CREATE TABLE IF NOT EXISTS sluice_journal.steps (
    namespace     TEXT NOT NULL,
    step_id       TEXT NOT NULL,
    state         TEXT NOT NULL,
    run_id        TEXT NOT NULL,
    plugin_digest TEXT NOT NULL,
    params_hash   TEXT NOT NULL,
    backup        TEXT,
    metrics       TEXT,
    error         TEXT,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (namespace, step_id)
);
CREATE TABLE IF NOT EXISTS sluice_journal.transitions (
    seq       BIGSERIAL PRIMARY KEY,
    namespace TEXT NOT NULL,
    run_id    TEXT NOT NULL,
    step_id   TEXT NOT NULL,
    state     TEXT NOT NULL,
    at        TEXT NOT NULL,
    detail    TEXT NOT NULL,
    cause     TEXT
);
CREATE INDEX IF NOT EXISTS transitions_by_step
    ON sluice_journal.transitions (namespace, step_id, seq);
CREATE TABLE IF NOT EXISTS sluice_journal.artifacts (
    namespace TEXT NOT NULL,
    run_id    TEXT NOT NULL,
    step_id   TEXT NOT NULL,
    name      TEXT NOT NULL,
    digest    TEXT NOT NULL,
    size      BIGINT NOT NULL,
    PRIMARY KEY (namespace, run_id, step_id, name)
);
CREATE TABLE IF NOT EXISTS sluice_journal.leases (
    key          TEXT PRIMARY KEY,
    namespace    TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    host         TEXT NOT NULL,
    pid          BIGINT NOT NULL,
    backend_pid  INTEGER NOT NULL,
    acquired_at  TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL,
    expires_at   DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS sluice_journal.lease_events (
    seq       BIGSERIAL PRIMARY KEY,
    key       TEXT NOT NULL,
    namespace TEXT NOT NULL,
    event     TEXT NOT NULL,
    run_id    TEXT,
    who       TEXT NOT NULL,
    reason    TEXT NOT NULL,
    at        TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sluice_journal.approvals (
    seq       BIGSERIAL PRIMARY KEY,
    namespace TEXT NOT NULL,
    step_id   TEXT NOT NULL,
    run_id    TEXT NOT NULL,
    record    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sluice_journal.meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

/// Name of the advisory lock that serializes schema creation.
const SCHEMA_LOCK: &str = "sluice_journal:schema";

/// How long opening a journal waits for the server, unless the URL says.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A journal connection idle longer than this is checked before use.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// How long a lease or an unlock waits for a session it terminated to end.
const TERMINATE_WAIT: Duration = Duration::from_secs(5);

/// How long a refused lease waits for the holder's row: a holder takes its
/// locks a moment before its row commits.
const ROW_WAIT: Duration = Duration::from_secs(1);

/// Pause between polls of a lock or a row.
const POLL: Duration = Duration::from_millis(50);

/// The advisory lock key for `name`: the first 8 bytes of its sha256.
fn lock_key(name: &str) -> i64 {
    let digest = Sha256::digest(name.as_bytes());
    i64::from_be_bytes(digest[..8].try_into().expect("sha256 has 8 bytes"))
}

/// The advisory lock key of a target's lease.
fn lease_lock(target: &str) -> i64 {
    lock_key(&format!("sluice_journal:lease:{target}"))
}

/// Where a journal is, safe to show: `postgres://host:port/dbname`, never
/// user, password or options.
fn place(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => config
            .get_hostaddrs()
            .first()
            .map_or_else(|| "localhost".to_string(), |a| a.to_string()),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().or(config.get_user()).unwrap_or("");
    format!("postgres://{host}:{port}/{db}")
}

fn connect(config: &Config) -> Result<Client, postgres::Error> {
    let mut client = config.connect(NoTls)?;
    // Durable before the engine goes on, whatever the server's default.
    client.batch_execute("SET synchronous_commit = on")?;
    Ok(client)
}

type Job = Box<dyn FnOnce(&mut Client) + Send>;

/// Sends requests to a connection's thread.
#[derive(Clone)]
struct Handle {
    jobs: mpsc::Sender<Job>,
    at: String,
}

impl Handle {
    /// Runs `f` on the connection and waits for its answer.
    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error> + Send + 'static,
    ) -> Result<T, JournalError> {
        let (reply, answer) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |client| {
            let _ = reply.send(f(client));
        });
        self.jobs.send(job).map_err(|_| self.gone())?;
        answer
            .recv()
            .map_err(|_| self.gone())?
            .map_err(|source| JournalError::Postgres {
                at: self.at.clone(),
                source,
            })
    }

    fn gone(&self) -> JournalError {
        JournalError::Unavailable {
            at: self.at.clone(),
            reason: "the thread serving its connection stopped".into(),
        }
    }
}

/// A connection owned by a thread of its own; closed when dropped.
struct Worker {
    handle: Option<Handle>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Connects on a new thread. With `reconnect`, a connection the server
    /// closed is opened again before the next request; never for a lease,
    /// whose locks ended with the session.
    fn start(
        config: Config,
        at: &str,
        name: &str,
        reconnect: bool,
    ) -> Result<Worker, JournalError> {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (ready, connected) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let mut client = match connect(&config) {
                    Ok(client) => client,
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                let _ = ready.send(Ok(()));
                let mut last_used = Instant::now();
                for job in inbox {
                    // A connection idle a while may have been closed by the
                    // server (restart, idle timeout): check before writing.
                    let stale = last_used.elapsed() > IDLE_CHECK
                        && client.is_valid(CONNECT_TIMEOUT).is_err();
                    if reconnect && (stale || client.is_closed()) {
                        if let Ok(fresh) = connect(&config) {
                            client = fresh;
                        }
                    }
                    job(&mut client);
                    last_used = Instant::now();
                }
                // The client is dropped here, on the thread that owns its runtime.
            })
            .map_err(|e| JournalError::Unavailable {
                at: at.into(),
                reason: format!("cannot start a thread: {e}"),
            })?;
        let worker = Worker {
            handle: Some(Handle {
                jobs,
                at: at.into(),
            }),
            thread: Some(thread),
        };
        match connected.recv() {
            Ok(Ok(())) => Ok(worker),
            Ok(Err(source)) => Err(JournalError::Postgres {
                at: at.into(),
                source,
            }),
            Err(_) => Err(worker.handle().gone()),
        }
    }

    fn handle(&self) -> &Handle {
        self.handle.as_ref().expect("taken only when dropped")
    }

    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error> + Send + 'static,
    ) -> Result<T, JournalError> {
        self.handle().run(f)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        drop(self.handle.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A journal shared by several hosts and plans, in a PostgreSQL database.
pub struct PgJournal {
    worker: Worker,
    config: Config,
    namespace: String,
    at: String,
}

impl PgJournal {
    /// Opens the journal of plan `namespace` in the database at `url`,
    /// creating the `sluice_journal` schema if it is missing. Errors name
    /// `postgres://host:port/dbname` and the namespace, never the URL.
    pub fn open(url: &str, namespace: &str) -> Result<PgJournal, JournalError> {
        let mut config = Config::from_str(url).map_err(|source| JournalError::Postgres {
            at: format!("postgres journal of plan `{namespace}` (its URL)"),
            source,
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("sluice journal");
        }
        let at = format!("{} (plan `{namespace}`)", place(&config));
        let worker = Worker::start(config.clone(), &at, "sluice-pg-journal", true)?;
        match worker.run(create_schema)? {
            Format::Current => {}
            Format::Migrated { from } => tracing::warn!(
                "journal {at}: migrated from format {from} to format {FORMAT} (transitions now record \
                 their cause); hosts running a sluice older than {} can no longer share it",
                env!("CARGO_PKG_VERSION")
            ),
            Format::Newer { found, written_by } => {
                return Err(JournalError::Newer {
                    at,
                    found,
                    written_by,
                    ours: env!("CARGO_PKG_VERSION"),
                })
            }
        }
        Ok(PgJournal {
            worker,
            config,
            namespace: namespace.into(),
            at,
        })
    }

    /// Where the journal is (`postgres://host:port/dbname (plan `…`)`), safe
    /// to show.
    pub fn location(&self) -> &str {
        &self.at
    }

    /// The namespace (plan name) this journal reads and writes.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Takes the leases of `targets` (all or none) for `run_id`, valid for
    /// `duration` and renewed every third of it; [`Journal::lease`] boxes it.
    pub fn lease_guard(
        &self,
        targets: &[String],
        run_id: &str,
        duration: Duration,
    ) -> Result<PgLease, LeaseError> {
        PgLease::acquire(
            self.config.clone(),
            &self.at,
            &self.namespace,
            targets,
            run_id,
            duration,
        )
    }

    fn corrupt(&self, step: &str, reason: String) -> JournalError {
        JournalError::Corrupt {
            path: self.at.clone().into(),
            step: step.into(),
            reason,
        }
    }
}

/// The journal's format as found on opening.
enum Format {
    /// This sluice's.
    Current,
    /// An older one, migrated just now.
    Migrated { from: u32 },
    /// A newer sluice's: left untouched.
    Newer { found: u32, written_by: String },
}

/// The stored format and who wrote it; `None` without a `meta` table.
fn stored_format(c: &mut impl GenericClient) -> Result<Option<(u32, String)>, postgres::Error> {
    let present: bool = c
        .query_one("SELECT to_regclass('sluice_journal.meta') IS NOT NULL", &[])?
        .get(0);
    if !present {
        return Ok(None);
    }
    let row = c.query_one(
        "SELECT (SELECT value FROM sluice_journal.meta WHERE key = 'format'),
                (SELECT value FROM sluice_journal.meta WHERE key = 'written_by')",
        &[],
    )?;
    let format: Option<String> = row.get(0);
    let by: Option<String> = row.get(1);
    Ok(format.map(|f| {
        (
            f.parse().unwrap_or(u32::MAX),
            by.unwrap_or_else(|| "unknown".into()),
        )
    }))
}

/// Creates the schema, or migrates an older format, under the schema lock;
/// a newer format is reported and left alone.
fn create_schema(client: &mut Client) -> Result<Format, postgres::Error> {
    match stored_format(client)? {
        Some((found, _)) if found == FORMAT => return Ok(Format::Current),
        Some((found, written_by)) if found > FORMAT => {
            return Ok(Format::Newer { found, written_by })
        }
        _ => {}
    }
    let mut tx = client.transaction()?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&lock_key(SCHEMA_LOCK)],
    )?;
    // Another host may have done it while this one waited for the lock.
    let found = match stored_format(&mut tx)? {
        Some((found, _)) if found == FORMAT => return Ok(Format::Current),
        Some((found, written_by)) if found > FORMAT => {
            return Ok(Format::Newer { found, written_by })
        }
        Some((found, _)) => found,
        None => {
            let existing: bool = tx
                .query_one("SELECT to_regclass('sluice_journal.runs') IS NOT NULL", &[])?
                .get(0);
            if existing {
                1
            } else {
                FORMAT
            }
        }
    };
    tx.batch_execute(SCHEMA)?;
    if found < FORMAT {
        // Format 1 → 2: transitions get their typed cause, read from their words.
        tx.batch_execute(
            "ALTER TABLE sluice_journal.transitions ADD COLUMN IF NOT EXISTS cause TEXT",
        )?;
        let rows = tx.query(
            "SELECT seq, state, detail FROM sluice_journal.transitions WHERE cause IS NULL",
            &[],
        )?;
        let update =
            tx.prepare("UPDATE sluice_journal.transitions SET cause = $2 WHERE seq = $1")?;
        for row in rows {
            let (seq, state, detail): (i64, String, String) = (row.get(0), row.get(1), row.get(2));
            if let Some(cause) = format_1_cause_json(&state, &detail) {
                tx.execute(&update, &[&seq, &cause])?;
            }
        }
    }
    tx.execute(
        "INSERT INTO sluice_journal.meta (key, value) VALUES ('format', $1), ('written_by', $2)
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        &[&FORMAT.to_string(), &env!("CARGO_PKG_VERSION")],
    )?;
    tx.commit()?;
    Ok(if found < FORMAT {
        Format::Migrated { from: found }
    } else {
        Format::Current
    })
}

/// A step row as stored, before decoding.
type StepRow = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
);

impl Journal for PgJournal {
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
        let args = (
            self.namespace.clone(),
            id.clone(),
            command.to_string(),
            plan_path.display().to_string(),
            plan_hash.to_string(),
        );
        self.worker.run(move |c| {
            let (ns, id, command, plan_path, plan_hash) = args;
            c.execute(
                "INSERT INTO sluice_journal.runs (namespace, id, command, plan_path, plan_hash, started_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[&ns, &id, &command, &plan_path, &plan_hash, &now()],
            )?;
            Ok(())
        })?;
        Ok(id)
    }

    fn run_command(&self, run_id: &str) -> Result<Option<String>, JournalError> {
        let (ns, id) = (self.namespace.clone(), run_id.to_string());
        self.worker.run(move |c| {
            Ok(c.query_opt(
                "SELECT command FROM sluice_journal.runs WHERE namespace = $1 AND id = $2",
                &[&ns, &id],
            )?
            .map(|r| r.get(0)))
        })
    }

    fn finish_run(&self, run_id: &str, outcome: &str) -> Result<(), JournalError> {
        let (ns, id, outcome) = (
            self.namespace.clone(),
            run_id.to_string(),
            outcome.to_string(),
        );
        self.worker.run(move |c| {
            c.execute(
                "UPDATE sluice_journal.runs SET finished_at = $3, outcome = $4 WHERE namespace = $1 AND id = $2",
                &[&ns, &id, &now(), &outcome],
            )?;
            Ok(())
        })
    }

    fn runs(&self) -> Result<Vec<RunRecord>, JournalError> {
        let ns = self.namespace.clone();
        self.worker.run(move |c| {
            Ok(c.query(
                "SELECT id, command, plan_hash, started_at, finished_at, outcome
                 FROM sluice_journal.runs WHERE namespace = $1 ORDER BY started_at::timestamptz, id",
                &[&ns],
            )?
            .iter()
            .map(|r| RunRecord {
                id: r.get(0),
                command: r.get(1),
                plan_hash: r.get(2),
                started_at: r.get(3),
                finished_at: r.get(4),
                outcome: r.get(5),
            })
            .collect())
        })
    }

    fn transition(
        &mut self,
        run_id: &str,
        step_id: &str,
        state: StepState,
        why: &Why,
        identity: Option<(&str, &str)>,
    ) -> Result<(), JournalError> {
        let error = state.records_error().then(|| why.detail.clone());
        let identity = identity.map(|(d, p)| (d.to_string(), p.to_string()));
        let (ns, run, step, detail, cause) = (
            self.namespace.clone(),
            run_id.to_string(),
            step_id.to_string(),
            why.detail.clone(),
            why.cause_json(),
        );
        self.worker.run(move |c| {
            let at = now();
            let mut tx = c.transaction()?;
            match identity {
                Some((digest, params_hash)) => {
                    tx.execute(
                        "INSERT INTO sluice_journal.steps
                            (namespace, step_id, state, run_id, plugin_digest, params_hash, error, updated_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                         ON CONFLICT (namespace, step_id) DO UPDATE SET state = $3, run_id = $4,
                            plugin_digest = $5, params_hash = $6, error = $7, updated_at = $8,
                            backup = NULL, metrics = NULL",
                        &[&ns, &step, &state.as_str(), &run, &digest, &params_hash, &error, &at],
                    )?;
                }
                None => {
                    tx.execute(
                        "UPDATE sluice_journal.steps SET state = $3, run_id = $4,
                            error = coalesce($5, error), updated_at = $6
                         WHERE namespace = $1 AND step_id = $2",
                        &[&ns, &step, &state.as_str(), &run, &error, &at],
                    )?;
                }
            }
            tx.execute(
                "INSERT INTO sluice_journal.transitions (namespace, run_id, step_id, state, at, detail, cause)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[&ns, &run, &step, &state.as_str(), &at, &detail, &cause],
            )?;
            crate::failpoint!(&format!("journal:{state}:before-commit"));
            tx.commit()?;
            crate::failpoint!(&format!("journal:{state}:after-commit"));
            Ok(())
        })
    }

    fn record_backup(
        &mut self,
        run_id: &str,
        step_id: &str,
        backup: &StoredBackup,
    ) -> Result<(), JournalError> {
        let json = serde_json::to_string(backup).expect("backups serialize");
        let artifacts: Vec<(String, String, i64)> = backup
            .artifacts
            .iter()
            .map(|a| (a.name.clone(), a.digest.clone(), a.size as i64))
            .collect();
        let (ns, run, step) = (
            self.namespace.clone(),
            run_id.to_string(),
            step_id.to_string(),
        );
        self.worker.run(move |c| {
            let mut tx = c.transaction()?;
            tx.execute(
                "UPDATE sluice_journal.steps SET backup = $3 WHERE namespace = $1 AND step_id = $2",
                &[&ns, &step, &json],
            )?;
            for (name, digest, size) in &artifacts {
                tx.execute(
                    "INSERT INTO sluice_journal.artifacts (namespace, run_id, step_id, name, digest, size)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (namespace, run_id, step_id, name)
                        DO UPDATE SET digest = EXCLUDED.digest, size = EXCLUDED.size",
                    &[&ns, &run, &step, name, digest, size],
                )?;
            }
            tx.commit()
        })
    }

    fn record_metrics(&self, step_id: &str, metrics: &[Metric]) -> Result<(), JournalError> {
        let json = serde_json::to_string(metrics).expect("metrics serialize");
        let (ns, step) = (self.namespace.clone(), step_id.to_string());
        self.worker.run(move |c| {
            c.execute(
                "UPDATE sluice_journal.steps SET metrics = $3 WHERE namespace = $1 AND step_id = $2",
                &[&ns, &step, &json],
            )?;
            Ok(())
        })
    }

    fn step(&self, step_id: &str) -> Result<Option<StepRecord>, JournalError> {
        let (ns, step) = (self.namespace.clone(), step_id.to_string());
        let row: Option<StepRow> = self.worker.run(move |c| {
            Ok(c.query_opt(
                "SELECT step_id, state, run_id, plugin_digest, params_hash, backup, metrics, error, updated_at
                 FROM sluice_journal.steps WHERE namespace = $1 AND step_id = $2",
                &[&ns, &step],
            )?
            .map(|r| {
                (
                    r.get(0),
                    r.get(1),
                    r.get(2),
                    r.get(3),
                    r.get(4),
                    r.get(5),
                    r.get(6),
                    r.get(7),
                    r.get(8),
                )
            }))
        })?;
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
        raw.decode(step_id.clone(), |r| self.corrupt(&step_id, r))
            .map(Some)
    }

    fn record_approval(&self, approval: &Approval) -> Result<(), JournalError> {
        let json = serde_json::to_string(approval).expect("approval serializes");
        let ns = self.namespace.clone();
        let (step, run) = (approval.step_id.clone(), approval.run_id.clone());
        self.worker.run(move |c| {
            c.execute(
                "INSERT INTO sluice_journal.approvals (namespace, step_id, run_id, record)
                 VALUES ($1, $2, $3, $4)",
                &[&ns, &step, &run, &json],
            )?;
            Ok(())
        })
    }

    fn approvals(&self, step_id: &str) -> Result<Vec<Approval>, JournalError> {
        let (ns, step) = (self.namespace.clone(), step_id.to_string());
        let rows: Vec<String> = self.worker.run(move |c| {
            Ok(c.query(
                "SELECT record FROM sluice_journal.approvals
                 WHERE namespace = $1 AND step_id = $2 ORDER BY seq",
                &[&ns, &step],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
        })?;
        rows.iter()
            .map(|json| {
                serde_json::from_str(json)
                    .map_err(|e| self.corrupt(step_id, format!("approval record: {e}")))
            })
            .collect()
    }

    fn transitions(&self, step_id: &str) -> Result<Vec<Transition>, JournalError> {
        let (ns, step) = (self.namespace.clone(), step_id.to_string());
        type Row = (String, String, String, String, String, Option<String>);
        let rows: Vec<Row> = self.worker.run(move |c| {
            Ok(c.query(
                "SELECT run_id, step_id, state, at, detail, cause FROM sluice_journal.transitions
                 WHERE namespace = $1 AND step_id = $2 ORDER BY seq",
                &[&ns, &step],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
            .collect())
        })?;
        rows.into_iter()
            .map(|(run_id, step_id, state, at, detail, cause)| {
                let state = state.parse().map_err(|r| self.corrupt(&step_id, r))?;
                let cause = decode_cause(cause.as_deref(), state, &detail)
                    .map_err(|r| self.corrupt(&step_id, r))?;
                Ok(Transition {
                    run_id,
                    step_id,
                    state,
                    at,
                    cause,
                    detail,
                })
            })
            .collect()
    }

    /// Removes the lease row, records who and why, and terminates the session
    /// holding the target's lock, so the holder's next heartbeat finds its
    /// lease gone and the next run can take it.
    fn force_unlock(
        &self,
        target: &str,
        reason: &str,
    ) -> Result<Option<LeaseHolder>, JournalError> {
        let who = format!(
            "{}@{}:{}",
            std::env::var("USER").unwrap_or_else(|_| "unknown".into()),
            host_name(),
            std::process::id()
        );
        let (ns, target, reason) = (
            self.namespace.clone(),
            target.to_string(),
            reason.to_string(),
        );
        self.worker.run(move |c| {
            let mut tx = c.transaction()?;
            let holder = holder_of(&mut tx, &target)?;
            tx.execute(
                "DELETE FROM sluice_journal.leases WHERE key = $1",
                &[&target],
            )?;
            tx.execute(
                "INSERT INTO sluice_journal.lease_events (key, namespace, event, run_id, who, reason, at)
                 VALUES ($1, $2, 'forced-unlock', $3, $4, $5, $6)",
                &[&target, &ns, &holder.as_ref().map(|h| h.run_id.clone()), &who, &reason, &now()],
            )?;
            tx.commit()?;
            let key = lease_lock(&target);
            terminate_holders(c, key, None)?;
            wait_for(TERMINATE_WAIT, || Ok(holders(c, key)? == 0))?;
            Ok(holder)
        })
    }

    fn lease(
        &self,
        targets: &[String],
        run_id: &str,
        duration: Duration,
    ) -> Result<Box<dyn Send>, LeaseError> {
        Ok(Box::new(self.lease_guard(targets, run_id, duration)?))
    }
}

/// The current holder of a target's lease, as its row says.
fn holder_of(
    c: &mut impl GenericClient,
    target: &str,
) -> Result<Option<LeaseHolder>, postgres::Error> {
    Ok(lease_row(c, target)?.map(|(holder, _)| holder))
}

/// A target's lease row: its holder and the server process of the session
/// that wrote it.
fn lease_row(
    c: &mut impl GenericClient,
    target: &str,
) -> Result<Option<(LeaseHolder, i32)>, postgres::Error> {
    Ok(c.query_opt(
        "SELECT run_id, host, pid, acquired_at, heartbeat_at,
                expires_at - extract(epoch from clock_timestamp())::float8, backend_pid
         FROM sluice_journal.leases WHERE key = $1",
        &[&target],
    )?
    .map(|r| {
        let holder = LeaseHolder {
            run_id: r.get(0),
            host: r.get(1),
            pid: u32::try_from(r.get::<_, i64>(2)).unwrap_or(0),
            since: r.get(3),
            heartbeat: r.get(4),
            expires_in: r.get(5),
        };
        (holder, r.get(6))
    }))
}

/// `pg_locks` spells a bigint advisory key as two oids.
fn lock_ids(key: i64) -> (i64, i64) {
    let key = key as u64;
    ((key >> 32) as i64, (key & 0xffff_ffff) as i64)
}

const HOLDERS: &str = "FROM pg_locks
    WHERE locktype = 'advisory' AND objsubid = 1 AND granted
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND classid::bigint = $1 AND objid::bigint = $2 AND pid <> pg_backend_pid()";

/// How many other sessions hold the advisory lock `key`.
fn holders(c: &mut Client, key: i64) -> Result<i64, postgres::Error> {
    let (class, obj) = lock_ids(key);
    Ok(
        c.query_one(&format!("SELECT count(*) {HOLDERS}"), &[&class, &obj])?
            .get(0),
    )
}

/// Ends the sessions holding the advisory lock `key`; with `only`, just
/// the one served by that server process. How many were told to end.
fn terminate_holders(
    c: &mut Client,
    key: i64,
    only: Option<i32>,
) -> Result<usize, postgres::Error> {
    let (class, obj) = lock_ids(key);
    Ok(c.query(
        &format!("SELECT pg_terminate_backend(pid) {HOLDERS} AND ($3::int IS NULL OR pid = $3)"),
        &[&class, &obj, &only],
    )?
    .len())
}

fn try_lock(c: &mut Client, key: i64) -> Result<bool, postgres::Error> {
    Ok(c.query_one("SELECT pg_try_advisory_lock($1)", &[&key])?
        .get(0))
}

/// Polls `done` until it holds or `limit` passes; whether it held.
fn wait_for(
    limit: Duration,
    mut done: impl FnMut() -> Result<bool, postgres::Error>,
) -> Result<bool, postgres::Error> {
    let deadline = Instant::now() + limit;
    loop {
        if done()? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(POLL);
    }
}

/// Who the lease of a target is refused to.
type Refusal = (String, LeaseHolder);

/// Why a lease was taken over, with the previous holder.
type Takeover = (String, LeaseHolder, &'static str);

/// Takes every target's lock or none, then writes the rows in one transaction.
fn take(
    c: &mut Client,
    namespace: &str,
    targets: &[String],
    run_id: &str,
    duration: Duration,
) -> Result<Result<(), Refusal>, postgres::Error> {
    // So that the server notices soon when this host vanishes; best effort
    // (these are ignored on a Unix socket).
    let idle = duration.as_secs().max(1);
    let _ = c.batch_execute(&format!(
        "SET tcp_keepalives_idle = {idle}; SET tcp_keepalives_interval = {idle}; SET tcp_keepalives_count = 3"
    ));
    let mut takeovers: Vec<Takeover> = Vec::new();
    for target in targets {
        let key = lease_lock(target);
        if try_lock(c, key)? {
            if let Some(previous) = holder_of(c, target)? {
                takeovers.push((target.clone(), previous, "its session ended"));
            }
            continue;
        }
        let refusal = match refusal(c, target, key)? {
            Ok(None) => continue,
            Ok(Some(takeover)) => {
                takeovers.push(takeover);
                continue;
            }
            Err(refusal) => refusal,
        };
        c.execute("SELECT pg_advisory_unlock_all()", &[])?;
        return Ok(Err(refusal));
    }
    let (host, pid) = (host_name(), i64::from(std::process::id()));
    let who = format!("{host}:{pid}");
    let mut tx = c.transaction()?;
    for (target, previous, why) in &takeovers {
        let reason = format!(
            "{why} (was run {} on host {}, pid {})",
            previous.run_id, previous.host, previous.pid
        );
        tx.execute(
            "INSERT INTO sluice_journal.lease_events (key, namespace, event, run_id, who, reason, at)
             VALUES ($1, $2, 'takeover', $3, $4, $5, $6)",
            &[target, &namespace, &run_id, &who, &reason, &now()],
        )?;
    }
    for target in targets {
        tx.execute(
            "INSERT INTO sluice_journal.leases
                (key, namespace, run_id, host, pid, backend_pid, acquired_at, heartbeat_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, pg_backend_pid(), $6, $6,
                     extract(epoch from clock_timestamp())::float8 + $7)
             ON CONFLICT (key) DO UPDATE SET namespace = EXCLUDED.namespace, run_id = EXCLUDED.run_id,
                host = EXCLUDED.host, pid = EXCLUDED.pid, backend_pid = EXCLUDED.backend_pid,
                acquired_at = EXCLUDED.acquired_at, heartbeat_at = EXCLUDED.heartbeat_at,
                expires_at = EXCLUDED.expires_at",
            &[target, &namespace, &run_id, &host, &pid, &now(), &duration.as_secs_f64()],
        )?;
    }
    tx.commit()?;
    Ok(Ok(()))
}

/// Another session holds `target`'s lock. Refused, unless that session's row
/// expired long ago (a vanished host whose socket lingers: terminated and
/// taken over) or it lets go while its row is awaited.
fn refusal(
    c: &mut Client,
    target: &str,
    key: i64,
) -> Result<Result<Option<Takeover>, Refusal>, postgres::Error> {
    let mut row = None;
    let got = wait_for(ROW_WAIT, || {
        row = lease_row(c, target)?;
        Ok(row.is_some() || try_lock(c, key)?)
    })?;
    let holder = match row {
        None if got => return Ok(Ok(None)),
        None => LeaseHolder {
            run_id: "unknown (a session holds the lock but wrote no lease row)".into(),
            host: "unknown".into(),
            pid: 0,
            since: "unknown".into(),
            heartbeat: "never".into(),
            expires_in: 0.0,
        },
        // Only the session that wrote the expired row: a new holder that has
        // just taken the lock over from it, row not yet written, is alive.
        Some((h, backend)) if h.expires_in < 0.0 => {
            if terminate_holders(c, key, Some(backend))? > 0
                && wait_for(TERMINATE_WAIT, || try_lock(c, key))?
            {
                return Ok(Ok(Some((
                    target.to_string(),
                    h,
                    "lease expired; its lingering session was terminated",
                ))));
            }
            h
        }
        Some((h, _)) => h,
    };
    Ok(Err((target.to_string(), holder)))
}

/// An error with its causes, on one line (for the log).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(&format!(": {s}"));
        source = s.source();
    }
    out
}

/// A lease held in a shared journal: advisory locks on a connection of its
/// own and rows renewed by a heartbeat; released when dropped.
pub struct PgLease {
    worker: Worker,
    targets: Vec<String>,
    run_id: String,
    valid: Arc<AtomicBool>,
    release: bool,
    stop: Option<mpsc::Sender<()>>,
    heartbeat: Option<JoinHandle<()>>,
}

impl PgLease {
    fn acquire(
        config: Config,
        at: &str,
        namespace: &str,
        targets: &[String],
        run_id: &str,
        duration: Duration,
    ) -> Result<PgLease, LeaseError> {
        let mut targets = targets.to_vec();
        targets.sort();
        targets.dedup();
        let worker = Worker::start(config, at, "sluice-pg-lease", false)?;
        let (ns, owned, run) = (namespace.to_string(), targets.clone(), run_id.to_string());
        if let Err((target, holder)) = worker.run(move |c| take(c, &ns, &owned, &run, duration))? {
            return Err(LeaseError::Held {
                target,
                holder: Box::new(holder),
            });
        }
        crate::failpoint!("lease:acquired");

        let valid = Arc::new(AtomicBool::new(true));
        let (stop, stopped) = mpsc::channel::<()>();
        let (handle, beat_valid) = (worker.handle().clone(), valid.clone());
        let (beat_targets, beat_run) = (targets.to_vec(), run_id.to_string());
        let every = (duration / 3).max(POLL);
        let heartbeat = std::thread::Builder::new()
            .name("sluice-pg-lease-heartbeat".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    let (keys, run) = (beat_targets.clone(), beat_run.clone());
                    let renewed = handle.run(move |c| {
                        c.execute(
                            "UPDATE sluice_journal.leases SET heartbeat_at = $3,
                                expires_at = extract(epoch from clock_timestamp())::float8 + $4
                             WHERE key = ANY($1) AND run_id = $2 AND backend_pid = pg_backend_pid()",
                            &[&keys, &run, &now(), &duration.as_secs_f64()],
                        )
                    });
                    let lost = match renewed {
                        Ok(n) if n as usize == beat_targets.len() => continue,
                        Ok(_) => "its lease row was removed (sluice unlock?)".to_string(),
                        Err(e) => chain(&e),
                    };
                    beat_valid.store(false, Ordering::SeqCst);
                    tracing::error!(
                        "run {beat_run} lost its lease on {}: {lost}; another run may now change these targets",
                        beat_targets.join(", ")
                    );
                    break;
                }
            })
            .ok();
        Ok(PgLease {
            worker,
            targets: targets.to_vec(),
            run_id: run_id.to_string(),
            valid,
            release: true,
            stop: Some(stop),
            heartbeat,
        })
    }

    /// False once the heartbeat found the lease lost (its connection ended,
    /// or its row was removed by `sluice unlock`): the run no longer holds
    /// its targets.
    pub fn is_valid(&self) -> bool {
        self.valid.load(Ordering::SeqCst)
    }

    /// Ends the lease's session without releasing anything, as a process
    /// that dies does: the locks go with the session, the rows stay.
    #[cfg(test)]
    fn abandon(mut self) {
        self.release = false;
    }
}

impl Drop for PgLease {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
        if !self.release {
            return;
        }
        // Rows first, then locks: whoever takes a lock next finds no row and
        // records no takeover. Only rows this session wrote: after a lost
        // lease they may be another run's.
        let (targets, run) = (self.targets.clone(), self.run_id.clone());
        let _ = self.worker.run(move |c| {
            c.execute(
                "DELETE FROM sluice_journal.leases
                 WHERE key = ANY($1) AND run_id = $2 AND backend_pid = pg_backend_pid()",
                &[&targets, &run],
            )?;
            c.execute("SELECT pg_advisory_unlock_all()", &[])?;
            Ok(())
        });
        // Dropping the worker closes the session, which would release the
        // locks in any case.
    }
}

#[cfg(test)]
mod tests {
    use crate::journal::record::words;
    use std::collections::BTreeMap;

    use super::*;
    use crate::backup::ArtifactRef;
    use crate::datastores::{Fingerprint, TableFingerprint};
    use crate::journal::{Decision, SqliteJournal};
    use crate::runtime::{BackupManifest, TableState};

    fn server_url() -> String {
        std::env::var("SLUICE_TEST_PG_URL").expect(
            "set SLUICE_TEST_PG_URL to a PostgreSQL URL whose user may create databases \
             (cargo xtask test starts one and sets it)",
        )
    }

    /// `url` with its database replaced by `db`.
    fn with_db(url: &str, db: &str) -> String {
        let (base, query) = url
            .split_once('?')
            .map_or((url, None), |(b, q)| (b, Some(q)));
        let (scheme, rest) = base.split_once("://").expect("SLUICE_TEST_PG_URL is a URL");
        let authority = rest.split('/').next().unwrap_or(rest);
        let query = query.map(|q| format!("?{q}")).unwrap_or_default();
        format!("{scheme}://{authority}/{db}{query}")
    }

    /// A database of one test's own, dropped afterwards.
    struct TestDb {
        name: String,
        url: String,
    }

    impl TestDb {
        fn new() -> TestDb {
            let name = format!(
                "sluice_journal_test_{}",
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            );
            let mut admin =
                Client::connect(&server_url(), NoTls).expect("connect to SLUICE_TEST_PG_URL");
            admin
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .unwrap();
            let url = with_db(&server_url(), &name);
            TestDb { name, url }
        }

        fn client(&self) -> Client {
            Client::connect(&self.url, NoTls).unwrap()
        }
    }

    impl Drop for TestDb {
        fn drop(&mut self) {
            if let Ok(mut admin) = Client::connect(&server_url(), NoTls) {
                let _ = admin.batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ));
            }
        }
    }

    fn backup() -> StoredBackup {
        StoredBackup {
            manifest: BackupManifest {
                artifacts: vec!["customers.rows".into(), "schema.sql".into()],
                tables: vec![TableState {
                    name: "customers".into(),
                    rows: 3,
                    checksum: "ab12".into(),
                }],
                metadata: r#"{"schema":"CREATE TABLE customers (id)"}"#.into(),
                change: crate::journal::record::ChangeKind::Transactional,
            },
            artifacts: vec![
                ArtifactRef {
                    name: "customers.rows".into(),
                    digest: "d1".repeat(32),
                    size: 1234,
                },
                ArtifactRef {
                    name: "schema.sql".into(),
                    digest: "e2".repeat(32),
                    size: 56,
                },
            ],
            fingerprint: Fingerprint {
                schema: "f3".repeat(32),
                objects: BTreeMap::new(),
                tables: BTreeMap::from([(
                    "customers".to_string(),
                    TableFingerprint {
                        rows: 3,
                        checksum: "ab12".into(),
                    },
                )]),
                sequences: BTreeMap::new(),
            },
            baseline: Vec::new(),
            post_step: None,
            change_set: None,
        }
    }

    /// A step that fails its thresholds and is rolled back, then runs again
    /// and completes; and a second step that fails its backup.
    fn script(j: &mut dyn Journal) -> String {
        let run = j
            .begin_run("run", Path::new("/plans/shop/sluice.toml"), "h1")
            .unwrap();
        let id = Some(("digest-1", "params-1"));
        j.transition("r1", "merge", StepState::BackingUp, &words("backup"), id)
            .unwrap();
        j.record_backup("r1", "merge", &backup()).unwrap();
        j.transition("r1", "merge", StepState::BackedUp, &words("verified"), None)
            .unwrap();
        j.transition("r1", "merge", StepState::Migrating, &words("migrate"), None)
            .unwrap();
        j.transition(
            "r1",
            "merge",
            StepState::Validating,
            &words("validate"),
            None,
        )
        .unwrap();
        let metrics = vec![Metric {
            name: "duplicates".into(),
            value: 3.0,
            detail: "3 emails repeat".into(),
        }];
        j.record_metrics("merge", &metrics).unwrap();
        j.transition(
            "r1",
            "merge",
            StepState::RollingBack,
            &words("duplicates == 0 failed"),
            None,
        )
        .unwrap();
        j.transition(
            "r1",
            "merge",
            StepState::RolledBack,
            &words("proven equal"),
            None,
        )
        .unwrap();
        j.finish_run(&run, "rolled-back").unwrap();
        j.transition(
            "r2",
            "merge",
            StepState::BackingUp,
            &words("again"),
            Some(("digest-2", "params-2")),
        )
        .unwrap();
        j.transition("r2", "merge", StepState::Completed, &words("done"), None)
            .unwrap();
        j.transition("r2", "load", StepState::BackingUp, &words("backup"), id)
            .unwrap();
        j.transition("r2", "load", StepState::Failed, &words("disk full"), None)
            .unwrap();
        // A transition of a step that never started changes no step row.
        j.transition("r2", "ghost", StepState::Migrating, &words("stray"), None)
            .unwrap();
        for (decision, by) in [(Decision::Approve, "ana"), (Decision::Reject, "bo")] {
            j.record_approval(&Approval {
                step_id: "merge".into(),
                run_id: "r1".into(),
                decision,
                by: by.into(),
                at: now(),
                plan_hash: "h1".into(),
                plugin_digest: "digest-1".into(),
                params_hash: "params-1".into(),
                evidence: serde_json::json!({ "metrics": [{ "name": "duplicates", "value": 3.0 }] }),
                reason: Some("<why>".into()),
            })
            .unwrap();
        }
        run
    }

    #[test]
    fn records_read_back_as_the_sqlite_journal_returns_them() {
        let db = TestDb::new();
        let dir = tempfile::tempdir().unwrap();
        let mut sqlite = SqliteJournal::open(dir.path()).unwrap();
        let mut pg = PgJournal::open(&db.url, "shop").unwrap();
        let sqlite_run = script(&mut sqlite);
        let pg_run = script(&mut pg);
        assert_eq!(
            sqlite.run_command(&sqlite_run).unwrap(),
            pg.run_command(&pg_run).unwrap()
        );
        assert_eq!(pg.run_command(&pg_run).unwrap().as_deref(), Some("run"));
        assert_eq!(pg.run_command("no-such-run").unwrap(), None);
        let (a, b) = (sqlite.runs().unwrap(), pg.runs().unwrap());
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].id, pg_run);
        assert_eq!(
            (&a[0].command, &a[0].plan_hash, &a[0].outcome),
            (&b[0].command, &b[0].plan_hash, &b[0].outcome)
        );
        assert!(b[0].finished_at.is_some());
        for step in ["merge", "load", "ghost", "never"] {
            let (a, b) = (sqlite.step(step).unwrap(), pg.step(step).unwrap());
            assert_eq!(a.is_some(), b.is_some(), "{step}");
            if let (Some(a), Some(b)) = (a, b) {
                assert_eq!(a.step_id, b.step_id);
                assert_eq!(a.state, b.state, "{step}");
                assert_eq!(a.run_id, b.run_id, "{step}");
                assert_eq!(a.plugin_digest, b.plugin_digest, "{step}");
                assert_eq!(a.params_hash, b.params_hash, "{step}");
                assert_eq!(a.error, b.error, "{step}");
                assert_eq!(a.backup.json(), b.backup.json(), "{step}");
                assert_eq!(a.metrics.json(), b.metrics.json(), "{step}");
                // Same clock: RFC 3339 in UTC, from the same function.
                assert!(b.updated_at.ends_with('Z') && b.updated_at[..4] == a.updated_at[..4]);
            }
            let (a, b) = (
                sqlite.transitions(step).unwrap(),
                pg.transitions(step).unwrap(),
            );
            assert_eq!(a.len(), b.len(), "{step}");
            for (a, b) in a.iter().zip(&b) {
                assert_eq!(
                    (&a.run_id, &a.step_id, a.state, &a.detail),
                    (&b.run_id, &b.step_id, b.state, &b.detail)
                );
            }
        }
        let (a, b) = (
            sqlite.approvals("merge").unwrap(),
            pg.approvals("merge").unwrap(),
        );
        assert_eq!(b.len(), 2);
        assert_eq!(serde_json::to_value(&a[0]).unwrap()["by"], "ana");
        for (a, b) in a.iter().zip(&b) {
            let (mut a, mut b) = (
                serde_json::to_value(a).unwrap(),
                serde_json::to_value(b).unwrap(),
            );
            a.as_object_mut().unwrap().remove("at");
            b.as_object_mut().unwrap().remove("at");
            assert_eq!(a, b);
        }
        assert_eq!(b[1].decision, Decision::Reject);
        assert!(pg.approvals("load").unwrap().is_empty());
        // The run that completed it wiped the first run's backup and metrics.
        let merge = pg.step("merge").unwrap().unwrap();
        assert_eq!(merge.state, StepState::Completed);
        assert!(merge.backup.is_none() && merge.metrics.is_empty());
        // A step that starts again starts without its old error.
        assert_eq!(merge.error, None);
        assert_eq!(pg.transitions("merge").unwrap().len(), 8);

        // Durable: a fresh connection reads the same.
        drop(pg);
        let pg = PgJournal::open(&db.url, "shop").unwrap();
        assert_eq!(
            pg.step("load").unwrap().unwrap().error.as_deref(),
            Some("disk full")
        );
    }

    /// Compare values that derive only `Serialize`, through JSON.
    trait AsJson {
        fn json(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> AsJson for T {
        fn json(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap()
        }
    }

    #[test]
    fn a_recorded_backup_reads_back_whole() {
        let db = TestDb::new();
        let mut pg = PgJournal::open(&db.url, "shop").unwrap();
        pg.transition(
            "r1",
            "s",
            StepState::BackingUp,
            &words(""),
            Some(("d", "p")),
        )
        .unwrap();
        pg.record_backup("r1", "s", &backup()).unwrap();
        let got = pg.step("s").unwrap().unwrap().backup.unwrap();
        assert_eq!(got.json(), backup().json());
        let artifacts: i64 = db
            .client()
            .query_one(
                "SELECT count(*) FROM sluice_journal.artifacts WHERE namespace = 'shop'",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(artifacts, 2);
    }

    #[test]
    fn a_journal_whose_connection_the_server_closed_reconnects() {
        let db = TestDb::new();
        let mut pg = PgJournal::open(&db.url, "shop").unwrap();
        pg.transition(
            "r1",
            "s",
            StepState::BackingUp,
            &words(""),
            Some(("d", "p")),
        )
        .unwrap();
        let ended: i64 = db
            .client()
            .query_one(
                "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity
                 WHERE datname = current_database() AND application_name = 'sluice journal'",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(ended, 1);
        std::thread::sleep(IDLE_CHECK + POLL);
        pg.transition("r1", "s", StepState::BackedUp, &words(""), None)
            .unwrap();
        assert_eq!(pg.step("s").unwrap().unwrap().state, StepState::BackedUp);
    }

    #[test]
    fn plans_sharing_a_database_do_not_see_each_other() {
        let db = TestDb::new();
        let mut shop = PgJournal::open(&db.url, "shop").unwrap();
        let billing = PgJournal::open(&db.url, "billing").unwrap();
        let run = shop
            .begin_run("run", Path::new("/shop/sluice.toml"), "h")
            .unwrap();
        shop.transition(
            &run,
            "s1",
            StepState::BackingUp,
            &words(""),
            Some(("d", "p")),
        )
        .unwrap();
        shop.transition(&run, "s1", StepState::Completed, &words(""), None)
            .unwrap();
        assert!(billing.step("s1").unwrap().is_none());
        assert!(billing.transitions("s1").unwrap().is_empty());
        assert_eq!(billing.run_command(&run).unwrap(), None);
        assert_eq!(
            shop.step("s1").unwrap().unwrap().state,
            StepState::Completed
        );
        assert_eq!(shop.transitions("s1").unwrap().len(), 2);
    }

    #[test]
    fn hosts_opening_a_new_database_at_once_both_get_the_schema() {
        let db = TestDb::new();
        let opens: Vec<_> = (0..4)
            .map(|i| {
                let url = db.url.clone();
                std::thread::spawn(move || PgJournal::open(&url, &format!("plan{i}")).map(|_| ()))
            })
            .collect();
        for open in opens {
            open.join().unwrap().unwrap();
        }
    }

    #[test]
    fn errors_show_where_but_never_the_password() {
        let e = PgJournal::open(
            "postgres://app:hunter2@127.0.0.1:1/shop?application_name=x",
            "shop",
        )
        .err()
        .expect("nothing listens on port 1");
        let shown = chain(&e);
        assert!(shown.contains("postgres://127.0.0.1:1/shop"), "{shown}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("app:"),
            "{shown}"
        );
    }

    fn lease_row(db: &TestDb, key: &str) -> Option<(String, String)> {
        db.client()
            .query_opt(
                "SELECT run_id, namespace FROM sluice_journal.leases WHERE key = $1",
                &[&key],
            )
            .unwrap()
            .map(|r| (r.get(0), r.get(1)))
    }

    fn events(db: &TestDb, key: &str) -> Vec<(String, String)> {
        db.client()
            .query(
                "SELECT event, reason FROM sluice_journal.lease_events WHERE key = $1 ORDER BY seq",
                &[&key],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }

    const TARGET: &str = "sqlite:/srv/shop.db";

    fn targets() -> Vec<String> {
        vec![
            TARGET.to_string(),
            "postgres:postgres://db:5432/shop".to_string(),
        ]
    }

    #[test]
    fn a_second_journal_is_refused_while_the_first_holds_and_served_after() {
        let db = TestDb::new();
        let (a, b) = (
            PgJournal::open(&db.url, "shop").unwrap(),
            PgJournal::open(&db.url, "shop-copy").unwrap(),
        );
        let held = a
            .lease(&targets(), "run-a", Duration::from_secs(15))
            .unwrap();
        assert_eq!(
            lease_row(&db, TARGET),
            Some(("run-a".into(), "shop".into()))
        );
        // Refused on a target they share, even when asking for it second.
        let asked = vec!["sqlite:/other.db".to_string(), TARGET.to_string()];
        match b.lease(&asked, "run-b", Duration::from_secs(15)) {
            Err(LeaseError::Held { target, holder }) => {
                assert_eq!(target, TARGET);
                assert_eq!(holder.run_id, "run-a");
                assert_eq!(holder.pid, std::process::id());
                assert_eq!(holder.host, host_name());
                assert!(holder.expires_in > 10.0, "{}", holder.expires_in);
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("two runs leased one target"),
        }
        // All or none: the refused run kept nothing.
        assert_eq!(lease_row(&db, "sqlite:/other.db"), None);
        drop(held);
        assert_eq!(lease_row(&db, TARGET), None);
        let _b = b.lease(&asked, "run-b", Duration::from_secs(15)).unwrap();
        assert_eq!(
            lease_row(&db, TARGET),
            Some(("run-b".into(), "shop-copy".into()))
        );
        assert!(
            events(&db, TARGET).is_empty(),
            "a clean handover is no takeover"
        );
    }

    #[test]
    fn a_dead_holder_is_taken_over_at_once() {
        let db = TestDb::new();
        let (a, b) = (
            PgJournal::open(&db.url, "shop").unwrap(),
            PgJournal::open(&db.url, "shop").unwrap(),
        );
        a.lease_guard(&targets(), "run-a", Duration::from_secs(60))
            .unwrap()
            .abandon();
        assert_eq!(
            lease_row(&db, TARGET),
            Some(("run-a".into(), "shop".into()))
        );
        let started = Instant::now();
        let _b = b
            .lease(&targets(), "run-b", Duration::from_secs(60))
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            lease_row(&db, TARGET),
            Some(("run-b".into(), "shop".into()))
        );
        let events = events(&db, TARGET);
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].0, "takeover");
        assert!(
            events[0].1.contains("its session ended (was run run-a"),
            "{events:?}"
        );
    }

    #[test]
    fn a_holder_whose_session_is_killed_knows_and_releases_nothing_of_its_successor() {
        let db = TestDb::new();
        let (a, b) = (
            PgJournal::open(&db.url, "shop").unwrap(),
            PgJournal::open(&db.url, "shop").unwrap(),
        );
        let first = a
            .lease_guard(&targets(), "run-a", Duration::from_millis(600))
            .unwrap();
        db.client()
            .execute(
                "SELECT pg_terminate_backend(backend_pid, 5000) FROM sluice_journal.leases WHERE key = $1",
                &[&TARGET],
            )
            .unwrap();
        let second = b
            .lease_guard(&targets(), "run-b", Duration::from_secs(15))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while first.is_valid() && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        assert!(
            !first.is_valid(),
            "the heartbeat did not notice its session ended"
        );
        assert!(second.is_valid());
        drop(first);
        assert_eq!(
            lease_row(&db, TARGET),
            Some(("run-b".into(), "shop".into()))
        );
    }

    #[test]
    fn an_expired_holder_whose_session_lingers_is_terminated_and_taken_over() {
        let db = TestDb::new();
        let b = PgJournal::open(&db.url, "shop").unwrap();
        // A host that vanished: its session still holds the lock (the server
        // has not seen the socket close) but its heartbeat stopped long ago.
        let mut lingering = db.client();
        lingering
            .execute("SELECT pg_advisory_lock($1)", &[&lease_lock(TARGET)])
            .unwrap();
        lingering
            .execute(
                "INSERT INTO sluice_journal.leases
                    (key, namespace, run_id, host, pid, backend_pid, acquired_at, heartbeat_at, expires_at)
                 VALUES ($1, 'shop', 'run-gone', 'elsewhere', 4242, pg_backend_pid(), 'then', 'then',
                         extract(epoch from clock_timestamp())::float8 - 5)",
                &[&TARGET],
            )
            .unwrap();
        let _b = b
            .lease(&[TARGET.to_string()], "run-b", Duration::from_secs(15))
            .unwrap();
        assert_eq!(
            lease_row(&db, TARGET),
            Some(("run-b".into(), "shop".into()))
        );
        let events = events(&db, TARGET);
        assert!(events[0].1.starts_with("lease expired"), "{events:?}");
        assert!(
            lingering.execute("SELECT 1", &[]).is_err(),
            "its session was ended"
        );
    }

    #[test]
    fn a_new_holder_not_yet_in_the_expired_row_is_not_terminated() {
        let db = TestDb::new();
        let c = PgJournal::open(&db.url, "shop").unwrap();
        // The row is a dead run's (expired, another session); the lock is a
        // live session's that took it over a moment ago.
        let mut live = db.client();
        live.execute("SELECT pg_advisory_lock($1)", &[&lease_lock(TARGET)])
            .unwrap();
        live.execute(
            "INSERT INTO sluice_journal.leases
                (key, namespace, run_id, host, pid, backend_pid, acquired_at, heartbeat_at, expires_at)
             VALUES ($1, 'shop', 'run-dead', 'elsewhere', 4242, pg_backend_pid() + 100000, 'then', 'then',
                     extract(epoch from clock_timestamp())::float8 - 5)",
            &[&TARGET],
        )
        .unwrap();
        match c.lease(&[TARGET.to_string()], "run-c", Duration::from_secs(15)) {
            Err(LeaseError::Held { holder, .. }) => assert_eq!(holder.run_id, "run-dead"),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("leased a target a live session holds"),
        }
        assert!(
            live.execute("SELECT 1", &[]).is_ok(),
            "the live holder was terminated"
        );
    }

    #[test]
    fn force_unlock_removes_the_row_records_why_and_ends_the_holder_session() {
        let db = TestDb::new();
        let (a, b) = (
            PgJournal::open(&db.url, "shop").unwrap(),
            PgJournal::open(&db.url, "other-plan").unwrap(),
        );
        let held = a
            .lease_guard(&targets(), "run-a", Duration::from_millis(900))
            .unwrap();
        let holder = b.force_unlock(TARGET, "host db7 is gone").unwrap().unwrap();
        assert_eq!(holder.run_id, "run-a");
        assert_eq!(lease_row(&db, TARGET), None);
        let events = events(&db, TARGET);
        assert_eq!(
            events,
            vec![("forced-unlock".into(), "host db7 is gone".into())]
        );
        // Its session was ended: the lock is free at once and the holder knows.
        let _b = b
            .lease(&[TARGET.to_string()], "run-b", Duration::from_secs(15))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while held.is_valid() && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        assert!(!held.is_valid());
        // Nothing held: recorded, nothing returned.
        assert!(a
            .force_unlock("sqlite:/nothing.db", "check")
            .unwrap()
            .is_none());
    }

    #[test]
    fn lock_keys_are_stable_and_split_as_pg_locks_shows_them() {
        // The key must not change between versions: hosts of different
        // versions exclude each other only if they agree on it.
        assert_eq!(
            lock_key(""),
            i64::from_be_bytes([0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14])
        );
        assert_eq!(lock_ids(-1), (0xffff_ffff, 0xffff_ffff));
        assert_eq!(lock_ids(0x0000_0001_0000_0002), (1, 2));
    }
}
