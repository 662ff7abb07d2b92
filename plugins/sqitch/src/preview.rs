//! Preview: which change of which project, from the params alone (the
//! project's files are not granted to `preview`).

use sluice_sdk::{ChangeKind, Error, StepContext, StepPreview};

use crate::{Params, SqitchPlugin};

impl sluice_sdk::Preview for SqitchPlugin {
    fn preview(ctx: &StepContext) -> Result<StepPreview, Error> {
        if crate::golang::applies(ctx) {
            return crate::golang::preview(ctx);
        }
        let params = Params::of(ctx)?;
        crate::check_target(ctx)?;
        Ok(StepPreview {
            summary: format!(
                "deploys sqitch change `{}` of the project granted as `{}`: its deploy script and sqitch's registry rows (one transaction when the script allows); validate runs its verify script (metric `verified`); rollback runs its revert script; {}",
                params.change,
                params.project,
                crate::touched::scope_summary(&params.tables, "deploy and revert scripts")
            ),
            change: ChangeKind::Transactional,
            metrics: vec!["verified".to_string()],
            tables: params.tables.clone(),
        })
    }
}
