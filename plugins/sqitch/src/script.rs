//! Running a script's SQL as psql runs it for sqitch, inside sluice's
//! transactions: the script's own `BEGIN;`/`COMMIT;` (sqitch's templates
//! wrap every script in them) become the step's one transaction, which also
//! holds the registry rows, so a change and its record commit together.

use sluice_plugin_postgres::classify;
use sluice_sdk::sql::Connection;
use sluice_sdk::{Error, ErrorExt};

/// A script's statements with its transaction control taken out.
pub struct Statements {
    /// The statements, in order.
    pub statements: Vec<String>,
    /// Whether they can all run in one transaction.
    pub transactional: bool,
    /// The script ended its transaction with `ROLLBACK` (verify scripts do:
    /// they change nothing either way).
    pub rolls_back: bool,
}

/// First keyword of a statement, upper case, comments skipped.
fn first_keyword(statement: &str) -> String {
    statement
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("--"))
        .and_then(|l| l.split(|c: char| !c.is_alphanumeric() && c != '_').next())
        .unwrap_or_default()
        .to_uppercase()
}

/// Splits `sql` (psql-isms already resolved) into statements.
pub fn statements(sql: &str) -> Statements {
    let change = classify(sql);
    let mut rolls_back = false;
    let statements = change
        .statements
        .into_iter()
        .filter(|s| match first_keyword(s).as_str() {
            "BEGIN" | "START" | "COMMIT" | "END" => false,
            "ROLLBACK" | "ABORT" => {
                rolls_back = true;
                false
            }
            "" => false,
            _ => true,
        })
        .collect();
    Statements {
        statements,
        transactional: change.transactional,
        rolls_back,
    }
}

/// Runs statements one by one on `conn`; an error names the script and the
/// statement's first line.
pub fn run(conn: &Connection, file: &str, statements: &[String]) -> Result<(), Error> {
    for (i, statement) in statements.iter().enumerate() {
        conn.execute_script(statement).map_err(|e| match e {
            Error::Datastore(d) => Error::datastore(
                d.code,
                format!(
                    "{file}: statement {} of {} (`{}`): {}",
                    i + 1,
                    statements.len(),
                    statement.lines().next().unwrap_or_default().trim(),
                    d.message
                ),
            ),
            other => other,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_control_is_taken_out() {
        let s = statements(
            "-- Deploy flipr:users\nBEGIN;\nCREATE TABLE t (a int);\nCREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END;\nCOMMIT;\n",
        );
        assert!(s.transactional);
        assert!(!s.rolls_back);
        assert_eq!(s.statements.len(), 2, "{:?}", s.statements);
        let s = statements("BEGIN;\nSELECT 1/count(*) FROM t;\nROLLBACK;\n");
        assert!(s.rolls_back);
        assert_eq!(s.statements.len(), 1);
        let s = statements("CREATE INDEX CONCURRENTLY i ON t (a);\n");
        assert!(!s.transactional);
    }
}
