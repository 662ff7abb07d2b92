//! The trigger functions whose effects the scope analysis can bound: a
//! PL/pgSQL body made only of assignments to `NEW`'s fields, `PERFORM` of
//! an expression and `RETURN NEW | OLD | NULL` — the `updated_at` and
//! `pg_notify` triggers nearly every real schema has. Such a function
//! writes nothing but the row being written (already in the backup's
//! scope); the expressions it evaluates are analysed like a script's
//! (every function they call must be a `pg_catalog` one, checked in the
//! catalog with the rest). Anything else — `IF`, `DECLARE`, SQL
//! statements, `EXECUTE`, a nested block — is not read, and a trigger
//! calling it keeps the backup at every table.

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer, Whitespace};

use crate::touched::Analysis;

/// What evaluating the body's expressions reads and calls, when the body is
/// one of the understood shapes; `None` otherwise.
pub fn analyse(body: &str) -> Option<Analysis> {
    let statements = split(body)?;
    let (first, rest) = statements.split_first()?;
    // `BEGIN` opens the block and glues to its first statement.
    let first = strip_word(first, "BEGIN")?;
    let (last, middle) = rest.split_last()?;
    if !is_end(last) {
        return None;
    }
    let mut analysis = Analysis::default();
    for statement in std::iter::once(first).chain(middle.iter().map(String::as_str)) {
        let statement = statement.trim();
        if statement.is_empty() {
            continue;
        }
        if let Some(what) = strip_word(statement, "RETURN") {
            if !["NEW", "OLD", "NULL"]
                .iter()
                .any(|w| what.trim().eq_ignore_ascii_case(w))
            {
                return None;
            }
            continue;
        }
        let expression = match strip_word(statement, "PERFORM") {
            Some(expression) => expression,
            None => assignment_to_new(statement)?,
        };
        let parsed =
            Parser::parse_sql(&PostgreSqlDialect {}, &format!("SELECT {expression}")).ok()?;
        let [query @ sqlparser::ast::Statement::Query(_)] = parsed.as_slice() else {
            return None;
        };
        analysis.expression(query).ok()?;
    }
    Some(analysis)
}

/// `NEW.field := expr` or `NEW.field = expr`: the expression.
fn assignment_to_new(statement: &str) -> Option<&str> {
    let rest = statement
        .get(..4)
        .filter(|p| p.eq_ignore_ascii_case("NEW."))
        .map(|_| &statement[4..])?;
    let field_end = if let Some(quoted) = rest.strip_prefix('"') {
        1 + quoted.find('"')? + 1
    } else {
        rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?
    };
    if field_end == 0 {
        return None;
    }
    let after = rest[field_end..].trim_start();
    after
        .strip_prefix(":=")
        .or_else(|| after.strip_prefix('='))
        .map(str::trim)
        .filter(|e| !e.is_empty())
}

/// `text` without its leading keyword `word` (case-insensitive, followed by
/// whitespace or the end).
fn strip_word<'t>(text: &'t str, word: &str) -> Option<&'t str> {
    let text = text.trim_start();
    let head = text.get(..word.len())?;
    let rest = &text[word.len()..];
    (head.eq_ignore_ascii_case(word) && (rest.is_empty() || rest.starts_with(char::is_whitespace)))
        .then_some(rest)
}

/// `END` or `END label`, the block's end.
fn is_end(statement: &str) -> bool {
    strip_word(statement, "END").is_some_and(|label| {
        let label = label.trim();
        label.is_empty() || label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// The body's statements, split at `;` by `sqlparser`'s tokenizer (string
/// literals, quoted names and dollar quotes stay whole), comments made
/// spaces. `None` when the tokenizer refuses the text (a quote or comment
/// left open).
fn split(body: &str) -> Option<Vec<String>> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, body)
        .tokenize()
        .ok()?;
    let mut statements = vec![String::new()];
    for token in tokens {
        let current = statements.last_mut().expect("one is open");
        match token {
            Token::SemiColon => statements.push(String::new()),
            Token::Whitespace(
                Whitespace::SingleLineComment { .. } | Whitespace::MultiLineComment(_),
            ) => current.push(' '),
            other => current.push_str(&other.to_string()),
        }
    }
    if statements.last().is_some_and(|s| s.trim().is_empty()) {
        statements.pop();
    }
    Some(statements)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updated_at_and_notify_triggers_are_read() {
        let a = analyse(
            "\nBEGIN\n    NEW.updated_at = now(); -- keep it fresh\n    RETURN NEW;\nEND;\n",
        )
        .unwrap();
        assert_eq!(a.functions, ["now".to_string()].into());
        let a = analyse(
            "BEGIN\n PERFORM pg_notify('jobs_insert', json_build_object('queue', NEW.queue, 'id', NEW.id)::text);\n RETURN NULL;\nEND;",
        )
        .unwrap();
        assert!(a.functions.contains("pg_notify"), "{a:?}");
        let a = analyse("begin new.\"Seen At\" := clock_timestamp(); return new; end").unwrap();
        assert_eq!(a.functions, ["clock_timestamp".to_string()].into());
        // A subquery reads a table: recorded for the catalog check.
        let a = analyse("BEGIN NEW.n := (SELECT count(*) FROM items); RETURN NEW; END").unwrap();
        assert!(a.read.contains("items"), "{a:?}");
        // User functions are recorded, and refused later by the catalog check.
        let a = analyse("BEGIN NEW.x := audit(NEW.id); RETURN NEW; END").unwrap();
        assert!(a.functions.contains("audit"), "{a:?}");
    }

    #[test]
    fn anything_else_is_not_read() {
        for body in [
            "BEGIN INSERT INTO audit VALUES (NEW.id); RETURN NEW; END",
            "BEGIN UPDATE totals SET n = n + 1; RETURN NULL; END",
            "BEGIN IF NEW.a IS NULL THEN NEW.a := 1; END IF; RETURN NEW; END",
            "DECLARE n int; BEGIN NEW.a := 1; RETURN NEW; END",
            "BEGIN EXECUTE 'DELETE FROM t'; RETURN NULL; END",
            "BEGIN NEW.a := 1; RETURN NEW; END; SELECT 1",
            "BEGIN RETURN NEW",
            "BEGIN NEW.a := 1 /* open comment; RETURN NEW; END",
            "BEGIN NEW.a := 'open; RETURN NEW; END",
            "BEGIN OLD.a := 1; RETURN OLD; END",
            "BEGIN RETURN QUERY SELECT 1; END",
            "BEGIN PERFORM 1; BEGIN NEW.a := 2; END; RETURN NEW; END",
        ] {
            assert!(analyse(body).is_none(), "{body}");
        }
        // A data-modifying CTE cannot hide in an expression.
        assert!(analyse(
            "BEGIN PERFORM (WITH d AS (DELETE FROM t RETURNING 1) SELECT 1); RETURN NULL; END"
        )
        .is_none());
    }
}
