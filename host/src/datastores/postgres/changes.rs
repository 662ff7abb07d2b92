//! Change sets on PostgreSQL: while a step's read-write session is open,
//! every table it may write carries statement triggers (`AFTER` insert,
//! update, delete with their transition tables; `BEFORE` truncate, which
//! reads the rows about to go) named for
//! that session, calling `sluice_capture.record()`. The function logs the
//! statement's old rows, then its new rows (their record text, which reads
//! back exactly; an update is a delete and an insert at the same key) into
//! the unlogged table
//! `sluice_capture.log` — but only when the firing session is the step's
//! own (`sluice.capture` set to the trigger's id): an application's writes
//! cost one comparison and are never logged. The log commits and rolls back
//! with the step's transactions. When the session closes, a host
//! connection reads the log as `COPY` lines (the form the host's
//! fingerprint hashes), hands it to the step's [`ChangeCapture`], drops the
//! triggers and deletes the log rows. A crash leaves triggers that do
//! nothing; the next recording session drops those of sessions that are
//! gone. The schema digest leaves `sluice_capture` and these triggers out.
//!
//! Rows are keyed by primary key; a table without one is not logged, and
//! the engine's completeness check then sends a step that changed it to a
//! restore. The undo runs in one transaction with the tables' enabled user
//! triggers disabled (so an `updated_at` trigger cannot rewrite the rows it
//! puts back) and re-enabled as they were before commit; each row must
//! still be as the step left it, gets its pre-step image back, and is read
//! back before commit.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_postgres::Client;

use super::copy::quote_ident as ident;
use super::{connect_client, pg_error};
use crate::datastores::changes::{
    qualified, Cell, ChangeCapture, ChangeSet, Found, Image, Key, RowChange, RowEvent, Undone,
    UndoOutcome,
};
use crate::datastores::DatastoreError;
use crate::secret::Secret;

/// The schema holding the log and its function; no backup, fingerprint or
/// digest includes it.
pub const CAPTURE_SCHEMA: &str = "sluice_capture";

/// The prefix of the recording triggers' names.
pub const TRIGGER_PREFIX: &str = "sluice_capture_";

/// How long recording may wait for a table's lock (a long transaction of
/// the application's): past it, no change set, and a rollback restores.
const LOCK_TIMEOUT: &str = "10s";

/// Taken while the capture schema is set up or cleaned, so concurrent
/// sessions do not race on it.
const SETUP_LOCK: i64 = 0x736c_7569_6365_6361;

const SETUP: &str = r#"
CREATE SCHEMA IF NOT EXISTS sluice_capture;
CREATE UNLOGGED TABLE IF NOT EXISTS sluice_capture.log (
  session text NOT NULL, seq bigserial, relid oid NOT NULL, op "char" NOT NULL, old text, new text);

CREATE OR REPLACE FUNCTION sluice_capture.record() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $f$
DECLARE
  rows_now bigint;
BEGIN
  IF current_setting('sluice.capture', true) IS DISTINCT FROM TG_ARGV[0] THEN RETURN NULL; END IF;
  IF TG_OP = 'TRUNCATE' THEN
    -- Fired before the truncate, which has no transition table: its rows
    -- are logged as deletes (each child of an inheritance tree or
    -- partitioned table logs its own), up to a million; past that the step
    -- is restored instead of keeping such a log.
    EXECUTE format('SELECT count(*) FROM (SELECT 1 FROM ONLY %s LIMIT 1000001) c', TG_RELID::regclass) INTO rows_now;
    IF rows_now > 1000000 THEN
      INSERT INTO sluice_capture.log (session, relid, op) VALUES (TG_ARGV[0], TG_RELID, 't');
    ELSE
      EXECUTE format('INSERT INTO sluice_capture.log (session, relid, op, old) SELECT $1, $2, ''d'', t::text FROM ONLY %s t',
                     TG_RELID::regclass) USING TG_ARGV[0], TG_RELID;
    END IF;
    RETURN NULL;
  END IF;
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    INSERT INTO sluice_capture.log (session, relid, op, old)
      SELECT TG_ARGV[0], TG_RELID, 'd', o::text FROM sluice_old o;
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    INSERT INTO sluice_capture.log (session, relid, op, new)
      SELECT TG_ARGV[0], TG_RELID, 'i', n::text FROM sluice_new n;
  END IF;
  RETURN NULL;
END $f$;
GRANT USAGE ON SCHEMA sluice_capture TO PUBLIC;
"#;

/// One logged table.
#[derive(Debug, Clone)]
struct Logged {
    relid: u32,
    schema: String,
    name: String,
    /// `"schema"."name"`.
    sql_name: String,
    /// How many columns its rows have (`COPY` fields).
    width: usize,
    /// The positions of its primary key's columns among them.
    key: Vec<usize>,
}

/// The triggers and log of one session, read and removed when it closes.
pub(super) struct Recorder {
    url: Secret,
    id: String,
    pid: i32,
    logged: Vec<Logged>,
    capture: ChangeCapture,
}

/// Sets up recording on the plugin's `client` for every table the session
/// may write (`tables`, the step's scope; every user table when `None`). A
/// failure gives the change set up and leaves the session usable.
pub(super) async fn record(
    client: &Client,
    url: &Secret,
    tables: Option<&[String]>,
    capture: ChangeCapture,
) -> Option<Recorder> {
    match install(client, tables).await {
        Ok((id, pid, logged)) => {
            capture.session_opened(
                logged
                    .iter()
                    .map(|l| qualified(&l.schema, &l.name))
                    .collect(),
            );
            Some(Recorder {
                url: url.clone(),
                id,
                pid,
                logged,
                capture,
            })
        }
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            capture.give_up(format!("cannot record the step's changes: {e}"));
            None
        }
    }
}

async fn install(
    client: &Client,
    tables: Option<&[String]>,
) -> Result<(String, i32, Vec<Logged>), DatastoreError> {
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .map_err(pg_error)?
        .get(0);
    let id = format!("p{pid}");
    client
        .batch_execute(&format!(
            "BEGIN; SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'; SELECT pg_advisory_xact_lock({SETUP_LOCK}); {SETUP}"
        ))
        .await
        .map_err(pg_error)?;
    drop_stale(client).await?;
    let names: Option<Vec<String>> = tables.map(|t| t.to_vec());
    let rows = client
        .query(
            "SELECT c.oid, n.nspname, c.relname, \
               (SELECT count(*) FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), \
               (SELECT array_agg(p.pos - 1) FROM ( \
                  SELECT a.attnum, row_number() OVER (ORDER BY a.attnum) AS pos, \
                         a.attnum = ANY (i.indkey) AS in_key \
                  FROM pg_attribute a JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary \
                  WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) p WHERE p.in_key) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' \
               AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'sluice_journal', 'sluice_capture') \
               AND n.nspname !~ '^pg_(toast|temp_)' \
               AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                               AND d.objid = c.oid AND d.deptype = 'e') \
               AND ($1::text[] IS NULL OR c.oid IN (SELECT to_regclass(t) FROM unnest($1::text[]) t)) \
             ORDER BY 2, 3",
            &[&names],
        )
        .await
        .map_err(pg_error)?;
    let mut logged = Vec::new();
    for row in rows {
        let key: Option<Vec<i64>> = row.get(4);
        // No primary key: no stable key to undo by.
        let Some(key) = key else { continue };
        let table = Logged {
            relid: row.get(0),
            schema: row.get(1),
            name: row.get(2),
            sql_name: format!(
                "{}.{}",
                ident(row.get::<_, &str>(1)),
                ident(row.get::<_, &str>(2))
            ),
            width: row.get::<_, i64>(3) as usize,
            key: key.into_iter().map(|k| k as usize).collect(),
        };
        let on = &table.sql_name;
        // A table PostgreSQL will not give these triggers (a partition of
        // some shapes, a lock not granted in time) is left unlogged: the
        // engine's check then restores a step that changed it.
        let created = client
            .batch_execute(&format!(
            "SAVEPOINT sluice_capture_table; \
             CREATE TRIGGER {TRIGGER_PREFIX}{id}_i AFTER INSERT ON {on} \
               REFERENCING NEW TABLE AS sluice_new \
               FOR EACH STATEMENT EXECUTE FUNCTION sluice_capture.record('{id}'); \
             CREATE TRIGGER {TRIGGER_PREFIX}{id}_u AFTER UPDATE ON {on} \
               REFERENCING OLD TABLE AS sluice_old NEW TABLE AS sluice_new \
               FOR EACH STATEMENT EXECUTE FUNCTION sluice_capture.record('{id}'); \
             CREATE TRIGGER {TRIGGER_PREFIX}{id}_d AFTER DELETE ON {on} \
               REFERENCING OLD TABLE AS sluice_old \
               FOR EACH STATEMENT EXECUTE FUNCTION sluice_capture.record('{id}'); \
             CREATE TRIGGER {TRIGGER_PREFIX}{id}_t BEFORE TRUNCATE ON {on} \
               FOR EACH STATEMENT EXECUTE FUNCTION sluice_capture.record('{id}'); \
             RELEASE SAVEPOINT sluice_capture_table;"
            ))
            .await;
        match created {
            Ok(()) => logged.push(table),
            Err(e) => {
                tracing::info!(table = %table.name, "not recording its changes: {}", pg_error(e));
                client
                    .batch_execute("ROLLBACK TO SAVEPOINT sluice_capture_table")
                    .await
                    .map_err(pg_error)?;
            }
        }
    }
    client.batch_execute("COMMIT").await.map_err(pg_error)?;
    client
        .batch_execute(&format!("SET sluice.capture = '{id}'"))
        .await
        .map_err(pg_error)?;
    Ok((id, pid, logged))
}

/// Drops the triggers and log rows of recording sessions that are gone (a
/// crashed sluice), and this backend's own from an earlier session that had
/// its process id.
async fn drop_stale(client: &Client) -> Result<(), DatastoreError> {
    let rows = client
        .query(
            "SELECT t.tgname, format('%I.%I', n.nspname, c.relname), substring(t.tgname from '^sluice_capture_(p[0-9]+)') \
             FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE t.tgname ~ '^sluice_capture_p[0-9]+_[iudt]$' \
               AND (substring(t.tgname from '^sluice_capture_p([0-9]+)')::int = pg_backend_pid() \
                    OR NOT EXISTS (SELECT 1 FROM pg_stat_activity a \
                                   WHERE a.pid = substring(t.tgname from '^sluice_capture_p([0-9]+)')::int))",
            &[],
        )
        .await
        .map_err(pg_error)?;
    let mut script = String::new();
    let mut sessions = BTreeSet::new();
    for row in rows {
        let trigger: &str = row.get(0);
        let table: &str = row.get(1);
        script.push_str(&format!("DROP TRIGGER IF EXISTS {} ON {table};", ident(trigger)));
        sessions.insert(row.get::<_, String>(2));
    }
    for session in sessions {
        script.push_str(&format!(
            "DELETE FROM sluice_capture.log WHERE session = '{session}';"
        ));
    }
    if !script.is_empty() {
        tracing::info!("dropping change recording left by a session that is gone");
        client.batch_execute(&script).await.map_err(pg_error)?;
    }
    Ok(())
}

impl Recorder {
    /// Hands what the session's committed transactions changed to the
    /// capture, then removes its triggers and log rows. Runs after the
    /// plugin's connection closed (its open transaction rolled back).
    pub(super) async fn finish(self) {
        let read = self.read().await;
        self.capture.session_closed(read.map_err(|e| e.to_string()));
    }

    async fn read(&self) -> Result<Vec<RowEvent>, DatastoreError> {
        let (client, _) = connect_client(&self.url).await?;
        // The plugin's backend must be gone: nothing it sent can still commit.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let alive: bool = client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)",
                    &[&self.pid],
                )
                .await
                .map_err(pg_error)?
                .get(0);
            if !alive {
                break;
            }
            if Instant::now() > deadline {
                return Err(DatastoreError::host(
                    "SLUICE_CAPTURE",
                    "the step's session did not end",
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let events = self.events(&client).await;
        let cleaned = self.clean(&client).await;
        if let Err(e) = &cleaned {
            tracing::warn!("cannot drop the step's change recording (the next step drops it): {e}");
        }
        events
    }

    async fn events(&self, client: &Client) -> Result<Vec<RowEvent>, DatastoreError> {
        const BATCH: usize = 4096;
        let id = &self.id;
        let truncated: Option<u32> = client
            .query_opt(
                "SELECT relid FROM sluice_capture.log WHERE session = $1 AND op = 't' LIMIT 1",
                &[id],
            )
            .await
            .map_err(pg_error)?
            .map(|r| r.get(0));
        if let Some(relid) = truncated {
            let table = self
                .logged
                .iter()
                .find(|l| l.relid == relid)
                .map_or_else(|| relid.to_string(), |l| qualified(&l.schema, &l.name));
            return Err(DatastoreError::host(
                "SLUICE_CAPTURE",
                format!("the step truncated `{table}`, past a million rows (too many to log)"),
            ));
        }
        // One pass over the log for the tables it holds rows of: each table
        // read is a scan of the (unindexed, per-step) log.
        let written: BTreeSet<u32> = client
            .query(
                "SELECT DISTINCT relid FROM sluice_capture.log WHERE session = $1",
                &[id],
            )
            .await
            .map_err(pg_error)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut events = Vec::new();
        for table in self.logged.iter().filter(|t| written.contains(&t.relid)) {
            let t = &table.sql_name;
            let stream = client
                .copy_out(&format!(
                    "COPY (SELECT l.op, o.*, n.* FROM sluice_capture.log l \
                       CROSS JOIN LATERAL (SELECT (r).* FROM (SELECT l.old::{t} AS r OFFSET 0) s) o \
                       CROSS JOIN LATERAL (SELECT (r).* FROM (SELECT l.new::{t} AS r OFFSET 0) s) n \
                     WHERE l.session = '{id}' AND l.relid = {} ORDER BY l.seq) TO STDOUT",
                    table.relid
                ))
                .await
                .map_err(pg_error)?;
            let mut stream = Box::pin(stream);
            let mut pending: Vec<u8> = Vec::new();
            while let Some(chunk) = stream.next().await {
                pending.extend_from_slice(&chunk.map_err(pg_error)?);
                let mut start = 0;
                while let Some(end) = pending[start..].iter().position(|b| *b == b'\n') {
                    let line = &pending[start..start + end];
                    self.event(table, line, &mut events)?;
                    start += end + 1;
                }
                pending.drain(..start);
                if events.len() >= BATCH {
                    self.capture.commit(std::mem::take(&mut events));
                    if self.capture.is_given_up() {
                        return Ok(Vec::new());
                    }
                }
            }
        }
        Ok(events)
    }

    /// One log line: `op`, the old row's fields, the new row's.
    fn event(&self, table: &Logged, line: &[u8], events: &mut Vec<RowEvent>) -> Result<(), DatastoreError> {
        let bad = || {
            DatastoreError::host(
                "SLUICE_CAPTURE",
                format!("a change log line of `{}` cannot be read", table.name),
            )
        };
        let line = std::str::from_utf8(line).map_err(|_| bad())?;
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() != 1 + 2 * table.width {
            return Err(bad());
        }
        let (old, new) = fields[1..].split_at(table.width);
        let image = |fields: &[&str]| -> (Key, Image) {
            let key = table.key.iter().map(|k| fields[*k].to_string()).collect();
            (Key::Columns(key), vec![Cell::Line(fields.join("\t"))])
        };
        let delete = |(key, old)| RowEvent::Delete {
            database: table.schema.clone(),
            table: table.name.clone(),
            key,
            old,
        };
        let insert = |(key, new)| RowEvent::Insert {
            database: table.schema.clone(),
            table: table.name.clone(),
            key,
            new,
        };
        match fields[0] {
            "i" => events.push(insert(image(new))),
            "d" => events.push(delete(image(old))),
            "u" => {
                events.push(delete(image(old)));
                events.push(insert(image(new)));
            }
            _ => return Err(bad()),
        }
        Ok(())
    }

    async fn clean(&self, client: &Client) -> Result<(), DatastoreError> {
        let id = &self.id;
        let mut script = format!(
            "BEGIN; SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'; SELECT pg_advisory_xact_lock({SETUP_LOCK});"
        );
        for table in &self.logged {
            let on = &table.sql_name;
            script.push_str(&format!(
                "DROP TRIGGER IF EXISTS {TRIGGER_PREFIX}{id}_i ON {on}; \
                 DROP TRIGGER IF EXISTS {TRIGGER_PREFIX}{id}_u ON {on}; \
                 DROP TRIGGER IF EXISTS {TRIGGER_PREFIX}{id}_d ON {on}; \
                 DROP TRIGGER IF EXISTS {TRIGGER_PREFIX}{id}_t ON {on};"
            ));
        }
        // The last recording session leaves nothing behind: a `pg_dump`
        // after the run reads as one before it.
        script.push_str(&format!(
            "DELETE FROM sluice_capture.log WHERE session = '{id}'; \
             DO $d$ BEGIN \
               IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname ~ '^sluice_capture_') THEN \
                 DROP SCHEMA sluice_capture CASCADE; \
               END IF; \
             END $d$; COMMIT;"
        ));
        let done = client.batch_execute(&script).await.map_err(pg_error);
        if done.is_err() {
            let _ = client.batch_execute("ROLLBACK").await;
        }
        done
    }

    /// The session ended without a runtime to read its log on.
    pub(super) fn abandon(self) {
        self.capture
            .session_closed(Err("the step's session closed outside the runtime".into()));
    }
}

/// A table the undo writes: its columns and key.
struct Shape {
    sql_name: String,
    /// Column names, in `COPY` order.
    columns: Vec<String>,
    /// Positions of the primary key's columns.
    key: Vec<usize>,
    /// Columns an `UPDATE` may set (not in the key, not generated, not
    /// `GENERATED ALWAYS` identity).
    settable: Vec<usize>,
    /// Columns an `INSERT` may name (not generated).
    insertable: Vec<usize>,
    /// Enabled user triggers, with how they were enabled (`O`, `A`, `R`).
    triggers: Vec<(String, String)>,
}

async fn shape(client: &Client, schema: &str, table: &str) -> Result<Result<Shape, String>, DatastoreError> {
    let sql_name = format!("{}.{}", ident(schema), ident(table));
    let columns = client
        .query(
            "SELECT a.attname::text, coalesce(a.attnum = ANY (i.indkey), false), a.attgenerated <> '', a.attidentity = 'a' \
             FROM pg_attribute a LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary \
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&sql_name],
        )
        .await
        .map_err(pg_error)?;
    if columns.is_empty() {
        return Ok(Err(format!("table `{}` no longer exists", qualified(schema, table))));
    }
    let mut shape = Shape {
        sql_name: sql_name.clone(),
        columns: Vec::new(),
        key: Vec::new(),
        settable: Vec::new(),
        insertable: Vec::new(),
        triggers: Vec::new(),
    };
    for (i, row) in columns.iter().enumerate() {
        let (name, in_key, generated, always): (String, bool, bool, bool) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        shape.columns.push(name);
        if in_key {
            shape.key.push(i);
        }
        if !generated {
            shape.insertable.push(i);
            if !in_key && !always {
                shape.settable.push(i);
            }
        }
    }
    if shape.key.is_empty() {
        return Ok(Err(format!(
            "table `{}` has no primary key now",
            qualified(schema, table)
        )));
    }
    // A cascade from a row the undo deletes would delete the application's
    // rows elsewhere: such a table goes back by restore.
    let cascades: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE contype = 'f' AND confrelid = to_regclass($1) \
             AND (confdeltype NOT IN ('a', 'r') OR confupdtype NOT IN ('a', 'r')))",
            &[&sql_name],
        )
        .await
        .map_err(pg_error)?
        .get(0);
    if cascades {
        return Ok(Err(format!(
            "a foreign key cascades from table `{}`",
            qualified(schema, table)
        )));
    }
    shape.triggers = client
        .query(
            "SELECT tgname::text, tgenabled::text FROM pg_trigger \
             WHERE tgrelid = to_regclass($1) AND NOT tgisinternal AND tgenabled <> 'D' \
               AND tgname !~ '^sluice_capture_'",
            &[&sql_name],
        )
        .await
        .map_err(pg_error)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    Ok(Ok(shape))
}

impl Shape {
    fn names(&self, positions: &[usize], prefix: &str) -> String {
        positions
            .iter()
            .map(|i| format!("{prefix}{}", ident(&self.columns[*i])))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `(t.k1, t.k2) = (s.k1, s.k2)`.
    fn key_match(&self, left: &str, right: &str) -> String {
        format!(
            "({}) = ({})",
            self.names(&self.key, left),
            self.names(&self.key, right)
        )
    }
}

/// The `COPY` fields of the key columns of a line.
fn key_of(shape: &Shape, line: &str) -> Key {
    let fields: Vec<&str> = line.split('\t').collect();
    Key::Columns(
        shape
            .key
            .iter()
            .map(|k| fields.get(*k).copied().unwrap_or_default().to_string())
            .collect(),
    )
}

fn line_of(image: &Option<Image>) -> Option<&str> {
    match image.as_deref() {
        Some([Cell::Line(line)]) => Some(line),
        _ => None,
    }
}

/// Loads `lines` into a fresh temp table shaped like the target table.
async fn load(client: &Client, temp: &str, shape: &Shape, lines: &[&str]) -> Result<(), DatastoreError> {
    client
        .batch_execute(&format!(
            "CREATE TEMP TABLE {temp} ON COMMIT DROP AS SELECT * FROM {} WITH NO DATA",
            shape.sql_name
        ))
        .await
        .map_err(pg_error)?;
    let sink = client
        .copy_in::<_, bytes::Bytes>(&format!("COPY {temp} FROM STDIN"))
        .await
        .map_err(pg_error)?;
    let mut sink = Box::pin(sink);
    let mut body = String::new();
    for line in lines {
        body.push_str(line);
        body.push('\n');
    }
    sink.send(bytes::Bytes::from(body)).await.map_err(pg_error)?;
    sink.as_mut().finish().await.map_err(pg_error)?;
    Ok(())
}

/// The current `COPY` lines of the rows at `keys` (from temp table `keys`).
async fn current(
    client: &Client,
    shape: &Shape,
    keys: &str,
) -> Result<BTreeMap<Key, String>, DatastoreError> {
    let stream = client
        .copy_out(&format!(
            "COPY (SELECT t.* FROM {} t WHERE EXISTS (SELECT 1 FROM {keys} k WHERE {})) TO STDOUT",
            shape.sql_name,
            shape.key_match("t.", "k.")
        ))
        .await
        .map_err(pg_error)?;
    let mut stream = Box::pin(stream);
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.map_err(pg_error)?);
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        DatastoreError::host("SLUICE_UNDO", "the server sent a row that is not UTF-8")
    })?;
    Ok(text
        .lines()
        .map(|line| (key_of(shape, line), line.to_string()))
        .collect())
}

/// Undoes `set` on the target in one transaction (see the module's doc).
pub async fn undo(
    url: &Secret,
    set: &ChangeSet,
    created: &[String],
    discard_later_writes: bool,
) -> Result<UndoOutcome, DatastoreError> {
    let (client, _) = connect_client(url).await?;
    client.batch_execute("BEGIN").await.map_err(pg_error)?;
    let outcome = undo_in(&client, set, created, discard_later_writes).await;
    match &outcome {
        Ok(UndoOutcome::Undone(_)) => {
            crate::failpoint!("undo:before-commit");
            client.batch_execute("COMMIT").await.map_err(pg_error)?;
            crate::failpoint!("undo:after-commit");
        }
        _ => {
            let _ = client.batch_execute("ROLLBACK").await;
        }
    }
    outcome
}

async fn undo_in(
    client: &Client,
    set: &ChangeSet,
    created: &[String],
    discard_later_writes: bool,
) -> Result<UndoOutcome, DatastoreError> {
    // As the schema digest names objects: `table public.notes`.
    let created_here = |kind: &str, row: &RowChange, name: Option<&str>| {
        let key = match name {
            Some(name) => format!("{kind} {}.{}.{name}", row.database, row.table),
            None => format!("{kind} {}.{}", row.database, row.table),
        };
        created.contains(&key)
    };
    let mut by_table: BTreeMap<(String, String), Vec<&RowChange>> = BTreeMap::new();
    // Rows of tables the step created go with them.
    for row in set.rows.iter().filter(|r| !created_here("table", r, None)) {
        by_table
            .entry((row.database.clone(), row.table.clone()))
            .or_default()
            .push(row);
    }
    let mut shapes = Vec::new();
    for ((schema, table), rows) in &by_table {
        let shape = match shape(client, schema, table).await? {
            Ok(shape) => shape,
            Err(why) => return Ok(UndoOutcome::Unusable(why)),
        };
        let lines = [&rows[0].before, &rows[0].after];
        if lines.iter().any(|i| i.is_some() && line_of(i).is_none())
            || rows.iter().any(|r| !matches!(&r.key, Key::Columns(k) if k.len() == shape.key.len()))
        {
            return Ok(UndoOutcome::Unusable(format!(
                "the change set of `{}` is not keyed as the table is",
                qualified(schema, table)
            )));
        }
        shapes.push((shape, rows));
    }
    client
        .batch_execute("SET LOCAL lock_timeout = '30s'")
        .await
        .map_err(pg_error)?;

    // Classify every row before writing any.
    let mut undone = Undone::default();
    let mut conflicts = Vec::new();
    let mut plans = Vec::new();
    for (n, (shape, rows)) in shapes.iter().enumerate() {
        let keys = format!("sluice_undo_keys_{n}");
        let mut key_lines: Vec<&str> = Vec::new();
        for row in rows.iter() {
            key_lines.extend(line_of(&row.before));
            key_lines.extend(line_of(&row.after));
        }
        load(client, &keys, shape, &key_lines).await?;
        client
            .batch_execute(&format!("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE", shape.sql_name))
            .await
            .map_err(pg_error)?;
        let now = current(client, shape, &keys).await?;
        // Per table: the rows to delete (present now, absent before) and
        // the before-images to put back.
        let mut delete: Vec<String> = Vec::new();
        let mut put_back: Vec<&str> = Vec::new();
        let mut touched = 0u64;
        for row in rows.iter() {
            let found = now.get(&row.key).map(String::as_str);
            let before = line_of(&row.before);
            match row.found(found, before, line_of(&row.after)) {
                Found::AsBefore => {
                    undone.already += 1;
                    continue;
                }
                Found::AsLeft => {}
                Found::ChangedSince(conflict) => conflicts.push(conflict),
            }
            match (found, before) {
                (Some(line), None) => delete.push(line.to_string()),
                (_, Some(before)) => put_back.push(before),
                (None, None) => unreachable!("equal to before"),
            }
            touched += 1;
        }
        plans.push((shape, rows, delete, put_back, touched));
    }
    if !conflicts.is_empty() {
        if !discard_later_writes {
            return Ok(UndoOutcome::Conflicts(conflicts));
        }
        undone.discarded = conflicts;
    }

    // What the step created goes first: a constraint or trigger it added
    // must not judge the rows put back.
    match super::created::drop_created(client, created).await? {
        Ok(dropped) => undone.dropped = dropped,
        Err(why) => return Ok(UndoOutcome::Unusable(why)),
    }
    // The user triggers to hold off while rows go back: those enabled now,
    // but not the step's own, dropped above.
    let triggers: Vec<Vec<&(String, String)>> = plans
        .iter()
        .map(|(shape, rows, ..)| {
            shape
                .triggers
                .iter()
                .filter(|(name, _)| !created_here("trigger", rows[0], Some(name)))
                .collect()
        })
        .collect();

    // Referenced tables before the tables referencing them: rows go back
    // parents first, and rows the step inserted go children first.
    let order = parents_first(client, &plans.iter().map(|p| p.0).collect::<Vec<_>>()).await?;
    for n in &order {
        for (trigger, _) in &triggers[*n] {
            client
                .batch_execute(&format!(
                    "ALTER TABLE {} DISABLE TRIGGER {}",
                    plans[*n].0.sql_name,
                    ident(trigger)
                ))
                .await
                .map_err(pg_error)?;
        }
    }
    for n in order.iter().rev() {
        let (shape, _, delete, _, _) = &plans[*n];
        if delete.is_empty() {
            continue;
        }
        let gone = format!("sluice_undo_gone_{n}");
        let lines: Vec<&str> = delete.iter().map(String::as_str).collect();
        load(client, &gone, shape, &lines).await?;
        client
            .batch_execute(&format!(
                "DELETE FROM {} t USING {gone} g WHERE {}",
                shape.sql_name,
                shape.key_match("t.", "g.")
            ))
            .await
            .map_err(pg_error)?;
    }
    for n in &order {
        let (shape, _, _, put_back, _) = &plans[*n];
        if put_back.is_empty() {
            continue;
        }
        let t = &shape.sql_name;
        let back = format!("sluice_undo_back_{n}");
        load(client, &back, shape, put_back).await?;
        if !shape.settable.is_empty() {
            let sets: Vec<String> = shape
                .settable
                .iter()
                .map(|i| {
                    let c = ident(&shape.columns[*i]);
                    format!("{c} = b.{c}")
                })
                .collect();
            client
                .batch_execute(&format!(
                    "UPDATE {t} t SET {} FROM {back} b WHERE {}",
                    sets.join(", "),
                    shape.key_match("t.", "b.")
                ))
                .await
                .map_err(pg_error)?;
        }
        client
            .batch_execute(&format!(
                "INSERT INTO {t} ({cols}) OVERRIDING SYSTEM VALUE SELECT {bcols} FROM {back} b \
                 WHERE NOT EXISTS (SELECT 1 FROM {t} t WHERE {})",
                shape.key_match("t.", "b."),
                cols = shape.names(&shape.insertable, ""),
                bcols = shape.names(&shape.insertable, "b."),
            ))
            .await
            .map_err(pg_error)?;
    }
    for (n, (shape, rows, _, _, touched)) in plans.iter().enumerate() {
        let t = &shape.sql_name;
        for (trigger, enabled) in &triggers[n] {
            let how = match enabled.as_str() {
                "A" => "ENABLE ALWAYS",
                "R" => "ENABLE REPLICA",
                _ => "ENABLE",
            };
            client
                .batch_execute(&format!("ALTER TABLE {t} {how} TRIGGER {}", ident(trigger)))
                .await
                .map_err(pg_error)?;
        }
        if *touched > 0 {
            *undone.rows.entry(rows[0].qualified_table()).or_insert(0) += touched;
        }
        // Read back: every key holds its pre-step image.
        let now = current(client, shape, &format!("sluice_undo_keys_{n}")).await?;
        for row in rows.iter() {
            if now.get(&row.key).map(String::as_str) != line_of(&row.before) {
                return Err(row.unproven());
            }
        }
    }
    sequences_back(client, set, &mut undone).await?;
    Ok(UndoOutcome::Undone(undone))
}

/// The positions of `shapes` with every table after the tables its
/// foreign keys reference (a cycle keeps the given order for its tables).
async fn parents_first(client: &Client, shapes: &[&Shape]) -> Result<Vec<usize>, DatastoreError> {
    let names: Vec<String> = shapes.iter().map(|s| s.sql_name.clone()).collect();
    let edges = client
        .query(
            "SELECT c.i - 1, p.i - 1 FROM pg_constraint k \
             JOIN unnest($1::text[]) WITH ORDINALITY c(name, i) ON to_regclass(c.name) = k.conrelid \
             JOIN unnest($1::text[]) WITH ORDINALITY p(name, i) ON to_regclass(p.name) = k.confrelid \
             WHERE k.contype = 'f' AND k.conrelid <> k.confrelid",
            &[&names],
        )
        .await
        .map_err(pg_error)?;
    let parents: Vec<(usize, usize)> = edges
        .iter()
        .map(|r| (r.get::<_, i64>(0) as usize, r.get::<_, i64>(1) as usize))
        .collect();
    let mut order = Vec::new();
    let mut placed = vec![false; shapes.len()];
    while order.len() < shapes.len() {
        let ready = (0..shapes.len()).find(|&n| {
            !placed[n]
                && parents
                    .iter()
                    .all(|&(child, parent)| child != n || placed[parent] || parent == n)
        });
        // A cycle: the first table not placed yet.
        let n = ready.unwrap_or_else(|| placed.iter().position(|p| !p).expect("one is left"));
        placed[n] = true;
        order.push(n);
    }
    Ok(order)
}

/// `last_value=… is_called=…` as a fingerprint spells a sequence's value.
fn sequence_value(value: &str) -> Option<(i64, bool)> {
    let (last, called) = value.split_once(' ')?;
    Some((
        last.strip_prefix("last_value=")?.parse().ok()?,
        called.strip_prefix("is_called=")?.parse().ok()?,
    ))
}

/// Sets the sequences migrate moved back to their pre-step values, each
/// only while it still holds the step's value: an id drawn since (the
/// application's rows hold it) must never be handed out again. The tables
/// are locked, so no insert into them draws one meanwhile.
async fn sequences_back(
    client: &Client,
    set: &ChangeSet,
    undone: &mut Undone,
) -> Result<(), DatastoreError> {
    for (sequence, (before, after)) in &set.sequences {
        let (Some((last, called)), Some(step)) = (sequence_value(before), sequence_value(after))
        else {
            continue;
        };
        let name = super::quote_table(sequence);
        let now = client
            .query_one(
                &format!("SELECT last_value, is_called FROM {name}"),
                &[],
            )
            .await
            .map_err(pg_error)?;
        if (now.get::<_, i64>(0), now.get::<_, bool>(1)) != step {
            undone.sequences_kept.push(sequence.clone());
            continue;
        }
        client
            .query_one(
                "SELECT setval($1::text::regclass, $2, $3)",
                &[&name, &last, &called],
            )
            .await
            .map_err(pg_error)?;
    }
    Ok(())
}
