//! Preview: what a step will do, from its params alone (no datastore).

use sluice_sdk::preview::{abbreviate, count, STATEMENT_CHARS, SUMMARY_STATEMENTS};
use sluice_sdk::{ChangeKind, Error, StepContext, StepPreview};

use crate::params::Op;
use crate::{Params, RedisPlugin};

impl sluice_sdk::Preview for RedisPlugin {
    fn preview(ctx: &StepContext) -> Result<StepPreview, Error> {
        let params = Params::of(ctx)?;
        // A probe metric naming a probe the step is not granted is a plan
        // error now, not a refusal mid-run.
        sluice_sdk::probe::check_granted(
            params
                .metrics
                .iter()
                .filter_map(|m| Some((m.name.as_str(), m.probe.as_ref()?))),
        )?;
        // Backup refuses a step without prefixes: say so now, not mid-run.
        let prefixes = params.backup_prefixes(ctx)?.to_vec();
        Ok(StepPreview {
            summary: summary(&params),
            // Each key operation applies on its own; rollback restores.
            change: ChangeKind::NonTransactional,
            metrics: params.metrics.iter().map(|m| m.name.clone()).collect(),
            tables: prefixes,
        })
    }
}

fn summary(params: &Params) -> String {
    if params.ops.is_empty() {
        return "changes nothing (no `ops`)".to_string();
    }
    let mut ops: Vec<String> = params
        .ops
        .iter()
        .take(SUMMARY_STATEMENTS)
        .map(|op| abbreviate(&describe(op), STATEMENT_CHARS))
        .collect();
    if params.ops.len() > SUMMARY_STATEMENTS {
        ops.push(format!(
            "and {} more",
            params.ops.len() - SUMMARY_STATEMENTS
        ));
    }
    format!(
        "runs {} one by one: {}",
        count(params.ops.len(), "key operation"),
        ops.join("; ")
    )
}

fn describe(op: &Op) -> String {
    match op {
        Op::Set { key, ttl_ms, .. } => match ttl_ms {
            Some(ms) => format!("set {key} (expires in {ms} ms)"),
            None => format!("set {key}"),
        },
        Op::Delete { key } => format!("delete {key}"),
        Op::Rename { from, to } => format!("rename {from} → {to}"),
        Op::Copy { from, to } => format!("copy {from} → {to}"),
        Op::RenamePrefix { from, to } => format!("rename keys {from}* → {to}*"),
        Op::CopyPrefix { from, to } => format!("copy keys {from}* → {to}*"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::Preview;

    #[test]
    fn previews_ops_prefixes_and_metrics() {
        let ctx = StepContext::new(
            "s",
            "cache",
            "redis",
            r#"{"prefixes":["flags:"],"ops":[{"op":"set","key":"flags:a","value":"1"},{"op":"rename_prefix","from":"old:","to":"flags:"}],"metrics":[{"name":"n","count_prefix":"flags:"}]}"#,
        );
        let p = RedisPlugin::preview(&ctx).unwrap();
        assert_eq!(p.tables, ["flags:"]);
        assert_eq!(p.metrics, ["n"]);
        assert_eq!(p.change, ChangeKind::NonTransactional);
        assert_eq!(
            p.summary,
            "runs 2 key operations one by one: set flags:a; rename keys old:* → flags:*"
        );
        let none = StepContext::new("s", "cache", "redis", r#"{"ops":[]}"#);
        assert!(matches!(
            RedisPlugin::preview(&none),
            Err(Error::InvalidParams(m)) if m.contains("prefixes")
        ));
    }
}
