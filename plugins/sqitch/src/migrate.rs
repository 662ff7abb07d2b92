//! Migrate: sqitch's deploy of one change: dependencies and conflicts
//! checked against the registry, the deploy script, the registry rows.

use sluice_sdk::sql::Connection;
use sluice_sdk::{log, Error, StepContext};

use crate::plan::{Change, Dependency};
use crate::project::Project;
use crate::registry::{self, Committer};
use crate::{script, sha1, Params, SqitchPlugin};

impl sluice_sdk::Migrate for SqitchPlugin {
    fn migrate(ctx: &StepContext) -> Result<(), Error> {
        if crate::golang::applies(ctx) {
            return crate::golang::migrate(ctx);
        }
        if crate::sqlite::applies(ctx) {
            return crate::sqlite::migrate(ctx);
        }
        crate::check_target(ctx)?;
        let params = Params::of(ctx)?;
        let project = Project::load(&params)?;
        let change = project.change(&params.change)?;
        let conn = Connection::open(&ctx.target)?;
        let reg = project.conf.registry.clone();
        if registry::is_deployed(&conn, &reg, &change.id)? {
            log::info(
                "change already deployed (sqitch registry): nothing to do",
                &[("change", &change.name), ("change_id", &change.id)],
            );
            return Ok(());
        }
        let required = check_dependencies::<PgRegistry>(&conn, &project, change)?;
        let deploy = project.script_path(change, "deploy");
        let script_hash = sha1::hex(&project.read_bytes(&deploy)?);
        let sql = project.sql(&params, &deploy, "deploy")?;
        let parsed = script::statements(&sql);
        let who = Committer {
            name: params.committer_name.clone(),
            email: params.committer_email.clone(),
        };
        let file = format!("{}/{deploy}", project.root);
        let rows = registry::deploy_sql(&reg, &project.plan, change, &script_hash, &required, &who);
        let create = registry::create_sql(&reg, &project.plan, &who);
        if parsed.rolls_back {
            return Err(Error::Unsupported(format!(
                "{file}: the deploy script ends its transaction with ROLLBACK, so it deploys nothing"
            )));
        }
        if parsed.transactional {
            conn.transaction(|conn| {
                script::run(conn, &file, &parsed.statements)?;
                conn.execute_script(&create)?;
                conn.execute_script(&rows)
            })?;
            log::info(
                "change deployed with its registry rows in one transaction",
                &[("change", &change.name), ("change_id", &change.id)],
            );
        } else {
            log::warn(
                "deploy script has statements PostgreSQL refuses in a transaction: running them one by one, then the registry rows",
                &[("script", &file)],
            );
            script::run(&conn, &file, &parsed.statements)?;
            conn.transaction(|conn| {
                conn.execute_script(&create)?;
                conn.execute_script(&rows)
            })?;
        }
        Ok(())
    }
}

/// Every required change deployed, no conflicting one; returns each
/// requirement with the change id it resolved to (for the registry). The
/// registry's tables are read as `<registry>.<table>` on either engine (on
/// SQLite the host attaches sqitch's registry file under that name).
pub(crate) fn check_dependencies<R: RegistryReader>(
    conn: &Connection,
    project: &Project,
    change: &Change,
) -> Result<Vec<(String, String)>, Error> {
    let reg = &project.conf.registry;
    let own = &project.plan.project;
    let mut required = Vec::new();
    for dep in &change.requires {
        let id = resolve::<R>(conn, project, dep)?;
        match id {
            Some(id) => required.push((dep.as_string(), id)),
            None if dep.is_cross_project(own) => {
                return Err(Error::PreconditionFailed(format!(
                    "change `{}` requires `{}` from project `{}`, which sqitch's registry in this database does not list as deployed. sluice reads the registry of the step's target database only: a project deployed to (or registered in) another database cannot be checked; deploy `{}` here first",
                    change.name,
                    dep.as_string(),
                    dep.project.as_deref().unwrap_or_default(),
                    dep.as_string()
                )))
            }
            None => {
                return Err(Error::PreconditionFailed(format!(
                    "change `{}` requires `{}`, which is not deployed (sqitch registry `{reg}`): deploy it in an earlier step",
                    change.name,
                    dep.as_string()
                )))
            }
        }
    }
    for dep in &change.conflicts {
        if resolve::<R>(conn, project, dep)?.is_some() {
            return Err(Error::PreconditionFailed(format!(
                "change `{}` conflicts with `{}`, which is deployed: revert it first",
                change.name,
                dep.as_string()
            )));
        }
    }
    Ok(required)
}

/// What dependency checks read of sqitch's registry, per engine: the same
/// questions in each engine's SQL.
pub(crate) trait RegistryReader {
    /// Whether the change with this id is deployed.
    fn is_deployed(conn: &Connection, schema: &str, change_id: &str) -> Result<bool, Error>;
    /// The id of the latest deployed instance of `change` in `project`.
    fn deployed_id(
        conn: &Connection,
        schema: &str,
        project: &str,
        change: &str,
    ) -> Result<Option<String>, Error>;
}

/// sqitch's PostgreSQL registry (`registry.rs`).
pub(crate) struct PgRegistry;

impl RegistryReader for PgRegistry {
    fn is_deployed(conn: &Connection, schema: &str, change_id: &str) -> Result<bool, Error> {
        registry::is_deployed(conn, schema, change_id)
    }
    fn deployed_id(
        conn: &Connection,
        schema: &str,
        project: &str,
        change: &str,
    ) -> Result<Option<String>, Error> {
        registry::deployed_id(conn, schema, project, change)
    }
}

/// The deployed change id a dependency names, if deployed.
fn resolve<R: RegistryReader>(
    conn: &Connection,
    project: &Project,
    dep: &Dependency,
) -> Result<Option<String>, Error> {
    let reg = &project.conf.registry;
    let own = &project.plan.project;
    if dep.is_cross_project(own) {
        let (Some(other), Some(name)) = (&dep.project, &dep.change) else {
            return Err(Error::Unsupported(format!(
                "dependency `{}`: a tag of another project cannot be checked",
                dep.as_string()
            )));
        };
        return R::deployed_id(conn, reg, other, name);
    }
    // In this project: the plan says which instance; the registry whether
    // it is deployed.
    let spec = match (&dep.change, &dep.tag) {
        (Some(c), Some(t)) => format!("{c}@{t}"),
        (Some(c), None) => c.clone(),
        (None, Some(t)) => {
            let Some(tagged) = project
                .plan
                .changes
                .iter()
                .find(|c| c.tags.iter().any(|x| &x.name == t))
            else {
                return Err(Error::PreconditionFailed(format!(
                    "dependency `@{t}`: no such tag in the plan"
                )));
            };
            return Ok(R::is_deployed(conn, reg, &tagged.id)?.then(|| tagged.id.clone()));
        }
        (None, None) => return Ok(None),
    };
    let Some(target) = project.plan.find(&spec) else {
        return Err(Error::PreconditionFailed(format!(
            "dependency `{}`: no such change in the plan",
            dep.as_string()
        )));
    };
    if R::is_deployed(conn, reg, &target.id)? {
        return Ok(Some(target.id.clone()));
    }
    // A reworked dependency may be deployed in an earlier version.
    if dep.tag.is_none() {
        return R::deployed_id(conn, reg, own, &target.name);
    }
    Ok(None)
}
