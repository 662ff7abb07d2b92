//! Server URLs: another database on the same server, and driver messages
//! with credentials taken out.

use std::str::FromStr;

use crate::secret::Secret;

/// `url` with its path (the database) replaced by `path`; a query is kept.
pub fn with_path(url: &str, path: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority..]
        .find('/')
        .map_or(base.len(), |i| authority + i);
    match query {
        Some(query) => format!("{}/{path}?{query}", &base[..path_start]),
        None => format!("{}/{path}", &base[..path_start]),
    }
}

/// A driver message with the URL (and its password) replaced by its
/// redacted form.
pub(crate) fn scrub(message: &str, url: &Secret) -> String {
    let mut out = message.replace(url.expose(), &url.redacted_url());
    if let Ok(config) = tokio_postgres::Config::from_str(url.expose()) {
        if let Some(pw) = config.get_password().filter(|p| !p.is_empty()) {
            out = out.replace(&*String::from_utf8_lossy(pw), "***");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_another_database_and_keep_their_query() {
        assert_eq!(
            with_path("postgres://u:pw@h:5432/shop?sslmode=disable", "scratch"),
            "postgres://u:pw@h:5432/scratch?sslmode=disable"
        );
        assert_eq!(
            with_path("redis://127.0.0.1:6379", "9"),
            "redis://127.0.0.1:6379/9"
        );
    }
}
