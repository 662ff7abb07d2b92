//! Cross-references: every name one part of the plan uses for another —
//! a target's `connection` value, a step's plugin, target, values, probes
//! and table schemas, the shared journal's value — must be declared, and
//! an error lists what is.

use std::collections::BTreeMap;

use toml::Spanned;

use super::read::{PlanHeader, Source};
use super::{PlanError, PluginRef, Probe, SqliteFiles, Target, ValueSource};

/// `a, b, c`, or `none`.
pub(super) fn list<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// A server target's `connection`: the value holding its URL.
pub(super) fn connection(
    src: &Source<'_>,
    target: &str,
    value: &Spanned<String>,
    values: &BTreeMap<String, ValueSource>,
) -> Result<String, PlanError> {
    if !values.contains_key(value.get_ref()) {
        return Err(src.error(
            value.span().start,
            format!(
                "target `{target}`: `connection` names value `{}`, which the plan does not define in [values]; defined: {}",
                value.get_ref(),
                list(values.keys())
            ),
        ));
    }
    Ok(value.get_ref().clone())
}

/// The plugin a step runs.
pub(super) fn step_plugin(
    src: &Source<'_>,
    id: &str,
    plugin: &Spanned<String>,
    plugins: &BTreeMap<String, PluginRef>,
) -> Result<(), PlanError> {
    if !plugins.contains_key(plugin.get_ref()) {
        return Err(src.error(
            plugin.span().start,
            format!(
                "step `{id}` uses plugin `{}`, which is not declared; declared plugins: {}",
                plugin.get_ref(),
                list(plugins.keys())
            ),
        ));
    }
    Ok(())
}

/// The target a step changes.
pub(super) fn step_target<'t>(
    src: &Source<'_>,
    id: &str,
    target: &Spanned<String>,
    targets: &'t BTreeMap<String, Target>,
) -> Result<&'t Target, PlanError> {
    targets.get(target.get_ref()).ok_or_else(|| {
        src.error(
            target.span().start,
            format!(
                "step `{id}` uses target `{}`, which is not declared; declared targets: {}",
                target.get_ref(),
                list(targets.keys())
            ),
        )
    })
}

/// A step's `tables` on a SQLite target: `schema.table` reaches an attached
/// file; a schema the target does not attach would be a scope that can
/// never match.
pub(super) fn table_schemas(
    src: &Source<'_>,
    id: &str,
    tables: &[Spanned<String>],
    target: &str,
    files: &SqliteFiles,
) -> Result<(), PlanError> {
    for table in tables {
        if let Some((schema, _)) = table.get_ref().split_once('.') {
            if !files.attach.contains_key(schema) {
                return Err(src.error(
                    table.span().start,
                    format!(
                        "step `{id}`: table `{}` names schema `{schema}`, which target `{target}` does not attach; attached: {}",
                        table.get_ref(),
                        list(files.attach.keys())
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The values a step is granted (`values = ["name"]`).
pub(super) fn granted_values(
    src: &Source<'_>,
    id: &str,
    granted: &[Spanned<String>],
    values: &BTreeMap<String, ValueSource>,
) -> Result<Vec<String>, PlanError> {
    let mut names = Vec::new();
    for v in granted {
        if !values.contains_key(v.get_ref()) {
            return Err(src.error(
                v.span().start,
                format!(
                    "step `{id}` is granted value `{}`, which the plan does not define in [values]; defined: {}",
                    v.get_ref(),
                    list(values.keys())
                ),
            ));
        }
        names.push(v.get_ref().clone());
    }
    Ok(names)
}

/// The probes a step is granted (`probes = ["name"]`), each once.
pub(super) fn granted_probes(
    src: &Source<'_>,
    id: &str,
    granted: &[Spanned<String>],
    probes: &BTreeMap<String, Probe>,
) -> Result<Vec<Probe>, PlanError> {
    let mut resolved: Vec<Probe> = Vec::new();
    for p in granted {
        let Some(probe) = probes.get(p.get_ref()) else {
            return Err(src.error(
                p.span().start,
                format!(
                    "step `{id}` is granted probe `{}`, which the plan does not define in [probes]; defined: {}",
                    p.get_ref(),
                    list(probes.keys())
                ),
            ));
        };
        if resolved.iter().any(|g| g.name == probe.name) {
            return Err(src.error(
                p.span().start,
                format!("step `{id}`: probe `{}` is granted twice", probe.name),
            ));
        }
        resolved.push(probe.clone());
    }
    Ok(resolved)
}

/// `[plan] journal`: the value holding the shared PostgreSQL journal's URL.
pub(super) fn journal(
    src: &Source<'_>,
    header: Option<&PlanHeader>,
    values: &BTreeMap<String, ValueSource>,
) -> Result<Option<String>, PlanError> {
    match header.and_then(|p| p.journal.as_ref()) {
        Some(value) if !values.contains_key(value.get_ref()) => Err(src.error(
            value.span().start,
            format!(
                "`journal` names value `{}`, which the plan does not define in [values]; it must hold the URL of the shared PostgreSQL journal",
                value.get_ref()
            ),
        )),
        Some(value) => Ok(Some(value.get_ref().clone())),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use crate::plan::test_plan::*;

    #[test]
    fn a_connection_must_name_a_value() {
        assert_eq!(
            refused(&KV_STEP.replace("connection = \"url\"", "connection = \"nope\"")),
            "6:14: target `kv`: `connection` names value `nope`, which the plan does not define in [values]; defined: url"
        );
    }

    #[test]
    fn a_step_plugin_must_be_declared() {
        assert_eq!(
            refused(&STEP.replace("plugin = \"p\"", "plugin = \"q\"")),
            "10:10: step `s` uses plugin `q`, which is not declared; declared plugins: p"
        );
    }

    #[test]
    fn a_step_target_must_be_declared() {
        assert_eq!(
            refused(&STEP.replace("target = \"db\"", "target = \"kv\"")),
            "11:10: step `s` uses target `kv`, which is not declared; declared targets: db"
        );
    }

    #[test]
    fn a_table_schema_must_be_attached() {
        assert_eq!(refused(&step("tables = [\"t\", \"sqitch.changes\"]\n")), "13:16: step `s`: table `sqitch.changes` names schema `sqitch`, which target `db` does not attach; attached: none");
    }

    #[test]
    fn a_granted_value_must_be_defined() {
        assert_eq!(refused(&step("values = [\"nope\"]\n")), "13:11: step `s` is granted value `nope`, which the plan does not define in [values]; defined: none");
    }

    #[test]
    fn a_granted_probe_must_be_defined() {
        assert_eq!(refused(&step("probes = [\"nope\"]\n")), "13:11: step `s` is granted probe `nope`, which the plan does not define in [probes]; defined: none");
    }

    #[test]
    fn a_probe_is_granted_once() {
        assert_eq!(
            refused(&format!(
                "[probes]\napi = \"http://127.0.0.1/\"\n\n{}",
                step("probes = [\"api\", \"api\"]\n")
            )),
            "16:18: step `s`: probe `api` is granted twice"
        );
    }

    #[test]
    fn the_journal_must_name_a_value() {
        assert_eq!(refused(&format!("[plan]\njournal = \"pg\"\n\n{STEP}")), "2:11: `journal` names value `pg`, which the plan does not define in [values]; it must hold the URL of the shared PostgreSQL journal");
    }

    #[test]
    fn the_journal_names_a_value() {
        let plan = loads(&format!("[plan]\nname = \"n\"\njournal = \"pg\"\nlease_seconds = 0\n\n[values]\npg = \"postgres://x\"\n\n{STEP}"));
        assert_eq!(plan.journal.as_deref(), Some("pg"));
        assert_eq!(plan.name, "n");
        assert_eq!(plan.lease, std::time::Duration::from_secs(1));
    }
}
