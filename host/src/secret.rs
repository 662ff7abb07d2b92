//! Secrets (connection strings with passwords) as values that cannot be
//! printed by accident: `Debug` and `Display` show a redacted form.

use std::fmt;

/// A secret string. Read it with [`Secret::expose`] only where a driver
/// needs it; everything else sees `Secret(***)` or [`Secret::redacted_url`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// For a URL (`postgres://user:pw@host:5432/db?…`): scheme, host, port
    /// and path, without user, password or query — safe to show.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.0)
    }
}

/// `scheme://host:port/path` of a URL, without credentials or query; `***`
/// when it does not look like a URL (a key=value connection string).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".into();
    };
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!("{scheme}://{host}{path}")
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_credentials_and_queries() {
        let cases = [
            (
                "postgres://app:s3cret@db.internal:5432/shop?sslmode=require",
                "postgres://db.internal:5432/shop",
            ),
            ("redis://:pw@127.0.0.1:6379/2", "redis://127.0.0.1:6379/2"),
            ("postgres://127.0.0.1/shop", "postgres://127.0.0.1/shop"),
            ("host=db password=x", "***"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
        let s = Secret::new("postgres://a:b@h/d");
        assert_eq!(format!("{s:?} {s}"), "Secret(***) ***");
    }
}
