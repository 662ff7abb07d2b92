//! `sqitch.conf`: the keys that say where the plan and scripts are, which
//! engine and registry the project uses, and its script variables.
//!
//! The file is git-config style: `[core]`, `[engine "pg"]`, `key = value`,
//! `#`/`;` comments. Section and key names are case-insensitive.

use std::collections::BTreeMap;

/// What sluice reads from `sqitch.conf` (every field has sqitch's default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqitchConf {
    /// `core.engine` (`pg`, `sqlite`, …), if set.
    pub engine: Option<String>,
    /// `core.top_dir` (default `.`).
    pub top_dir: String,
    /// `core.plan_file` (default `<top_dir>/sqitch.plan`).
    pub plan_file: String,
    /// `core.deploy_dir` (default `<top_dir>/deploy`).
    pub deploy_dir: String,
    /// `core.revert_dir` (default `<top_dir>/revert`).
    pub revert_dir: String,
    /// `core.verify_dir` (default `<top_dir>/verify`).
    pub verify_dir: String,
    /// `core.extension` (default `sql`).
    pub extension: String,
    /// `engine.<engine>.registry` (default `sqitch`).
    pub registry: String,
    /// Variables for every script (`core.variables`), then per command
    /// (`deploy.variables`, …): later sections override earlier ones.
    pub variables: BTreeMap<String, BTreeMap<String, String>>,
}

/// Parses `sqitch.conf` text (`None`: no file, every default).
pub fn parse(text: Option<&str>) -> Result<SqitchConf, String> {
    let mut keys: BTreeMap<String, String> = BTreeMap::new();
    let mut variables: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut section = String::new();
    for (i, raw) in text.unwrap_or_default().lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(head) = line.strip_prefix('[') {
            let head = head
                .strip_suffix(']')
                .ok_or_else(|| format!("sqitch.conf:{}: `[` without `]`", i + 1))?;
            section = match head.split_once(char::is_whitespace) {
                Some((name, sub)) => {
                    format!("{}.{}", name.to_lowercase(), sub.trim().trim_matches('"'))
                }
                None => head.to_lowercase(),
            };
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k.trim(), unquote(v.trim())),
            None => (line, "true".to_string()),
        };
        if let Some(command) = section.strip_suffix(".variables") {
            variables
                .entry(command.to_string())
                .or_default()
                .insert(key.to_string(), value);
        } else {
            keys.insert(format!("{section}.{}", key.to_lowercase()), value);
        }
    }
    let engine = keys.get("core.engine").cloned();
    let engine_key = |k: &str| {
        engine
            .as_ref()
            .and_then(|e| keys.get(&format!("engine.{e}.{k}")))
            .or_else(|| keys.get(&format!("core.{k}")))
            .cloned()
    };
    let top_dir = engine_key("top_dir").unwrap_or_else(|| ".".into());
    let under = |dir: &str| {
        if top_dir == "." {
            dir.to_string()
        } else {
            format!("{top_dir}/{dir}")
        }
    };
    Ok(SqitchConf {
        plan_file: engine_key("plan_file").unwrap_or_else(|| under("sqitch.plan")),
        deploy_dir: engine_key("deploy_dir").unwrap_or_else(|| under("deploy")),
        revert_dir: engine_key("revert_dir").unwrap_or_else(|| under("revert")),
        verify_dir: engine_key("verify_dir").unwrap_or_else(|| under("verify")),
        extension: engine_key("extension").unwrap_or_else(|| "sql".into()),
        registry: engine_key("registry").unwrap_or_else(|| "sqitch".into()),
        top_dir,
        engine,
        variables,
    })
}

impl SqitchConf {
    /// The variables a `command` (`deploy`, `revert`, `verify`) script
    /// sees from the configuration.
    pub fn variables_for(&self, command: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for section in ["core", command] {
            if let Some(vars) = self.variables.get(section) {
                out.extend(vars.clone());
            }
        }
        out
    }
}

fn unquote(value: &str) -> String {
    let value = value
        .split_once(" #")
        .or_else(|| value.split_once(" ;"))
        .map_or(value, |(v, _)| v)
        .trim();
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_a_file() {
        let conf = parse(None).unwrap();
        assert_eq!(conf.plan_file, "sqitch.plan");
        assert_eq!(conf.deploy_dir, "deploy");
        assert_eq!(conf.extension, "sql");
        assert_eq!(conf.registry, "sqitch");
        assert_eq!(conf.engine, None);
    }

    #[test]
    fn reads_core_engine_and_variables() {
        let conf = parse(Some(
            "[core]\n\tengine = pg\n\ttop_dir = db # where\n[engine \"pg\"]\n\ttarget = db:pg:flipr\n\tregistry = \"meta\"\n\tverify_dir = checks\n[deploy \"variables\"]\n\towner = app\n[core.variables]\n\towner = nobody\n\tschema = flipr\n",
        ))
        .unwrap();
        assert_eq!(conf.engine.as_deref(), Some("pg"));
        assert_eq!(conf.top_dir, "db");
        assert_eq!(conf.plan_file, "db/sqitch.plan");
        assert_eq!(conf.deploy_dir, "db/deploy");
        assert_eq!(conf.verify_dir, "checks");
        assert_eq!(conf.registry, "meta");
        let deploy = conf.variables_for("deploy");
        assert_eq!(deploy["owner"], "app");
        assert_eq!(deploy["schema"], "flipr");
        assert_eq!(conf.variables_for("revert")["owner"], "nobody");
    }
}
