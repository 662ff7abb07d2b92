//! Scripts of sqitch's `sqlite` engine, which feeds them to the `sqlite3`
//! CLI (`sqlite3 -bail -batch … db` reading `.read 'script'`): statements
//! split as sqlite3 splits them (strings, identifiers, comments and
//! `CREATE TRIGGER … BEGIN … END` bodies kept whole), the script's own
//! `BEGIN;`/`COMMIT;` taken out so the change and its registry rows commit
//! in one transaction, and sqlite3 dot-commands resolved: display settings
//! ignored, anything else refused by name (the plugin runs no program).

use sluice_sdk::Error;

/// A script's statements with its transaction control taken out.
#[derive(Debug)]
pub struct Statements {
    /// The statements, in order.
    pub statements: Vec<String>,
    /// The script ended its transaction with `ROLLBACK` (verify scripts do).
    pub rolls_back: bool,
}

/// Dot-commands that only change what sqlite3 prints: nothing to do here.
const IGNORED_DOT_COMMANDS: &[&str] = &[
    ".echo",
    ".headers",
    ".mode",
    ".nullvalue",
    ".print",
    ".separator",
    ".timer",
    ".width",
    ".bail",
    ".changes",
];

/// Splits `sql` (the script's text; `file` names it in errors).
pub fn statements(sql: &str, file: &str) -> Result<Statements, Error> {
    let mut out = Vec::new();
    let mut rolls_back = false;
    for statement in split(sql, file)? {
        let words = keywords(&statement, 2);
        match words.first().map(String::as_str) {
            Some("BEGIN") | Some("COMMIT") => continue,
            Some("END") if words.get(1).is_none_or(|w| w == "TRANSACTION") => continue,
            Some("ROLLBACK") if !statement.to_uppercase().contains(" TO ") => {
                rolls_back = true;
                continue;
            }
            None => continue,
            _ => out.push(statement),
        }
    }
    Ok(Statements {
        statements: out,
        rolls_back,
    })
}

/// The first `n` words of a statement, upper case, comments skipped.
fn keywords(statement: &str, n: usize) -> Vec<String> {
    let mut words = Vec::new();
    for line in statement.lines() {
        let line = line.split("--").next().unwrap_or_default();
        for word in line.split(|c: char| !c.is_alphanumeric() && c != '_') {
            if !word.is_empty() {
                words.push(word.to_uppercase());
                if words.len() == n {
                    return words;
                }
            }
        }
    }
    words
}

/// Splits into statements as sqlite3 does; dot-command lines (a `.` first
/// on a line between statements) are checked and dropped.
fn split(sql: &str, file: &str) -> Result<Vec<String>, Error> {
    let chars: Vec<char> = sql.chars().collect();
    let mut statements = Vec::new();
    let mut current = String::new();
    let mut i = 0;
    let mut line = 1;
    // Depth of BEGIN/CASE … END inside a CREATE TRIGGER statement.
    let mut depth = 0usize;
    let mut word = String::new();
    let mut words_seen: Vec<String> = Vec::new();
    while i < chars.len() {
        let c = chars[i];
        // A dot-command: first on a line, where a statement would start.
        if c == '.' && (i == 0 || chars[i - 1] == '\n') && is_comment(&current) {
            let end = chars[i..]
                .iter()
                .position(|&c| c == '\n')
                .map_or(chars.len(), |p| i + p);
            let command: String = chars[i..end].iter().collect();
            let name = command.split_whitespace().next().unwrap_or_default();
            if !IGNORED_DOT_COMMANDS.contains(&name) {
                return Err(Error::Unsupported(format!(
                    "{file}:{line}: sqlite3 dot-command `{name}` is not supported (only display settings are ignored: {})",
                    IGNORED_DOT_COMMANDS.join(" ")
                )));
            }
            current.clear();
            i = end;
            continue;
        }
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
        } else if !word.is_empty() {
            let w = std::mem::take(&mut word).to_uppercase();
            if words_seen.len() < 4 {
                words_seen.push(w.clone());
            }
            let trigger = words_seen.first().is_some_and(|f| f == "CREATE")
                && words_seen.iter().any(|w| w == "TRIGGER");
            if trigger {
                match w.as_str() {
                    "BEGIN" | "CASE" => depth += 1,
                    "END" => depth = depth.saturating_sub(1),
                    _ => {}
                }
            }
        }
        match c {
            '\'' | '"' | '`' | '[' => {
                let close = if c == '[' { ']' } else { c };
                current.push(c);
                i += 1;
                while i < chars.len() {
                    current.push(chars[i]);
                    if chars[i] == '\n' {
                        line += 1;
                    }
                    if chars[i] == close {
                        // A doubled quote is an escaped one.
                        if close != ']' && chars.get(i + 1) == Some(&close) {
                            current.push(close);
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
                continue;
            }
            '-' if chars.get(i + 1) == Some(&'-') => {
                while i < chars.len() && chars[i] != '\n' {
                    current.push(chars[i]);
                    i += 1;
                }
                continue;
            }
            '/' if chars.get(i + 1) == Some(&'*') => {
                current.push_str("/*");
                i += 2;
                while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                    if chars[i] == '\n' {
                        line += 1;
                    }
                    current.push(chars[i]);
                    i += 1;
                }
                current.push_str("*/");
                i += 2;
                continue;
            }
            ';' if depth == 0 => {
                let s = current.trim().to_string();
                if !s.is_empty() {
                    statements.push(s);
                }
                current.clear();
                words_seen.clear();
                i += 1;
                continue;
            }
            '\n' => line += 1,
            _ => {}
        }
        current.push(c);
        i += 1;
    }
    let rest = current.trim();
    // A trailing comment is not a statement.
    if !rest.is_empty() && !keywords(rest, 1).is_empty() && !is_comment(rest) {
        statements.push(rest.to_string());
    }
    Ok(statements)
}

fn is_comment(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with("--"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_control_is_taken_out_and_triggers_kept_whole() {
        let s = statements(
            "-- Deploy flipr:users\n.mode csv\nBEGIN;\nCREATE TABLE t (a TEXT DEFAULT 'x;y');\nCREATE TRIGGER tr AFTER INSERT ON t BEGIN\n  UPDATE t SET a = CASE WHEN a = ';' THEN 'b' END;\n  SELECT 1;\nEND;\nCOMMIT;\n-- done\n",
            "deploy/users.sql",
        )
        .unwrap();
        assert!(!s.rolls_back);
        assert_eq!(s.statements.len(), 2, "{:?}", s.statements);
        assert!(s.statements[1].ends_with("END"), "{:?}", s.statements[1]);
        let s = statements(
            "BEGIN;\nSELECT a FROM t WHERE 0;\nROLLBACK;\n",
            "verify/users.sql",
        )
        .unwrap();
        assert!(s.rolls_back);
        assert_eq!(s.statements, ["SELECT a FROM t WHERE 0"]);
        let e = statements("BEGIN;\n.shell rm -rf /\nCOMMIT;", "deploy/x.sql").unwrap_err();
        assert!(
            format!("{e:?}").contains("deploy/x.sql:2") && format!("{e:?}").contains(".shell"),
            "{e:?}"
        );
    }
}
