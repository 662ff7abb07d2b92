//! Backup: the PostgreSQL plugin's backup of the step's tables and the
//! registry's state tables, plus what rollback needs to know.

use sluice_plugin_postgres::PostgresPlugin;
use sluice_sdk::sql::Connection;
use sluice_sdk::{BackupManifest, ChangeKind, Error, StepContext};

use crate::project::Project;
use crate::{registry, script, BackupMetadata, Params, SqitchPlugin};

impl sluice_sdk::Backup for SqitchPlugin {
    fn backup(ctx: &StepContext) -> Result<BackupManifest, Error> {
        if crate::golang::applies(ctx) {
            return crate::golang::backup(ctx);
        }
        if crate::sqlite::applies(ctx) {
            return crate::sqlite::backup(ctx);
        }
        crate::check_target(ctx)?;
        let params = Params::of(ctx)?;
        let project = Project::load(&params)?;
        let change = project.change(&params.change)?;
        let conn = Connection::open(&ctx.target)?;
        let registry_schema = &project.conf.registry;
        let deploy = project.script_path(change, "deploy");
        let sql = project.sql(&params, &deploy, "deploy")?;
        let mut tables = params.tables.clone();
        if tables.is_empty() {
            let mut scripts = vec![(deploy.clone(), sql.clone())];
            let revert = project.script_path(change, "revert");
            if project.exists(&revert) {
                let revert_sql = project.sql(&params, &revert, "revert")?;
                scripts.push((revert, revert_sql));
            }
            let scripts: Vec<(&str, &str)> = scripts
                .iter()
                .map(|(f, s)| (f.as_str(), s.as_str()))
                .collect();
            tables = crate::touched::backup_tables(&conn, &scripts)?;
        }
        let registry_existed = registry::exists(&conn, registry_schema)?;
        // Read before migrate runs: if sqitch (or an earlier run) deployed
        // the change already, this step's migrate applies nothing.
        let already_deployed = registry::is_deployed(&conn, registry_schema, &change.id)?;
        if registry_existed {
            for t in registry::STATE_TABLES {
                let name = format!("{registry_schema}.{t}");
                if !tables.contains(&name) {
                    tables.push(name);
                }
            }
        }
        let mut manifest =
            <PostgresPlugin as sluice_sdk::Backup>::backup(&crate::postgres_context(ctx, &tables))?;
        manifest.change = if script::statements(&sql).transactional {
            ChangeKind::Transactional
        } else {
            ChangeKind::NonTransactional
        };
        let metadata = BackupMetadata {
            format: 1,
            postgres: std::mem::take(&mut manifest.metadata),
            tables,
            registry_existed,
            change_id: change.id.clone(),
            already_deployed,
        };
        manifest.metadata = serde_json::to_string(&metadata)
            .map_err(|e| Error::Internal(format!("encoding the backup metadata: {e}")))?;
        Ok(manifest)
    }
}
