//! Undo by change set: a step whose migrate changed only rows (no schema)
//! on a datastore that records them is rolled back by putting exactly
//! those rows back, so the application's writes to the same tables stay.
//! A row the step changed that was changed since is a conflict: the
//! rollback is refused before anything is undone, unless the operator
//! decided to discard such writes.

use std::time::Instant;

use super::{Engine, EngineError, Phase, StepOutcome, StepSummary};
use crate::datastores::changes::{describe_conflicts, ChangeCapture, ChangeSet, UndoOutcome};
use crate::datastores::{self, Fingerprint};
use crate::journal::outcome::UndoneBy;
use crate::journal::record::{Cause, FailureKind, StepFailure, Why};
use crate::journal::{StepState, StoredBackup, StoredChangeSet};
use crate::plan::Step;

/// The artifact name of a change set in the backup store.
const CHANGE_SET_ARTIFACT: &str = "sluice-change-set.json";

/// How long migrate's sessions may take to hand their logs over once the
/// plugin is done.
const SESSIONS_CLOSING: std::time::Duration = std::time::Duration::from_secs(60);

/// Waits, off the async runtime, for every session that records into
/// `capture` to have handed its changes over.
pub(super) async fn sessions_closed(capture: ChangeCapture) {
    let closed = tokio::task::spawn_blocking(move || capture.wait_closed(SESSIONS_CLOSING))
        .await
        .unwrap_or(false);
    if !closed {
        tracing::warn!("a session of the step did not finish recording its changes");
    }
}

impl Engine {
    /// A capture for the rows `step`'s migrate changes, when its target's
    /// datastore records them.
    pub(super) fn change_capture(&self, step: &Step) -> Option<ChangeCapture> {
        let kind = self.plan.targets[&step.target].kind;
        (step.access == crate::plan::Access::ReadWrite
            && datastores::driver(kind).captures_changes())
        .then(ChangeCapture::new)
    }

    /// Stores what `capture` recorded as the step's change set, when a
    /// rollback can undo by it: migrate left the schema as it was
    /// (`post_step` has the pre-step schema). `None` otherwise, with why in
    /// the log; the rollback then restores the backup.
    pub(super) async fn store_change_set(
        &self,
        step: &Step,
        backup: &StoredBackup,
        post_step: &Fingerprint,
        capture: ChangeCapture,
    ) -> Result<Option<StoredChangeSet>, EngineError> {
        // Sessions hand their logs over as they close, on their own threads:
        // wait for them off the async runtime.
        let taken = tokio::task::spawn_blocking(move || capture.take(SESSIONS_CLOSING))
            .await
            .unwrap_or_else(|e| Err(format!("the change recording failed: {e}")));
        let mut set = match taken {
            Ok(set) => set,
            Err(why) => {
                tracing::info!(step = %step.id, "no change set: {why}; a rollback restores the backup");
                return Ok(None);
            }
        };
        let created = match created_objects(&backup.fingerprint, post_step) {
            Ok(created) => created,
            Err(why) => {
                tracing::info!(step = %step.id, "no change set: {why}; a rollback restores the backup");
                return Ok(None);
            }
        };
        let driver = datastores::driver(self.plan.targets[&step.target].kind);
        if let Some(object) = driver.undroppable(&created) {
            tracing::info!(step = %step.id, "no change set: migrate created {object}, which an undo cannot drop; a rollback restores the backup");
            return Ok(None);
        }
        // Never trust the recording alone: it must explain every change the
        // host's own fingerprints saw between backup and migrate's end.
        if let Err(why) = set.accounts_for(&backup.fingerprint, post_step) {
            tracing::info!(step = %step.id, "no change set: {why}; a rollback restores the backup");
            return Ok(None);
        }
        for (sequence, before) in &backup.fingerprint.sequences {
            match post_step.sequences.get(sequence) {
                Some(after) if after != before => {
                    set.sequences
                        .insert(sequence.clone(), (before.clone(), after.clone()));
                }
                _ => {}
            }
        }
        let bytes = serde_json::to_vec(&set).expect("a change set serializes");
        let artifact = self.backups.store(CHANGE_SET_ARTIFACT, &bytes)?;
        Ok(Some(StoredChangeSet {
            artifact,
            rows: set.rows_per_table(),
            created,
        }))
    }

    /// Rolls `step` back by its backup's change set. `None`: it has none, or
    /// it cannot be used (damaged, or the target no longer has the shape it
    /// was recorded on), nothing was touched, and the caller restores the
    /// backup instead.
    pub(super) async fn undo_change_set(
        &mut self,
        run_id: &str,
        step: &Step,
        backup: &StoredBackup,
        failure: &StepFailure,
        s: &mut StepSummary,
    ) -> Result<Option<StepOutcome>, EngineError> {
        let Some(stored) = &backup.change_set else {
            return Ok(None);
        };
        let phase = failure.phase;
        let reason = failure.message.clone();
        let read = self
            .backups
            .read(&stored.artifact)
            .map_err(|e| e.to_string());
        let set = match read.and_then(|bytes| {
            serde_json::from_slice::<ChangeSet>(&bytes)
                .map_err(|e| format!("not a change set: {e}"))
        }) {
            Ok(set) => set,
            Err(e) => {
                tracing::warn!(step = %step.id, "the change set cannot be read ({e}); restoring the backup instead");
                return Ok(None);
            }
        };
        let target = &self.plan.targets[&step.target];
        let driver = datastores::driver(target.kind);
        let endpoint = &self.endpoints[&target.name];
        self.journal.transition(
            run_id,
            &step.id,
            StepState::RollingBack,
            &Why::failed(failure),
            None,
        )?;
        let started = Instant::now();
        let outcome = driver
            .undo_changes(
                endpoint,
                set,
                stored.created.clone(),
                self.options.discard_later_writes,
            )
            .await;
        s.phases.push((Phase::Rollback, started.elapsed()));
        let undone = match outcome {
            Err(e) => {
                return self
                    .rollback_failed(
                        run_id,
                        step,
                        phase,
                        &reason,
                        FailureKind::Host,
                        format!("undoing the step's row changes failed, nothing was undone: {e}"),
                    )
                    .map(Some)
            }
            Ok(UndoOutcome::Unusable(why)) => {
                tracing::info!(step = %step.id, "the change set cannot be applied ({why}); restoring the backup instead");
                return Ok(None);
            }
            Ok(UndoOutcome::Conflicts(conflicts)) => {
                let lines = describe_conflicts(&conflicts);
                let detail = format!(
                    "{reason}; rollback refused, nothing undone: {} ; undoing the step would discard those writes",
                    lines.join("; ")
                );
                self.journal.transition(
                    run_id,
                    &step.id,
                    StepState::RollbackRefused,
                    &Why::new(
                        Cause::LaterWrites {
                            changed: lines.clone(),
                        },
                        detail,
                    ),
                    None,
                )?;
                return Ok(Some(StepOutcome::RollbackRefused {
                    phase,
                    reason,
                    later_writes: lines,
                }));
            }
            Ok(UndoOutcome::Undone(undone)) => undone,
        };
        // The host's proof of what it did not read back: the schema is the
        // pre-step schema.
        let mut schema = backup.fingerprint.clone();
        schema.tables.clear();
        schema.sequences.clear();
        if let Err(e) = self.prove_equal(step, &schema).await {
            return self
                .rollback_failed(
                    run_id,
                    step,
                    phase,
                    &reason,
                    FailureKind::Unproven,
                    format!("rollback: {e}"),
                )
                .map(Some);
        }
        let put_back: u64 = undone.rows.values().sum();
        let mut detail = format!(
            "undone by change set: {put_back} row{} the step changed put back and read back ({}), {} already as before; schema equals the pre-step state; writes made since to other rows kept",
            if put_back == 1 { "" } else { "s" },
            undone
                .rows
                .iter()
                .map(|(t, n)| format!("`{t}` {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            undone.already,
        );
        if !undone.dropped.is_empty() {
            detail.push_str(&format!(
                "; dropped what the step created: {}",
                undone
                    .dropped
                    .iter()
                    .map(|(object, rows)| match rows {
                        Some(rows) => format!("{object} ({rows} rows went with it)"),
                        None => object.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !undone.sequences_kept.is_empty() {
            detail.push_str(&format!(
                "; sequences drawn from since keep their values (ids handed out stay unique): {}",
                undone.sequences_kept.join(", ")
            ));
        }
        if !undone.discarded.is_empty() {
            detail.push_str(&format!(
                "; discarded, as the operator decided (--discard-later-writes): {}",
                describe_conflicts(&undone.discarded).join("; ")
            ));
        }
        self.journal.transition(
            run_id,
            &step.id,
            StepState::RolledBack,
            &Why::new(Cause::RolledBack, detail),
            None,
        )?;
        Ok(Some(StepOutcome::RolledBack {
            phase,
            reason,
            undo: UndoneBy::ChangeSet {
                rows: put_back,
                dropped: undone.dropped.len(),
                dropped_rows: undone.dropped.iter().filter_map(|(_, rows)| *rows).sum(),
            },
        }))
    }
}

/// The schema objects `post` has and `pre` had not (`table notebooks`),
/// when every object `pre` had is unchanged in `post`: a step that only
/// added objects can be undone by dropping them. `Err` says what else
/// changed.
fn created_objects(pre: &Fingerprint, post: &Fingerprint) -> Result<Vec<String>, String> {
    if pre.schema == post.schema {
        return Ok(Vec::new());
    }
    if pre.objects.is_empty() {
        return Err("migrate changed the schema".into());
    }
    for (object, digest) in &pre.objects {
        match post.objects.get(object) {
            None => return Err(format!("migrate dropped {object}")),
            Some(now) if now != digest => return Err(format!("migrate changed {object}")),
            Some(_) => {}
        }
    }
    Ok(post
        .objects
        .keys()
        .filter(|o| !pre.objects.contains_key(*o))
        .cloned()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fingerprint(objects: &[(&str, &str)]) -> Fingerprint {
        Fingerprint {
            schema: format!("{objects:?}"),
            objects: objects
                .iter()
                .map(|(o, d)| (o.to_string(), d.to_string()))
                .collect(),
            tables: Default::default(),
            sequences: Default::default(),
        }
    }

    #[test]
    fn only_a_step_that_added_objects_is_undone_by_dropping_them() {
        let pre = fingerprint(&[("table users", "1")]);
        let added = fingerprint(&[("table users", "1"), ("table notebooks", "2")]);
        assert_eq!(
            created_objects(&pre, &added).unwrap(),
            vec!["table notebooks".to_string()]
        );
        assert_eq!(created_objects(&pre, &pre).unwrap(), Vec::<String>::new());
        let altered = fingerprint(&[("table users", "9")]);
        assert_eq!(
            created_objects(&pre, &altered).unwrap_err(),
            "migrate changed table users"
        );
        let dropped = fingerprint(&[("table notebooks", "2")]);
        assert!(created_objects(&pre, &dropped).is_err());
    }
}
