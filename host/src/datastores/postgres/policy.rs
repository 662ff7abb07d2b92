//! What a plugin's SQL may do on a PostgreSQL session: the host's checks
//! before PostgreSQL sees a statement.
//!
//! PostgreSQL has no authorizer hook like SQLite's, so scopes are enforced
//! by analysing each statement with a real SQL parser (`sqlparser`), fail
//! closed: a step scoped to tables may run only statements the parser
//! understands, of kinds on an allowlist, naming only its tables and
//! calling only built-in functions. Read-only sessions live inside one
//! read-only transaction the plugin cannot end, so PostgreSQL itself refuses
//! every write; the checks here only keep the plugin from leaving it.
//! Whatever the grant, nothing may reach the database server's own files or
//! programs (`COPY … PROGRAM`, `COPY … TO '/file'`, `pg_read_file`, …).

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use sqlparser::ast::{
    CopySource, CopyTarget, Expr, ObjectName, ObjectNamePart, ObjectType, Query, Statement,
    TableFactor, Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

use crate::plan::Access;

/// Why a statement is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// The names a statement touches, for checks that need the catalog.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Touches {
    /// Functions called (lower case, unqualified).
    pub functions: BTreeSet<String>,
    /// Indexes dropped or altered by name (their tables are looked up).
    pub indexes: BTreeSet<String>,
    /// Unqualified `pg_…` relations read outside the scope: allowed when
    /// they are system catalogs (which the search path finds first).
    pub catalogs: BTreeSet<String>,
}

/// The rules of one session.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Access granted.
    pub access: Access,
    /// Tables the step may touch (normalised), `None` for all.
    pub tables: Option<BTreeSet<String>>,
    /// Sequences a scoped step may read besides its tables (normalised like
    /// table names): those its tables' serial and identity columns own,
    /// looked up in the catalog when the session opens
    /// (`schema_digest::SEQUENCES_OF_TABLES`), so a backup can save their
    /// `last_value` and `is_called`. Empty when unscoped.
    pub sequences: BTreeSet<String>,
}

/// Functions no plugin may call: they reach the server's files, processes,
/// configuration or other sessions, or run SQL given as a string (which
/// would escape the table scope).
const DENIED_FUNCTION_PREFIXES: &[&str] = &[
    "pg_read_",
    "pg_ls_",
    "pg_stat_file",
    "lo_",
    "pg_file_",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "set_config",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "query_to_xml",
    "table_to_xml",
    "cursor_to_xml",
    "schema_to_xml",
    "database_to_xml",
    "pg_logical_",
    "pg_replication_",
    "pg_create_",
    "pg_drop_replication",
    "pg_switch_wal",
    "pg_promote",
    "pg_backup_",
    "dblink",
];

/// First keywords no plugin statement may start with: transaction control
/// goes through the host (begin/commit/rollback), COPY through the copy
/// streams, and server administration not at all. Session settings and
/// savepoints inside a read-only phase's transaction are judged by
/// [`session_statement`].
const DENIED_FIRST_KEYWORDS_ALWAYS: &[&str] = &["COPY", "LOAD"];
const DENIED_FIRST_KEYWORDS_READ_ONLY: &[&str] = &[
    "BEGIN", "START", "COMMIT", "END", "ABORT", "PREPARE", "DISCARD",
];

/// First keywords [`session_statement`] judges in a read-only phase.
const SESSION_KEYWORDS: &[&str] = &["SET", "RESET", "SAVEPOINT", "RELEASE", "ROLLBACK"];

/// Settings a read-only phase may not change, whatever the grant:
/// the transaction's own mode (it must stay the host's one read-only
/// transaction), who the session is (`session_authorization`), what
/// PostgreSQL enforces on the session (`session_replication_role` turns
/// triggers and foreign-key actions off), and the session settings the host
/// pins so values and `COPY` text are canonical (and so the host parses
/// string literals as the server does).
const DENIED_SETTINGS: &[&str] = &[
    "transaction_read_only",
    "default_transaction_read_only",
    "transaction_isolation",
    "default_transaction_isolation",
    "transaction_deferrable",
    "default_transaction_deferrable",
    "session_authorization",
    "session_replication_role",
    "timezone",
    "datestyle",
    "intervalstyle",
    "extra_float_digits",
    "bytea_output",
    "client_encoding",
    "standard_conforming_strings",
    "backslash_quote",
];

/// Settings PostgreSQL 15 lets only a superuser change
/// (`pg_settings.context = 'superuser'`): refused to every plugin, so a
/// connection that happens to be a superuser gives a plugin no more than
/// one that is not.
const SUPERUSER_SETTINGS: &[&str] = &[
    "allow_in_place_tablespaces",
    "allow_system_table_mods",
    "backtrace_functions",
    "commit_delay",
    "compute_query_id",
    "deadlock_timeout",
    "debug_discard_caches",
    "dynamic_library_path",
    "extension_destdir",
    "ignore_checksum_failure",
    "jit_dump_bitcode",
    "lc_messages",
    "lo_compat_privileges",
    "log_duration",
    "log_error_verbosity",
    "log_executor_stats",
    "log_lock_waits",
    "log_min_duration_sample",
    "log_min_duration_statement",
    "log_min_error_statement",
    "log_min_messages",
    "log_parameter_max_length",
    "log_parser_stats",
    "log_planner_stats",
    "log_replication_commands",
    "log_statement",
    "log_statement_sample_rate",
    "log_statement_stats",
    "log_temp_files",
    "log_transaction_sample_rate",
    "max_stack_depth",
    "session_preload_libraries",
    "session_replication_role",
    "temp_file_limit",
    "track_activities",
    "track_counts",
    "track_functions",
    "track_io_timing",
    "track_wal_io_timing",
    "update_process_title",
    "wal_compression",
    "wal_consistency_checking",
    "wal_init_zero",
    "wal_recycle",
    "zero_damaged_pages",
];

/// Where a table-scoped session keeps its own scratch tables:
/// `pg_temp.<name>` is always this session's temporary schema, private to
/// it and dropped with it (see [`Policy::check`]'s rule for them).
const SESSION_PRIVATE_SCHEMA: &str = "pg_temp.";

/// Normalises a table name as PostgreSQL resolves it: unquoted parts lower
/// case, the default schema `public` dropped.
pub fn normalise_table(name: &str) -> String {
    let lower = name.trim().to_lowercase();
    lower
        .strip_prefix("public.")
        .map(str::to_string)
        .unwrap_or(lower)
}

fn object_name(name: &ObjectName) -> String {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) if i.quote_style.is_some() => i.value.clone(),
            ObjectNamePart::Identifier(i) => i.value.to_lowercase(),
            ObjectNamePart::Function(f) => f.name.value.to_lowercase(),
        })
        .collect();
    let joined = parts.join(".");
    joined
        .strip_prefix("public.")
        .map(str::to_string)
        .unwrap_or(joined)
}

/// The statements of a script, as text, split where PostgreSQL would
/// split them (string literals, comments and dollar-quoted bodies kept
/// whole), each with its first keyword (upper case).
pub fn split(script: &str) -> Result<Vec<(String, String)>, Refused> {
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, script)
        .tokenize()
        .map_err(|e| Refused(format!("cannot read the SQL: {e}")))?;
    let mut out = Vec::new();
    let mut text = String::new();
    let mut first: Option<String> = None;
    for token in tokens {
        match &token {
            Token::SemiColon => {
                if let Some(kw) = first.take() {
                    out.push((std::mem::take(&mut text).trim().to_string(), kw));
                }
                text.clear();
            }
            Token::Whitespace(_) => text.push_str(&token.to_string()),
            _ => {
                if first.is_none() {
                    first = Some(match &token {
                        Token::Word(w) => w.value.to_uppercase(),
                        other => other.to_string(),
                    });
                }
                text.push_str(&token.to_string());
            }
        }
    }
    if let Some(kw) = first {
        out.push((text.trim().to_string(), kw));
    }
    Ok(out)
}

impl Policy {
    /// Checks one script (one or more statements) for `query`, `execute`
    /// and `execute-script`; returns the names the caller must still check
    /// against the catalog.
    pub fn check(&self, sql: &str) -> Result<Touches, Refused> {
        let statements = split(sql)?;
        if statements.is_empty() {
            return Err(Refused("the SQL has no statement".into()));
        }
        let mut touches = Touches::default();
        for (text, keyword) in &statements {
            if DENIED_FIRST_KEYWORDS_ALWAYS.contains(&keyword.as_str()) {
                return Err(Refused(format!(
                    "`{keyword}` statements cannot be sent as SQL: {}",
                    if keyword == "COPY" {
                        "use the copy-out/copy-in streams (COPY … TO STDOUT / FROM STDIN)"
                    } else {
                        "they act on the database server itself"
                    }
                )));
            }
            if self.access == Access::ReadOnly && SESSION_KEYWORDS.contains(&keyword.as_str()) {
                session_statement(text, self.tables.is_some())?;
                continue;
            }
            if self.access == Access::ReadOnly
                && DENIED_FIRST_KEYWORDS_READ_ONLY.contains(&keyword.as_str())
            {
                return Err(Refused(format!(
                    "`{keyword}` is refused in a read-only phase: it runs inside one read-only transaction the host manages"
                )));
            }
            if keyword == "ALTER" && text.to_uppercase().split_whitespace().nth(1) == Some("SYSTEM")
            {
                return Err(Refused(
                    "`ALTER SYSTEM` changes the database server itself".into(),
                ));
            }
            self.check_parsed(text, &mut touches)?;
        }
        Ok(touches)
    }

    /// Checks a `COPY` for the copy streams: it must read from STDIN (`in`)
    /// or write to STDOUT, and touch only granted tables.
    pub fn check_copy(&self, sql: &str, copy_in: bool) -> Result<Touches, Refused> {
        // sqlparser reads `COPY … FROM STDIN` with its inline data, which
        // ends with `\.`; the stream carries the data here, so give it none.
        let text = if copy_in {
            format!("{};\n\\.\n", sql.trim().trim_end_matches(';'))
        } else {
            sql.to_string()
        };
        let statements = Parser::parse_sql(&PostgreSqlDialect {}, &text)
            .map_err(|e| Refused(format!("cannot parse the COPY statement: {e}")))?;
        let [statement] = statements.as_slice() else {
            return Err(Refused("give exactly one COPY statement".into()));
        };
        let Statement::Copy { to, target, .. } = statement else {
            return Err(Refused("expected a COPY statement".into()));
        };
        match (copy_in, to, target) {
            (false, true, CopyTarget::Stdout) => {}
            (true, false, CopyTarget::Stdin) => {}
            (false, _, _) => return Err(Refused("copy-out needs `COPY … TO STDOUT`".into())),
            (true, _, _) => return Err(Refused("copy-in needs `COPY … FROM STDIN`".into())),
        }
        if copy_in && self.access == Access::ReadOnly {
            return Err(Refused("copy-in writes; this phase is read-only".into()));
        }
        let mut touches = Touches::default();
        self.check_names(statement, &mut touches)?;
        Ok(touches)
    }

    fn check_parsed(&self, text: &str, touches: &mut Touches) -> Result<(), Refused> {
        // Clauses sqlparser cannot read but that reach no other relation.
        let stripped = analysable(text);
        let parsed = Parser::parse_sql(&PostgreSqlDialect {}, stripped.as_deref().unwrap_or(text));
        let statements = match parsed {
            Ok(s) => s,
            // Unscoped: PostgreSQL is the judge (read-only is its own
            // transaction); scoped: what cannot be analysed cannot run.
            Err(_) if self.tables.is_none() => return Ok(()),
            Err(e) => {
                return Err(Refused(format!(
                    "this step is scoped to tables, and sluice cannot analyse `{}` ({e}); a scoped step may run only statements sluice can check",
                    abbreviate(text)
                )))
            }
        };
        for statement in &statements {
            if let Some(scope) = &self.tables {
                allowed_when_scoped(statement)?;
                session_private_names(statement, scope)?;
            }
            self.check_names(statement, touches)?;
        }
        Ok(())
    }

    fn check_names(&self, statement: &Statement, touches: &mut Touches) -> Result<(), Refused> {
        let mut names = Names::default();
        let _ = statement.visit(&mut names);
        explicit_names(statement, &mut names);
        if let Some(f) = names.functions.iter().find(|f| denied_function(f)) {
            return Err(Refused(format!(
                "function `{f}` reaches beyond the granted datastore (server files, sessions or settings) and is refused"
            )));
        }
        if let Some(scope) = &self.tables {
            // Plugins read the system catalogs to learn a table's shape.
            let reads = matches!(
                statement,
                Statement::Query(_) | Statement::Explain { .. } | Statement::Copy { to: true, .. }
            );
            for table in &names.relations {
                if names.ctes.contains(table) || scope.contains(table) {
                    continue;
                }
                if table.starts_with(SESSION_PRIVATE_SCHEMA) {
                    // This session's own temporary table; its name was
                    // checked by `session_private_names` not to shadow a
                    // granted table.
                    continue;
                }
                if reads && self.sequences.contains(table) {
                    // `SELECT last_value, is_called FROM <its sequence>`.
                    continue;
                }
                if reads
                    && (table.starts_with("pg_catalog.")
                        || table.starts_with("information_schema."))
                {
                    continue;
                }
                if reads && table.starts_with("pg_") && !table.contains('.') {
                    touches.catalogs.insert(table.clone());
                    continue;
                }
                {
                    return Err(Refused(format!(
                        "table `{table}` is outside this step's scope (granted: {})",
                        scope.iter().cloned().collect::<Vec<_>>().join(", ")
                    )));
                }
            }
        }
        touches.functions.extend(names.functions);
        touches.indexes.extend(names.indexes);
        Ok(())
    }
}

fn abbreviate(text: &str) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 80 {
        format!("{}…", one_line.chars().take(80).collect::<String>())
    } else {
        one_line
    }
}

fn denied_function(name: &str) -> bool {
    let bare = name.rsplit('.').next().unwrap_or(name);
    DENIED_FUNCTION_PREFIXES.iter().any(|p| bare.starts_with(p))
}

/// The rule for a table-scoped session's scratch tables (what a restore
/// needs besides its granted tables, e.g. a staging table to merge rows back
/// by key): a relation named `pg_temp.<name>` is this session's own
/// temporary table — no other session can see it and it is dropped with the
/// session — so a scoped step may create, fill, read and drop it with the
/// statements it may run on granted tables; whatever fills it is checked
/// against the grant as usual. Two shapes stay refused, so that a name in a
/// statement always means what the grant means:
/// - a temporary table created under any other name (`CREATE TEMP TABLE x`):
///   unqualified, it could take a granted table's name and, first on the
///   search path, shadow it;
/// - `pg_temp.<name>` where `<name>` is a granted table's name, for the same
///   reason.
fn session_private_names(statement: &Statement, scope: &BTreeSet<String>) -> Result<(), Refused> {
    if let Statement::CreateTable(ct) = statement {
        let name = object_name(&ct.name);
        if ct.temporary && !name.starts_with(SESSION_PRIVATE_SCHEMA) {
            return Err(Refused(format!(
                "a step scoped to tables creates temporary tables only as `pg_temp.<name>` (`{name}` could shadow a table of the same name)"
            )));
        }
    }
    let mut names = Names::default();
    let _ = statement.visit(&mut names);
    explicit_names(statement, &mut names);
    for relation in &names.relations {
        if let Some(bare) = relation.strip_prefix(SESSION_PRIVATE_SCHEMA) {
            let shadows = scope
                .iter()
                .any(|t| t.rsplit('.').next() == Some(bare) || t == bare);
            if shadows || bare.contains('.') {
                return Err(Refused(format!(
                    "temporary table `{relation}` has the name of a granted table and would shadow it; name it differently"
                )));
            }
        }
    }
    Ok(())
}

/// `text` without the clauses sqlparser does not know and that change
/// nothing a scope check reads, when it has any: a final `WITH [NO] DATA`
/// of a `CREATE … AS` (the same relations are read, with or without the
/// rows) and `OVERRIDING {SYSTEM|USER} VALUE` of an `INSERT` (which value an
/// identity column takes).
fn analysable(text: &str) -> Option<String> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, text)
        .tokenize()
        .ok()?;
    let words: Vec<(usize, String)> = tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| !matches!(t, Token::Whitespace(_)))
        .map(|(i, t)| {
            (
                i,
                match t {
                    Token::Word(w) if w.quote_style.is_none() => w.value.to_uppercase(),
                    other => other.to_string(),
                },
            )
        })
        .collect();
    let mut drop = vec![false; tokens.len()];
    let mut dropped = false;
    let mut span = |from: usize, to: usize| {
        for d in &mut drop[from..=to] {
            *d = true;
        }
        dropped = true;
    };
    match words.first().map(|w| w.1.as_str()) {
        Some("CREATE") => {
            let n = words.len();
            let tail: Vec<&str> = words.iter().rev().take(3).map(|w| w.1.as_str()).collect();
            match tail.as_slice() {
                ["DATA", "NO", "WITH"] => span(words[n - 3].0, words[n - 1].0),
                ["DATA", "WITH", ..] => span(words[n - 2].0, words[n - 1].0),
                _ => {}
            }
        }
        Some("INSERT" | "WITH") => {
            for w in words.windows(3) {
                if w[0].1 == "OVERRIDING"
                    && matches!(w[1].1.as_str(), "SYSTEM" | "USER")
                    && w[2].1 == "VALUE"
                {
                    span(w[0].0, w[2].0);
                }
            }
        }
        _ => {}
    }
    if !dropped {
        return None;
    }
    Some(
        tokens
            .iter()
            .zip(&drop)
            .filter(|(_, d)| !**d)
            .map(|(t, _)| t.to_string())
            .collect(),
    )
}

/// Judges a session statement in a read-only phase, which runs inside one
/// `REPEATABLE READ READ ONLY` transaction the host began and ends:
/// - `SAVEPOINT`, `RELEASE [SAVEPOINT]` and `ROLLBACK TO [SAVEPOINT]` nest
///   inside that transaction and cannot end it; any other `ROLLBACK` would
///   end it and is refused;
/// - `SET`, `SET LOCAL` and `RESET` of ordinary settings are allowed
///   (verify scripts set `client_min_messages`, `lock_timeout`, custom
///   `app.*` settings, …), except [`DENIED_SETTINGS`] (the transaction's
///   mode, the session's identity, `session_replication_role`, the settings
///   the host pins), [`SUPERUSER_SETTINGS`], `SET TRANSACTION`,
///   `SET SESSION CHARACTERISTICS`, `SET SESSION AUTHORIZATION` and
///   `RESET ALL`; in a step scoped to tables also `search_path`, which would
///   change what an unqualified (granted) table name means;
/// - `SET [LOCAL] ROLE` and `RESET ROLE` are allowed: PostgreSQL admits a
///   role change only to a role the session's login is a member of, and
///   the phase starts as that login, so a role change never reaches beyond
///   what the phase already could; the transaction stays read-only
///   whatever the role. (A session that ran as a restricted role entered
///   by `SET ROLE` from a wider login would need this refused.)
fn session_statement(text: &str, scoped: bool) -> Result<(), Refused> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, text)
        .tokenize()
        .map_err(|e| Refused(format!("cannot read the SQL: {e}")))?;
    // Words (unquoted upper case), `=`, `.` and literals, in order.
    let words: Vec<String> = tokens
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .map(|t| match t {
            Token::Word(w) if w.quote_style.is_none() => w.value.to_uppercase(),
            Token::Word(w) => w.value.to_lowercase(),
            other => other.to_string(),
        })
        .collect();
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    let refuse = |why: &str| {
        Err(Refused(format!(
            "`{}` is refused in a read-only phase: {why}",
            abbreviate(text)
        )))
    };
    let ends = "it would end the read-only transaction the host manages";
    match w.as_slice() {
        ["SAVEPOINT", _name] => Ok(()),
        ["RELEASE", _name] | ["RELEASE", "SAVEPOINT", _name] => Ok(()),
        ["ROLLBACK", rest @ ..] => {
            let rest = match rest {
                ["WORK" | "TRANSACTION", rest @ ..] => rest,
                rest => rest,
            };
            match rest {
                ["TO", _name] | ["TO", "SAVEPOINT", _name] => Ok(()),
                _ => refuse(ends),
            }
        }
        ["SET", rest @ ..] => {
            let rest = match rest {
                ["SESSION", "AUTHORIZATION" | "CHARACTERISTICS", ..] => {
                    return refuse("it changes the session's identity or its transactions")
                }
                ["SESSION" | "LOCAL", rest @ ..] => rest,
                rest => rest,
            };
            match rest {
                ["TRANSACTION", ..] => refuse("the host's transaction stays as the host began it"),
                ["ROLE", ..] | ["CONSTRAINTS", ..] | ["XML", "OPTION", ..] => Ok(()),
                ["TIME", "ZONE", ..] => setting("timezone", scoped).or_else(|e| refuse(&e)),
                ["NAMES", ..] => setting("client_encoding", scoped).or_else(|e| refuse(&e)),
                ["SCHEMA", ..] => setting("search_path", scoped).or_else(|e| refuse(&e)),
                [first, rest @ ..] => {
                    let name = setting_name(first, rest);
                    setting(&name, scoped).or_else(|e| refuse(&e))
                }
                [] => refuse("no setting named"),
            }
        }
        ["RESET", rest @ ..] => match rest {
            ["ALL"] => refuse("it would also undo the settings the host pins for the session"),
            ["SESSION", "AUTHORIZATION"] => refuse("it changes the session's identity"),
            ["ROLE"] => Ok(()),
            ["TIME", "ZONE"] => setting("timezone", scoped).or_else(|e| refuse(&e)),
            [first, rest @ ..] => {
                let name = setting_name(first, rest);
                setting(&name, scoped).or_else(|e| refuse(&e))
            }
            [] => refuse("no setting named"),
        },
        _ => refuse("not a statement sluice can read as a setting or savepoint"),
    }
}

/// A setting's name as PostgreSQL looks it up (lower case, `a.b` for custom
/// settings) from the words after `SET`/`RESET`.
fn setting_name(first: &str, rest: &[&str]) -> String {
    match rest {
        [".", second, ..] => format!("{}.{}", first.to_lowercase(), second.to_lowercase()),
        _ => first.to_lowercase(),
    }
}

/// Whether a read-only phase may change setting `name`: `Err` says why not.
fn setting(name: &str, scoped: bool) -> Result<(), String> {
    if name == "role" {
        return Ok(());
    }
    if DENIED_SETTINGS.contains(&name) {
        return Err(format!(
            "`{name}` is the host's (the transaction's mode, the session's identity, or a setting pinned so values are canonical)"
        ));
    }
    if SUPERUSER_SETTINGS.contains(&name) {
        return Err(format!("`{name}` is a superuser setting"));
    }
    if scoped && name == "search_path" {
        return Err(
            "`search_path` would change which table an unqualified name means in a step scoped to tables"
                .into(),
        );
    }
    Ok(())
}

/// Statement kinds a table-scoped step may run.
fn allowed_when_scoped(statement: &Statement) -> Result<(), Refused> {
    let ok = match statement {
        Statement::Query(_)
        | Statement::Insert(_)
        | Statement::Update { .. }
        | Statement::Delete(_)
        | Statement::Merge { .. }
        | Statement::CreateTable(_)
        | Statement::CreateIndex(_)
        | Statement::CreateView { .. }
        | Statement::AlterTable { .. }
        | Statement::AlterIndex { .. }
        | Statement::Truncate { .. }
        | Statement::Analyze { .. }
        | Statement::Vacuum(_)
        | Statement::Explain { .. }
        | Statement::Comment { .. } => true,
        Statement::Drop { object_type, .. } => matches!(
            object_type,
            ObjectType::Table | ObjectType::View | ObjectType::Index
        ),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        let kind = statement.to_string();
        Err(Refused(format!(
            "`{}` is not allowed in a step scoped to tables (allowed: queries, INSERT/UPDATE/DELETE/MERGE, CREATE/ALTER/DROP of tables, views and indexes, TRUNCATE, ANALYZE, VACUUM, EXPLAIN, COMMENT)",
            abbreviate(&kind)
        )))
    }
}

#[derive(Default)]
struct Names {
    relations: BTreeSet<String>,
    ctes: BTreeSet<String>,
    functions: BTreeSet<String>,
    indexes: BTreeSet<String>,
}

impl Visitor for Names {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.ctes.insert(cte.alias.name.value.to_lowercase());
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        self.relations.insert(object_name(relation));
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table {
            name,
            args: Some(_),
            ..
        } = factor
        {
            // A set-returning function in FROM, not a table.
            self.functions.insert(object_name(name));
        }
        if let TableFactor::Function { name, .. } = factor {
            self.functions.insert(object_name(name));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = expr {
            self.functions.insert(object_name(&f.name));
        }
        ControlFlow::Continue(())
    }
}

/// Names the visitor does not report as relations: tables named by DDL and
/// indexes dropped by name.
fn explicit_names(statement: &Statement, names: &mut Names) {
    match statement {
        Statement::CreateIndex(ci) => {
            names.relations.insert(object_name(&ci.table_name));
        }
        Statement::CreateTable(ct) => {
            names.relations.insert(object_name(&ct.name));
            // Tables a new table inherits from or copies the shape of are
            // reached by it too.
            for parent in ct.inherits.iter().flatten() {
                names.relations.insert(object_name(parent));
            }
            if let Some(like) = &ct.like {
                let source = match like {
                    sqlparser::ast::CreateTableLikeKind::Parenthesized(l)
                    | sqlparser::ast::CreateTableLikeKind::Plain(l) => &l.name,
                };
                names.relations.insert(object_name(source));
            }
            if let Some(clone) = &ct.clone {
                names.relations.insert(object_name(clone));
            }
            // sqlparser's PostgreSQL dialect reads `(LIKE source …)` as a
            // column named `like` whose type is `source`.
            for column in &ct.columns {
                if column.name.quote_style.is_none()
                    && column.name.value.eq_ignore_ascii_case("like")
                {
                    if let sqlparser::ast::DataType::Custom(source, _) = &column.data_type {
                        names.relations.insert(object_name(source));
                    }
                }
            }
        }
        Statement::CreateView { name, .. } => {
            names.relations.insert(object_name(name));
        }
        Statement::AlterTable { name, .. } => {
            names.relations.insert(object_name(name));
        }
        Statement::Copy {
            source: CopySource::Table { table_name, .. },
            ..
        } => {
            names.relations.insert(object_name(table_name));
        }
        Statement::AlterIndex { name, .. } => {
            names.indexes.insert(object_name(name));
        }
        Statement::Truncate { table_names, .. } => {
            for t in table_names {
                names.relations.insert(object_name(&t.name));
            }
        }
        Statement::Drop {
            object_type,
            names: dropped,
            ..
        } => {
            for n in dropped {
                if *object_type == ObjectType::Index {
                    names.indexes.insert(object_name(n));
                } else {
                    names.relations.insert(object_name(n));
                }
            }
        }
        _ => {}
    }
    // A table-valued function in FROM was recorded as a relation too.
    let functions = names.functions.clone();
    names.relations.retain(|r| !functions.contains(r));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scoped(tables: &[&str], access: Access) -> Policy {
        Policy {
            access,
            tables: Some(tables.iter().map(|t| normalise_table(t)).collect()),
            sequences: BTreeSet::new(),
        }
    }

    #[test]
    fn scoped_statements_name_only_granted_tables() {
        let p = scoped(&["clientes", "legacy"], Access::ReadWrite);
        let ok = [
            "SELECT count(*) FROM clientes",
            "SELECT * FROM public.clientes c JOIN legacy l ON l.id = c.id",
            "WITH x AS (SELECT id FROM legacy) INSERT INTO clientes SELECT id FROM x",
            "INSERT INTO clientes (id) VALUES (1) ON CONFLICT DO NOTHING",
            "UPDATE clientes SET nombre = upper(nombre) WHERE id IN (SELECT id FROM legacy)",
            "DELETE FROM legacy WHERE id < 10",
            "CREATE INDEX CONCURRENTLY idx_c ON clientes (nombre)",
            "ALTER TABLE clientes ADD COLUMN email text",
            "CREATE TABLE \"legacy\" (id int)",
            "TRUNCATE legacy",
            "DROP TABLE legacy",
            "EXPLAIN (FORMAT JSON) SELECT * FROM clientes",
        ];
        for sql in ok {
            assert!(p.check(sql).is_ok(), "{sql}: {:?}", p.check(sql));
        }
        let refused = [
            "SELECT * FROM customers",
            "SELECT * FROM clientes WHERE id IN (SELECT id FROM secrets)",
            "INSERT INTO audit SELECT * FROM clientes",
            "UPDATE clientes SET x = 1; DELETE FROM customers",
            "CREATE INDEX i ON customers (id)",
            "ALTER TABLE customers DROP COLUMN id",
            "TRUNCATE customers",
            "DROP TABLE customers",
            "CREATE TABLE other.clientes (id int)",
            "DO $$ BEGIN DELETE FROM customers; END $$",
            "CREATE FUNCTION f() RETURNS int AS 'select 1' LANGUAGE sql",
            "SET ROLE postgres",
            "GRANT ALL ON clientes TO public",
            "SELECT pg_read_file('/etc/passwd')",
            "SELECT query_to_xml('select * from customers', true, true, '')",
            "COPY clientes TO '/tmp/x'",
            "COPY clientes TO PROGRAM 'id'",
            "ALTER SYSTEM SET fsync = off",
        ];
        for sql in refused {
            assert!(p.check(sql).is_err(), "{sql} was allowed");
        }
        let touches = p.check("DROP INDEX idx_c").unwrap();
        assert!(touches.indexes.contains("idx_c"));
        let touches = p.check("SELECT lower(nombre) FROM clientes").unwrap();
        assert!(touches.functions.contains("lower"));
        // Catalog reads are allowed (unqualified `pg_…` names checked
        // against the catalog by the session); catalog writes are not.
        assert!(p
            .check("SELECT * FROM information_schema.columns WHERE table_name = 'clientes'")
            .is_ok());
        assert!(p.check("SELECT relname FROM pg_catalog.pg_class").is_ok());
        let touches = p.check("SELECT indexdef FROM pg_indexes").unwrap();
        assert!(touches.catalogs.contains("pg_indexes"));
        assert!(p
            .check("UPDATE pg_catalog.pg_class SET relname = 'x'")
            .is_err());
        assert!(p.check("DELETE FROM pg_authid").is_err());
    }

    #[test]
    fn read_only_sessions_cannot_leave_their_transaction() {
        let p = Policy {
            access: Access::ReadOnly,
            tables: None,
            sequences: BTreeSet::new(),
        };
        for sql in [
            "COMMIT",
            "select 1; commit",
            "  -- note\n  ROLLBACK",
            "BEGIN READ WRITE",
            "SET default_transaction_read_only = off",
            "RESET ALL",
            "END",
            "/* c */ start transaction",
        ] {
            assert!(p.check(sql).is_err(), "{sql} was allowed");
        }
        for sql in [
            "SELECT 1",
            "SELECT 'commit; rollback'",
            "SELECT $$;COMMIT$$",
        ] {
            assert!(p.check(sql).is_ok(), "{sql}: {:?}", p.check(sql));
        }
    }

    #[test]
    fn read_only_phases_allow_settings_and_savepoints_inside_their_transaction() {
        for tables in [None, Some(&["items"][..])] {
            let p = Policy {
                access: Access::ReadOnly,
                tables: tables.map(|t| t.iter().map(|n| normalise_table(n)).collect()),
                sequences: BTreeSet::new(),
            };
            for sql in [
                "SET client_min_messages = warning",
                "SET LOCAL lock_timeout TO '2s'",
                "set local statement_timeout = 0",
                "SET app.tenant = 'acme'",
                "RESET client_min_messages",
                "RESET app.tenant",
                "SET LOCAL role app_reader",
                "SET ROLE NONE",
                "RESET ROLE",
                "SET CONSTRAINTS ALL DEFERRED",
                "SAVEPOINT before_check",
                "RELEASE SAVEPOINT before_check",
                "RELEASE before_check",
                "ROLLBACK TO SAVEPOINT before_check",
                "rollback to before_check",
                "ROLLBACK WORK TO SAVEPOINT \"Quoted\"",
                "SET LOCAL role app_reader; SELECT 1; RESET role",
            ] {
                assert!(
                    p.check(sql).is_ok(),
                    "{sql} ({tables:?}): {:?}",
                    p.check(sql)
                );
            }
            for sql in [
                "ROLLBACK",
                "ROLLBACK AND CHAIN",
                "ROLLBACK PREPARED 'x'",
                "SET TRANSACTION READ WRITE",
                "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
                "SET default_transaction_read_only = off",
                "SET transaction_read_only TO off",
                "SET LOCAL transaction_isolation = 'read committed'",
                "SET SESSION AUTHORIZATION postgres",
                "SET session_authorization = 'postgres'",
                "RESET SESSION AUTHORIZATION",
                "RESET ALL",
                "SET session_replication_role = replica",
                "SET LOCAL TIME ZONE 'Europe/Madrid'",
                "SET timezone = 'Europe/Madrid'",
                "SET DateStyle = 'German'",
                "SET NAMES 'LATIN1'",
                "SET standard_conforming_strings = off",
                "SET zero_damaged_pages = on",
                "SET log_statement = 'none'",
                "SELECT 1; COMMIT",
            ] {
                assert!(p.check(sql).is_err(), "{sql} ({tables:?}) was allowed");
            }
        }
        // The search path decides what an unqualified granted name means.
        let unscoped = Policy {
            access: Access::ReadOnly,
            tables: None,
            sequences: BTreeSet::new(),
        };
        assert!(unscoped.check("SET search_path TO app, public").is_ok());
        let ro = scoped(&["items"], Access::ReadOnly);
        assert!(ro.check("SET search_path TO other").is_err());
        assert!(ro.check("SET LOCAL SCHEMA 'other'").is_err());
        // Read-write phases are unchanged: a scoped step runs no SET.
        let rw = scoped(&["items"], Access::ReadWrite);
        assert!(rw.check("SET LOCAL role app").is_err());
    }

    #[test]
    fn a_scoped_session_may_use_its_own_temporary_tables_and_nothing_that_shadows() {
        let p = scoped(&["items", "other.items2"], Access::ReadWrite);
        for sql in [
            // What the PostgreSQL plugin's restore runs.
            "CREATE TEMP TABLE pg_temp.\"sluice_restore_items\" ON COMMIT DROP AS SELECT * FROM \"public\".\"items\" WITH NO DATA",
            "CREATE TABLE pg_temp.stage AS SELECT * FROM items WITH DATA",
            "COPY pg_temp.\"sluice_restore_items\" FROM STDIN",
            "DELETE FROM \"public\".\"items\" t WHERE NOT EXISTS (SELECT 1 FROM pg_temp.\"sluice_restore_items\" s WHERE s.\"id\" = t.\"id\")",
            "INSERT INTO \"public\".\"items\" (\"id\") OVERRIDING SYSTEM VALUE SELECT \"id\" FROM pg_temp.\"sluice_restore_items\" ON CONFLICT (\"id\") DO UPDATE SET \"id\" = EXCLUDED.\"id\"",
            "DROP TABLE pg_temp.\"sluice_restore_items\"",
            "ALTER TABLE \"public\".\"items\" DISABLE TRIGGER USER",
            "ALTER TABLE \"public\".\"items\" ENABLE ALWAYS TRIGGER \"audit\"",
        ] {
            let checked = if sql.starts_with("COPY") {
                p.check_copy(sql, true)
            } else {
                p.check(sql)
            };
            assert!(checked.is_ok(), "{sql}: {checked:?}");
        }
        for sql in [
            // Filled from an ungranted table.
            "CREATE TEMP TABLE pg_temp.x AS SELECT * FROM secrets",
            "CREATE TEMP TABLE pg_temp.x AS SELECT * FROM secrets WITH NO DATA",
            "CREATE TABLE pg_temp.x () INHERITS (secrets)",
            "CREATE TABLE pg_temp.x (LIKE secrets)",
            "INSERT INTO pg_temp.x SELECT * FROM secrets",
            // Unqualified temporary tables, or ones named like a granted table, shadow it.
            "CREATE TEMP TABLE items (id int)",
            "CREATE TEMPORARY TABLE stage AS SELECT * FROM items",
            "CREATE TEMP TABLE pg_temp.items (id int)",
            "CREATE TABLE pg_temp.items2 (id int)",
            "INSERT INTO pg_temp.items SELECT * FROM items",
            // Another session's temporary schema.
            "SELECT * FROM pg_temp_3.stage",
            "CREATE TABLE items_copy () INHERITS (secrets)",
        ] {
            assert!(p.check(sql).is_err(), "{sql} was allowed");
        }
    }

    #[test]
    fn a_scoped_step_reads_its_tables_sequences_and_no_others() {
        let mut p = scoped(&["items", "sales.orders"], Access::ReadOnly);
        p.sequences = ["items_id_seq", "sales.orders_id_seq"]
            .into_iter()
            .map(String::from)
            .collect();
        for sql in [
            // What the PostgreSQL plugin's backup runs.
            "SELECT last_value, is_called FROM \"public\".\"items_id_seq\"",
            "SELECT last_value, is_called FROM sales.orders_id_seq",
            "SELECT * FROM items_id_seq",
        ] {
            assert!(p.check(sql).is_ok(), "{sql}: {:?}", p.check(sql));
        }
        for sql in [
            "SELECT last_value FROM other_id_seq",
            "SELECT last_value FROM public.orders_id_seq",
        ] {
            assert!(p.check(sql).is_err(), "{sql} was allowed");
        }
        // Reads only: a sequence is no table to write, alter or drop.
        let mut rw = scoped(&["items"], Access::ReadWrite);
        rw.sequences = BTreeSet::from(["items_id_seq".to_string()]);
        // What its rollback runs (setval is built in: allowed already).
        assert!(rw
            .check("SELECT pg_catalog.setval(s, 200, true) FROM (SELECT pg_catalog.to_regclass('\"public\".\"items_id_seq\"') AS s) q WHERE s IS NOT NULL")
            .is_ok());
        for sql in [
            "ALTER TABLE items_id_seq OWNER TO someone",
            "DROP TABLE items_id_seq",
            "INSERT INTO items_id_seq VALUES (1, 0, false)",
        ] {
            assert!(rw.check(sql).is_err(), "{sql} was allowed");
        }
    }

    #[test]
    fn copy_streams_only_reach_stdin_and_stdout() {
        let p = scoped(&["clientes"], Access::ReadWrite);
        assert!(p.check_copy("COPY clientes TO STDOUT", false).is_ok());
        assert!(p
            .check_copy("COPY (SELECT id FROM clientes) TO STDOUT", false)
            .is_ok());
        assert!(p.check_copy("COPY clientes (id) FROM STDIN", true).is_ok());
        assert!(p.check_copy("COPY customers TO STDOUT", false).is_err());
        assert!(p.check_copy("COPY clientes TO '/tmp/x'", false).is_err());
        assert!(p
            .check_copy("COPY clientes FROM PROGRAM 'id'", true)
            .is_err());
        assert!(p.check_copy("COPY clientes FROM STDIN", false).is_err());
        let ro = scoped(&["clientes"], Access::ReadOnly);
        assert!(ro.check_copy("COPY clientes FROM STDIN", true).is_err());
    }

    #[test]
    fn scripts_split_like_postgres() {
        let parts = split(
            "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql; select ';' ; -- x;\n",
        )
        .unwrap();
        assert_eq!(parts.len(), 2, "{parts:?}");
        assert_eq!(parts[0].1, "CREATE");
        assert_eq!(parts[1].1, "SELECT");
    }
}
