//! The field corpus (tests/fixtures/field): three projects written to the
//! shape of real ones — `tally`, a sqitch project on PostgreSQL (roles,
//! a database created through `\gexec`, extensions, RLS, DO blocks,
//! functions, a password from a secret file); `orders`, a golang-migrate
//! directory on PostgreSQL (enums extended, `updated_at` and NOTIFY
//! triggers, a partitioned table, sequences, views, `CREATE INDEX
//! CONCURRENTLY`); `fieldnotes`, a sqitch project on SQLite (triggers,
//! views, a table rebuild).
//!
//! Each project is deployed one change per step by the real `sluice`; after
//! every step, `sluice rollback --to <the step before>` must bring the
//! database back to its pre-step state as an oracle independent of sluice
//! sees it (`pg_dump --schema-only`, `pg_dumpall --globals-only` and
//! `pg_dump --data-only`; `sqlite3 .dump`), then the step is deployed again
//! and the walk goes on. An application writer inserts and updates rows the
//! whole time, in tables the steps touch and in tables they do not; it
//! keeps its own log, and after every deploy and rollback each row it wrote
//! into a table that existed before the step must still be there with its
//! last value. A failure is recorded with its step and the walk goes on
//! where it can, so one run lists every failing step; the test fails if
//! any step failed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_e2e::services::{pg_scratch, pg_url};
use sluice_e2e::{plugin, report, root, sluice_bin, Outcome, Scenario};

use crate::sqitch::copy_dir;

/// Keys the application writer uses: every id at or above this is its own;
/// the corpus's seed rows stay below it.
const WRITER_IDS: i64 = 1_000_000;

/// Pause between two writes of the application writer; an investigation
/// can slow it with `SLUICE_FIELD_WRITER_PAUSE_MS`.
fn writer_pause() -> Duration {
    let ms = std::env::var("SLUICE_FIELD_WRITER_PAUSE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    Duration::from_millis(ms)
}

// ---------------------------------------------------------------------------
// The application writer.

/// A table the application writes: rows keyed by `id`, one text value each.
#[derive(Clone, Copy)]
struct WriterTable {
    /// Name as the oracle shows it (schema-qualified on PostgreSQL).
    name: &'static str,
    /// Inserts a row: parameters id (i64) and value (text).
    insert: &'static str,
    /// Updates a row's value: parameters id and value.
    update: &'static str,
    /// The writer's rows: (id, value) for every id at or above [`WRITER_IDS`].
    read: &'static str,
}

/// A connection the writer and its checks use.
trait AppConn: Send {
    /// Runs `sql` with (id, value); `Ok(false)` when the table is missing.
    fn write(&mut self, sql: &str, id: i64, value: &str) -> Result<bool, String>;
    /// The rows `sql` returns; `None` when the table is missing.
    fn rows(&mut self, sql: &str) -> Result<Option<BTreeMap<i64, String>>, String>;
}

struct PgApp(postgres::Client);

impl AppConn for PgApp {
    fn write(&mut self, sql: &str, id: i64, value: &str) -> Result<bool, String> {
        match self.0.execute(sql, &[&id, &value]) {
            Ok(_) => Ok(true),
            Err(e) if pg_missing(&e) => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }

    fn rows(&mut self, sql: &str) -> Result<Option<BTreeMap<i64, String>>, String> {
        match self.0.query(sql, &[]) {
            Ok(rows) => Ok(Some(
                rows.iter()
                    .map(|r| (r.get::<_, i64>(0), r.get::<_, String>(1)))
                    .collect(),
            )),
            Err(e) if pg_missing(&e) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The table (or a column the writer uses) does not exist (yet, or any
/// more): before the step creating it, after the rollback of that step.
fn pg_missing(e: &postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        *c == postgres::error::SqlState::UNDEFINED_TABLE
            || *c == postgres::error::SqlState::UNDEFINED_COLUMN
            || *c == postgres::error::SqlState::INVALID_SCHEMA_NAME
    })
}

struct SqliteApp(rusqlite::Connection);

impl AppConn for SqliteApp {
    fn write(&mut self, sql: &str, id: i64, value: &str) -> Result<bool, String> {
        match self.0.execute(sql, rusqlite::params![id, value]) {
            Ok(_) => Ok(true),
            Err(e) if e.to_string().contains("no such table") => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }

    fn rows(&mut self, sql: &str) -> Result<Option<BTreeMap<i64, String>>, String> {
        let mut stmt = match self.0.prepare(sql) {
            Ok(stmt) => stmt,
            Err(e) if e.to_string().contains("no such table") => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        match stmt
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
            .and_then(|rows| rows.collect::<Result<BTreeMap<_, _>, _>>())
        {
            Ok(rows) => Ok(Some(rows)),
            Err(e) if e.to_string().contains("no such table") => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// What the writer has committed: per table, id → the last value written.
#[derive(Default)]
struct WriteLog {
    rows: BTreeMap<&'static str, BTreeMap<i64, String>>,
    inserts: u64,
    updates: u64,
    /// Errors other than a missing table (lock waits cut short, …).
    errors: Vec<String>,
}

/// The application writer: a thread inserting and updating rows in its
/// tables until dropped; every write is logged after it committed, under the
/// log's lock, so a check holding the lock sees the log and the database
/// agree.
struct Writer {
    log: Arc<Mutex<WriteLog>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    check_conn: Mutex<Box<dyn AppConn>>,
    tables: Vec<WriterTable>,
}

impl Writer {
    fn start(
        tables: Vec<WriterTable>,
        mut conn: Box<dyn AppConn>,
        check_conn: Box<dyn AppConn>,
    ) -> Writer {
        let log = Arc::new(Mutex::new(WriteLog::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (log, stop, tables) = (log.clone(), stop.clone(), tables.clone());
            std::thread::spawn(move || {
                let mut next: i64 = 0;
                let pause = writer_pause();
                let mut tick: u64 = 0;
                while !stop.load(Ordering::Relaxed) {
                    tick += 1;
                    let table = &tables[(tick as usize) % tables.len()];
                    let mut log = log.lock().unwrap();
                    let mine: Vec<i64> = log
                        .rows
                        .get(table.name)
                        .map(|r| r.keys().copied().collect())
                        .unwrap_or_default();
                    // Two inserts for every update, updates on the writer's
                    // own rows only.
                    let update = tick.is_multiple_of(3) && !mine.is_empty();
                    let (sql, id) = if update {
                        (table.update, mine[(tick as usize / 3) % mine.len()])
                    } else {
                        (table.insert, {
                            next += 1;
                            WRITER_IDS + next
                        })
                    };
                    let value = format!("app-{tick}");
                    match conn.write(sql, id, &value) {
                        Ok(true) => {
                            log.rows.entry(table.name).or_default().insert(id, value);
                            if update {
                                log.updates += 1;
                            } else {
                                log.inserts += 1;
                            }
                        }
                        Ok(false) => {}
                        Err(e) => {
                            if log.errors.len() < 20 {
                                log.errors.push(format!("{}: {e}", table.name));
                            }
                        }
                    }
                    drop(log);
                    std::thread::sleep(pause);
                }
            })
        };
        Writer {
            log,
            stop,
            thread: Some(thread),
            check_conn: Mutex::new(check_conn),
            tables,
        }
    }

    /// Compares the log with the database (the writer paused meanwhile):
    /// returns every lost or reverted write in a table that exists or
    /// existed before the step (`existed`), then makes the log agree with
    /// the database so one loss is reported once. Writes into a table the
    /// step created and its rollback dropped are gone with it, as they must.
    fn check(&self, existed: &BTreeSet<String>) -> Vec<String> {
        let mut log = self.log.lock().unwrap();
        let mut conn = self.check_conn.lock().unwrap();
        let mut problems = Vec::new();
        for table in &self.tables {
            let expected = log.rows.get(table.name).cloned().unwrap_or_default();
            let actual = match conn.rows(table.read) {
                Ok(Some(rows)) => rows,
                Ok(None) => {
                    if existed.contains(table.name) && !expected.is_empty() {
                        problems.push(format!(
                            "{}: the table is gone with {} rows the application wrote",
                            table.name,
                            expected.len()
                        ));
                    }
                    log.rows.remove(table.name);
                    continue;
                }
                Err(e) => {
                    problems.push(format!("{}: reading the writer's rows: {e}", table.name));
                    continue;
                }
            };
            let lost: Vec<i64> = expected
                .keys()
                .filter(|id| !actual.contains_key(id))
                .copied()
                .collect();
            let reverted: Vec<i64> = expected
                .iter()
                .filter(|(id, v)| actual.get(id).is_some_and(|a| a != *v))
                .map(|(id, _)| *id)
                .collect();
            let unknown: Vec<i64> = actual
                .keys()
                .filter(|id| !expected.contains_key(id))
                .copied()
                .collect();
            if !lost.is_empty() {
                problems.push(format!(
                    "{}: {} of {} rows the application inserted are gone (ids {})",
                    table.name,
                    lost.len(),
                    expected.len(),
                    sample(&lost)
                ));
            }
            if !reverted.is_empty() {
                problems.push(format!(
                    "{}: {} rows lost the application's last update (ids {})",
                    table.name,
                    reverted.len(),
                    sample(&reverted)
                ));
            }
            if !unknown.is_empty() {
                problems.push(format!(
                    "{}: {} writer rows the application never wrote, or wrote in a table since dropped (ids {})",
                    table.name,
                    unknown.len(),
                    sample(&unknown)
                ));
            }
            log.rows.insert(table.name, actual);
        }
        problems
    }

    fn summary(&self) -> String {
        let log = self.log.lock().unwrap();
        format!(
            "application writer: {} inserts, {} updates committed; {} other errors{}",
            log.inserts,
            log.updates,
            log.errors.len(),
            log.errors
                .first()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        )
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn sample(ids: &[i64]) -> String {
    let mut s: Vec<String> = ids.iter().take(5).map(i64::to_string).collect();
    if ids.len() > 5 {
        s.push("…".into());
    }
    s.join(", ")
}

// ---------------------------------------------------------------------------
// The oracle.

/// The state a rollback must bring back, as tools independent of sluice
/// print it, the application writer's rows left out.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    /// Schema (and, on PostgreSQL, the cluster's globals this project owns).
    schema: String,
    /// Data, the writer's rows excluded; lines sorted within each table.
    data: String,
    /// Which of the writer's tables exist.
    writer_tables: BTreeSet<String>,
}

/// The differences between two texts, as multisets of lines: `-` only
/// before, `+` only after; at most `limit` lines.
fn line_diff(before: &str, after: &str, limit: usize) -> Vec<String> {
    let count = |text: &str| {
        let mut m: BTreeMap<String, i64> = BTreeMap::new();
        for l in text.lines() {
            *m.entry(l.to_string()).or_default() += 1;
        }
        m
    };
    let (b, a) = (count(before), count(after));
    let mut out = Vec::new();
    for (line, n) in &b {
        if a.get(line).copied().unwrap_or(0) < *n {
            out.push(format!("- {line}"));
        }
    }
    for (line, n) in &a {
        if b.get(line).copied().unwrap_or(0) < *n {
            out.push(format!("+ {line}"));
        }
    }
    if out.is_empty() && before != after {
        // The same lines in another order (a column moved to the end, …).
        let first = before
            .lines()
            .zip(after.lines())
            .position(|(b, a)| b != a)
            .unwrap_or(0);
        let show = |text: &str| {
            text.lines()
                .skip(first.saturating_sub(2))
                .take(5)
                .collect::<Vec<_>>()
                .join(" ⏎ ")
        };
        out.push(format!(
            "the same lines in another order, from line {}:",
            first + 1
        ));
        out.push(format!("- {}", show(before)));
        out.push(format!("+ {}", show(after)));
    }
    let total = out.len();
    out.truncate(limit);
    if total > limit {
        out.push(format!("… {} more", total - limit));
    }
    out
}

/// Sorts the lines of each `COPY … FROM stdin;` block: a restore may put
/// rows back in another physical order, which is the same state.
fn sort_copy_blocks(dump: &str) -> String {
    let mut out = Vec::new();
    let mut block: Option<Vec<&str>> = None;
    for line in dump.lines() {
        match &mut block {
            Some(rows) if line == "\\." => {
                rows.sort_unstable();
                out.append(rows);
                out.push(line);
                block = None;
            }
            Some(rows) => rows.push(line),
            None => {
                out.push(line);
                if line.starts_with("COPY ") && line.ends_with("FROM stdin;") {
                    block = Some(Vec::new());
                }
            }
        }
    }
    out.join("\n")
}

/// The statements of a dump (each ends with a line ending in `;`), sorted:
/// SQLite keeps no meaningful order among the objects of `sqlite_schema`,
/// and a restore that recreates one moves it to the end.
fn sort_statements(dump: &str) -> String {
    let mut statements = Vec::new();
    let mut current = String::new();
    for line in dump.lines() {
        current.push_str(line);
        current.push('\n');
        if line.ends_with(';') {
            statements.push(std::mem::take(&mut current));
        }
    }
    statements.push(current);
    statements.sort();
    statements.concat()
}

/// A PostgreSQL client tool of the server's major version (the Debian
/// layout the services use), else the one on the PATH.
pub(crate) fn pg_tool(name: &str) -> PathBuf {
    static MAJOR: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    let major = MAJOR.get_or_init(|| {
        postgres::Client::connect(&pg_url(), postgres::NoTls)
            .ok()
            .and_then(|mut c| c.query_one("SHOW server_version_num", &[]).ok())
            .and_then(|r| r.get::<_, String>(0).parse::<u32>().ok())
            .map(|n| n / 10_000)
    });
    if let Some(major) = major {
        let path = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin/{name}"));
        if path.is_file() {
            return path;
        }
    }
    PathBuf::from(name)
}

pub(crate) fn run_tool(tool: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", tool.display()));
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        tool.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        // pg_dump 15.14+ brackets a dump with a random `\restrict` key.
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What the PostgreSQL oracle leaves out of the data comparison.
struct PgOracle {
    /// The writer's tables and the predicate selecting their other rows.
    writer_tables: Vec<(&'static str, &'static str)>,
    /// Tables whose rows the writer's writes produce (trigger-fed), left out.
    fed_tables: Vec<&'static str>,
    /// Sequences the writer's writes advance, left out.
    fed_sequences: Vec<&'static str>,
    /// Cluster-wide names (roles, databases) this project owns: lines of
    /// `pg_dumpall --globals-only` and databases naming one are compared.
    globals: Vec<String>,
}

impl PgOracle {
    fn snapshot(&self, url: &str) -> Snapshot {
        let mut schema = run_tool(&pg_tool("pg_dump"), &["--schema-only", url]);
        if !self.globals.is_empty() {
            let globals = run_tool(
                &pg_tool("pg_dumpall"),
                &["--globals-only", "--dbname", &pg_url()],
            );
            schema.push_str("\n-- globals\n");
            for line in globals.lines() {
                if self.globals.iter().any(|g| line.contains(g.as_str())) {
                    schema.push_str(line);
                    schema.push('\n');
                }
            }
            let mut admin = postgres::Client::connect(&pg_url(), postgres::NoTls).unwrap();
            for name in &self.globals {
                for row in admin
                    .query(
                        "SELECT datname::text || ' owner ' || pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1",
                        &[name],
                    )
                    .unwrap()
                {
                    schema.push_str(&format!("database {}\n", row.get::<_, String>(0)));
                }
            }
        }
        let mut args: Vec<String> = vec!["--data-only".into()];
        for (table, _) in &self.writer_tables {
            args.push(format!("--exclude-table-data={table}"));
        }
        for table in &self.fed_tables {
            args.push(format!("--exclude-table-data={table}"));
        }
        // sqitch appends a `revert` event to its registry: history, not state.
        args.push("--exclude-table-data=sqitch.events".into());
        args.push(url.to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let dump = run_tool(&pg_tool("pg_dump"), &args);
        let mut data: String = sort_copy_blocks(&dump)
            .lines()
            .filter(|l| {
                !(l.contains("pg_catalog.setval(")
                    && self
                        .fed_sequences
                        .iter()
                        .any(|s| l.contains(&format!("'{s}'"))))
            })
            .collect::<Vec<_>>()
            .join("\n");
        let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
        let mut writer_tables = BTreeSet::new();
        for (table, predicate) in &self.writer_tables {
            let sql = format!("SELECT t::text FROM {table} t WHERE {predicate} ORDER BY 1");
            match client.query(&sql, &[]) {
                Ok(rows) => {
                    writer_tables.insert(table.to_string());
                    data.push_str(&format!("\n-- {table}, the writer's rows left out\n"));
                    for row in rows {
                        data.push_str(&row.get::<_, String>(0));
                        data.push('\n');
                    }
                }
                Err(e) if pg_missing(&e) => {}
                Err(e) => panic!("{sql}: {e}"),
            }
        }
        Snapshot {
            schema,
            data,
            writer_tables,
        }
    }
}

/// `sqlite3 <file> .dump`, split into schema and sorted data lines, the
/// writer's rows (ids at or above [`WRITER_IDS`] in `writer_tables`) and
/// sqitch's `events` history left out.
fn sqlite_snapshot(files: &[&Path], writer_tables: &[&'static str]) -> Snapshot {
    let mut schema = String::new();
    let mut data = Vec::new();
    let mut present = BTreeSet::new();
    for file in files {
        // The writer may hold the write lock for a moment: wait for it.
        let dump = run_tool(
            Path::new("sqlite3"),
            &[
                "-cmd",
                ".timeout 60000",
                &file.display().to_string(),
                ".dump",
            ],
        );
        // A file sluice created empty (the registry, attached) is no schema.
        if !dump.contains("CREATE ") {
            continue;
        }
        schema.push_str(&format!(
            "-- {}\n",
            file.file_name().unwrap().to_string_lossy()
        ));
        let mut file_schema = String::new();
        for line in dump.lines() {
            if matches!(
                line,
                "PRAGMA foreign_keys=OFF;" | "BEGIN TRANSACTION;" | "COMMIT;"
            ) {
                continue;
            }
            if let Some(rest) = line.strip_prefix("INSERT INTO ") {
                let table = rest
                    .split([' ', '('])
                    .next()
                    .unwrap_or_default()
                    .trim_matches('"');
                if table == "events" && file.ends_with("sqitch.db") {
                    continue;
                }
                if writer_tables.contains(&table) {
                    let id: i64 = rest
                        .split_once("VALUES(")
                        .and_then(|(_, v)| v.split(',').next())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    if id >= WRITER_IDS {
                        continue;
                    }
                }
                data.push(line.to_string());
            } else if line.starts_with("DELETE FROM sqlite_sequence") {
                // Present whenever `sqlite_sequence` is, which no rollback
                // can drop once an AUTOINCREMENT table created it: its rows
                // are compared, not its existence.
            } else {
                if let Some(rest) = line.strip_prefix("CREATE TABLE ") {
                    let name = rest
                        .trim_start_matches("IF NOT EXISTS ")
                        .split([' ', '('])
                        .next()
                        .unwrap_or_default()
                        .trim_matches('"');
                    if writer_tables.contains(&name) {
                        present.insert(name.to_string());
                    }
                }
                file_schema.push_str(line);
                file_schema.push('\n');
            }
        }
        schema.push_str(&sort_statements(&file_schema));
    }
    data.sort();
    Snapshot {
        schema,
        data: data.join("\n"),
        writer_tables: present,
    }
}

// ---------------------------------------------------------------------------
// The walk.

/// One step of a project's plan: its id and its TOML body after `id`.
struct PlanStep {
    id: String,
    body: String,
}

/// A field project in a scenario folder.
struct Field {
    name: &'static str,
    scenario: Scenario,
    /// The plan's head (values, targets, plugins).
    head: String,
    steps: Vec<PlanStep>,
    env: Vec<(String, String)>,
    snapshot: Box<dyn Fn() -> Snapshot>,
    writer: Writer,
}

impl Field {
    fn sluice(&self, args: &[&str]) -> Outcome {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.scenario.sluice_with(&sluice_bin(), args, &env)
    }

    /// Writes the plan with the first `n` steps and accepts it into the lock.
    fn plan(&self, n: usize) {
        let mut plan = self.head.clone();
        for step in &self.steps[..n] {
            plan.push_str(&format!("\n[[steps]]\nid = \"{}\"\n{}", step.id, step.body));
        }
        self.scenario.write("sluice.toml", &plan);
        let accepted = self.sluice(&["audit", "--accept", "sluice.toml"]);
        assert_eq!(accepted.code, 0, "audit --accept: {}", accepted.all());
    }

    /// Deploys every step one by one, rolling each back and deploying it
    /// again; returns every failure, one line each (with detail below).
    fn walk(&self) -> Vec<String> {
        let started = Instant::now();
        let mut failures = Vec::new();
        let mut log = Vec::new();
        for (i, step) in self.steps.iter().enumerate() {
            let id = step.id.as_str();
            let pre = (self.snapshot)();
            self.plan(i + 1);
            let deploy = self.sluice(&["run", "sluice.toml"]);
            if deploy.code != 0 {
                failures.push(format!(
                    "step {} `{id}`: deploy exited {}: {}",
                    i + 1,
                    deploy.code,
                    gist(&deploy)
                ));
                // A failed step was rolled back by sluice: the same oracle.
                let after = (self.snapshot)();
                failures.extend(compare(i, id, "automatic rollback", &pre, &after));
                failures.extend(
                    self.writer.check(&pre.writer_tables).into_iter().map(|p| {
                        format!("step {} `{id}`: after the automatic rollback: {p}", i + 1)
                    }),
                );
                // Later steps build on this one: the walk goes on only if the
                // step deploys when tried again (the failure stays recorded).
                let retried = (0..2).any(|_| self.sluice(&["run", "sluice.toml"]).code == 0);
                log.push(format!(
                    "{id}: deploy failed (exit {}){}",
                    deploy.code,
                    if retried {
                        ", deployed when run again"
                    } else {
                        ""
                    }
                ));
                if !retried {
                    break;
                }
            }
            for p in self.writer.check(&pre.writer_tables) {
                failures.push(format!("step {} `{id}`: after deploy: {p}", i + 1));
            }
            let back = match i {
                0 => self.sluice(&["rollback", "sluice.toml"]),
                _ => self.sluice(&["rollback", "sluice.toml", "--to", &self.steps[i - 1].id]),
            };
            let after = (self.snapshot)();
            let lost = self.writer.check(&pre.writer_tables);
            let differs = compare(i, id, "rollback", &pre, &after);
            if back.code != 0 {
                failures.push(format!(
                    "step {} `{id}`: rollback exited {}: {}",
                    i + 1,
                    back.code,
                    gist(&back)
                ));
            } else if !lost.is_empty() || !differs.is_empty() {
                failures.push(format!(
                    "step {} `{id}`: sluice reported the rollback a success (exit 0) but the oracle disagrees",
                    i + 1
                ));
            }
            failures.extend(differs);
            failures.extend(
                lost.into_iter()
                    .map(|p| format!("step {} `{id}`: after rollback: {p}", i + 1)),
            );
            if back.code != 0 {
                log.push(format!("{id}: rollback failed (exit {})", back.code));
                break;
            }
            let again = self.sluice(&["run", "sluice.toml"]);
            if again.code != 0 {
                failures.push(format!(
                    "step {} `{id}`: deploy after its rollback exited {}: {}",
                    i + 1,
                    again.code,
                    gist(&again)
                ));
                let retried = (0..2).any(|_| self.sluice(&["run", "sluice.toml"]).code == 0);
                log.push(format!(
                    "{id}: redeploy failed (exit {}){}",
                    again.code,
                    if retried {
                        ", deployed when run again"
                    } else {
                        ""
                    }
                ));
                if !retried {
                    break;
                }
                continue;
            }
            log.push(format!("{id}: ok"));
        }
        let text = format!(
            "field corpus `{}`: {} of {} steps walked in {:.1} s; {}\n{}\nfailures:\n{}",
            self.name,
            log.len(),
            self.steps.len(),
            started.elapsed().as_secs_f64(),
            self.writer.summary(),
            log.join("\n"),
            if failures.is_empty() {
                "none".to_string()
            } else {
                failures.join("\n")
            }
        );
        println!("{text}");
        report(&format!("field-{}.txt", self.name), &text);
        failures
    }
}

/// The lines of a sluice run worth quoting: errors and step outcomes.
fn gist(out: &Outcome) -> String {
    let all = out.all();
    let lines: Vec<&str> = all
        .lines()
        .filter(|l| {
            let l = l.to_lowercase();
            l.contains("error") || l.contains("fail") || l.contains("refus") || l.contains("not ")
        })
        .take(6)
        .collect();
    if lines.is_empty() {
        all.lines().rev().take(4).collect::<Vec<_>>().join(" | ")
    } else {
        lines.join(" | ")
    }
}

fn compare(i: usize, id: &str, what: &str, pre: &Snapshot, after: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    if pre.schema != after.schema {
        out.push(format!(
            "step {} `{id}`: after {what} the schema differs from the pre-step state:\n    {}",
            i + 1,
            line_diff(&pre.schema, &after.schema, 12).join("\n    ")
        ));
    }
    if pre.data != after.data {
        out.push(format!(
            "step {} `{id}`: after {what} the data differs from the pre-step state:\n    {}",
            i + 1,
            line_diff(&pre.data, &after.data, 12).join("\n    ")
        ));
    }
    out
}

fn assert_walked(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A suffix naming this run's cluster-wide objects, so runs and tests
/// sharing a server never collide.
fn run_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{:x}{:x}", std::process::id(), nanos)
}

/// Roles and databases a project created on the shared cluster, dropped
/// after its scratch database.
struct ClusterGlobals {
    roles: Vec<String>,
    databases: Vec<String>,
}

impl Drop for ClusterGlobals {
    fn drop(&mut self) {
        let Ok(mut admin) = postgres::Client::connect(&pg_url(), postgres::NoTls) else {
            return;
        };
        for db in &self.databases {
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"));
        }
        for role in &self.roles {
            let _ = admin.batch_execute(&format!("DROP ROLE IF EXISTS \"{role}\""));
        }
    }
}

fn pg_head(plugin_name: &str) -> String {
    format!(
        "[values]\ndb = {{ env = \"APP_PG_URL\" }}\n\n[targets.app]\nkind = \"postgres\"\nconnection = \"db\"\n\n[plugins.sqitch]\npath = \"{}\"\n",
        plugin(plugin_name).display()
    )
}

// ---------------------------------------------------------------------------
// The projects.

/// A project of the corpus: tests/fixtures/field/<name>, or under
/// `SLUICE_FIELD_DIR` to walk a modified copy while investigating.
fn fixture(name: &str) -> PathBuf {
    std::env::var_os("SLUICE_FIELD_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("tests/fixtures/field"))
        .join(name)
}

/// `tally`'s changes in plan order: (step id, change).
fn tally_changes() -> Vec<(String, String)> {
    let plan = std::fs::read_to_string(fixture("tally").join("sqitch.plan")).unwrap();
    let mut seen = BTreeSet::new();
    let mut changes = Vec::new();
    let lines: Vec<&str> = plan.lines().collect();
    // A reworked change's earlier instance is `name@tag`, the tag being the
    // first one after it.
    for (n, line) in lines.iter().enumerate() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if name.starts_with('%') || name.starts_with('@') || name.starts_with('#') {
            continue;
        }
        let reworked_later = lines[n + 1..]
            .iter()
            .any(|l| l.split_whitespace().next() == Some(name));
        let change = if reworked_later {
            let tag = lines[n + 1..]
                .iter()
                .find_map(|l| l.split_whitespace().next().filter(|w| w.starts_with('@')))
                .unwrap();
            format!("{name}{tag}")
        } else {
            name.to_string()
        };
        let id = change.replace(['@', '.', '_'], "-");
        assert!(seen.insert(id.clone()));
        changes.push((id, change));
    }
    changes
}

#[test]
#[ignore = "issue 15: fails at step 1 (set_config refused in migrate); see tests/fixtures/field/BASELINE.md; run with --ignored"]
fn tally_sqitch_on_postgres_rolls_back_every_step_keeping_the_apps_writes() {
    let suffix = run_suffix();
    let owner = format!("tally_owner_{suffix}");
    let app = format!("tally_app_{suffix}");
    let readonly = format!("tally_ro_{suffix}");
    let reporting = format!("tally_reporting_{suffix}");
    let globals = ClusterGlobals {
        roles: vec![app.clone(), readonly.clone(), owner.clone()],
        databases: vec![reporting.clone()],
    };
    let db = pg_scratch();
    let scenario = Scenario::new();
    copy_dir(&fixture("tally"), &scenario.path().join("tally"));
    std::fs::create_dir_all(scenario.path().join("secrets")).unwrap();
    scenario.write("secrets/app_password", "correct horse battery staple\n");
    let steps = tally_changes()
        .into_iter()
        .map(|(id, change)| PlanStep {
            id,
            body: format!(
                "plugin = \"sqitch\"\ntarget = \"app\"\naccess = \"read-write\"\n\
                 files = [{{ name = \"tally\", path = \"tally\", access = \"read-only\" }}, {{ name = \"secrets\", path = \"secrets\", access = \"read-only\" }}]\n\
                 thresholds = [\"verified == 1\"]\n\
                 params = {{ project = \"tally\", change = \"{change}\", variables = {{ owner_role = \"{owner}\", app_role = \"{app}\", readonly_role = \"{readonly}\", reporting_db = \"{reporting}\" }}, variable_files = {{ app_password = \"secrets/app_password\" }} }}\n"
            ),
        })
        .collect::<Vec<_>>();
    assert!(steps.len() >= 20, "{} changes", steps.len());
    let oracle = PgOracle {
        writer_tables: vec![
            ("tally.users", "id < 1000000"),
            ("tally.events", "id < 1000000"),
        ],
        fed_tables: vec!["tally.audit_log"],
        fed_sequences: vec!["tally.audit_log_id_seq"],
        globals: vec![
            owner.clone(),
            app.clone(),
            readonly.clone(),
            reporting.clone(),
        ],
    };
    let writer = Writer::start(
        vec![
            WriterTable {
                name: "tally.users",
                insert: "INSERT INTO tally.users (id, tenant_id, email, full_name) VALUES ($1, 1, 'app-' || $1::bigint || '@acme.example', $2)",
                update: "UPDATE tally.users SET full_name = $2 WHERE id = $1",
                read: "SELECT id, full_name FROM tally.users WHERE id >= 1000000",
            },
            WriterTable {
                name: "tally.events",
                insert: "INSERT INTO tally.events (id, tenant_id, kind, detail) VALUES ($1, 1, 'app', $2)",
                update: "UPDATE tally.events SET detail = $2 WHERE id = $1",
                read: "SELECT id, detail FROM tally.events WHERE id >= 1000000",
            },
        ],
        Box::new(PgApp(db.client())),
        Box::new(PgApp(db.client())),
    );
    let url = db.url.clone();
    let snapshot_url = db.url.clone();
    let field = Field {
        name: "tally",
        scenario,
        head: pg_head("sqitch.wasm"),
        steps,
        env: vec![("APP_PG_URL".into(), url)],
        snapshot: Box::new(move || oracle.snapshot(&snapshot_url)),
        writer,
    };
    let failures = field.walk();
    drop(field);
    drop(db);
    drop(globals);
    assert_walked(failures);
}

#[test]
#[ignore = "issue 15: steps 1–12 roll back keeping the writer's rows; step 13 adds a column to `accounts`, which the writer writes: its restore is refused (exit 6); see tests/fixtures/field/BASELINE.md; run with --ignored"]
fn orders_golang_migrate_on_postgres_rolls_back_every_step_keeping_the_apps_writes() {
    let db = pg_scratch();
    let scenario = Scenario::new();
    copy_dir(&fixture("orders"), &scenario.path().join("migrations"));
    let mut names: Vec<String> = std::fs::read_dir(fixture("orders"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|f| f.strip_suffix(".up.sql").map(str::to_string))
        .collect();
    names.sort();
    let steps: Vec<PlanStep> = names
        .iter()
        .map(|name| {
            let (version, rest) = name.split_once('_').unwrap();
            let version: u64 = version.parse().unwrap();
            PlanStep {
                id: format!("v{version}-{}", rest.replace('_', "-"))
                    .chars()
                    .take(64)
                    .collect(),
                body: format!(
                    "plugin = \"sqitch\"\ntarget = \"app\"\naccess = \"read-write\"\n\
                     files = [{{ name = \"migrations\", path = \"migrations\", access = \"read-only\" }}]\n\
                     thresholds = [\"version == {version}\", \"dirty == 0\"]\n\
                     params = {{ format = \"golang-migrate\", migrations = \"migrations\", version = {version} }}\n"
                ),
            }
        })
        .collect();
    assert!(steps.len() >= 20, "{} migrations", steps.len());
    let oracle = PgOracle {
        writer_tables: vec![("accounts", "id < 1000000"), ("jobs", "id < 1000000")],
        fed_tables: vec![],
        fed_sequences: vec![],
        globals: vec![],
    };
    let writer = Writer::start(
        vec![
            WriterTable {
                name: "accounts",
                insert: "INSERT INTO accounts (id, email, name) VALUES ($1, 'app-' || $1::bigint || '@example.com', $2)",
                update: "UPDATE accounts SET name = $2 WHERE id = $1",
                read: "SELECT id, name FROM accounts WHERE id >= 1000000",
            },
            WriterTable {
                name: "jobs",
                insert: "INSERT INTO jobs (id, kind, args) VALUES ($1, 'app', jsonb_build_object('v', $2::text))",
                update: "UPDATE jobs SET args = jsonb_build_object('v', $2::text) WHERE id = $1",
                read: "SELECT id, args->>'v' FROM jobs WHERE id >= 1000000",
            },
        ],
        Box::new(PgApp(db.client())),
        Box::new(PgApp(db.client())),
    );
    let snapshot_url = db.url.clone();
    let field = Field {
        name: "orders",
        scenario,
        head: pg_head("sqitch.wasm"),
        steps,
        env: vec![("APP_PG_URL".into(), db.url.clone())],
        snapshot: Box::new(move || oracle.snapshot(&snapshot_url)),
        writer,
    };
    let failures = field.walk();
    drop(field);
    drop(db);
    assert_walked(failures);
}

#[test]
#[ignore = "issue 15: steps 1–9 roll back by change set keeping the writer's rows; step 10 alters a table, whose restore is refused while the app writes (exit 6); see tests/fixtures/field/BASELINE.md; run with --ignored"]
fn fieldnotes_sqitch_on_sqlite_rolls_back_every_step_keeping_the_apps_writes() {
    let scenario = Scenario::new();
    copy_dir(&fixture("fieldnotes"), &scenario.path().join("fieldnotes"));
    // sqitch creates the database file on first use; a sluice target names
    // an existing one.
    std::fs::write(scenario.path().join("app.db"), b"").unwrap();
    let plan = std::fs::read_to_string(fixture("fieldnotes").join("sqitch.plan")).unwrap();
    let steps: Vec<PlanStep> = plan
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| !w.starts_with(['%', '@', '#']))
        .map(|change| PlanStep {
            id: change.replace('_', "-"),
            body: format!(
                "plugin = \"sqitch\"\ntarget = \"app\"\naccess = \"read-write\"\n\
                 files = [{{ name = \"fieldnotes\", path = \"fieldnotes\", access = \"read-only\" }}]\n\
                 thresholds = [\"verified == 1\"]\n\
                 params = {{ project = \"fieldnotes\", change = \"{change}\" }}\n"
            ),
        })
        .collect();
    assert!(steps.len() >= 20, "{} changes", steps.len());
    let db = scenario.path().join("app.db");
    let registry = scenario.path().join("sqitch.db");
    let open = |path: &Path| {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.busy_timeout(Duration::from_secs(60)).unwrap();
        conn
    };
    let writer = Writer::start(
        vec![
            WriterTable {
                name: "users",
                insert: "INSERT INTO users (id, email, name) VALUES (?1, 'app-' || ?1 || '@example.org', ?2)",
                update: "UPDATE users SET name = ?2 WHERE id = ?1",
                read: "SELECT id, name FROM users WHERE id >= 1000000",
            },
            WriterTable {
                name: "notes",
                insert: "INSERT INTO notes (id, notebook_id, body) VALUES (?1, 1, ?2)",
                update: "UPDATE notes SET body = ?2 WHERE id = ?1",
                read: "SELECT id, body FROM notes WHERE id >= 1000000",
            },
        ],
        Box::new(SqliteApp(open(&db))),
        Box::new(SqliteApp(open(&db))),
    );
    let head = format!(
        "[targets.app]\nkind = \"sqlite\"\npath = \"app.db\"\nattach = {{ sqitch = \"sqitch.db\" }}\n\n[plugins.sqitch]\npath = \"{}\"\n",
        plugin("sqitch.wasm").display()
    );
    let field = Field {
        name: "fieldnotes",
        scenario,
        head,
        steps,
        env: vec![],
        snapshot: Box::new(move || {
            let files: Vec<&Path> = [db.as_path(), registry.as_path()]
                .into_iter()
                .filter(|p| p.is_file())
                .collect();
            sqlite_snapshot(&files, &["users", "notes"])
        }),
        writer,
    };
    assert_walked(field.walk());
}

#[test]
fn the_oracles_helpers_see_what_they_must() {
    assert_eq!(
        sort_copy_blocks("COPY t (a) FROM stdin;\n2\n1\n\\.\nSELECT 1;"),
        "COPY t (a) FROM stdin;\n1\n2\n\\.\nSELECT 1;"
    );
    assert_eq!(line_diff("a\nb\nb", "b\nc", 10), ["- a", "- b", "+ c"]);
    assert_eq!(
        line_diff("x\ny", "y\nx", 10),
        [
            "the same lines in another order, from line 1:",
            "- x ⏎ y",
            "+ y ⏎ x"
        ]
    );
    assert!(line_diff("x\ny", "x\ny", 10).is_empty());
    assert_eq!(
        sort_statements("CREATE TABLE b (\n x\n);\nCREATE TABLE a (x);\n"),
        "CREATE TABLE a (x);\nCREATE TABLE b (\n x\n);\n"
    );
}
