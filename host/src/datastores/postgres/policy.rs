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
/// and session settings go through the host (begin/commit/rollback), COPY
/// through the copy streams, and server administration not at all.
const DENIED_FIRST_KEYWORDS_ALWAYS: &[&str] = &["COPY", "LOAD"];
const DENIED_FIRST_KEYWORDS_READ_ONLY: &[&str] = &[
    "BEGIN",
    "START",
    "COMMIT",
    "END",
    "ROLLBACK",
    "ABORT",
    "SET",
    "RESET",
    "SAVEPOINT",
    "RELEASE",
    "PREPARE",
    "DISCARD",
];

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
        let parsed = Parser::parse_sql(&PostgreSqlDialect {}, text);
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
            if self.tables.is_some() {
                allowed_when_scoped(statement)?;
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
