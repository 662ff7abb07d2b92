//! Helpers for [`Preview`](crate::Preview): turning a migration script into
//! the one-line summary an operator reads in `sluice plan`.
//!
//! Pure text functions: `preview` runs without any datastore.

/// Characters of one statement kept in a summary; longer ones end in `…`.
pub const STATEMENT_CHARS: usize = 72;
/// Statements named in a summary; the rest are counted.
pub const SUMMARY_STATEMENTS: usize = 4;

/// Splits a SQL script into statements at `;`, skipping `--` and `/* */`
/// comments and never splitting inside `'…'` or `"…"`. Each statement comes
/// back on one line, comments removed and whitespace collapsed. Meant for
/// summaries: bodies that contain `;` outside quotes (SQLite triggers,
/// PostgreSQL dollar quotes) need the datastore's own splitter.
pub fn statements(script: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = script.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '-' if chars.peek() == Some(&'-') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
                current.push(' ');
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
                current.push(' ');
            }
            '\'' | '"' => {
                current.push(c);
                for q in chars.by_ref() {
                    current.push(q);
                    if q == c {
                        break;
                    }
                }
            }
            ';' => push_statement(&mut out, &mut current),
            c => current.push(c),
        }
    }
    push_statement(&mut out, &mut current);
    out
}

fn push_statement(out: &mut Vec<String>, current: &mut String) {
    let line = current.split_whitespace().collect::<Vec<_>>().join(" ");
    if !line.is_empty() {
        out.push(line);
    }
    current.clear();
}

/// `text` cut to `max` characters, ending in `…` when cut.
pub fn abbreviate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Statements as a summary: the first [`SUMMARY_STATEMENTS`], each cut to
/// [`STATEMENT_CHARS`], then how many more there are.
pub fn statement_list(statements: &[String]) -> String {
    let mut parts: Vec<String> = statements
        .iter()
        .take(SUMMARY_STATEMENTS)
        .map(|s| abbreviate(s, STATEMENT_CHARS))
        .collect();
    if statements.len() > SUMMARY_STATEMENTS {
        parts.push(format!(
            "and {} more",
            statements.len() - SUMMARY_STATEMENTS
        ));
    }
    parts.join("; ")
}

/// `1 statement`, `3 tables`: a count with its noun, in the plural (`s`
/// added) unless it is one.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_split_into_one_line_statements() {
        let script = "-- the table\nCREATE TABLE a (\n  x TEXT DEFAULT ';'\n);\n/* ; */ INSERT INTO \"a;b\" VALUES ('it''s');\n\n";
        assert_eq!(
            statements(script),
            [
                "CREATE TABLE a ( x TEXT DEFAULT ';' )",
                "INSERT INTO \"a;b\" VALUES ('it''s')"
            ]
        );
        assert!(statements("-- only a comment\n ; ;").is_empty());
    }

    #[test]
    fn summaries_are_bounded() {
        assert_eq!(abbreviate("abcdef", 4), "abc…");
        assert_eq!(abbreviate("abc", 4), "abc");
        let many: Vec<String> = (0..6).map(|i| format!("SELECT {i}")).collect();
        assert_eq!(
            statement_list(&many),
            "SELECT 0; SELECT 1; SELECT 2; SELECT 3; and 2 more"
        );
        assert_eq!(count(1, "table"), "1 table");
        assert_eq!(count(3, "table"), "3 tables");
    }
}
