//! Rollback: nothing at all when the change was already deployed before the
//! step (the backup saw it in the registry; migrate applied nothing, so
//! there is nothing of this step's to undo, and the host proves the
//! pre-step state). Otherwise sqitch's revert of the change (its revert
//! script, its registry rows removed, a `revert` event), then the
//! PostgreSQL plugin's rollback: nothing more when the backed-up tables and
//! schema equal the backup, a verified restore from it otherwise. Safe
//! twice: a change no longer in the registry is not reverted again.

use sluice_plugin_postgres::names::quote_ident;
use sluice_plugin_postgres::PostgresPlugin;
use sluice_sdk::sql::Connection;
use sluice_sdk::{log, BackupManifest, Error, PhaseReached, StepContext, TableState};

use crate::project::Project;
use crate::registry::{self, Committer};
use crate::{script, BackupMetadata, Params, SqitchPlugin, NOTHING_TO_UNDO};

impl sluice_sdk::Rollback for SqitchPlugin {
    fn rollback(
        ctx: &StepContext,
        manifest: &BackupManifest,
        reached: PhaseReached,
    ) -> Result<Vec<TableState>, Error> {
        if crate::golang::applies(ctx) {
            return crate::golang::rollback(ctx, manifest, reached);
        }
        if crate::sqlite::applies(ctx) {
            return crate::sqlite::rollback(ctx, manifest, reached);
        }
        crate::check_target(ctx)?;
        let params = Params::of(ctx)?;
        let metadata: BackupMetadata = serde_json::from_str(&manifest.metadata).map_err(|e| {
            Error::BackupInvalid(format!("the manifest's metadata is not this plugin's: {e}"))
        })?;
        let project = Project::load(&params)?;
        let change = project.change(&params.change)?;
        if change.id != metadata.change_id {
            return Err(Error::BackupInvalid(format!(
                "the backup was taken for change id {}, the plan now gives `{}` id {}: the sqitch plan changed since",
                metadata.change_id, change.name, change.id
            )));
        }
        if metadata.already_deployed {
            // Migrate found the change deployed and did nothing: reverting
            // it would undo what sqitch (or an earlier run) deployed, and a
            // restore could only discard writes this step did not make.
            log::info(
                NOTHING_TO_UNDO,
                &[
                    ("change", &change.name),
                    ("change_id", &change.id),
                    ("reached", &format!("{reached:?}")),
                ],
            );
            return Ok(Vec::new());
        }
        let conn = Connection::open(&ctx.target)?;
        let reg = project.conf.registry.clone();
        if registry::is_deployed(&conn, &reg, &change.id)? {
            let revert = project.script_path(change, "revert");
            let file = format!("{}/{revert}", project.root);
            let sql = project.sql(&params, &revert, "revert")?;
            let parsed = script::statements(&sql);
            let who = Committer {
                name: params.committer_name.clone(),
                email: params.committer_email.clone(),
            };
            // The registry did not exist before this step: the state to go
            // back to has none.
            let registry_sql = if metadata.registry_existed {
                registry::revert_sql(&reg, &project.plan, change, &who)
            } else {
                format!("DROP SCHEMA {} CASCADE", quote_ident(&reg))
            };
            log::info(
                "rollback: running the revert script and removing the registry rows",
                &[
                    ("path", "revert"),
                    ("script", &file),
                    ("reached", &format!("{reached:?}")),
                ],
            );
            if parsed.transactional {
                conn.transaction(|conn| {
                    script::run(conn, &file, &parsed.statements)?;
                    conn.execute_script(&registry_sql)
                })?;
            } else {
                script::run(&conn, &file, &parsed.statements)?;
                conn.transaction(|conn| conn.execute_script(&registry_sql))?;
            }
        } else {
            log::info(
                "rollback: the change is not in sqitch's registry (its deploy did not commit): no revert",
                &[("reached", &format!("{reached:?}"))],
            );
        }
        let inner = BackupManifest {
            metadata: metadata.postgres.clone(),
            ..manifest.clone()
        };
        <PostgresPlugin as sluice_sdk::Rollback>::rollback(
            &crate::postgres_context(ctx, &metadata.tables),
            &inner,
            reached,
        )
    }
}
