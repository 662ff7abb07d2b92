//! What a migration script is, before it runs: its statements, whether they
//! can run inside one transaction, and whether undoing them is impossible.
//!
//! A small tokenizer splits the script the way PostgreSQL's own `psql` does:
//! `;` ends a statement except inside comments (`--`, nested `/* */`), string
//! literals (`'…'`, `E'…'`), quoted identifiers (`"…"`), dollar-quoted bodies
//! (`$$…$$`, `$tag$…$tag$`) and SQL-standard routine bodies
//! (`BEGIN ATOMIC … END`). Each statement's unquoted words decide its class.
//!
//! Pure functions: no datastore, so tests (and the host's `sluice plan`) can
//! call them natively.

/// How a migration script must be run and whether it can be undone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Every statement can run inside one transaction. When false, the
    /// script runs statement by statement, each committed on its own, and a
    /// failure part-way leaves the earlier statements applied: the step needs
    /// a `compensate` script, or its rollback restores from the backup.
    pub transactional: bool,
    /// A statement rewrites storage in a way no rollback restores
    /// (`VACUUM FULL`, `CLUSTER`): the operator must acknowledge it with
    /// `irreversible = true`.
    pub irreversible: bool,
    /// The statements, in order, each without its terminating `;`.
    pub statements: Vec<String>,
}

/// Splits and classifies a migration script.
///
/// Statements PostgreSQL refuses inside a transaction block make the script
/// non-transactional: `CREATE INDEX CONCURRENTLY`, `DROP INDEX CONCURRENTLY`,
/// `REINDEX … CONCURRENTLY` (and `REINDEX DATABASE|SYSTEM`), `ALTER TABLE …
/// DETACH PARTITION … CONCURRENTLY`, `VACUUM`, `CLUSTER` without a table,
/// `ALTER SYSTEM`, `CREATE|DROP DATABASE`, `CREATE|DROP TABLESPACE`.
/// `ALTER TYPE … ADD VALUE` is transactional: PostgreSQL 12 and later (the
/// servers sluice supports) accept it in a transaction.
pub fn classify(sql: &str) -> Change {
    let statements = lex(sql);
    Change {
        transactional: !statements.iter().any(|s| needs_autocommit(&s.words)),
        irreversible: statements.iter().any(|s| rewrites_storage(&s.words)),
        statements: statements.into_iter().map(|s| s.text).collect(),
    }
}

/// The first statement of `sql` that controls transactions itself (`BEGIN`,
/// `COMMIT`, `ROLLBACK` without `TO`, `END`, `ABORT`, `START TRANSACTION`,
/// `PREPARE TRANSACTION`), which would break the one transaction a migrate
/// runs in. Savepoints are fine.
pub fn transaction_control(sql: &str) -> Option<String> {
    lex(sql)
        .into_iter()
        .find(|s| {
            let w = |i: usize| s.words.get(i).map(String::as_str);
            match w(0) {
                Some("BEGIN" | "COMMIT" | "END" | "ABORT" | "START") => true,
                Some("ROLLBACK") => w(1) != Some("TO") && w(2) != Some("TO"),
                Some("PREPARE") => w(1) == Some("TRANSACTION"),
                _ => false,
            }
        })
        .map(|s| s.text)
}

/// One statement: its text and its unquoted words, upper-cased. Quoted
/// identifiers appear as a `"` placeholder so they never read as a keyword.
struct Statement {
    text: String,
    words: Vec<String>,
}

fn needs_autocommit(words: &[String]) -> bool {
    let w = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
    let has = |word: &str| words.iter().any(|x| x == word);
    match w(0) {
        "VACUUM" => true,
        "CLUSTER" => words[1..].iter().all(|x| x == "VERBOSE"),
        "CREATE" => {
            let index = if w(1) == "UNIQUE" { 2 } else { 1 };
            (w(index) == "INDEX" && w(index + 1) == "CONCURRENTLY")
                || matches!(w(1), "DATABASE" | "TABLESPACE")
        }
        "DROP" => {
            (w(1) == "INDEX" && w(2) == "CONCURRENTLY") || matches!(w(1), "DATABASE" | "TABLESPACE")
        }
        "REINDEX" => has("CONCURRENTLY") || has("DATABASE") || has("SYSTEM"),
        "ALTER" => w(1) == "SYSTEM" || (w(1) == "TABLE" && has("DETACH") && has("CONCURRENTLY")),
        _ => false,
    }
}

fn rewrites_storage(words: &[String]) -> bool {
    match words.first().map(String::as_str) {
        Some("CLUSTER") => true,
        // `VACUUM FULL`, `VACUUM (FULL)`, `VACUUM (FULL true)`; not `(FULL false)`.
        Some("VACUUM") => words.iter().enumerate().any(|(i, w)| {
            w == "FULL"
                && !matches!(
                    words.get(i + 1).map(String::as_str),
                    Some("FALSE" | "OFF" | "0")
                )
        }),
        _ => false,
    }
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_char(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

/// Splits `sql` into statements. Every delimiter is ASCII, so slicing at
/// their positions always lands on UTF-8 boundaries.
fn lex(sql: &str) -> Vec<Statement> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut start = 0;
    // Depth of `BEGIN ATOMIC … END` (and `CASE … END` inside it) in a
    // routine body, where `;` does not end the statement.
    let mut depth = 0usize;
    let mut i = 0;
    let finish = |out: &mut Vec<Statement>, words: &mut Vec<String>, text: &str| {
        let text = text.trim();
        if !words.is_empty() {
            out.push(Statement {
                text: text.to_string(),
                words: std::mem::take(words),
            });
        }
    };
    while i < b.len() {
        let c = b[i];
        match c {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut nesting = 0usize;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        nesting += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        nesting -= 1;
                        i += 2;
                        if nesting == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                continue;
            }
            b'\'' => {
                // `E'…'` strings take backslash escapes; the `E` was read as a word.
                let escapes = words.last().is_some_and(|w| w == "E")
                    && i > 0
                    && matches!(b[i - 1], b'e' | b'E');
                if escapes {
                    words.pop();
                }
                i += 1;
                while i < b.len() {
                    if escapes && b[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if b[i] == b'\'' {
                        if b.get(i + 1) == Some(&b'\'') {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
            }
            b'"' => {
                i += 1;
                while i < b.len() {
                    if b[i] == b'"' {
                        if b.get(i + 1) == Some(&b'"') {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                words.push("\"".to_string());
            }
            b'$' if i == 0 || !is_ident_char(b[i - 1]) => {
                // `$tag$` with an empty or identifier tag; `$1` is a parameter.
                let mut j = i + 1;
                if j < b.len() && is_ident_start(b[j]) {
                    while j < b.len() && is_ident_char(b[j]) && b[j] != b'$' {
                        j += 1;
                    }
                }
                if b.get(j) == Some(&b'$') {
                    let tag = &sql[i..=j];
                    match sql[j + 1..].find(tag) {
                        Some(end) => i = j + 1 + end + tag.len(),
                        None => i = b.len(),
                    }
                    continue;
                }
            }
            b';' if depth == 0 => {
                finish(&mut out, &mut words, &sql[start..i]);
                start = i + 1;
            }
            c if is_ident_start(c) => {
                let begin = i;
                while i < b.len() && is_ident_char(b[i]) {
                    i += 1;
                }
                let word = sql[begin..i].to_ascii_uppercase();
                let routine = words.first().is_some_and(|w| w == "CREATE")
                    && words.iter().any(|w| w == "FUNCTION" || w == "PROCEDURE");
                match word.as_str() {
                    "BEGIN" if routine => depth += 1,
                    "CASE" if depth > 0 => depth += 1,
                    "END" if depth > 0 => depth -= 1,
                    _ => {}
                }
                words.push(word);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    finish(&mut out, &mut words, &sql[start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statements(sql: &str) -> Vec<String> {
        classify(sql).statements
    }

    #[test]
    fn splits_on_semicolons_outside_quotes_comments_and_bodies() {
        let sql = "CREATE TABLE a (x text DEFAULT 'a;b'); -- c;d\n\
                   /* e; /* nested; */ f; */ INSERT INTO \"we;ird\" VALUES (E'\\';');\n\
                   DO $$ BEGIN PERFORM 1; END $$;\n\
                   CREATE FUNCTION f() RETURNS text AS $body$ SELECT 'x;y'; $body$ LANGUAGE sql;";
        let got = statements(sql);
        assert_eq!(got.len(), 4, "{got:#?}");
        assert_eq!(got[0], "CREATE TABLE a (x text DEFAULT 'a;b')");
        assert!(got[1].ends_with("VALUES (E'\\';')"), "{}", got[1]);
        assert_eq!(got[2], "DO $$ BEGIN PERFORM 1; END $$");
        assert!(got[3].contains("$body$ LANGUAGE sql"));
    }

    #[test]
    fn standard_routine_bodies_are_one_statement() {
        let sql = "CREATE FUNCTION f(x int) RETURNS int LANGUAGE sql BEGIN ATOMIC \
                   SELECT CASE WHEN x > 0 THEN 1 ELSE 0 END; SELECT 2; END; SELECT 3";
        let got = statements(sql);
        assert_eq!(got.len(), 2, "{got:#?}");
        assert_eq!(got[1], "SELECT 3");
    }

    #[test]
    fn empty_statements_and_comment_only_tails_are_dropped() {
        assert_eq!(
            statements(";;  -- nothing\n/* at all */"),
            Vec::<String>::new()
        );
        assert_eq!(statements("SELECT 1;; ;"), ["SELECT 1"]);
        assert_eq!(
            statements("SELECT $1, a$b$ FROM t"),
            ["SELECT $1, a$b$ FROM t"]
        );
    }

    #[test]
    fn transactional_scripts() {
        for sql in [
            "ALTER TABLE t ADD COLUMN c int; UPDATE t SET c = 1",
            "CREATE INDEX t_c ON t (c)",
            "CREATE UNIQUE INDEX t_c ON t (c)",
            "ALTER TYPE mood ADD VALUE 'meh'",
            "REFRESH MATERIALIZED VIEW CONCURRENTLY mv",
            "CLUSTER t USING t_pkey",
            "-- VACUUM\nSELECT 'VACUUM; CREATE INDEX CONCURRENTLY i ON t (c)'",
            "DO $$ BEGIN EXECUTE 'VACUUM'; END $$",
            "CREATE INDEX \"concurrently\" ON t (c)",
        ] {
            assert!(classify(sql).transactional, "{sql}");
        }
    }

    #[test]
    fn scripts_that_cannot_run_in_a_transaction() {
        for sql in [
            "CREATE INDEX CONCURRENTLY t_c ON t (c)",
            "create unique index concurrently if not exists t_c on t (c)",
            "ALTER TABLE t ADD c int; DROP INDEX CONCURRENTLY IF EXISTS t_c",
            "REINDEX INDEX CONCURRENTLY t_c",
            "REINDEX (VERBOSE) TABLE CONCURRENTLY t",
            "REINDEX DATABASE shop",
            "VACUUM ANALYZE t",
            "/* maintenance */ VACUUM",
            "ALTER SYSTEM SET work_mem = '64MB'",
            "CREATE DATABASE other",
            "DROP TABLESPACE ts",
            "ALTER TABLE p DETACH PARTITION p1 CONCURRENTLY",
            "CLUSTER VERBOSE",
        ] {
            assert!(!classify(sql).transactional, "{sql}");
        }
    }

    #[test]
    fn irreversible_scripts() {
        for (sql, irreversible) in [
            ("VACUUM FULL t", true),
            ("VACUUM (FULL, ANALYZE) t", true),
            ("VACUUM (FULL false) t", false),
            ("VACUUM ANALYZE t", false),
            ("CLUSTER t USING t_pkey", true),
            ("SELECT 'VACUUM FULL'", false),
            ("CREATE INDEX CONCURRENTLY i ON t (c)", false),
        ] {
            assert_eq!(classify(sql).irreversible, irreversible, "{sql}");
        }
    }

    #[test]
    fn transaction_control_is_found() {
        assert_eq!(
            transaction_control("CREATE TABLE a (x int); COMMIT; SELECT 1").as_deref(),
            Some("COMMIT")
        );
        assert!(transaction_control("BEGIN; SELECT 1").is_some());
        assert!(transaction_control("start transaction").is_some());
        assert!(transaction_control("PREPARE TRANSACTION 'x'").is_some());
        assert!(transaction_control("SAVEPOINT s; ROLLBACK TO SAVEPOINT s; RELEASE s").is_none());
        assert!(transaction_control("ROLLBACK TO s").is_none());
        assert!(transaction_control("DO $$ BEGIN NULL; END $$").is_none());
        assert!(transaction_control("PREPARE q AS SELECT 1").is_none());
    }
}
