//! PostgreSQL behind the `sql` capability, with tokio-postgres.
//!
//! A session is one connection with its settings pinned (UTC, ISO dates,
//! exact floats, hex bytea) so every value and every `COPY` line reads the
//! same on every session — plugin and host checksums depend on it. Read-only
//! sessions run inside one `REPEATABLE READ READ ONLY` transaction the
//! plugin cannot end: PostgreSQL refuses every write and validate sees one
//! snapshot. Every statement passes [`policy`] first; table scopes are
//! enforced there and, for names only the catalog can resolve (functions,
//! indexes), against the catalog.

pub mod changes;
mod copy;
mod created;
mod driver;
mod fingerprint;
pub mod policy;
mod scratch;
pub mod schema_digest;
pub mod values;

pub use self::driver::Postgres;
pub use self::fingerprint::{estimate_backup, fingerprint, fingerprint_in, hold_for_backup};
use self::fingerprint::snapshot_import;

use std::collections::BTreeMap;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use sluice_sdk::row::{Decoder, Encoder};
use tokio::sync::Mutex;
use tokio_postgres::{
    CancelToken, Client, Config, CopyInSink, CopyOutStream, NoTls, RowStream, Statement,
};

use self::policy::{Policy, Refused, Touches};
use self::values::{encode_cell, param, RawCell, TextParam};
use super::{DatastoreError, Rows, SqlValue};
use crate::plan::Access;
use crate::secret::Secret;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Parameter rows sent before waiting for their results (pipelined).
const PIPELINE_DEPTH: usize = 256;

/// Settings every session pins, so values and COPY text are canonical.
const SESSION_SETTINGS: &str = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; \
     SET IntervalStyle = 'iso_8601'; SET extra_float_digits = 3; SET bytea_output = 'hex'; \
     SET client_encoding = 'UTF8'";

/// Opens the read-only transaction of a read-only session.
const BEGIN_READ_ONLY: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

fn pg_error(e: tokio_postgres::Error) -> DatastoreError {
    match e.as_db_error() {
        Some(db) => {
            let mut message = db.message().to_string();
            if let Some(detail) = db.detail() {
                message.push_str(&format!(" ({detail})"));
            }
            if let Some(hint) = db.hint() {
                message.push_str(&format!("; hint: {hint}"));
            }
            DatastoreError {
                code: format!("PG_{}", db.code().code()),
                message,
            }
        }
        None => DatastoreError::host("PG_CONNECTION", e.to_string()),
    }
}

fn refused(r: Refused) -> DatastoreError {
    DatastoreError::host("SLUICE_REFUSED", r.0)
}

/// Connects with the session settings pinned; `who` names the endpoint in
/// errors without its credentials.
async fn connect_client(url: &Secret) -> Result<(Client, CancelToken), DatastoreError> {
    let who = url.redacted_url();
    let mut config = Config::from_str(url.expose()).map_err(|e| {
        DatastoreError::host(
            "PG_CONFIG",
            format!("{who}: not a valid PostgreSQL connection string: {e}"),
        )
    })?;
    config
        .connect_timeout(CONNECT_TIMEOUT)
        .application_name("sluice");
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| DatastoreError::host("PG_CONNECT", format!("{who}: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("postgres connection ended: {e}");
        }
    });
    client
        .batch_execute(SESSION_SETTINGS)
        .await
        .map_err(pg_error)?;
    let cancel = client.cancel_token();
    Ok((client, cancel))
}

/// Cancels the statement a session is running, from any thread.
#[derive(Clone)]
pub struct Canceller(CancelToken);

impl Canceller {
    /// Asks the server to cancel the running statement (best effort).
    pub fn cancel(&self) {
        let token = self.0.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = token.cancel_query(NoTls).await;
            });
        }
    }
}

/// One plugin connection.
pub struct Session {
    client: Client,
    cancel: CancelToken,
    policy: Policy,
    /// Catalog answers already checked (function or index name → allowed).
    checked: Mutex<BTreeMap<String, Result<(), String>>>,
    /// A read-only transaction was aborted by an error.
    aborted: AtomicBool,
    /// The snapshot import a read-only transaction starts with (a held
    /// backup's), repeated when an error replaced the transaction.
    snapshot: Option<String>,
    /// What records the rows this session changes, read when it closes.
    recorder: Option<changes::Recorder>,
}

impl Drop for Session {
    /// The connection closes with the session (an open transaction rolls
    /// back); its change log is read on a connection of the host's.
    fn drop(&mut self) {
        if let Some(recorder) = self.recorder.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(recorder.finish());
                }
                Err(_) => recorder.abandon(),
            }
        }
    }
}

/// Rows of a running query.
pub struct PgCursor {
    stream: Pin<Box<RowStream>>,
    /// The rows ended: the stream must not be polled again.
    done: bool,
    columns: Vec<tokio_postgres::types::Type>,
}

/// A running `COPY … TO STDOUT`.
pub struct CopyOut {
    stream: Pin<Box<CopyOutStream>>,
    /// The stream ended: it must not be polled again.
    done: bool,
}

/// A running `COPY … FROM STDIN`.
pub struct CopyIn(Pin<Box<CopyInSink<Bytes>>>);

impl Session {
    /// Connects for a plugin with `access`, scoped to `tables`, statements
    /// limited to `statement_timeout`.
    pub async fn open(
        url: &Secret,
        access: Access,
        tables: Option<&[String]>,
        statement_timeout: Duration,
        snapshot: Option<String>,
        capture: Option<crate::datastores::changes::ChangeCapture>,
    ) -> Result<Session, DatastoreError> {
        let (client, cancel) = connect_client(url).await?;
        let snapshot = match snapshot {
            Some(id) if access == Access::ReadOnly => Some(snapshot_import(&id)?),
            _ => None,
        };
        let mut setup = format!(
            "SET statement_timeout = {}",
            statement_timeout.as_millis().max(1)
        );
        if access == Access::ReadOnly {
            setup.push_str("; SET default_transaction_read_only = on; ");
            setup.push_str(BEGIN_READ_ONLY);
            if let Some(import) = &snapshot {
                setup.push_str("; ");
                setup.push_str(import);
            }
        }
        client.batch_execute(&setup).await.map_err(pg_error)?;
        // A scoped step may read its tables' own sequences (the plugin's
        // backup saves their values); unscoped, PostgreSQL is the judge.
        let sequences = match tables {
            Some(tables) => schema_digest::sequences_of_tables(&client, tables)
                .await
                .map_err(pg_error)?
                .into_iter()
                .map(|(schema, name)| {
                    if schema == "public" {
                        name
                    } else {
                        format!("{schema}.{name}")
                    }
                })
                .collect(),
            None => Default::default(),
        };
        let recorder = match capture {
            Some(capture) if access == Access::ReadWrite => {
                changes::record(&client, url, tables, capture).await
            }
            _ => None,
        };
        Ok(Session {
            client,
            cancel,
            policy: Policy {
                access,
                tables: tables.map(|t| t.iter().map(|n| policy::normalise_table(n)).collect()),
                sequences,
            },
            checked: Mutex::new(BTreeMap::new()),
            aborted: AtomicBool::new(false),
            snapshot,
            recorder,
        })
    }

    /// Cancels this session's running statement.
    pub fn canceller(&self) -> Canceller {
        Canceller(self.cancel.clone())
    }

    /// Checks a statement before the server sees it.
    async fn admit(&self, sql: &str) -> Result<(), DatastoreError> {
        self.recover().await?;
        let touches = self.policy.check(sql).map_err(refused)?;
        self.check_catalog(touches).await
    }

    /// Scoped sessions: functions must be built in (`pg_catalog`) and indexes
    /// dropped or altered by name must belong to granted tables.
    async fn check_catalog(&self, touches: Touches) -> Result<(), DatastoreError> {
        let Some(scope) = &self.policy.tables else {
            return Ok(());
        };
        let mut checked = self.checked.lock().await;
        for f in &touches.functions {
            let key = format!("function {f}");
            if !checked.contains_key(&key) {
                let bare = f.rsplit('.').next().unwrap_or(f);
                let schema = f.rsplit_once('.').map(|(s, _)| s.to_string());
                let rows = self
                    .client
                    .query(
                        "SELECT DISTINCT n.nspname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                         WHERE p.proname = $1 AND n.nspname <> 'pg_catalog'",
                        &[&TextParam(sluice_sdk::row::ValueRef::Text(bare))],
                    )
                    .await
            .map_err(|e| self.failed(e))?;
                let user_defined: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
                let verdict = if user_defined.is_empty()
                    && schema.as_deref().is_none_or(|s| s == "pg_catalog")
                {
                    Ok(())
                } else {
                    Err(format!(
                        "function `{f}` is not built in (defined in schema {}); a step scoped to tables may call only built-in functions",
                        if user_defined.is_empty() { schema.unwrap_or_default() } else { user_defined.join(", ") }
                    ))
                };
                checked.insert(key.clone(), verdict);
            }
            if let Err(why) = &checked[&key] {
                return Err(DatastoreError::host("SLUICE_REFUSED", why.clone()));
            }
        }
        for relation in &touches.catalogs {
            let is_catalog: bool = self
                .client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE c.relname = $1 AND n.nspname = 'pg_catalog')",
                    &[&TextParam(sluice_sdk::row::ValueRef::Text(relation))],
                )
                .await
                .map_err(|e| self.failed(e))?
                .get(0);
            if !is_catalog {
                return Err(DatastoreError::host(
                    "SLUICE_REFUSED",
                    format!("table `{relation}` is outside this step's scope"),
                ));
            }
        }
        for index in &touches.indexes {
            let table: Option<String> = self
                .client
                .query_opt(
                    "SELECT i.indrelid::regclass::text FROM pg_index i WHERE i.indexrelid = to_regclass($1)",
                    &[&TextParam(sluice_sdk::row::ValueRef::Text(index))],
                )
                .await
            .map_err(|e| self.failed(e))?
                .map(|r| r.get(0));
            match table {
                None => {} // PostgreSQL reports a missing index itself.
                Some(t) if scope.contains(&policy::normalise_table(&t)) => {}
                Some(t) => {
                    return Err(DatastoreError::host(
                        "SLUICE_REFUSED",
                        format!(
                            "index `{index}` belongs to table `{t}`, outside this step's scope"
                        ),
                    ))
                }
            }
        }
        Ok(())
    }

    /// Maps an error; a read-only session whose transaction the error
    /// aborted gets a fresh one before its next statement, so a plugin may
    /// go on after a failed query.
    fn failed(&self, e: tokio_postgres::Error) -> DatastoreError {
        let err = pg_error(e);
        if self.policy.access == Access::ReadOnly && err.code != "PG_CONNECTION" {
            self.aborted.store(true, Ordering::SeqCst);
        }
        err
    }

    /// Before the next statement: replaces a read-only transaction an
    /// earlier error aborted.
    async fn recover(&self) -> Result<(), DatastoreError> {
        if self.aborted.swap(false, Ordering::SeqCst) {
            let import = self
                .snapshot
                .as_deref()
                .map(|i| format!("; {i}"))
                .unwrap_or_default();
            self.client
                .batch_execute(&format!("ROLLBACK; {BEGIN_READ_ONLY}{import}"))
                .await
                .map_err(pg_error)?;
        }
        Ok(())
    }

    async fn prepare(&self, sql: &str) -> Result<Statement, DatastoreError> {
        self.admit(sql).await?;
        self.client.prepare(sql).await.map_err(|e| self.failed(e))
    }

    /// Runs a query and returns at most `max_rows` rows.
    pub async fn query(
        &self,
        sql: &str,
        params: &[SqlValue],
        max_rows: usize,
    ) -> Result<Rows, DatastoreError> {
        let statement = self.prepare(sql).await?;
        let mut cursor = self.start(&statement, params).await?;
        let columns = statement
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        let mut rows = self.fetch(&mut cursor, max_rows + 1, usize::MAX).await?;
        if rows.rows > max_rows {
            return Err(DatastoreError::host(
                "SLUICE_TOO_MANY_ROWS",
                format!("the query returned more than {max_rows} rows; use a cursor"),
            ));
        }
        rows.columns = columns;
        Ok(rows)
    }

    async fn start(
        &self,
        statement: &Statement,
        params: &[SqlValue],
    ) -> Result<PgCursor, DatastoreError> {
        check_arity(statement, params.len())?;
        let stream = self
            .client
            .query_raw(statement, params.iter().map(param))
            .await
            .map_err(|e| self.failed(e))?;
        Ok(PgCursor {
            stream: Box::pin(stream),
            done: false,
            columns: statement
                .columns()
                .iter()
                .map(|c| c.type_().clone())
                .collect(),
        })
    }

    /// Starts a query whose rows are fetched in batches; returns the cursor
    /// and the column names.
    pub async fn open_cursor(
        &self,
        sql: &str,
        params: &[SqlValue],
    ) -> Result<(PgCursor, Vec<String>), DatastoreError> {
        let statement = self.prepare(sql).await?;
        let names = statement
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        Ok((self.start(&statement, params).await?, names))
    }

    /// Up to `max_rows` rows (stopping after the row that crosses
    /// `max_bytes`) from a cursor.
    pub async fn fetch(
        &self,
        cursor: &mut PgCursor,
        max_rows: usize,
        max_bytes: usize,
    ) -> Result<Rows, DatastoreError> {
        let mut out = Encoder::default();
        let mut text = String::new();
        let mut count = 0;
        while !cursor.done && count < max_rows && out.len() < max_bytes {
            let Some(row) = cursor.stream.next().await else {
                cursor.done = true;
                break;
            };
            let row = row.map_err(|e| self.failed(e))?;
            for (i, ty) in cursor.columns.iter().enumerate() {
                let cell: RawCell<'_> = row.try_get(i).map_err(pg_error)?;
                encode_cell(ty, cell.0, &mut out, &mut text).map_err(|e| {
                    DatastoreError::host(
                        "SLUICE_PG_TYPE",
                        format!("column `{}`: {e}", row.columns()[i].name()),
                    )
                })?;
            }
            count += 1;
        }
        Ok(Rows {
            columns: Vec::new(),
            width: cursor.columns.len(),
            rows: count,
            data: out.finish(),
        })
    }

    /// Runs one statement; returns the rows it changed.
    pub async fn execute(&self, sql: &str, params: &[SqlValue]) -> Result<u64, DatastoreError> {
        let statement = self.prepare(sql).await?;
        check_arity(&statement, params.len())?;
        self.client
            .execute_raw(&statement, params.iter().map(param))
            .await
            .map_err(|e| self.failed(e))
    }

    /// Runs one statement per parameter row, prepared once and pipelined.
    pub async fn execute_batch(&self, sql: &str, rows: &Rows) -> Result<u64, DatastoreError> {
        let statement = self.prepare(sql).await?;
        check_arity(&statement, rows.width)?;
        let mut decoder = Decoder::new(&rows.data);
        let mut all = Vec::with_capacity(rows.rows);
        let mut row = Vec::with_capacity(rows.width);
        for _ in 0..rows.rows {
            row.clear();
            for _ in 0..rows.width {
                match decoder.next_value() {
                    Ok(Some(v)) => row.push(v),
                    _ => {
                        return Err(DatastoreError::host(
                            "SLUICE_BAD_BATCH",
                            "the row batch is shorter than its header says",
                        ))
                    }
                }
            }
            all.push(row.iter().map(|v| TextParam(*v)).collect::<Vec<_>>());
        }
        let mut changed = 0;
        for chunk in all.chunks(PIPELINE_DEPTH) {
            let pending = chunk
                .iter()
                .map(|params| self.client.execute_raw(&statement, params.iter()));
            for result in futures_util::future::join_all(pending).await {
                changed += result.map_err(|e| self.failed(e))?;
            }
        }
        Ok(changed)
    }

    /// Runs a script of statements without parameters.
    pub async fn script(&self, sql: &str) -> Result<(), DatastoreError> {
        self.admit(sql).await?;
        self.client
            .batch_execute(sql)
            .await
            .map_err(|e| self.failed(e))
    }

    /// Transaction control on behalf of the plugin. Read-only sessions are
    /// already inside their one transaction: these are no-ops there.
    pub async fn transaction(&self, command: &str) -> Result<(), DatastoreError> {
        if self.policy.access == Access::ReadOnly {
            return Ok(());
        }
        self.client.batch_execute(command).await.map_err(pg_error)
    }

    /// Starts a `COPY … TO STDOUT`.
    pub async fn copy_out(&self, sql: &str) -> Result<CopyOut, DatastoreError> {
        self.recover().await?;
        let touches = self.policy.check_copy(sql, false).map_err(refused)?;
        self.check_catalog(touches).await?;
        let stream = self
            .client
            .copy_out(sql)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(CopyOut {
            stream: Box::pin(stream),
            done: false,
        })
    }

    /// Starts a `COPY … FROM STDIN`.
    pub async fn copy_in(&self, sql: &str) -> Result<CopyIn, DatastoreError> {
        self.recover().await?;
        let touches = self.policy.check_copy(sql, true).map_err(refused)?;
        self.check_catalog(touches).await?;
        let sink = self.client.copy_in(sql).await.map_err(pg_error)?;
        Ok(CopyIn(Box::pin(sink)))
    }
}

fn check_arity(statement: &Statement, given: usize) -> Result<(), DatastoreError> {
    let wanted = statement.params().len();
    if wanted == given {
        Ok(())
    } else {
        Err(DatastoreError::host(
            "SLUICE_PARAMS",
            format!("the statement takes {wanted} parameters but {given} were given"),
        ))
    }
}

impl CopyOut {
    /// Whole rows, about `max_bytes` of them (at least one row unless the
    /// copy has ended); empty at the end.
    pub async fn read(&mut self, max_bytes: usize) -> Result<Vec<u8>, DatastoreError> {
        let mut out = Vec::new();
        while !self.done && out.len() < max_bytes {
            match self.stream.next().await {
                Some(chunk) => out.extend_from_slice(&chunk.map_err(pg_error)?),
                None => self.done = true,
            }
        }
        Ok(out)
    }
}

impl CopyIn {
    /// Sends bytes.
    pub async fn write(&mut self, data: Vec<u8>) -> Result<(), DatastoreError> {
        self.0.send(Bytes::from(data)).await.map_err(pg_error)
    }

    /// Ends the copy; returns the rows loaded.
    pub async fn finish(&mut self) -> Result<u64, DatastoreError> {
        self.0.as_mut().finish().await.map_err(pg_error)
    }
}

/// Quotes a possibly schema-qualified table name as written in a plan or
/// manifest (`clientes`, `sales.orders`).
pub fn quote_table(name: &str) -> String {
    name.split('.')
        .map(|part| format!("\"{}\"", part.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::checksum::TableChecksum;

    /// A fresh database on the test server (`SLUICE_TEST_PG_URL`, started by
    /// `cargo xtask test`), dropped afterwards.
    struct Scratch {
        admin: Client,
        name: String,
        url: Secret,
    }

    impl Scratch {
        async fn new() -> Scratch {
            let base = std::env::var("SLUICE_TEST_PG_URL").expect(
                "SLUICE_TEST_PG_URL: run through `cargo xtask test` or `cargo xtask services`",
            );
            let (admin, _) = connect_client(&Secret::new(base.clone())).await.unwrap();
            let name = format!("sluice_ds_{}", uuid::Uuid::new_v4().simple());
            admin
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .unwrap();
            let url = Secret::new(format!("{}/{name}", base.rsplit_once('/').unwrap().0));
            Scratch { admin, name, url }
        }
        async fn drop(self) {
            let _ = self
                .admin
                .batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
                .await;
        }
    }

    fn texts(rows: &Rows) -> Vec<String> {
        let mut out = Vec::new();
        sluice_sdk::row::for_each_row(&rows.data, rows.width, |row| {
            out.extend(row.iter().map(|v| format!("{v:?}")));
        })
        .unwrap();
        out
    }

    #[tokio::test]
    async fn values_scopes_read_only_and_copy_on_a_real_server() {
        let db = Scratch::new().await;
        let rw = Session::open(&db.url, Access::ReadWrite, None, Duration::from_secs(30), None, None)
            .await
            .unwrap();
        rw.script(
            "CREATE TABLE t (id int PRIMARY KEY, price numeric(10,2), at timestamptz, doc jsonb, \
             tags text[], u uuid, ok bool, raw bytea, f float8); \
             CREATE TABLE other (id int); \
             CREATE FUNCTION sneaky() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        )
        .await
        .unwrap();
        let params = [
            SqlValue::Integer(1),
            SqlValue::Text("12.50".into()),
            SqlValue::Text("2024-05-01 10:00:00+02".into()),
            SqlValue::Text(r#"{"a": [1, 2]}"#.into()),
            SqlValue::Text("{x,y}".into()),
            SqlValue::Text("6f1c2d3e-0000-4000-8000-000000000001".into()),
            SqlValue::Integer(1),
            SqlValue::Blob(vec![0, 255]),
            SqlValue::Real(0.1),
        ];
        let n = rw
            .execute(
                "INSERT INTO t VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &params,
            )
            .await
            .unwrap();
        assert_eq!(n, 1);
        let rows = rw.query("SELECT * FROM t", &[], 10).await.unwrap();
        assert_eq!(
            texts(&rows),
            [
                "Integer(1)",
                "Text(\"12.50\")",
                "Text(\"2024-05-01T08:00:00Z\")",
                "Text(\"{\\\"a\\\": [1, 2]}\")",
                "Text(\"[\\\"x\\\",\\\"y\\\"]\")",
                "Text(\"6f1c2d3e-0000-4000-8000-000000000001\")",
                "Integer(1)",
                "Blob([0, 255])",
                "Real(0.1)",
            ]
        );

        let (mut cursor, _) = rw.open_cursor("SELECT id FROM t", &[]).await.unwrap();
        assert_eq!(rw.fetch(&mut cursor, 10, 1 << 20).await.unwrap().rows, 1);
        assert_eq!(rw.fetch(&mut cursor, 10, 1 << 20).await.unwrap().rows, 0);
        assert_eq!(rw.fetch(&mut cursor, 10, 1 << 20).await.unwrap().rows, 0);

        // Read-only: PostgreSQL refuses writes; the plugin cannot leave the
        // transaction; an error does not poison later statements.
        let ro = Session::open(&db.url, Access::ReadOnly, None, Duration::from_secs(30), None, None)
            .await
            .unwrap();
        let e = ro.execute("DELETE FROM t", &[]).await.unwrap_err();
        assert_eq!(e.code, "PG_25006", "{e}");
        assert_eq!(
            ro.script("COMMIT; DELETE FROM t").await.unwrap_err().code,
            "SLUICE_REFUSED"
        );
        assert_eq!(
            ro.query("SELECT count(*) FROM t", &[], 1)
                .await
                .unwrap()
                .rows,
            1
        );
        // Its snapshot holds a lock on `t` until the session ends.
        drop(ro);

        // A held backup: its read-only sessions, even one that met an
        // error, and the host's fingerprint read the held snapshot, not
        // the writes made since; a made-up snapshot id is refused.
        let hold = hold_for_backup(&db.url).await.unwrap();
        rw.execute("INSERT INTO t (id) VALUES (4242)", &[]).await.unwrap();
        let held = Session::open(
            &db.url,
            Access::ReadOnly,
            None,
            Duration::from_secs(30),
            hold.snapshot.clone(),
            None,
        )
        .await
        .unwrap();
        let count = |rows: Rows| rows.data.clone();
        let before = count(held.query("SELECT count(*) FROM t", &[], 1).await.unwrap());
        assert!(held.query("SELECT 1/0", &[], 1).await.is_err());
        let again = count(held.query("SELECT count(*) FROM t", &[], 1).await.unwrap());
        assert_eq!(before, again, "the same snapshot after an error");
        let now = Session::open(&db.url, Access::ReadOnly, None, Duration::from_secs(30), None, None)
            .await
            .unwrap();
        assert_ne!(
            count(now.query("SELECT count(*) FROM t", &[], 1).await.unwrap()),
            before,
            "a session without the hold sees the insert"
        );
        let tables = ["t".to_string()];
        let in_hold = fingerprint_in(&db.url, &tables, hold.snapshot.as_deref())
            .await
            .unwrap();
        let latest = fingerprint(&db.url, &tables).await.unwrap();
        assert_eq!(in_hold.tables["t"].rows + 1, latest.tables["t"].rows);
        assert_eq!(
            fingerprint_in(&db.url, &tables, Some("x'; DROP TABLE t; --"))
                .await
                .unwrap_err()
                .code,
            "SLUICE_SNAPSHOT"
        );
        drop((held, now, hold));
        rw.execute("DELETE FROM t WHERE id = 4242", &[]).await.unwrap();

        // Scoped: only `t`, only built-in functions, indexes of `t` only.
        let scoped = Session::open(
            &db.url,
            Access::ReadWrite,
            Some(&["t".to_string()]),
            Duration::from_secs(30),
            None,
            None,
        )
        .await
        .unwrap();
        assert!(scoped
            .query("SELECT upper(u::text) FROM t", &[], 10)
            .await
            .is_ok());
        assert!(scoped
            .query("SELECT relname FROM pg_class", &[], 10_000)
            .await
            .is_ok());
        rw.script("CREATE TABLE pg_notes (id int)").await.unwrap();
        assert!(scoped
            .query("SELECT * FROM pg_notes", &[], 10)
            .await
            .is_err());
        for sql in [
            "SELECT * FROM other",
            "SELECT sneaky() FROM t",
            "INSERT INTO other VALUES (1)",
        ] {
            let e = scoped.query(sql, &[], 10).await.unwrap_err();
            assert_eq!(e.code, "SLUICE_REFUSED", "{sql}: {e}");
        }
        rw.script("CREATE INDEX other_id ON other (id)")
            .await
            .unwrap();
        assert_eq!(
            scoped.script("DROP INDEX other_id").await.unwrap_err().code,
            "SLUICE_REFUSED"
        );

        // COPY out and back in, and the host fingerprint agrees with a
        // checksum over the same lines.
        let mut out = scoped.copy_out("COPY t TO STDOUT").await.unwrap();
        let mut data = Vec::new();
        loop {
            let chunk = out.read(1 << 20).await.unwrap();
            if chunk.is_empty() {
                break;
            }
            data.extend_from_slice(&chunk);
        }
        let mut checksum = TableChecksum::new();
        checksum.add_copy_lines(&data);
        let before = fingerprint(&db.url, &["t".to_string()]).await.unwrap();
        assert_eq!(before.tables["t"].checksum, checksum.hex());
        scoped.script("TRUNCATE t").await.unwrap();
        let mut sink = scoped.copy_in("COPY t FROM STDIN").await.unwrap();
        sink.write(data).await.unwrap();
        assert_eq!(sink.finish().await.unwrap(), 1);
        let after = fingerprint(&db.url, &["t".to_string()]).await.unwrap();
        assert_eq!(before, after);
        assert!(scoped.copy_out("COPY other TO STDOUT").await.is_err());
        drop((rw, scoped));
        db.drop().await;
    }

    #[tokio::test]
    async fn the_schema_digest_sees_base_table_columns_and_views_but_not_rows() {
        let db = Scratch::new().await;
        let (client, _) = connect_client(&db.url).await.unwrap();
        client
            .batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
            .await
            .unwrap();
        let digest = || async { fingerprint(&db.url, &[]).await.unwrap().schema };
        let empty = digest().await;
        client
            .batch_execute("INSERT INTO t VALUES (1)")
            .await
            .unwrap();
        assert_eq!(digest().await, empty, "rows are not schema");
        for (ddl, what) in [
            ("ALTER TABLE t ADD COLUMN note text", "a new column"),
            ("CREATE TABLE extra (id int)", "a new table"),
            (
                "CREATE SCHEMA s; CREATE TABLE s.other (a text)",
                "a table in another schema",
            ),
            ("CREATE VIEW v AS SELECT id FROM t", "a view"),
        ] {
            let before = digest().await;
            client.batch_execute(ddl).await.unwrap();
            assert_ne!(digest().await, before, "{what} changes the digest");
        }
        drop(client);
        db.drop().await;
    }

    /// Rows of `sql` as text, one string per row.
    async fn lines(client: &Client, sql: &str) -> Vec<String> {
        client
            .query(&format!("SELECT t::text FROM ({sql}) t"), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// Runs `script` in a read-write session recording into a new
    /// capture, as a step's migrate does, and returns what it recorded.
    async fn recorded(url: &Secret, script: &str) -> crate::datastores::changes::ChangeSet {
        let capture = crate::datastores::changes::ChangeCapture::new();
        let step = Session::open(
            url,
            Access::ReadWrite,
            None,
            Duration::from_secs(30),
            None,
            Some(capture.clone()),
        )
        .await
        .unwrap();
        step.script(script).await.unwrap();
        drop(step);
        tokio::task::spawn_blocking(move || capture.take(Duration::from_secs(20)))
            .await
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn a_session_records_its_changes_and_the_undo_keeps_the_applications() {
        use crate::datastores::changes::{ChangeCapture, Key, UndoOutcome};
        let db = Scratch::new().await;
        let (app, _) = connect_client(&db.url).await.unwrap();
        app.batch_execute(
            "CREATE TYPE mood AS ENUM ('calm', 'busy'); \
             CREATE TABLE items (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text, \
               mood mood, tags text[], price numeric, at timestamptz, updated_at timestamptz, \
               total numeric GENERATED ALWAYS AS (price * 2) STORED); \
             CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS \
               $$ BEGIN NEW.updated_at := clock_timestamp(); RETURN NEW; END $$; \
             CREATE TRIGGER touch BEFORE INSERT OR UPDATE ON items FOR EACH ROW EXECUTE FUNCTION touch(); \
             CREATE TABLE pairs (a text, b int, v text, PRIMARY KEY (a, b)); \
             CREATE TABLE nokey (v int); \
             INSERT INTO items (name, mood, tags, price, at) VALUES \
               ('one', 'calm', '{a,\"b c\"}', 1.5, '2026-01-01 10:00+02'), \
               ('two', 'busy', NULL, 2, NULL), ('three', NULL, '{}', 3, now()); \
             INSERT INTO pairs VALUES ('x\ty', 1, 'tab'), ('z', 2, 'z')",
        )
        .await
        .unwrap();
        let tables: Vec<String> = ["items", "pairs", "nokey"].map(String::from).to_vec();
        let pre = fingerprint(&db.url, &tables).await.unwrap();
        let items_before = lines(&app, "SELECT * FROM items ORDER BY id").await;
        let pairs_before = lines(&app, "SELECT * FROM pairs ORDER BY a, b").await;

        let capture = ChangeCapture::new();
        let step = Session::open(
            &db.url,
            Access::ReadWrite,
            None,
            Duration::from_secs(30),
            None,
            Some(capture.clone()),
        )
        .await
        .unwrap();
        // The application writes while the step's session is open: never
        // recorded.
        app.batch_execute("INSERT INTO items (name, price) VALUES ('app', 9)")
            .await
            .unwrap();
        step.script(
            "UPDATE items SET mood = 'busy', tags = tags || '{d}' WHERE name = 'one'; \
             DELETE FROM items WHERE name = 'two'; \
             INSERT INTO items (name, price) VALUES ('step', 7); \
             UPDATE pairs SET b = 3 WHERE a = 'z'; \
             INSERT INTO pairs VALUES ('new', 1, 'n')",
        )
        .await
        .unwrap();
        // Rolled back: nothing to undo.
        step.script("BEGIN; DELETE FROM pairs; ROLLBACK").await.unwrap();
        drop(step);
        let set = tokio::task::spawn_blocking(move || capture.take(Duration::from_secs(20)))
            .await
            .unwrap()
            .unwrap();
        let per_table = set.rows_per_table();
        assert_eq!(per_table["items"], 3, "{set:?}");
        assert_eq!(per_table["pairs"], 3, "{set:?}");
        // The recording is gone once the session closed.
        let left: i64 = app
            .query_one(
                "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'sluice_capture%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(left, 0);
        assert!(app
            .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = 'sluice_capture'", &[])
            .await
            .unwrap()
            .is_none());

        // The log explains every change of the step's tables, checked
        // against the host's fingerprints — once the application's insert,
        // which it does not record, is taken out again.
        app.batch_execute("DELETE FROM items WHERE name = 'app'")
            .await
            .unwrap();
        let post = fingerprint(&db.url, &tables).await.unwrap();
        set.accounts_for(&pre, &post).unwrap();
        assert_eq!(pre.schema, post.schema, "the recording left no trace in the digest");

        // The application writes again: a new row (kept by the undo) and an
        // update of a row the step changed (a conflict).
        app.batch_execute(
            "INSERT INTO items (name, price) VALUES ('app2', 5); \
             UPDATE pairs SET v = 'app' WHERE a = 'new'",
        )
        .await
        .unwrap();
        let outcome = changes::undo(&db.url, &set, &[], false).await.unwrap();
        let UndoOutcome::Conflicts(conflicts) = outcome else {
            panic!("a conflict: {outcome:?}")
        };
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].key, Key::Columns(vec!["new".into(), "1".into()]));
        assert_eq!(conflicts[0].table, "pairs");
        app.batch_execute("UPDATE pairs SET v = 'n' WHERE a = 'new'")
            .await
            .unwrap();
        let UndoOutcome::Undone(undone) = changes::undo(&db.url, &set, &[], false).await.unwrap()
        else {
            panic!("undone")
        };
        assert_eq!(undone.rows.values().sum::<u64>(), 6);
        // Every row the step changed is back byte for byte (the user's
        // trigger did not rewrite `updated_at`), the application's row kept.
        let mut expected = items_before.clone();
        let app_row = lines(&app, "SELECT * FROM items WHERE name = 'app2'").await;
        expected.extend(app_row);
        assert_eq!(lines(&app, "SELECT * FROM items ORDER BY id").await, expected);
        assert_eq!(lines(&app, "SELECT * FROM pairs ORDER BY a, b").await, pairs_before);
        let enabled: String = app
            .query_one("SELECT tgenabled::text FROM pg_trigger WHERE tgname = 'touch'", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(enabled, "O", "the user's trigger is enabled again");
        // Undoing again finds every row as before: nothing to do.
        let UndoOutcome::Undone(again) = changes::undo(&db.url, &set, &[], false).await.unwrap()
        else {
            panic!("undone")
        };
        assert_eq!(again.already, 6);
        drop(app);
        db.drop().await;
    }

    #[tokio::test]
    async fn recording_left_by_a_crashed_session_is_dropped_by_the_next() {
        use crate::datastores::changes::ChangeCapture;
        let db = Scratch::new().await;
        let (admin, _) = connect_client(&db.url).await.unwrap();
        admin
            .batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a')")
            .await
            .unwrap();
        let open = |capture: ChangeCapture| {
            Session::open(
                &db.url,
                Access::ReadWrite,
                None,
                Duration::from_secs(30),
                None,
                Some(capture),
            )
        };
        let triggers = || async {
            admin
                .query_one(
                    "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'sluice_capture%'",
                    &[],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
        };
        // A session whose sluice died: its recording is never read, its
        // backend goes away.
        let crashed = open(ChangeCapture::new()).await.unwrap();
        crashed.execute("UPDATE t SET v = 'crashed'", &[]).await.unwrap();
        let pid: i32 = crashed
            .client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        std::mem::forget(crashed);
        admin
            .execute("SELECT pg_terminate_backend($1)", &[&pid])
            .await
            .unwrap();
        while admin
            .query_one("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)", &[&pid])
            .await
            .unwrap()
            .get::<_, bool>(0)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(triggers().await, 4, "what the crash left");
        // The application's writes meanwhile are not logged by the leftover.
        admin.execute("UPDATE t SET v = 'app'", &[]).await.unwrap();

        let capture = ChangeCapture::new();
        let next = open(capture.clone()).await.unwrap();
        assert_eq!(triggers().await, 4, "only the new session's own");
        next.execute("UPDATE t SET v = 'step'", &[]).await.unwrap();
        drop(next);
        let set = tokio::task::spawn_blocking(move || capture.take(Duration::from_secs(20)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(set.rows.len(), 1, "{set:?}");
        assert_eq!(triggers().await, 0);
        let log_schema: i64 = admin
            .query_one("SELECT count(*) FROM pg_namespace WHERE nspname = 'sluice_capture'", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(log_schema, 0, "nothing left behind");
        drop(admin);
        db.drop().await;
    }

    #[tokio::test]
    async fn an_undo_drops_what_the_step_created_and_keeps_the_applications_rows() {
        use crate::datastores::changes::UndoOutcome;
        let db = Scratch::new().await;
        let (app, _) = connect_client(&db.url).await.unwrap();
        app.batch_execute(
            "CREATE TABLE customers (id int PRIMARY KEY, name text); \
             CREATE TABLE orders (id serial PRIMARY KEY, customer int REFERENCES customers, \
               note text, updated_at timestamptz); \
             CREATE TABLE versions (version bigint PRIMARY KEY, dirty boolean NOT NULL); \
             INSERT INTO customers VALUES (1, 'ada'), (2, 'bob'); \
             INSERT INTO orders (customer, note) VALUES (1, 'first'), (2, 'second'); \
             INSERT INTO versions VALUES (2, false)",
        )
        .await
        .unwrap();
        let tables: Vec<String> = ["customers", "orders", "versions"].map(String::from).to_vec();
        let pre = fingerprint(&db.url, &tables).await.unwrap();
        // What real migrations create: a trigger function and a trigger on
        // an existing table, an enum, a new table (serial key, foreign key,
        // index), a partitioned table with a
        // partition, a view over them, an extension — and row changes.
        let set = recorded(
            &db.url,
            "CREATE FUNCTION set_updated_at() RETURNS trigger LANGUAGE plpgsql AS \
               $$ BEGIN NEW.updated_at := now(); RETURN NEW; END $$; \
             CREATE TRIGGER set_updated_at BEFORE UPDATE ON orders \
               FOR EACH ROW EXECUTE FUNCTION set_updated_at(); \
             CREATE TYPE status AS ENUM ('open', 'shipped'); \
             CREATE TABLE shipments (id bigserial PRIMARY KEY, \
               order_id int NOT NULL REFERENCES orders, status status NOT NULL DEFAULT 'open'); \
             CREATE INDEX shipments_by_order ON shipments (order_id); \
             CREATE TABLE events (at date NOT NULL, what text) PARTITION BY RANGE (at); \
             CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01'); \
             CREATE VIEW open_shipments AS SELECT * FROM shipments WHERE status = 'open'; \
             CREATE EXTENSION IF NOT EXISTS pg_trgm; \
             INSERT INTO shipments (order_id) SELECT id FROM orders; \
             UPDATE orders SET note = note || '!' WHERE id = 1; \
             INSERT INTO customers VALUES (3, 'cy'); \
             TRUNCATE versions; INSERT INTO versions VALUES (3, false)"
        )
        .await;
        let post = fingerprint(&db.url, &tables).await.unwrap();
        let created: Vec<String> = post
            .objects
            .keys()
            .filter(|k| !pre.objects.contains_key(*k))
            .cloned()
            .collect();
        assert!(
            pre.objects.iter().all(|(k, d)| post.objects.get(k) == Some(d)),
            "the step only added objects"
        );
        assert_eq!(created::undroppable(&created), None, "{created:#?}");
        set.accounts_for(&pre, &post).unwrap();

        // The application writes into what the step created, and into an
        // existing table.
        app.batch_execute(
            "INSERT INTO shipments (order_id, status) VALUES (2, 'shipped'); \
             INSERT INTO events VALUES ('2026-05-01', 'app'); \
             INSERT INTO customers VALUES (4, 'app')",
        )
        .await
        .unwrap();
        let UndoOutcome::Undone(undone) = changes::undo(&db.url, &set, &created, false)
            .await
            .unwrap()
        else {
            panic!("undone")
        };
        let dropped: BTreeMap<&str, Option<u64>> =
            undone.dropped.iter().map(|(o, n)| (o.as_str(), *n)).collect();
        assert_eq!(dropped["table public.shipments"], Some(3), "{dropped:?}");
        assert_eq!(dropped["table public.events"], Some(1), "{dropped:?}");
        assert!(dropped.contains_key("trigger public.orders.set_updated_at"));
        assert!(!dropped.contains_key("table public.events_2026"), "went with its parent");
        assert!(!dropped.contains_key("index public.shipments_by_order"), "went with its table");
        assert_eq!(undone.rows.values().sum::<u64>(), 4, "{undone:?}");
        // The schema is the pre-step schema; the application's row in an
        // existing table is kept.
        let after = fingerprint(&db.url, &tables).await.unwrap();
        assert_eq!(after.schema, pre.schema, "{:?}", {
            let mut d: Vec<_> = after.objects.keys().filter(|k| !pre.objects.contains_key(*k)).collect();
            d.extend(pre.objects.keys().filter(|k| !after.objects.contains_key(*k)));
            d
        });
        assert_eq!(
            lines(&app, "SELECT id, name FROM customers ORDER BY id").await,
            ["(1,ada)", "(2,bob)", "(4,app)"]
        );
        assert_eq!(
            lines(&app, "SELECT id, note FROM orders ORDER BY id").await,
            ["(1,first)", "(2,second)"]
        );
        // golang-migrate's record, truncated and written again by the step.
        assert_eq!(lines(&app, "SELECT * FROM versions").await, ["(2,f)"]);
        drop(app);
        db.drop().await;
    }

    #[tokio::test]
    async fn an_undo_sets_a_sequence_back_only_while_no_one_drew_from_it() {
        use crate::datastores::changes::UndoOutcome;
        let db = Scratch::new().await;
        let (app, _) = connect_client(&db.url).await.unwrap();
        app.batch_execute(
            "CREATE TABLE a (id serial PRIMARY KEY, v text); CREATE TABLE b (id serial PRIMARY KEY, v text)",
        )
        .await
        .unwrap();
        let tables: Vec<String> = ["a", "b"].map(String::from).to_vec();
        let pre = fingerprint(&db.url, &tables).await.unwrap();
        let mut set = recorded(
            &db.url,
            "INSERT INTO a (v) VALUES ('s'), ('s'); INSERT INTO b (v) VALUES ('s')",
        )
        .await;
        let post = fingerprint(&db.url, &tables).await.unwrap();
        for (name, before) in &pre.sequences {
            set.sequences
                .insert(name.clone(), (before.clone(), post.sequences[name].clone()));
        }
        assert_eq!(set.sequences.len(), 2, "{:?}", post.sequences);
        // The application draws an id of `b`'s sequence (and rolls back).
        app.batch_execute("BEGIN; INSERT INTO b (v) VALUES ('app'); ROLLBACK")
            .await
            .unwrap();
        let UndoOutcome::Undone(undone) = changes::undo(&db.url, &set, &[], false).await.unwrap()
        else {
            panic!("undone")
        };
        assert_eq!(undone.sequences_kept, vec!["public.b_id_seq".to_string()]);
        let next = |table: &'static str| {
            let app = &app;
            async move {
                app.query_one(
                    &format!("INSERT INTO {table} (v) VALUES ('next') RETURNING id"),
                    &[],
                )
                .await
                .unwrap()
                .get::<_, i32>(0)
            }
        };
        assert_eq!(next("a").await, 1, "`a`'s sequence set back");
        assert_eq!(next("b").await, 3, "`b`'s drawn since: kept, no id reused");
        drop(app);
        db.drop().await;
    }
}
