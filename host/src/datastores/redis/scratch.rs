//! Conformance scratch databases: the database the URL names is the
//! scratch; with a fixture (one command per line) it is emptied and the
//! fixture loaded again before every check sequence, without one the
//! sequences rely on the plugin's rollback to leave it as found.

use futures_util::future::BoxFuture;

use super::copy::{admin_connect, admin_error};
use crate::datastores::{Endpoint, ScratchSource, ScratchTarget};
use crate::secret::Secret;

/// A scratch Redis database and its fixture.
struct RedisScratch {
    url: Secret,
    fixture: Option<String>,
}

/// Prepares the database `source` names: checks the fixture and loads it once.
pub(super) async fn prepare(
    source: ScratchSource,
    fixture: Option<String>,
) -> Result<Box<dyn ScratchTarget>, String> {
    let ScratchSource::Server(url) = source else {
        return Err("a Redis scratch target is a server URL".into());
    };
    let scratch = RedisScratch { url, fixture };
    scratch.reset().await?;
    Ok(Box::new(scratch))
}

impl RedisScratch {
    /// Empties the database and loads the fixture (nothing without a
    /// fixture: the database as found is the starting state).
    async fn reset(&self) -> Result<(), String> {
        let Some(fixture) = &self.fixture else {
            return Ok(());
        };
        let url = &self.url;
        let commands = redis_commands(fixture)?;
        let mut conn = admin_connect(url).await.map_err(|e| e.to_string())?;
        redis::cmd("FLUSHDB")
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| format!("emptying the scratch database: {}", admin_error(url, e)))?;
        for (line, args) in commands {
            let mut cmd = redis::cmd(&args[0]);
            for arg in &args[1..] {
                cmd.arg(arg);
            }
            cmd.query_async::<redis::Value>(&mut conn)
                .await
                .map_err(|e| format!("fixture line {line}: {}", admin_error(url, e)))?;
        }
        Ok(())
    }
}

impl ScratchTarget for RedisScratch {
    fn fresh(&self, n: usize) -> BoxFuture<'_, Result<Endpoint, String>> {
        Box::pin(async move {
            if n > 0 {
                self.reset().await?;
            }
            Ok(Endpoint::Url(self.url.clone()))
        })
    }
}

/// A Redis fixture: one command per line (`SET k v`, `HSET h f v`), words
/// split on spaces, `"…"` for a word with spaces (`\"` and `\\` inside);
/// blank lines and `#` comments skipped. Returns (line number, words).
fn redis_commands(text: &str) -> Result<Vec<(usize, Vec<String>)>, String> {
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
