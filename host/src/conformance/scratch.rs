//! Scratch targets for the conformance checks: what the author points at
//! (`sqlite`, `sqlite:<path>`, a PostgreSQL or Redis URL), its fixture
//! data, and a fresh state of it for each check sequence.
//!
//! SQLite: one prepared file (empty or a `VACUUM INTO` copy of the given
//! file, fixture applied), copied afresh for every sequence; the original is
//! never written. PostgreSQL/Redis: the database the URL names is the
//! scratch; with a fixture it is emptied and the fixture loaded again before
//! every sequence, without one the sequences rely on the plugin's rollback
//! to leave it as found.

use std::path::{Path, PathBuf};

use crate::datastores::Endpoint;
use crate::plan::TargetKind;
use crate::rehearse::copies;
use crate::secret::Secret;

/// Where the checks run, as the author gave it.
#[derive(Debug, Clone)]
pub enum TargetSpec {
    /// A fresh SQLite file made in a temporary directory.
    SqliteScratch,
    /// A copy of this SQLite file (the file itself is never written).
    SqliteCopy(PathBuf),
    /// A scratch PostgreSQL database (it will be changed).
    Postgres(Secret),
    /// A scratch Redis database (it will be changed).
    Redis(Secret),
}

impl TargetSpec {
    /// Parses `sqlite`, `sqlite:<path>`, `postgres://…`/`postgresql://…` or
    /// `redis://…`.
    pub fn parse(spec: &str) -> Result<TargetSpec, String> {
        if spec == "sqlite" {
            return Ok(TargetSpec::SqliteScratch);
        }
        if let Some(path) = spec.strip_prefix("sqlite:") {
            if path.is_empty() {
                return Err("`sqlite:` needs a file path after the colon".into());
            }
            return Ok(TargetSpec::SqliteCopy(PathBuf::from(path)));
        }
        if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
            return Ok(TargetSpec::Postgres(Secret::new(spec)));
        }
        if spec.starts_with("redis://") {
            return Ok(TargetSpec::Redis(Secret::new(spec)));
        }
        let shown = if spec.contains('@') {
            "(a URL with credentials, not shown)"
        } else {
            spec
        };
        Err(format!(
            "target `{shown}` is not one of `sqlite`, `sqlite:<path>`, `postgres://…`, `redis://…`"
        ))
    }

    /// The datastore kind.
    pub fn kind(&self) -> TargetKind {
        match self {
            TargetSpec::SqliteScratch | TargetSpec::SqliteCopy(_) => TargetKind::Sqlite,
            TargetSpec::Postgres(_) => TargetKind::Postgres,
            TargetSpec::Redis(_) => TargetKind::Redis,
        }
    }

    /// What it is, without credentials.
    pub fn describe(&self) -> String {
        match self {
            TargetSpec::SqliteScratch => "sqlite (scratch file)".into(),
            TargetSpec::SqliteCopy(path) => format!("sqlite (copy of {})", path.display()),
            TargetSpec::Postgres(url) | TargetSpec::Redis(url) => url.redacted_url(),
        }
    }
}

/// A prepared scratch target.
pub(crate) struct Scratch {
    spec: TargetSpec,
    fixture: Option<String>,
    dir: PathBuf,
    /// SQLite: the prepared file every sequence starts from.
    pristine: Option<PathBuf>,
}

impl Scratch {
    /// Prepares the target in `dir` and loads the fixture once, so a bad
    /// fixture is an input error before any check runs.
    pub(crate) async fn prepare(
        spec: TargetSpec,
        fixture: Option<String>,
        dir: &Path,
    ) -> Result<Scratch, String> {
        let mut scratch = Scratch {
            spec,
            fixture,
            dir: dir.to_path_buf(),
            pristine: None,
        };
        match &scratch.spec {
            TargetSpec::SqliteScratch | TargetSpec::SqliteCopy(_) => {
                let pristine = dir.join("pristine.db");
                if let TargetSpec::SqliteCopy(source) = &scratch.spec {
                    if !source.is_file() {
                        return Err(format!("{}: no such SQLite file", source.display()));
                    }
                    copies::copy_sqlite(source, &pristine).map_err(|e| e.to_string())?;
                }
                let conn = rusqlite::Connection::open(&pristine)
                    .map_err(|e| format!("{}: {e}", pristine.display()))?;
                if let Some(sql) = &scratch.fixture {
                    conn.execute_batch(sql)
                        .map_err(|e| format!("fixture (SQL on SQLite): {e}"))?;
                }
                scratch.pristine = Some(pristine);
            }
            TargetSpec::Postgres(_) | TargetSpec::Redis(_) => scratch.reset().await?,
        }
        Ok(scratch)
    }

    /// A fresh state for sequence `n`: a new copy of the prepared SQLite
    /// file, or the server database emptied and loaded with the fixture
    /// again (left as it is without a fixture).
    pub(crate) async fn fresh(&self, n: usize) -> Result<Endpoint, String> {
        match &self.spec {
            TargetSpec::SqliteScratch | TargetSpec::SqliteCopy(_) => {
                let pristine = self.pristine.as_ref().expect("prepared");
                let path = self.dir.join(format!("check-{n}.db"));
                std::fs::copy(pristine, &path).map_err(|e| {
                    format!("copying {} to {}: {e}", pristine.display(), path.display())
                })?;
                Ok(Endpoint::File(crate::plan::SqliteFiles::single(path)))
            }
            TargetSpec::Postgres(url) | TargetSpec::Redis(url) => {
                if n > 0 {
                    self.reset().await?;
                }
                Ok(Endpoint::Url(url.clone()))
            }
        }
    }

    /// Empties the server database and loads the fixture (nothing without
    /// a fixture: the database as found is the starting state).
    async fn reset(&self) -> Result<(), String> {
        let Some(fixture) = &self.fixture else {
            return Ok(());
        };
        match &self.spec {
            TargetSpec::Postgres(url) => {
                let client = copies::pg_connect(url).await.map_err(|e| e.to_string())?;
                client.batch_execute(PG_EMPTY).await.map_err(|e| {
                    format!(
                        "emptying the scratch database: {}",
                        copies::pg_error(url, e)
                    )
                })?;
                client.batch_execute(fixture).await.map_err(|e| {
                    format!("fixture (SQL on PostgreSQL): {}", copies::pg_error(url, e))
                })
            }
            TargetSpec::Redis(url) => {
                let commands = redis_commands(fixture)?;
                let mut conn = copies::redis_connect(url)
                    .await
                    .map_err(|e| e.to_string())?;
                redis::cmd("FLUSHDB")
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(|e| {
                        format!(
                            "emptying the scratch database: {}",
                            copies::redis_error(url, e)
                        )
                    })?;
                for (line, args) in commands {
                    let mut cmd = redis::cmd(&args[0]);
                    for arg in &args[1..] {
                        cmd.arg(arg);
                    }
                    cmd.query_async::<redis::Value>(&mut conn)
                        .await
                        .map_err(|e| {
                            format!("fixture line {line}: {}", copies::redis_error(url, e))
                        })?;
                }
                Ok(())
            }
            TargetSpec::SqliteScratch | TargetSpec::SqliteCopy(_) => Ok(()),
        }
    }
}

/// Drops every schema of the scratch database (the fixture recreates what
/// it needs) and gives back an empty `public`.
const PG_EMPTY: &str = "
DO $$
DECLARE s text;
BEGIN
  FOR s IN SELECT nspname FROM pg_namespace
            WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
              AND nspname NOT LIKE 'pg\\_temp\\_%' AND nspname NOT LIKE 'pg\\_toast\\_temp\\_%'
  LOOP
    EXECUTE format('DROP SCHEMA %I CASCADE', s);
  END LOOP;
END $$;
CREATE SCHEMA public;
";

/// A Redis fixture: one command per line (`SET k v`, `HSET h f v`), words
/// split on spaces, `"…"` for a word with spaces (`\"` and `\\` inside);
/// blank lines and `#` comments skipped. Returns (line number, words).
pub(crate) fn redis_commands(text: &str) -> Result<Vec<(usize, Vec<String>)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = Vec::new();
        let mut chars = line.chars().peekable();
        while let Some(&c) = chars.peek() {
            if c == ' ' || c == '\t' {
                chars.next();
                continue;
            }
            let mut word = String::new();
            if c == '"' {
                chars.next();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\\' => match chars.next() {
                            Some(e) => word.push(e),
                            None => break,
                        },
                        c => word.push(c),
                    }
                }
                if !closed {
                    return Err(format!("fixture line {}: unclosed quote", i + 1));
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ' ' || c == '\t' {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
            }
            words.push(word);
        }
        out.push((i + 1, words));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_never_echo_credentials() {
        assert!(matches!(
            TargetSpec::parse("sqlite"),
            Ok(TargetSpec::SqliteScratch)
        ));
        assert!(matches!(
            TargetSpec::parse("sqlite:/tmp/a.db"),
            Ok(TargetSpec::SqliteCopy(p)) if p == Path::new("/tmp/a.db")
        ));
        assert!(matches!(
            TargetSpec::parse("postgres://u:p@h/db"),
            Ok(TargetSpec::Postgres(_))
        ));
        assert!(matches!(
            TargetSpec::parse("redis://127.0.0.1/3"),
            Ok(TargetSpec::Redis(_))
        ));
        assert!(TargetSpec::parse("sqlite:").is_err());
        let e = TargetSpec::parse("mysql://u:secret@h/db").unwrap_err();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn redis_fixture_lines_split_into_words() {
        let cmds =
            redis_commands("# seed\nSET a 1\n\nHSET h f \"two words\" g \"q\\\"\"\n").unwrap();
        assert_eq!(
            cmds,
            vec![
                (2, vec!["SET".into(), "a".into(), "1".into()]),
                (
                    4,
                    vec![
                        "HSET".into(),
                        "h".into(),
                        "f".into(),
                        "two words".into(),
                        "g".into(),
                        "q\"".into()
                    ]
                ),
            ]
        );
        assert!(redis_commands("SET a \"open").is_err());
    }
}
