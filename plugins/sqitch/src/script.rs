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
            // `ROLLBACK TO [SAVEPOINT] x` stays inside the transaction.
            "ROLLBACK" if rolls_back_to_savepoint(s) => true,
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

/// Whether a `ROLLBACK …` statement is `ROLLBACK [WORK|TRANSACTION] TO …`.
fn rolls_back_to_savepoint(statement: &str) -> bool {
    statement
        .split_whitespace()
        .take(3)
        .any(|w| w.eq_ignore_ascii_case("TO"))
}

/// Runs statements one by one on `conn`; an error names the script and the
/// statement's first line. A statement psql's `\gexec` ended
/// ([`crate::psql::GEXEC_MARKER`]) is a query whose result's fields are run
/// in turn, row by row, each as a statement (a NULL field is skipped, as
/// psql does).
pub fn run(conn: &Connection, file: &str, statements: &[String]) -> Result<(), Error> {
    for (i, statement) in statements.iter().enumerate() {
        let gexec = statement
            .trim_end()
            .strip_suffix(crate::psql::GEXEC_MARKER)
            .map(str::trim_end);
        let result = match gexec {
            Some(query) => gexec_run(conn, query),
            None => conn.execute_script(statement),
        };
        result.map_err(|e| match e {
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

/// psql's `\gexec`: runs `query`, then each non-NULL field of each row.
fn gexec_run(conn: &Connection, query: &str) -> Result<(), Error> {
    let rows = conn.query(query, &[])?.values()?;
    for row in rows {
        for field in row {
            match field {
                sluice_sdk::sql::Value::Null => {}
                sluice_sdk::sql::Value::Text(sql) => conn.execute_script(&sql)?,
                other => {
                    return Err(Error::PreconditionFailed(format!(
                        "\\gexec: the query returned {other:?}, not the text of a statement"
                    )))
                }
            }
        }
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
        // A savepoint's rollback stays: it does not end the transaction.
        let s = statements(
            "BEGIN;\nSAVEPOINT a;\nSELECT 1;\nROLLBACK TO SAVEPOINT a;\nrollback work to a;\nRELEASE a;\nROLLBACK;\n",
        );
        assert!(s.rolls_back);
        assert_eq!(s.statements.len(), 5, "{:?}", s.statements);
    }
}
