//! Scratch targets for the conformance checks: what the author points at
//! (`sqlite`, `sqlite:<path>`, a PostgreSQL or Redis URL), its fixture
//! data, and a fresh state of it for each check sequence. How a kind
//! prepares and resets its scratch is its driver's
//! ([`crate::datastores::Datastore::scratch`]): SQLite copies one prepared
//! file afresh for every sequence and never writes the original; a server
//! database is emptied and reloaded with the fixture.

use std::path::{Path, PathBuf};

use crate::datastores::{self, Endpoint, ScratchSource, ScratchTarget};
use crate::plan::TargetKind;
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

    /// The driver's view of it: where the scratch starts from.
    fn source(&self) -> ScratchSource {
        match self {
            TargetSpec::SqliteScratch => ScratchSource::Empty,
            TargetSpec::SqliteCopy(path) => ScratchSource::CopyOf(path.clone()),
            TargetSpec::Postgres(url) | TargetSpec::Redis(url) => {
                ScratchSource::Server(url.clone())
            }
        }
    }
}

/// A prepared scratch target.
pub(crate) struct Scratch(Box<dyn ScratchTarget>);

impl Scratch {
    /// Prepares the target in `dir` and loads the fixture once, so a bad
    /// fixture is an input error before any check runs.
    pub(crate) async fn prepare(
        spec: TargetSpec,
        fixture: Option<String>,
        dir: &Path,
    ) -> Result<Scratch, String> {
        datastores::driver(spec.kind())
            .scratch(spec.source(), fixture, dir)
            .await
            .map(Scratch)
    }

    /// A fresh state for sequence `n`: a new copy of the prepared SQLite
    /// file, or the server database emptied and loaded with the fixture
    /// again (left as it is without a fixture).
    pub(crate) async fn fresh(&self, n: usize) -> Result<Endpoint, String> {
        self.0.fresh(n).await
    }
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
}
