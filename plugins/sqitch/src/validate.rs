//! Validate: the change's verify script, read-only. A verify that raises
//! is a measurement (`verified = 0`), not a plugin failure, so a threshold
//! `verified == 1` decides, and the error shows in the report.

use sluice_sdk::sql::Connection;
use sluice_sdk::{Error, ErrorExt, Metric, StepContext};

use crate::project::Project;
use crate::{script, Params, SqitchPlugin};

impl sluice_sdk::Validate for SqitchPlugin {
    fn validate(ctx: &StepContext) -> Result<Vec<Metric>, Error> {
        if crate::golang::applies(ctx) {
            return crate::golang::validate(ctx);
        }
        if crate::sqlite::applies(ctx) {
            return crate::sqlite::validate(ctx);
        }
        crate::check_target(ctx)?;
        if !ctx.wants_metric("verified") {
            return Ok(Vec::new());
        }
        let params = Params::of(ctx)?;
        let project = Project::load(&params)?;
        let change = project.change(&params.change)?;
        let verify = project.script_path(change, "verify");
        let file = format!("{}/{verify}", project.root);
        if !project.exists(&verify) {
            return Ok(vec![Metric {
                name: "verified".into(),
                value: 1.0,
                detail: format!("{file}: no verify script; nothing to check"),
            }]);
        }
        let sql = project.sql(&params, &verify, "verify")?;
        let parsed = script::statements(&sql);
        let conn = Connection::open(&ctx.target)?;
        let (value, detail) = match script::run(&conn, &file, &parsed.statements) {
            Ok(()) => (1.0, format!("{file} ran cleanly")),
            Err(e) => (0.0, format!("{file} failed: {}", e.describe())),
        };
        Ok(vec![Metric {
            name: "verified".into(),
            value,
            detail,
        }])
    }
}
