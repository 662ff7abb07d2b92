//! Step five of loading: the `[[steps]]`, in order — each one's id, plugin
//! and target, params (with `{ file = … }` inlined), gates, table or key
//! scope, file, value and probe grants, and limits.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use sha2::{Digest, Sha256};
use toml::Spanned;

use super::read::{FileGrantFile, Source, StepFile};
use super::{
    gate, refs, Address, FileGrant, PlanError, PluginRef, Probe, Step, Target, ValueSource,
};

/// What a step may refer to: everything the plan declared before its steps.
pub(super) struct Declared<'a> {
    pub(super) targets: &'a BTreeMap<String, Target>,
    pub(super) plugins: &'a BTreeMap<String, PluginRef>,
    pub(super) values: &'a BTreeMap<String, ValueSource>,
    pub(super) probes: &'a BTreeMap<String, Probe>,
}

/// The plan's steps, in order; a plan without one is refused.
pub(super) fn load(
    src: &Source<'_>,
    dir: &Path,
    steps: &[Spanned<StepFile>],
    declared: &Declared<'_>,
) -> Result<Vec<Step>, PlanError> {
    if steps.is_empty() {
        return Err(src.error(0, "the plan has no steps; add a [[steps]] table".into()));
    }
    let mut loaded = Vec::new();
    let mut ids = HashSet::new();
    for step in steps {
        let s = step.get_ref();
        let id = s.id.get_ref().clone();
        src.check_name(&id, s.id.span().start, "step id")?;
        if !ids.insert(id.clone()) {
            return Err(src.error(s.id.span().start, format!("step id `{id}` is used twice")));
        }
        refs::step_plugin(src, &id, &s.plugin, declared.plugins)?;
        let target = refs::step_target(src, &id, &s.target, declared.targets)?;
        let params = match &s.params {
            Some(params) => inline_files(src, dir, params.span().start, params.get_ref())?,
            None => serde_json::Value::Object(Default::default()),
        };
        let params_json = params.to_string();
        let gates = gate::load(src, &id, s)?;
        let (tables, key_prefixes) = scope(src, &id, step, target)?;
        let files = file_grants(src, dir, &id, &s.files)?;
        let values = refs::granted_values(src, &id, &s.values, declared.values)?;
        let probes = refs::granted_probes(src, &id, &s.probes, declared.probes)?;
        let limits = s.limits.as_ref().map(|l| *l.get_ref()).unwrap_or_default();
        if let Some(l) = &s.limits {
            if limits.memory_mib == 0 || limits.phase_seconds == 0 || limits.backup_mib == 0 {
                return Err(src.error(
                    l.span().start,
                    format!("step `{id}`: limits must be greater than 0"),
                ));
            }
        }
        loaded.push(Step {
            id,
            plugin: s.plugin.get_ref().clone(),
            target: s.target.get_ref().clone(),
            access: *s.access.get_ref(),
            tables,
            key_prefixes,
            files,
            values,
            probes,
            params_hash: hex::encode(Sha256::digest(params_json.as_bytes())),
            params_json,
            thresholds: gates.thresholds,
            bands: gates.bands,
            approval: s.approval,
            watch: gates.watch,
            limits,
            location: src.location(step.span().start),
        });
    }
    Ok(loaded)
}

/// A step's `tables` and `key_prefixes`.
type Scope = (Option<Vec<String>>, Option<Vec<String>>);

/// What part of its target a step may touch: `tables` on SQL targets,
/// `key_prefixes` on key-value ones; `None` grants everything, an empty
/// list is refused (it would grant nothing, or with `""` everything).
fn scope(
    src: &Source<'_>,
    id: &str,
    step: &Spanned<StepFile>,
    target: &Target,
) -> Result<Scope, PlanError> {
    let s = step.get_ref();
    let tables = s
        .tables
        .as_ref()
        .map(|tables| tables.iter().map(|t| t.get_ref().clone()).collect());
    if let Some(list) = &s.tables {
        if list.is_empty() {
            return Err(src.error(
                step.span().start,
                format!(
                    "step `{id}`: `tables = []` grants no table; remove it to grant every table"
                ),
            ));
        }
    }
    if let (Some(scoped), Address::File(files)) = (&s.tables, &target.address) {
        refs::table_schemas(src, id, scoped, s.target.get_ref(), files)?;
    }
    if let (Some(list), false) = (&s.tables, target.kind.is_sql()) {
        return Err(src.error(
            list.first().map_or(step.span().start, |t| t.span().start),
            format!(
                "step `{id}`: `tables` scopes SQL targets; target `{}` is {}: use `key_prefixes`",
                s.target.get_ref(),
                target.kind.as_str()
            ),
        ));
    }
    let key_prefixes = match &s.key_prefixes {
        None => None,
        Some(list) if target.kind.is_sql() => {
            return Err(src.error(
                list.first().map_or(step.span().start, |t| t.span().start),
                format!("step `{id}`: `key_prefixes` scopes key-value targets; target `{}` is {}: use `tables`", s.target.get_ref(), target.kind.as_str()),
            ))
        }
        Some(list) => {
            if let Some(empty) = list.iter().find(|p| p.get_ref().is_empty()) {
                return Err(src.error(
                    empty.span().start,
                    format!("step `{id}`: an empty key prefix would grant every key; remove `key_prefixes` to grant every key"),
                ));
            }
            if list.is_empty() {
                return Err(src.error(
                    step.span().start,
                    format!("step `{id}`: `key_prefixes = []` grants no key; remove it to grant every key"),
                ));
            }
            Some(list.iter().map(|p| p.get_ref().clone()).collect())
        }
    };
    Ok((tables, key_prefixes))
}

/// A step's `files = [{ name, path, access }]`: existing directories, each
/// name once.
fn file_grants(
    src: &Source<'_>,
    dir: &Path,
    id: &str,
    grants: &[Spanned<FileGrantFile>],
) -> Result<Vec<FileGrant>, PlanError> {
    let mut files = Vec::new();
    for f in grants {
        let grant = f.get_ref();
        let name = grant.name.get_ref();
        src.check_name(name, grant.name.span().start, "file grant")?;
        let path = dir.join(grant.path.get_ref());
        if !path.is_dir() {
            return Err(src.error(
                grant.path.span().start,
                format!(
                    "step `{id}`: file grant `{name}`: {} is not a directory",
                    path.display()
                ),
            ));
        }
        if files.iter().any(|g: &FileGrant| &g.name == name) {
            return Err(src.error(
                grant.name.span().start,
                format!("step `{id}`: file grant `{name}` is given twice"),
            ));
        }
        files.push(FileGrant {
            name: name.clone(),
            path,
            access: grant.access,
        });
    }
    Ok(files)
}

/// Converts step params to JSON, replacing each `{ file = "…" }` table with the
/// contents of that file (relative to the plan), so the plugin gets the text
/// and drift detection covers the file.
fn inline_files(
    src: &Source<'_>,
    dir: &Path,
    offset: usize,
    table: &toml::Table,
) -> Result<serde_json::Value, PlanError> {
    fn convert(
        src: &Source<'_>,
        dir: &Path,
        offset: usize,
        key: &str,
        value: &toml::Value,
    ) -> Result<serde_json::Value, PlanError> {
        Ok(match value {
            toml::Value::Table(t) if t.len() == 1 && t.contains_key("file") => {
                let Some(toml::Value::String(rel)) = t.get("file") else {
                    return Err(src.error(
                        offset,
                        format!("params.{key}: `file` must be a path string"),
                    ));
                };
                let path = dir.join(rel);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    src.error(
                        offset,
                        format!("params.{key}: cannot read {}: {e}", path.display()),
                    )
                })?;
                serde_json::Value::String(text)
            }
            toml::Value::Table(t) => serde_json::Value::Object(
                t.iter()
                    .map(|(k, v)| {
                        let path = if key.is_empty() {
                            k.clone()
                        } else {
                            format!("{key}.{k}")
                        };
                        Ok((k.clone(), convert(src, dir, offset, &path, v)?))
                    })
                    .collect::<Result<_, PlanError>>()?,
            ),
            toml::Value::Array(a) => serde_json::Value::Array(
                a.iter()
                    .enumerate()
                    .map(|(i, v)| convert(src, dir, offset, &format!("{key}[{i}]"), v))
                    .collect::<Result<_, _>>()?,
            ),
            toml::Value::String(s) => serde_json::Value::String(s.clone()),
            toml::Value::Integer(i) => serde_json::Value::from(*i),
            toml::Value::Float(f) => serde_json::Value::from(*f),
            toml::Value::Boolean(b) => serde_json::Value::Bool(*b),
            toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        })
    }
    let value = toml::Value::Table(table.clone());
    convert(src, dir, offset, "", &value)
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use crate::plan::load;
    use crate::plan::test_plan::*;

    #[test]
    fn a_plan_needs_a_step() {
        assert_eq!(
            refused(&STEP[..STEP.find("[[steps]]").unwrap()]),
            "1:1: the plan has no steps; add a [[steps]] table"
        );
    }

    #[test]
    fn a_step_id_must_be_plain() {
        assert_eq!(
            refused(&STEP.replace("id = \"s\"", "id = \"s 1\"")),
            "9:6: step id `s 1` must be 1–64 characters of letters, digits, `-` and `_`"
        );
    }

    #[test]
    fn a_step_id_is_used_once() {
        assert_eq!(
            refused(&format!(
                "{STEP}{}",
                &STEP[STEP.find("[[steps]]").unwrap()..]
            )),
            "14:6: step id `s` is used twice"
        );
    }

    #[test]
    fn a_params_file_must_be_a_path() {
        assert_eq!(
            refused(&step("[steps.params]\nmigrate = { file = 1 }\n")),
            "13:1: params.migrate: `file` must be a path string"
        );
    }

    #[test]
    fn a_missing_params_file_is_named_with_its_key() {
        assert_eq!(
            refused(&step(
                "[steps.params]\nx = [{ y = { file = \"no.sql\" } }]\n"
            )),
            "13:1: params.x[0].y: cannot read <dir>/no.sql: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn params_files_are_inlined_and_hashed() {
        let dir = write(&step(
            "[steps.params]\nmigrate = { file = \"m.sql\" }\nn = [1, 2.5, true]\n",
        ));
        std::fs::write(dir.path().join("m.sql"), "SELECT 1").unwrap();
        let plan = load(&dir.path().join("sluice.toml")).unwrap();
        let s = &plan.steps[0];
        assert_eq!(s.params_json, r#"{"migrate":"SELECT 1","n":[1,2.5,true]}"#);
        assert_eq!(
            s.params_hash,
            hex::encode(Sha256::digest(s.params_json.as_bytes()))
        );
    }

    #[test]
    fn an_empty_table_scope_is_refused() {
        assert_eq!(
            refused(&step("tables = []\n")),
            "8:1: step `s`: `tables = []` grants no table; remove it to grant every table"
        );
    }

    #[test]
    fn tables_scope_only_sql_targets() {
        assert_eq!(
            refused(&kv_step("tables = [\"t\"]\n")),
            "16:11: step `s`: `tables` scopes SQL targets; target `kv` is redis: use `key_prefixes`"
        );
    }

    #[test]
    fn key_prefixes_scope_only_key_value_targets() {
        assert_eq!(refused(&step("key_prefixes = [\"a:\"]\n")), "13:17: step `s`: `key_prefixes` scopes key-value targets; target `db` is sqlite: use `tables`");
    }

    #[test]
    fn an_empty_key_prefix_is_refused() {
        assert_eq!(refused(&kv_step("key_prefixes = [\"a:\", \"\"]\n")), "16:23: step `s`: an empty key prefix would grant every key; remove `key_prefixes` to grant every key");
    }

    #[test]
    fn an_empty_key_prefix_list_is_refused() {
        assert_eq!(
            refused(&kv_step("key_prefixes = []\n")),
            "11:1: step `s`: `key_prefixes = []` grants no key; remove it to grant every key"
        );
    }

    #[test]
    fn a_file_grant_name_must_be_plain() {
        assert_eq!(
            refused(&step(
                "files = [{ name = \"a b\", path = \"files\", access = \"read-only\" }]\n"
            )),
            "13:19: file grant `a b` must be 1–64 characters of letters, digits, `-` and `_`"
        );
    }

    #[test]
    fn a_file_grant_must_be_a_directory() {
        assert_eq!(
            refused(&step(
                "files = [{ name = \"a\", path = \"p.wasm\", access = \"read-only\" }]\n"
            )),
            "13:31: step `s`: file grant `a`: <dir>/p.wasm is not a directory"
        );
    }

    #[test]
    fn a_file_grant_is_given_once() {
        assert_eq!(
            refused(&step("files = [{ name = \"a\", path = \"files\", access = \"read-only\" },\n { name = \"a\", path = \"files\", access = \"read-write\" }]\n")),
            "14:11: step `s`: file grant `a` is given twice"
        );
    }

    #[test]
    fn limits_must_be_greater_than_zero() {
        assert_eq!(
            refused(&step("limits = { memory_mib = 0 }\n")),
            "13:10: step `s`: limits must be greater than 0"
        );
    }

    #[test]
    fn a_step_keeps_its_scope_grants_limits_and_place() {
        let plan = loads(&kv_step(
            "key_prefixes = [\"a:\"]\nvalues = [\"url\"]\nlimits = { phase_seconds = 5 }\n",
        ));
        let s = &plan.steps[0];
        assert_eq!(s.key_prefixes, Some(vec!["a:".to_string()]));
        assert_eq!(s.values, vec!["url".to_string()]);
        assert_eq!(s.limits.phase_seconds, 5);
        assert_eq!(s.limits.memory_mib, 256);
        assert_eq!(s.location.line, 11);
    }
}
