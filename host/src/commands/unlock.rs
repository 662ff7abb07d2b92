//! `sluice unlock`: removes another run's lease on a target (a dead run on
//! another host), with a reason recorded in the journal.

use std::path::Path;

use crate::exit;

use super::CommandError;

/// Removes the leases of `target` (the database's and its attached
/// files'); `force` and a reason are required.
pub async fn run(
    plan: &Path,
    target: &str,
    force: bool,
    reason: Option<String>,
) -> Result<i32, CommandError> {
    let plan = super::load_plan(plan)?;
    let Some(t) = plan.targets.get(target) else {
        return Err(CommandError::usage(format!(
            "the plan has no target `{target}`"
        )));
    };
    if !force {
        return Err(CommandError::usage(
            "unlocking takes a lease from a run that may still be alive; \
             make sure it is dead, then add --force",
        ));
    }
    let reason = match reason {
        Some(r) if !r.trim().is_empty() => r,
        _ if std::io::IsTerminal::is_terminal(&std::io::stdin()) => {
            eprint!("why is it safe to remove this lease? ");
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            line.trim().to_string()
        }
        _ => String::new(),
    };
    if reason.is_empty() {
        return Err(CommandError::usage(
            "give a reason (--reason \"…\"); it is recorded in the journal",
        ));
    }
    let journal = crate::journal::open_for(&plan).map_err(CommandError::internal)?;
    let keys = plan
        .lease_keys(t)
        .map_err(|e| CommandError::usage(format!("target `{target}`: {e}")))?;
    // The database's lease, then one per attached file (a run takes them all).
    for (i, key) in keys.iter().enumerate() {
        let what = if i == 0 {
            format!("target `{target}`")
        } else {
            format!("target `{target}`'s attached file ({key})")
        };
        match journal
            .force_unlock(key, &reason)
            .map_err(CommandError::internal)?
        {
            Some(holder) => println!(
                "unlocked {what}: removed the lease of run {} (host {}, pid {}, since {}); reason recorded",
                holder.run_id, holder.host, holder.pid, holder.since
            ),
            None if i == 0 => {
                println!("{what} was not leased; the request is recorded")
            }
            None => {}
        }
    }
    Ok(exit::OK)
}
