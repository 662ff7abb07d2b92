//! Preview: what a step will do, from its params alone (no datastore).

use sluice_sdk::{ChangeKind, Error, StepContext, StepPreview};

use crate::{{Type}};

impl sluice_sdk::Preview for {{Type}} {
    fn preview(ctx: &StepContext) -> Result<StepPreview, Error> {
        let params = crate::Params::of(ctx)?;
        Ok(StepPreview {
            summary: format!(
                "in one transaction, adds column `{}` {} to `{}` (unless present) and sets it to {} on every row",
                params.column, params.column_type, params.table, params.fill
            ),
            change: ChangeKind::Transactional,
            metrics: vec![crate::validate::FILLED_RATE.to_string()],
            tables: vec![params.table],
        })
    }
}
