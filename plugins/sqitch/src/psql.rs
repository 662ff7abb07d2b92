//! What `psql` does to a script before PostgreSQL sees it, as sqitch's
//! PostgreSQL engine runs every deploy, revert and verify script through
//! `psql -f`: `\set` variables and their interpolation (`:var`, `:'var'` as
//! a quoted literal, `:"var"` as a quoted identifier), `\i`/`\ir` includes
//! and the harmless output commands. The result is plain SQL.
//!
//! Three rules keep it sandboxed and predictable:
//! - a shell backtick (`\set x \`cat /run/secrets/…\``) is never executed:
//!   the variable must already be supplied (the step's params, or a granted
//!   value), else the script fails naming the file and line;
//! - includes resolve inside the project directory only: an absolute path
//!   or one whose `..` leaves the project is refused with its file and line;
//! - any other meta-command is refused by name, rather than ignored.
//!
//! Like psql, nothing is interpolated inside string literals, quoted
//! identifiers, comments or dollar-quoted bodies, `::` is a cast, and an
//! unset `:name` is left as written.

use std::collections::{BTreeMap, BTreeSet};

/// Deepest include nesting: an include cycle fails instead of recursing.
pub const MAX_INCLUDE_DEPTH: usize = 16;

/// What `\gexec` leaves in the expanded SQL: it ends the query in the
/// buffer, marked so the script runner ([`crate::script::run`]) runs each
/// field of each result row as a statement (every one through the host's
/// checks, like any other statement of the step).
pub const GEXEC_MARKER: &str = "/* sluice: \\gexec */";

/// A script psql would not run here, with where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct ScriptError {
    /// The script, relative to the project directory.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Reads a project file by its path relative to the project directory.
pub type ReadFile<'a> = &'a dyn Fn(&str) -> Result<String, String>;

/// psql's variables while a script is expanded.
pub struct Expander<'a> {
    vars: BTreeMap<String, String>,
    supplied: BTreeSet<String>,
    read: ReadFile<'a>,
}

impl<'a> Expander<'a> {
    /// An expander whose variables start as `supplied` (from the plan: they
    /// also answer backtick `\set`s) on top of `defaults` (sqitch.conf).
    pub fn new(
        defaults: BTreeMap<String, String>,
        supplied: BTreeMap<String, String>,
        read: ReadFile<'a>,
    ) -> Self {
        let names = supplied.keys().cloned().collect();
        let mut vars = defaults;
        vars.extend(supplied);
        Expander {
            vars,
            supplied: names,
            read,
        }
    }

    /// The SQL of the script at `path` (relative to the project), every
    /// psql-ism resolved.
    pub fn expand(&mut self, path: &str) -> Result<String, ScriptError> {
        self.expand_at(path, 0, None)
    }

    fn expand_at(
        &mut self,
        path: &str,
        depth: usize,
        from: Option<(&str, usize)>,
    ) -> Result<String, ScriptError> {
        let text = (self.read)(path).map_err(|e| match from {
            Some((file, line)) => ScriptError {
                file: file.to_string(),
                line,
                message: format!("cannot include `{path}`: {e}"),
            },
            None => ScriptError {
                file: path.to_string(),
                line: 0,
                message: format!("cannot read the script: {e}"),
            },
        })?;
        let chars: Vec<char> = text.chars().collect();
        let err = |line: usize, message: String| ScriptError {
            file: path.to_string(),
            line,
            message,
        };
        let mut out = String::with_capacity(text.len());
        let mut state = Lex::Normal;
        let mut line = 1;
        let mut line_start = true;
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let next = chars.get(i + 1).copied();
            if line_start && state == Lex::Normal {
                let mut j = i;
                while j < chars.len() && (chars[j] == ' ' || chars[j] == '\t') {
                    j += 1;
                }
                if chars.get(j) == Some(&'\\') {
                    let end = chars[j..]
                        .iter()
                        .position(|&c| c == '\n')
                        .map_or(chars.len(), |p| j + p);
                    let command: String = chars[j + 1..end].iter().collect();
                    let sql = self.meta(&command, path, line, depth)?;
                    out.push_str(&sql);
                    i = end;
                    line_start = false;
                    continue;
                }
            }
            line_start = false;
            match &state {
                Lex::Normal => match c {
                    '\'' => {
                        let escapes = i > 0
                            && matches!(chars[i - 1], 'E' | 'e')
                            && !(i > 1 && is_ident(chars[i - 2]));
                        state = Lex::Single { escapes };
                        out.push(c);
                    }
                    '"' => {
                        state = Lex::Double;
                        out.push(c);
                    }
                    '-' if next == Some('-') => {
                        state = Lex::LineComment;
                        out.push_str("--");
                        i += 2;
                        continue;
                    }
                    '/' if next == Some('*') => {
                        state = Lex::Block(1);
                        out.push_str("/*");
                        i += 2;
                        continue;
                    }
                    '$' if i == 0 || !is_ident(chars[i - 1]) => {
                        if let Some(tag) = dollar_tag(&chars[i..]) {
                            out.push_str(&tag);
                            i += tag.chars().count();
                            state = Lex::Dollar(tag);
                            continue;
                        }
                        out.push(c);
                    }
                    ':' => {
                        let (text, used) =
                            self.interpolate(&chars[i..]).map_err(|m| err(line, m))?;
                        out.push_str(&text);
                        i += used;
                        continue;
                    }
                    // As in psql, a backslash outside quotes and comments
                    // starts a meta-command wherever it is on the line
                    // (`SELECT … \gexec`); it runs to the end of the line.
                    '\\' => {
                        let end = chars[i..]
                            .iter()
                            .position(|&c| c == '\n')
                            .map_or(chars.len(), |p| i + p);
                        let command: String = chars[i + 1..end].iter().collect();
                        let sql = self.meta(&command, path, line, depth)?;
                        out.push_str(&sql);
                        i = end;
                        continue;
                    }
                    _ => out.push(c),
                },
                Lex::Single { escapes } => {
                    out.push(c);
                    if *escapes && c == '\\' {
                        if let Some(n) = next {
                            out.push(n);
                            line += usize::from(n == '\n');
                            i += 2;
                            continue;
                        }
                    } else if c == '\'' {
                        if next == Some('\'') {
                            out.push('\'');
                            i += 2;
                            continue;
                        }
                        state = Lex::Normal;
                    }
                }
                Lex::Double => {
                    out.push(c);
                    if c == '"' {
                        state = Lex::Normal;
                    }
                }
                Lex::LineComment => {
                    out.push(c);
                    if c == '\n' {
                        state = Lex::Normal;
                    }
                }
                Lex::Block(depth) => {
                    let depth = *depth;
                    if c == '/' && next == Some('*') {
                        out.push_str("/*");
                        state = Lex::Block(depth + 1);
                        i += 2;
                        continue;
                    }
                    if c == '*' && next == Some('/') {
                        out.push_str("*/");
                        state = if depth == 1 {
                            Lex::Normal
                        } else {
                            Lex::Block(depth - 1)
                        };
                        i += 2;
                        continue;
                    }
                    out.push(c);
                }
                Lex::Dollar(tag) => {
                    let tag_chars: Vec<char> = tag.chars().collect();
                    if chars[i..].starts_with(&tag_chars) {
                        out.push_str(tag);
                        i += tag_chars.len();
                        state = Lex::Normal;
                        continue;
                    }
                    out.push(c);
                }
            }
            if c == '\n' {
                line += 1;
                line_start = true;
            }
            i += 1;
        }
        Ok(out)
    }

    /// `:name`, `:'name'`, `:"name"` or `::` at the start of `rest`: the
    /// text to emit and how many chars it used.
    fn interpolate(&self, rest: &[char]) -> Result<(String, usize), String> {
        match rest.get(1) {
            Some(':') => Ok(("::".into(), 2)),
            Some(&q @ ('\'' | '"')) => {
                let name_len = rest[2..].iter().take_while(|c| is_ident(**c)).count();
                if name_len == 0 || rest.get(2 + name_len) != Some(&q) {
                    return Ok((":".into(), 1));
                }
                let name: String = rest[2..2 + name_len].iter().collect();
                let value = self.vars.get(&name).ok_or_else(|| {
                    format!(
                        "psql variable `{name}` is not set (`:{q}{name}{q}`): set it with `\\set` or supply it in the step's params (`variables = {{ {name} = \"…\" }}`)"
                    )
                })?;
                let quoted = if q == '\'' {
                    quote_literal(value)
                } else {
                    format!("\"{}\"", value.replace('"', "\"\""))
                };
                Ok((quoted, name_len + 3))
            }
            _ => {
                let name: String = rest[1..].iter().take_while(|c| is_ident(**c)).collect();
                match self.vars.get(&name) {
                    Some(value) if !name.is_empty() => {
                        Ok((value.clone(), 1 + name.chars().count()))
                    }
                    _ => Ok((":".into(), 1)),
                }
            }
        }
    }

    /// Runs one meta-command line (without its `\`); returns the SQL it
    /// contributes (an included file's).
    fn meta(
        &mut self,
        command: &str,
        file: &str,
        line: usize,
        depth: usize,
    ) -> Result<String, ScriptError> {
        let err = |message: String| ScriptError {
            file: file.to_string(),
            line,
            message,
        };
        let (name, rest) = match command.find(char::is_whitespace) {
            Some(p) => (&command[..p], command[p..].trim()),
            None => (command.trim(), ""),
        };
        let args = self.arguments(rest).map_err(&err)?;
        match name {
            "set" => {
                let Some((var, values)) = args.split_first() else {
                    return Ok(String::new());
                };
                let Arg::Text(var) = var else {
                    return Err(err("`\\set`: the variable name cannot be a backtick command".into()));
                };
                if values.iter().any(|a| matches!(a, Arg::Backtick(_))) {
                    if self.supplied.contains(var) {
                        return Ok(String::new());
                    }
                    let command = values
                        .iter()
                        .find_map(|a| match a {
                            Arg::Backtick(c) => Some(c.as_str()),
                            Arg::Text(_) => None,
                        })
                        .unwrap_or_default();
                    return Err(err(format!(
                        "`\\set {var} `{command}``: sluice never runs shell commands; supply `{var}` in the step's params (`variables = {{ {var} = \"…\" }}`, or from a granted file: `variable_files = {{ {var} = \"<grant>/<file>\" }}`)"
                    )));
                }
                let value: String = values
                    .iter()
                    .map(|a| match a {
                        Arg::Text(t) => t.as_str(),
                        Arg::Backtick(_) => "",
                    })
                    .collect();
                self.vars.insert(var.clone(), value);
                Ok(String::new())
            }
            "unset" => {
                if let Some(Arg::Text(var)) = args.first() {
                    self.vars.remove(var);
                }
                Ok(String::new())
            }
            "i" | "include" | "ir" | "include_relative" => {
                let Some(Arg::Text(target)) = args.first() else {
                    return Err(err(format!("`\\{name}` needs a file name")));
                };
                let base = if name.starts_with("ir") || name == "include_relative" {
                    file.rsplit_once('/').map_or("", |(dir, _)| dir)
                } else {
                    ""
                };
                let resolved = resolve(base, target).ok_or_else(|| {
                    err(format!(
                        "`\\{name} {target}` leaves the project directory: only files inside the granted project can be included"
                    ))
                })?;
                if depth + 1 > MAX_INCLUDE_DEPTH {
                    return Err(err(format!(
                        "`\\{name} {target}`: includes nested deeper than {MAX_INCLUDE_DEPTH} (a cycle?)"
                    )));
                }
                let mut sql = self.expand_at(&resolved, depth + 1, Some((file, line)))?;
                sql.push('\n');
                Ok(sql)
            }
            // Ends the query buffer: the query runs, then each field of
            // its result as a statement.
            "gexec" if args.is_empty() => Ok(format!(" {GEXEC_MARKER};\n")),
            // Sends the query buffer, as `;` does.
            "g" if args.is_empty() => Ok(";\n".to_string()),
            // Output and display settings change nothing in the database.
            "echo" | "qecho" | "warn" | "pset" | "timing" | "encoding" | "t" | "a" | "x" => {
                Ok(String::new())
            }
            other => Err(err(format!(
                "psql meta-command `\\{other}` is not supported (supported: \\set, \\unset, \\i, \\ir, \\gexec, \\g, \\echo)"
            ))),
        }
    }

    /// Splits a meta-command's arguments as psql does: whitespace between
    /// arguments, `'…'` quoting (`''` and backslash escapes), backticks,
    /// variable interpolation.
    fn arguments(&self, text: &str) -> Result<Vec<Arg>, String> {
        let chars: Vec<char> = text.chars().collect();
        let mut args = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            while i < chars.len() && chars[i].is_whitespace() {
                i += 1;
            }
            if i >= chars.len() {
                break;
            }
            let mut word = String::new();
            let mut backtick = None;
            while i < chars.len() && !chars[i].is_whitespace() {
                match chars[i] {
                    '\'' => {
                        i += 1;
                        loop {
                            match chars.get(i) {
                                None => return Err("unterminated quoted argument".into()),
                                Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                                    word.push('\'');
                                    i += 2;
                                }
                                Some('\'') => {
                                    i += 1;
                                    break;
                                }
                                Some('\\') => {
                                    word.push(match chars.get(i + 1) {
                                        Some('n') => '\n',
                                        Some('t') => '\t',
                                        Some(&c) => c,
                                        None => '\\',
                                    });
                                    i += 2;
                                }
                                Some(&c) => {
                                    word.push(c);
                                    i += 1;
                                }
                            }
                        }
                    }
                    '`' => {
                        let end = chars[i + 1..]
                            .iter()
                            .position(|&c| c == '`')
                            .ok_or("unterminated backtick")?;
                        backtick = Some(chars[i + 1..i + 1 + end].iter().collect::<String>());
                        i += end + 2;
                    }
                    ':' => {
                        let (text, used) = self.interpolate(&chars[i..])?;
                        word.push_str(&text);
                        i += used;
                    }
                    c => {
                        word.push(c);
                        i += 1;
                    }
                }
            }
            args.push(match backtick {
                Some(command) => Arg::Backtick(command),
                None => Arg::Text(word),
            });
        }
        Ok(args)
    }
}

enum Arg {
    Text(String),
    Backtick(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Lex {
    Normal,
    Single { escapes: bool },
    Double,
    LineComment,
    Block(usize),
    Dollar(String),
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `$tag$` or `$$` at the start of `rest`.
fn dollar_tag(rest: &[char]) -> Option<String> {
    let len = rest[1..].iter().take_while(|c| is_ident(**c)).count();
    if rest.get(1 + len) != Some(&'$') || rest.get(1).is_some_and(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(rest[..len + 2].iter().collect())
}

/// An SQL string literal (standard conforming strings: only `'` doubled).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// `target` relative to `base` (both inside the project), normalised;
/// `None` when it is absolute or leaves the project.
pub fn resolve(base: &str, target: &str) -> Option<String> {
    if target.starts_with('/') || target.contains('\\') {
        return None;
    }
    let mut parts: Vec<&str> = base
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_with(
        files: &[(&str, &str)],
        supplied: &[(&str, &str)],
        path: &str,
    ) -> Result<String, ScriptError> {
        let files: BTreeMap<String, String> = files
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let read = move |p: &str| {
            files
                .get(p)
                .cloned()
                .ok_or_else(|| "no such file".to_string())
        };
        let supplied = supplied
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut defaults = BTreeMap::new();
        defaults.insert("registry".to_string(), "sqitch".to_string());
        Expander::new(defaults, supplied, &read).expand(path)
    }

    #[test]
    fn set_and_interpolate_as_psql_does() {
        let sql = expand_with(
            &[(
                "deploy/a.sql",
                "\\set schema flipr\n\\set owner 'it''s' _x\nCREATE SCHEMA :\"schema\";\nCOMMENT ON SCHEMA :schema IS :'owner';\nSELECT 1::int, ':schema', \":schema\", $$ :schema $$, $f$:schema$f$; -- :schema\n/* :schema /* nested */ :schema */ SELECT :'registry', :undefined;\n",
            )],
            &[],
            "deploy/a.sql",
        )
        .unwrap();
        assert_eq!(
            sql,
            "\n\nCREATE SCHEMA \"flipr\";\nCOMMENT ON SCHEMA flipr IS 'it''s_x';\nSELECT 1::int, ':schema', \":schema\", $$ :schema $$, $f$:schema$f$; -- :schema\n/* :schema /* nested */ :schema */ SELECT 'sqitch', :undefined;\n"
        );
    }

    #[test]
    fn escape_strings_and_quoted_identifiers_need_quoting() {
        let sql = expand_with(
            &[("a.sql", "\\set v 'a\"b'\nSELECT E'\\':v', :\"v\";\n")],
            &[],
            "a.sql",
        )
        .unwrap();
        assert_eq!(sql, "\nSELECT E'\\':v', \"a\"\"b\";\n");
    }

    #[test]
    fn an_unset_quoted_variable_names_file_and_line() {
        let e =
            expand_with(&[("a.sql", "SELECT 1;\nSELECT :'nope';\n")], &[], "a.sql").unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("a.sql", 2));
        assert!(e.message.contains("`nope` is not set"), "{e}");
    }

    #[test]
    fn backticks_are_never_run_but_can_be_supplied() {
        let script = "SELECT 1;\n\\set secret `cat /run/secrets/pw`\nSELECT :'secret';\n";
        let e = expand_with(&[("deploy/s.sql", script)], &[], "deploy/s.sql").unwrap_err();
        assert_eq!(e.to_string().split(": ").next(), Some("deploy/s.sql:2"));
        assert!(e.message.contains("never runs shell commands"), "{e}");
        assert!(e.message.contains("cat /run/secrets/pw"), "{e}");
        let sql = expand_with(
            &[("deploy/s.sql", script)],
            &[("secret", "pa'ss")],
            "deploy/s.sql",
        )
        .unwrap();
        assert_eq!(sql, "SELECT 1;\n\nSELECT 'pa''ss';\n");
    }

    #[test]
    fn includes_resolve_inside_the_project_only() {
        let files = [
            (
                "deploy/a.sql",
                "\\ir ../lib/common.sql\n\\i lib/common.sql\nSELECT :n;\n",
            ),
            ("lib/common.sql", "\\set n 7\nSELECT 'common';"),
            ("deploy/bad.sql", "SELECT 1;\n  \\ir ../../etc/passwd\n"),
            ("deploy/abs.sql", "\\i /etc/passwd\n"),
            ("deploy/loop.sql", "\\ir loop.sql\n"),
        ];
        let sql = expand_with(&files, &[], "deploy/a.sql").unwrap();
        // Each meta-command line keeps its line break; an include adds one.
        assert_eq!(
            sql,
            "\nSELECT 'common';\n\n\nSELECT 'common';\n\nSELECT 7;\n"
        );
        let e = expand_with(&files, &[], "deploy/bad.sql").unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("deploy/bad.sql", 2));
        assert!(e.message.contains("leaves the project directory"), "{e}");
        let e = expand_with(&files, &[], "deploy/abs.sql").unwrap_err();
        assert!(e.message.contains("leaves the project directory"), "{e}");
        let e = expand_with(&files, &[], "deploy/loop.sql").unwrap_err();
        assert!(e.message.contains("nested deeper"), "{e}");
        let e = expand_with(&[("a.sql", "\\ir missing.sql\n")], &[], "a.sql").unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("a.sql", 1));
        assert!(e.message.contains("cannot include `missing.sql`"), "{e}");
    }

    #[test]
    fn other_meta_commands_are_refused_by_name() {
        let e = expand_with(&[("a.sql", "\\echo hi\n\\! rm -rf /\n")], &[], "a.sql").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("`\\!` is not supported"), "{e}");
    }

    #[test]
    fn gexec_ends_its_query_with_the_marker_wherever_it_is() {
        let sql = expand_with(
            &[(
                "a.sql",
                "SELECT format('CREATE DATABASE %I', :'db') WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db')\\gexec\nSELECT 'x\\gexec' AS literal\n\\gexec\nSELECT 1\n",
            )],
            &[("db", "shop")],
            "a.sql",
        )
        .unwrap();
        assert_eq!(
            sql,
            format!(
                "SELECT format('CREATE DATABASE %I', 'shop') WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'shop') {GEXEC_MARKER};\n\nSELECT 'x\\gexec' AS literal\n {GEXEC_MARKER};\n\nSELECT 1\n"
            )
        );
    }

    #[test]
    fn a_meta_command_after_sql_on_a_line_is_refused_by_name() {
        for (script, name) in [
            ("SELECT 1 \\gset\n", "\\gset"),
            ("SELECT 1; \\! id\n", "\\!"),
            ("SELECT 1 \\q\n", "\\q"),
            ("SELECT 1 \\gexec extra\n", "\\gexec"),
        ] {
            let e = expand_with(&[("a.sql", script)], &[], "a.sql").unwrap_err();
            assert!(
                e.message.contains(&format!("`{name}` is not supported")),
                "{script}: {e}"
            );
        }
        // Not a meta-command: inside literals, identifiers, comments, E'' escapes.
        let sql = "SELECT E'a\\nb', '\\q', \"x\\y\" -- \\q\n/* \\q */ SELECT $$\\q$$;\n";
        assert_eq!(expand_with(&[("a.sql", sql)], &[], "a.sql").unwrap(), sql);
    }

    #[test]
    fn resolve_normalises() {
        assert_eq!(resolve("deploy", "../x.sql").as_deref(), Some("x.sql"));
        assert_eq!(resolve("", "./a/./b.sql").as_deref(), Some("a/b.sql"));
        assert_eq!(resolve("", "../x.sql"), None);
        assert_eq!(resolve("a", "/x.sql"), None);
    }
}
