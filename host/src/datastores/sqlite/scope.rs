//! The table scope of a SQLite session, enforced by SQLite's authorizer.

use rusqlite::hooks::AuthAction;

/// The tables a connection may touch, checked by SQLite's authorizer for
/// every table a statement reads, writes, creates or drops. A plain name
/// (`clientes`) is a table of the database itself (or a temporary one);
/// `schema.table` (`sqitch.changes`) a table of a file the plan attaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableScope {
    tables: Option<Vec<String>>,
}

/// Pragmas that only describe the schema or set per-connection behaviour a
/// plugin legitimately needs; every other pragma is refused.
const ALLOWED_PRAGMAS: &[&str] = &[
    "table_info",
    "table_xinfo",
    "table_list",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
    "foreign_key_check",
    "defer_foreign_keys",
    "integrity_check",
    "quick_check",
];

impl TableScope {
    /// A scope of `tables`; `None` allows every table.
    pub fn new(tables: Option<Vec<String>>) -> Self {
        TableScope { tables }
    }

    /// Whether table `name` of `database` (`main`, `temp` or an attached
    /// schema) is within the scope.
    pub fn covers(&self, database: &str, name: &str) -> bool {
        self.table(Some(database), name)
    }

    fn table(&self, database: Option<&str>, name: &str) -> bool {
        // The schema catalogue is readable so plugins can describe tables;
        // user SQL cannot write it (writable_schema is refused below).
        if name.starts_with("sqlite_") {
            return true;
        }
        // `SELECT … FROM pragma_table_info('t')`: the pragma's own allowlist.
        if let Some(pragma) = name.strip_prefix("pragma_") {
            return ALLOWED_PRAGMAS
                .iter()
                .any(|p| p.eq_ignore_ascii_case(pragma));
        }
        let database = database.unwrap_or("main");
        // The host's change log of this connection (see `changes.rs`):
        // private to it, written by the host's own triggers.
        if database.eq_ignore_ascii_case("temp") && name.starts_with(super::changes::LOG_PREFIX) {
            return true;
        }
        let own = database.eq_ignore_ascii_case("main") || database.eq_ignore_ascii_case("temp");
        match &self.tables {
            None => true,
            Some(tables) => tables.iter().any(|t| match t.split_once('.') {
                Some((schema, table)) => {
                    schema.eq_ignore_ascii_case(database) && table.eq_ignore_ascii_case(name)
                }
                None => own && t.eq_ignore_ascii_case(name),
            }),
        }
    }

    /// Whether an action a statement performs on `database` (the schema name
    /// SQLite's authorizer reports: `main`, `temp` or an attached one) is
    /// within the scope.
    pub fn allows(&self, database: Option<&str>, action: &AuthAction<'_>) -> bool {
        use AuthAction as A;
        match action {
            A::Read { table_name, .. }
            | A::Insert { table_name }
            | A::Update { table_name, .. }
            | A::Delete { table_name }
            | A::CreateTable { table_name }
            | A::CreateTempTable { table_name }
            | A::DropTable { table_name }
            | A::DropTempTable { table_name }
            | A::CreateIndex { table_name, .. }
            | A::CreateTempIndex { table_name, .. }
            | A::DropIndex { table_name, .. }
            | A::DropTempIndex { table_name, .. }
            | A::CreateTrigger { table_name, .. }
            | A::CreateTempTrigger { table_name, .. }
            | A::DropTrigger { table_name, .. }
            | A::DropTempTrigger { table_name, .. }
            | A::AlterTable { table_name, .. }
            | A::Analyze { table_name } => self.table(database, table_name),
            // A view is only as wide as the tables it reads, which are checked
            // when it is used.
            A::CreateView { .. }
            | A::CreateTempView { .. }
            | A::DropView { .. }
            | A::DropTempView { .. } => true,
            A::Select
            | A::Recursive
            | A::Transaction { .. }
            | A::Savepoint { .. }
            | A::Function { .. }
            | A::Reindex { .. } => true,
            A::Pragma { pragma_name, .. } => ALLOWED_PRAGMAS
                .iter()
                .any(|p| p.eq_ignore_ascii_case(pragma_name)),
            // Other databases and virtual tables are outside any scope.
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::hooks::AuthAction as A;

    #[test]
    fn table_scope_allows_only_its_tables() {
        let scoped = TableScope::new(Some(vec!["clientes".into()]));
        let all = TableScope::new(None);
        let cases: Vec<(A<'_>, bool, bool)> = vec![
            (
                A::Read {
                    table_name: "clientes",
                    column_name: "id",
                },
                true,
                true,
            ),
            (
                A::Read {
                    table_name: "customers",
                    column_name: "id",
                },
                false,
                true,
            ),
            (
                A::Insert {
                    table_name: "CLIENTES",
                },
                true,
                true,
            ),
            (
                A::Delete {
                    table_name: "customers",
                },
                false,
                true,
            ),
            (
                A::CreateTable {
                    table_name: "other",
                },
                false,
                true,
            ),
            (
                A::DropTable {
                    table_name: "clientes",
                },
                true,
                true,
            ),
            (
                A::CreateIndex {
                    index_name: "i",
                    table_name: "customers",
                },
                false,
                true,
            ),
            (
                A::Read {
                    table_name: "sqlite_master",
                    column_name: "sql",
                },
                true,
                true,
            ),
            (
                A::Pragma {
                    pragma_name: "table_info",
                    pragma_value: Some("t"),
                },
                true,
                true,
            ),
            (
                A::Pragma {
                    pragma_name: "writable_schema",
                    pragma_value: Some("1"),
                },
                false,
                false,
            ),
            (
                A::Pragma {
                    pragma_name: "query_only",
                    pragma_value: Some("0"),
                },
                false,
                false,
            ),
            (
                A::Attach {
                    filename: "/etc/passwd",
                },
                false,
                false,
            ),
            (A::Select, true, true),
            (
                A::Read {
                    table_name: "pragma_table_info",
                    column_name: "name",
                },
                true,
                true,
            ),
            (
                A::Read {
                    table_name: "pragma_writable_schema",
                    column_name: "x",
                },
                false,
                false,
            ),
        ];
        for (action, in_scope, in_all) in cases {
            assert_eq!(
                scoped.allows(Some("main"), &action),
                in_scope,
                "scoped {action:?}"
            );
            assert_eq!(all.allows(Some("main"), &action), in_all, "all {action:?}");
        }
    }
}
