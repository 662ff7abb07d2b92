//! Backup, read-only, and the host's verification of it before anything
//! may change; the `baseline.` metrics measured with it.

use std::collections::HashSet;

use super::StepSummary;
use super::{Engine, Phase};
use crate::capabilities::backup_store::BackupAccess;
use crate::datastores;
use crate::journal::record::{FailureKind, StepFailure};
use crate::journal::StoredBackup;
use crate::plan::gate::BASELINE;
use crate::plan::{Access, Step};
use crate::runtime::{BackupManifest, CallReport, LoadedPlugin, PhaseInput, PhaseOutput};

impl Engine {
    /// Backup, read-only, with write access to the backup store, then the
    /// host's verification of it ([`Engine::verify_backup`]).
    pub(crate) async fn take_backup(
        &self,
        step: &Step,
        plugin: &LoadedPlugin,
    ) -> (Result<StoredBackup, StepFailure>, CallReport) {
        // The target held still (a PostgreSQL snapshot, SQLite's write lock)
        // from before the plugin reads until the host has checked what it
        // read: an application writing meanwhile cannot make the two differ.
        let target = &self.plan.targets[&step.target];
        let hold =
            match datastores::hold_for_backup(target.kind, &self.endpoints[&target.name]).await {
                Ok(hold) => hold,
                Err(e) => {
                    let failure = StepFailure::new(
                        Phase::Backup,
                        FailureKind::Host,
                        format!(
                            "backup failed: cannot hold target `{}` still for the backup: {e}",
                            target.name
                        ),
                    );
                    return (Err(failure), CallReport::default());
                }
            };
        let mut grants = self.grants(
            step,
            Some(Access::ReadOnly),
            BackupAccess::Write {
                store: self.backups.clone(),
                max_bytes: step.limits.backup_mib << 20,
            },
        );
        if let Some(sql) = &mut grants.sql {
            sql.snapshot = hold.snapshot.clone();
        }
        let (result, report) = self
            .caller
            .call(plugin, grants, PhaseInput::Backup(self.context(step)))
            .await;
        let verified = match result {
            Ok(PhaseOutput::Backup(manifest)) => self
                .verify_backup(step, manifest, &report.written, hold.snapshot.as_deref())
                .await
                .map_err(|e| StepFailure::new(Phase::Backup, FailureKind::BackupUnverified, e)),
            Ok(_) => unreachable!("backup returns a manifest"),
            Err(e) => Err(StepFailure::new(
                Phase::Backup,
                e.kind(),
                format!("backup failed: {e}"),
            )),
        };
        (verified, report)
    }

    /// Measures the `baseline.` metrics: validate on the target as it is
    /// before migrate, kept with the backup so a resumed step judges against
    /// the same numbers.
    pub(super) async fn baseline(
        &self,
        step: &Step,
        plugin: &LoadedPlugin,
        mut backup: StoredBackup,
        s: &mut StepSummary,
    ) -> Result<StoredBackup, StepFailure> {
        // Only what the gates read as `baseline.`: metrics of what migrate
        // creates cannot be measured yet.
        let wanted = step
            .conditions()
            .flat_map(|t| t.expr.metrics())
            .filter_map(|m| m.strip_prefix(BASELINE))
            .map(str::to_string)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let (metrics, elapsed) = self.measure(step, plugin, wanted).await.map_err(|e| {
            StepFailure::new(
                Phase::Baseline,
                e.kind,
                format!("baseline (validate before migrate): {e}"),
            )
        })?;
        s.phases.push((Phase::Baseline, elapsed));
        backup.baseline = metrics;
        Ok(backup)
    }

    /// Checks a backup before the step may change anything: every artifact
    /// the manifest names was written by this backup, each one's digest is
    /// recomputed from the stored bytes, and the tables the plugin says it
    /// saved match the host's own checksums of the target.
    pub(super) async fn verify_backup(
        &self,
        step: &Step,
        manifest: BackupManifest,
        written: &[crate::backup::ArtifactRef],
        snapshot: Option<&str>,
    ) -> Result<StoredBackup, String> {
        if manifest.artifacts.is_empty() {
            return Err("backup not verified: the manifest names no artifacts".into());
        }
        let mut artifacts = Vec::new();
        let mut seen = HashSet::new();
        for name in &manifest.artifacts {
            if !seen.insert(name) {
                return Err(format!(
                    "backup not verified: the manifest names artifact `{name}` twice"
                ));
            }
            let Some(artifact) = written.iter().find(|a| &a.name == name) else {
                return Err(format!(
                    "backup not verified: the manifest names artifact `{name}`, which this backup never wrote"
                ));
            };
            self.backups
                .verify(artifact)
                .map_err(|e| format!("backup not verified: {e}"))?;
            artifacts.push(artifact.clone());
        }
        if artifacts.iter().all(|a| a.size == 0) {
            return Err("backup not verified: every artifact is empty".into());
        }
        let target = &self.plan.targets[&step.target];
        let tables: Vec<String> = manifest.tables.iter().map(|t| t.name.clone()).collect();
        let fingerprint = datastores::fingerprint_in(
            target.kind,
            &self.endpoints[&target.name],
            tables.clone(),
            snapshot,
        )
        .await
        .map_err(|e| {
            format!(
                "backup not verified: cannot fingerprint target `{}`: {e}",
                target.name
            )
        })?;
        for table in &manifest.tables {
            match fingerprint.tables.get(&table.name) {
                Some(host) if host.rows == table.rows && host.checksum == table.checksum => {}
                Some(host) => {
                    return Err(format!(
                        "backup not verified: the plugin saved `{}` as {} rows (checksum {}) but the host counts {} rows (checksum {})",
                        table.name, table.rows, table.checksum, host.rows, host.checksum
                    ))
                }
                None => {
                    return Err(format!(
                        "backup not verified: the manifest names table `{}`, which the target does not have",
                        table.name
                    ))
                }
            }
        }
        Ok(StoredBackup {
            manifest,
            artifacts,
            fingerprint,
            baseline: Vec::new(),
            post_step: None,
            change_set: None,
        })
    }
}
