//! Preview: what a step will do, from its params alone.

use sluice_sdk::{ChangeKind, Error, StepContext, StepPreview};

use crate::drawer::DRAWERS;
use crate::validate::METRICS;
use crate::{Drawers, Params};

impl sluice_sdk::Preview for Drawers {
    fn preview(ctx: &StepContext) -> Result<StepPreview, Error> {
        let params = Params::of(ctx)?;
        Ok(StepPreview {
            summary: format!(
                "in one transaction, builds one client drawer per client in {DRAWERS} from the legacy \
                 documents submitted before {}; drawers keep what they hold, follow-ups merge by followup_id",
                params.cutoff
            ),
            change: ChangeKind::Transactional,
            metrics: METRICS.iter().map(|m| m.to_string()).collect(),
            tables: vec![DRAWERS.to_string()],
        })
    }
}
