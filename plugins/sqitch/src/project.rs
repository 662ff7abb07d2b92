//! A sqitch project read from the directory the step is granted (a WASI
//! preopen named by `params.project`), and the step's params.

use std::collections::BTreeMap;

use serde::Deserialize;
use sluice_sdk::{Error, StepContext};

use crate::conf::{self, SqitchConf};
use crate::plan::{Change, SqitchPlan};
use crate::psql::Expander;

/// Params of a step run by the sqitch plugin: one step deploys one change.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Name of the step's file grant holding the project (read-only).
    pub project: String,
    /// The change this step deploys: `name` (its latest instance) or
    /// `name@tag` (a reworked change's earlier version).
    pub change: String,
    /// psql variables the scripts see (`:name`), over sqitch.conf's; they
    /// also answer a backtick `\set`.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// psql variables read from files in a directory the step is granted:
    /// `{ variable = "<grant>/<file>" }`, trailing newline dropped (secrets
    /// stay out of the plan; the plugin needs no other capability).
    #[serde(default)]
    pub variable_files: BTreeMap<String, String>,
    /// Tables the backup saves (`table` or `schema.table`); default: every
    /// table of `public`. The registry's tables are always added when the
    /// registry exists.
    #[serde(default)]
    pub tables: Vec<String>,
    /// Committer recorded in the registry (sqitch uses the OS user).
    #[serde(default = "Params::default_committer_name")]
    pub committer_name: String,
    /// Committer email recorded in the registry.
    #[serde(default = "Params::default_committer_email")]
    pub committer_email: String,
}

impl Params {
    fn default_committer_name() -> String {
        "sluice".into()
    }
    fn default_committer_email() -> String {
        "sluice@localhost".into()
    }

    /// Parses and checks the step's params.
    pub fn of(ctx: &StepContext) -> Result<Params, Error> {
        let params: Params = ctx.params()?;
        let invalid = |m: String| Err(Error::InvalidParams(format!("step `{}`: {m}", ctx.step_id)));
        if params.project.is_empty() || params.project.contains(['/', '\\']) {
            return invalid(format!(
                "params.project: `{}` must name the step's file grant holding the sqitch project (`files = [{{ name = \"…\", path = \"…\", access = \"read-only\" }}]`)",
                params.project
            ));
        }
        if params.change.is_empty() {
            return invalid("params.change: name the sqitch change this step deploys".into());
        }
        for (i, t) in params.tables.iter().enumerate() {
            sluice_plugin_postgres::names::TableName::parse(t, &format!("params.tables[{i}]"))?;
        }
        Ok(params)
    }
}

/// The project as loaded for one phase.
pub struct Project {
    /// The grant name (guest directory).
    pub root: String,
    /// sqitch.conf, or its defaults.
    pub conf: SqitchConf,
    /// The plan.
    pub plan: SqitchPlan,
}

impl Project {
    /// Reads sqitch.conf (if any) and the plan from the granted directory.
    pub fn load(params: &Params) -> Result<Project, Error> {
        let root = params.project.clone();
        let conf_text = match std::fs::read_to_string(format!("{root}/sqitch.conf")) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(Error::AccessDenied(format!(
                    "reading {root}/sqitch.conf: {e} (is the project granted as files `{root}`?)"
                )))
            }
        };
        let conf = conf::parse(conf_text.as_deref()).map_err(Error::InvalidParams)?;
        if let Some(engine) = &conf.engine {
            if engine != "pg" && engine != "sqlite" {
                return Err(Error::Unsupported(format!(
                    "sqitch.conf: core.engine = {engine}: this plugin deploys sqitch's `pg` (PostgreSQL targets) and `sqlite` (SQLite targets) engines only"
                )));
            }
        }
        let plan_path = format!("{root}/{}", conf.plan_file);
        let text = std::fs::read_to_string(&plan_path).map_err(|e| {
            Error::NotFound(format!(
                "{plan_path}: {e} (is the project granted as files `{root}`?)"
            ))
        })?;
        let plan = SqitchPlan::parse(&text, &conf.plan_file)
            .map_err(|e| Error::PreconditionFailed(format!("{root}/{e}")))?;
        Ok(Project { root, conf, plan })
    }

    /// The change a step names.
    pub fn change(&self, spec: &str) -> Result<&Change, Error> {
        self.plan.find(spec).ok_or_else(|| {
            Error::InvalidParams(format!(
                "params.change: `{spec}` is not in {}/{} (project {})",
                self.root, self.conf.plan_file, self.plan.project
            ))
        })
    }

    /// Project-relative path of one of a change's scripts (`deploy`,
    /// `revert`, `verify`): a reworked change's earlier version is
    /// `name@<tag>.sql`, the first of its rework tags with a deploy script.
    pub fn script_path(&self, change: &Change, kind: &str) -> String {
        let dir = match kind {
            "deploy" => &self.conf.deploy_dir,
            "revert" => &self.conf.revert_dir,
            _ => &self.conf.verify_dir,
        };
        let ext = &self.conf.extension;
        let suffix = change
            .rework_tags
            .iter()
            .find(|tag| {
                std::fs::metadata(format!(
                    "{}/{}/{}@{tag}.{ext}",
                    self.root, self.conf.deploy_dir, change.name
                ))
                .is_ok()
            })
            .or(change.rework_tags.first())
            .map(|tag| format!("@{tag}"))
            .unwrap_or_default();
        format!("{dir}/{}{suffix}.{ext}", change.name)
    }

    /// Whether a project file exists.
    pub fn exists(&self, path: &str) -> bool {
        std::fs::metadata(format!("{}/{path}", self.root)).is_ok()
    }

    /// A script's raw bytes (for sqitch's `script_hash`).
    pub fn read_bytes(&self, path: &str) -> Result<Vec<u8>, Error> {
        std::fs::read(format!("{}/{path}", self.root))
            .map_err(|e| Error::NotFound(format!("{}/{path}: {e}", self.root)))
    }

    /// A script as SQL, psql-isms resolved (`kind` picks sqitch.conf's
    /// `<kind>.variables`).
    pub fn sql(&self, params: &Params, path: &str, kind: &str) -> Result<String, Error> {
        let mut supplied = params.variables.clone();
        for (var, file) in &params.variable_files {
            let text = std::fs::read_to_string(file).map_err(|e| {
                Error::AccessDenied(format!(
                    "params.variable_files.{var}: {file}: {e} (is its directory granted to the step?)"
                ))
            })?;
            supplied.insert(var.clone(), text.trim_end_matches(['\n', '\r']).to_string());
        }
        let mut defaults = self.conf.variables_for(kind);
        // sqitch's pg engine hands every script the registry schema name.
        defaults.insert("registry".into(), self.conf.registry.clone());
        let root = self.root.clone();
        let read = move |p: &str| {
            std::fs::read_to_string(format!("{root}/{p}")).map_err(|e| e.to_string())
        };
        Expander::new(defaults, supplied, &read)
            .expand(path)
            .map_err(|e| Error::PreconditionFailed(format!("{}/{e}", self.root)))
    }
}
