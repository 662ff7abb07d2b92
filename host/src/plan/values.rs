//! Step two of loading: what the plan names for steps to be granted — its
//! values (`[values]`: literal, environment variable or file, read only
//! when used) and its HTTP probes (`[probes]`, each checked against
//! `[plan] probe_hosts` by [`probe::parse`]).

use std::collections::BTreeMap;
use std::path::Path;

use toml::Spanned;

use super::probe::{self, Probe};
use super::read::{PlanFile, Source, ValueFile, ValueSourceFile};
use super::{PlanError, ValueSource};

/// The plan's `[values]`, by name.
pub(super) fn load_values(
    src: &Source<'_>,
    dir: &Path,
    values: &BTreeMap<String, Spanned<ValueFile>>,
) -> Result<BTreeMap<String, ValueSource>, PlanError> {
    let mut sources = BTreeMap::new();
    for (name, value) in values {
        src.check_name(name, value.span().start, "value")?;
        let source = match value.get_ref() {
            ValueFile::Literal(text) => ValueSource::Literal(text.clone()),
            ValueFile::Source(ValueSourceFile { env: Some(var), file: None }) => ValueSource::Env(var.clone()),
            ValueFile::Source(ValueSourceFile { env: None, file: Some(path) }) => ValueSource::File(dir.join(path)),
            ValueFile::Source(_) => {
                return Err(src.error(
                    value.span().start,
                    format!("value `{name}` needs exactly one of `env = \"VAR\"` or `file = \"path\"`, or a literal string"),
                ))
            }
        };
        sources.insert(name.clone(), source);
    }
    Ok(sources)
}

/// The plan's `[probes]`, each checked against `[plan] probe_hosts`.
pub(super) fn load_probes(
    src: &Source<'_>,
    file: &PlanFile,
) -> Result<BTreeMap<String, Probe>, PlanError> {
    let mut allowlist = Vec::new();
    for entry in file.plan.iter().flat_map(|p| &p.probe_hosts) {
        // +1: the entry starts after the opening quote.
        let host = probe::parse_host(entry.get_ref())
            .map_err(|e| src.error(entry.span().start + 1, e.to_string()))?;
        allowlist.push(host);
    }
    let mut probes = BTreeMap::new();
    for (name, entry) in &file.probes {
        src.check_name(name, entry.span().start, "probe")?;
        let shape = || {
            src.error(
                entry.span().start,
                format!("probe `{name}` must be a URL string or a table `{{ url = \"http://…\", timeout_ms = 2000 }}`"),
            )
        };
        let (url, timeout_ms) = match entry.get_ref() {
            toml::Value::String(url) => (url, None),
            toml::Value::Table(t) => {
                if let Some(key) = t.keys().find(|k| *k != "url" && *k != "timeout_ms") {
                    return Err(src.error(
                        entry.span().start,
                        format!("probe `{name}`: unknown key `{key}`; a probe has `url` and an optional `timeout_ms`"),
                    ));
                }
                let Some(toml::Value::String(url)) = t.get("url") else {
                    return Err(shape());
                };
                let timeout_ms = match t.get("timeout_ms") {
                    None => None,
                    Some(toml::Value::Integer(ms)) => {
                        Some(u64::try_from(*ms).map_err(|_| shape())?)
                    }
                    Some(_) => return Err(shape()),
                };
                (url, timeout_ms)
            }
            _ => return Err(shape()),
        };
        let parsed = probe::parse(name, url, timeout_ms, &allowlist)
            .map_err(|e| src.error(entry.span().start, e.to_string()))?;
        probes.insert(name.clone(), parsed);
    }
    Ok(probes)
}

#[cfg(test)]
mod tests {
    use crate::plan::test_plan::*;
    use crate::plan::ValueSource;

    #[test]
    fn a_value_needs_env_or_file() {
        assert_eq!(refused("[values]\nurl = { }\n"), "2:7: value `url` needs exactly one of `env = \"VAR\"` or `file = \"path\"`, or a literal string");
    }

    #[test]
    fn a_value_cannot_have_both_env_and_file() {
        assert_eq!(refused("[values]\nurl = { env = \"A\", file = \"b\" }\n"), "2:7: value `url` needs exactly one of `env = \"VAR\"` or `file = \"path\"`, or a literal string");
    }

    #[test]
    fn a_value_name_must_be_plain() {
        assert_eq!(
            refused("[values]\n\"a b\" = \"x\"\n"),
            "2:9: value `a b` must be 1–64 characters of letters, digits, `-` and `_`"
        );
    }

    #[test]
    fn values_are_literal_environment_or_file() {
        let plan = loads(&format!(
            "[values]\na = \"lit\"\nb = {{ env = \"B\" }}\nc = {{ file = \"c.txt\" }}\n\n{STEP}"
        ));
        assert_eq!(plan.values["a"], ValueSource::Literal("lit".into()));
        assert_eq!(plan.values["b"], ValueSource::Env("B".into()));
        assert_eq!(plan.values["c"], ValueSource::File(plan.dir.join("c.txt")));
    }

    #[test]
    fn a_probe_host_must_be_host_and_port() {
        assert_eq!(refused("[plan]\nprobe_hosts = [\"10.1.2.3\"]\n"), "2:17: probe_hosts entry `10.1.2.3` is not `host:port` (for example \"health.internal:8080\")");
    }

    #[test]
    fn a_probe_must_be_a_url_or_a_table() {
        assert_eq!(refused("[probes]\napi = 5\n"), "2:7: probe `api` must be a URL string or a table `{ url = \"http://…\", timeout_ms = 2000 }`");
    }

    #[test]
    fn a_probe_table_needs_a_url() {
        assert_eq!(refused("[probes]\napi = { timeout_ms = 5 }\n"), "2:7: probe `api` must be a URL string or a table `{ url = \"http://…\", timeout_ms = 2000 }`");
    }

    #[test]
    fn a_probe_timeout_cannot_be_negative() {
        assert_eq!(
            refused("[probes]\napi = { url = \"http://127.0.0.1/\", timeout_ms = -1 }\n"),
            "2:7: probe `api` must be a URL string or a table `{ url = \"http://…\", timeout_ms = 2000 }`"
        );
    }

    #[test]
    fn a_probe_timeout_is_a_number() {
        assert_eq!(
            refused("[probes]\napi = { url = \"http://127.0.0.1/\", timeout_ms = \"1\" }\n"),
            "2:7: probe `api` must be a URL string or a table `{ url = \"http://…\", timeout_ms = 2000 }`"
        );
    }

    #[test]
    fn a_probe_has_no_other_keys() {
        assert_eq!(
            refused("[probes]\napi = { url = \"http://127.0.0.1/\", method = \"POST\" }\n"),
            "2:7: probe `api`: unknown key `method`; a probe has `url` and an optional `timeout_ms`"
        );
    }

    #[test]
    fn a_probe_url_is_checked_where_it_is_named() {
        assert_eq!(refused("[probes]\napi = \"https://127.0.0.1/\"\n"), "2:7: probe `api`: https is not supported yet (sluice links no TLS stack for probes); use an http:// URL on loopback or on a host listed in [plan] probe_hosts");
    }

    #[test]
    fn a_probe_name_must_be_plain() {
        assert_eq!(
            refused("[probes]\n\"a b\" = \"http://127.0.0.1/\"\n"),
            "2:9: probe `a b` must be 1–64 characters of letters, digits, `-` and `_`"
        );
    }
}
