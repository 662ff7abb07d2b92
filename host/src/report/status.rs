//! `sluice status`: each step's state from the journal, read against the
//! plan. Needs only the plan and the journal, so it sits with the other
//! views operators read, not in the engine.

use std::fmt::Write;

use super::number;
use crate::journal::record::ChangeKind;
use crate::journal::{JournalError, StepRecord, StepState, Transition};
use crate::plan::Plan;

/// One step of the plan as the journal knows it.
#[derive(Debug, Clone)]
pub struct StepStatus {
    /// Step id.
    pub id: String,
    /// What the journal knows, if the step ever ran.
    pub record: Option<StepRecord>,
    /// When and how the step was last interrupted and resumed, if it was.
    pub resumed: Option<Transition>,
}

/// The state of every step of a plan, in plan order, from its journal.
pub fn read(plan: &Plan) -> Result<Vec<StepStatus>, JournalError> {
    let journal = crate::journal::open_for(plan)?;
    plan.steps
        .iter()
        .map(|s| {
            let record = journal.step(&s.id)?;
            let resumed = journal
                .transitions(&s.id)?
                .into_iter()
                .rev()
                .find(|t| t.cause.is_resumption());
            Ok(StepStatus {
                id: s.id.clone(),
                record,
                resumed,
            })
        })
        .collect()
}

/// `sluice status`: each step's state, when it got there and why; steps an
/// interrupted run left in flight and steps that were resumed say so.
pub fn text(plan_name: &str, steps: &[StepStatus]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "plan {plan_name}");
    let _ = writeln!(
        out,
        "  {:<24} {:<16} {:<26} detail",
        "step", "state", "since"
    );
    for step in steps {
        let id = &step.id;
        let Some(r) = &step.record else {
            let _ = writeln!(
                out,
                "  {id:<24} {:<16} {:<26}",
                StepState::Pending.as_str(),
                "-"
            );
            continue;
        };
        let detail = match r.state {
            StepState::Completed => r
                .metrics
                .iter()
                .map(|m| format!("{}={}", m.name, number(m.value)))
                .collect::<Vec<_>>()
                .join(" "),
            StepState::AwaitingReview => format!(
                "migrated and validated ({}); awaiting `sluice approve` or `sluice reject` (run {})",
                r.metrics
                    .iter()
                    .map(|m| format!("{}={}", m.name, number(m.value)))
                    .collect::<Vec<_>>()
                    .join(" "),
                r.run_id
            ),
            StepState::AwaitingApproval => format!(
                "nothing changed yet; awaiting `sluice approve` before it runs (run {})",
                r.run_id
            ),
            s if s.is_in_flight() => format!(
                "INTERRUPTED or running (run {}); `sluice run` resumes it from the journal",
                r.run_id
            ),
            _ => r.error.clone().unwrap_or_default(),
        };
        let _ = writeln!(
            out,
            "  {id:<24} {:<16} {:<26} {detail}",
            r.state.as_str(),
            r.updated_at
        );
        if let Some(t) = &step.resumed {
            let _ = writeln!(
                out,
                "  {:<24} {:<16} {:<26} {}",
                "", "resumed", t.at, t.detail
            );
        }
        let change = r.backup.as_ref().map(|b| b.manifest.change);
        let kind = match change {
            Some(ChangeKind::NonTransactional) => Some((
                "non-transactional",
                "applied statement by statement: a failure is undone by its compensating action or the backup",
            )),
            Some(ChangeKind::Irreversible) => Some((
                "irreversible",
                "only restoring the backup undoes it (acknowledged in params)",
            )),
            _ => None,
        };
        if let Some((kind, what)) = kind {
            let _ = writeln!(out, "  {:<24} {kind:<16} {:<26} {what}", "", "");
        }
        // Which undo a rollback of a migrated step will use.
        if matches!(
            r.state,
            StepState::Completed | StepState::AwaitingReview | StepState::RollbackRefused
        ) {
            // Without a change set the undo is a restore, as it always was.
            if let Some(set) = r.backup.as_ref().and_then(|b| b.change_set.as_ref()) {
                let how = format!(
                    "by change set: the {} row{} the step changed are put back{}, other writes kept",
                    set.total(),
                    if set.total() == 1 { "" } else { "s" },
                    if set.created.is_empty() {
                        String::new()
                    } else {
                        format!(" and the {} object(s) it created dropped", set.created.len())
                    }
                );
                let _ = writeln!(out, "  {:<24} {:<16} {:<26} {how}", "", "undo", "");
            }
        }
    }
    out
}
