//! A scripted plugin behind the [`PhaseCaller`] seam: each phase answers as
//! the test says, and the answers that succeed do the real thing to a real
//! SQLite target — backup copies the file into the real backup store,
//! migrate changes schema and rows, rollback writes the file back — so the
//! engine's own checks (backup verification, the host's proof) run as in
//! production.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::capabilities::backup_store::BackupAccess;
use crate::datastores::{self, Endpoint};
use crate::journal::record::ChangeKind;
use crate::plan::{Limits, Probe, TargetKind};
use crate::runtime::caller::{CallFuture, PhaseResult};
use crate::runtime::{
    BackupManifest, CallGrants, CallReport, LoadedPlugin, Metric, PhaseCaller, PhaseError,
    PhaseInput, PhaseOutput, PluginError, StepContext, StepPreview,
};

/// How one phase call answers.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// Does the phase's real work and returns it (validate: no metrics).
    Ok,
    /// validate: returns these metrics.
    Metrics(Vec<(&'static str, f64)>),
    /// The plugin returns an error.
    Fail,
    /// The plugin traps.
    Trap,
    /// The call runs out of time.
    Timeout,
    /// backup: claims a checksum the host will not find.
    Lie,
    /// rollback: returns success without restoring anything.
    Idle,
    /// Does the real work, then a signal arrives (the stop flag is set).
    ThenStop,
    /// Like `Metrics`, then a signal arrives.
    MetricsThenStop(Vec<(&'static str, f64)>),
    /// preview: the plugin rejects the params.
    Reject,
}

/// The phases a test scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Call {
    Preview,
    Backup,
    Migrate,
    Validate,
    Rollback,
}

#[derive(Default)]
struct Script {
    /// Answers still to give, per phase; a phase with none left answers `Ok`.
    answers: BTreeMap<Call, VecDeque<Answer>>,
    /// Every call made, in order.
    calls: Vec<Call>,
}

/// The scripted plugin and the caller in front of it.
#[derive(Clone)]
pub(crate) struct Scripted {
    script: Arc<Mutex<Script>>,
    /// The engine's stop flag, set by the `…ThenStop` answers.
    pub(crate) stop: Arc<AtomicBool>,
    /// Metric names the preview declares.
    pub(crate) declared: Vec<String>,
}

impl Scripted {
    pub(crate) fn new(declared: &[&str]) -> Self {
        Scripted {
            script: Arc::default(),
            stop: Arc::default(),
            declared: declared.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Queues answers for `call`, given in order.
    pub(crate) fn answer(&self, call: Call, answers: impl IntoIterator<Item = Answer>) -> &Self {
        self.script
            .lock()
            .unwrap()
            .answers
            .entry(call)
            .or_default()
            .extend(answers);
        self
    }

    /// The calls made so far, previews left out.
    pub(crate) fn calls(&self) -> Vec<Call> {
        let script = self.script.lock().unwrap();
        script
            .calls
            .iter()
            .copied()
            .filter(|c| *c != Call::Preview)
            .collect()
    }

    fn next(&self, call: Call) -> Answer {
        let mut script = self.script.lock().unwrap();
        script.calls.push(call);
        script
            .answers
            .get_mut(&call)
            .and_then(VecDeque::pop_front)
            .unwrap_or(Answer::Ok)
    }

    /// A loaded plugin with no component, named as the plan names it.
    pub(crate) fn plugin(name: &str, digest: &str, idempotent_migrate: bool) -> LoadedPlugin {
        LoadedPlugin::scripted(
            name,
            digest,
            crate::runtime::PluginInfo {
                name: "scripted".into(),
                version: "1.0.0".into(),
                kinds: vec!["sqlite".into()],
                needs: Vec::new(),
                idempotent_migrate,
            },
        )
    }

    async fn phase(&self, grants: CallGrants, input: PhaseInput) -> PhaseResult {
        let call = match &input {
            PhaseInput::Backup(_) => Call::Backup,
            PhaseInput::Migrate(_) => Call::Migrate,
            PhaseInput::Validate(_) => Call::Validate,
            PhaseInput::Rollback(..) => Call::Rollback,
        };
        let answer = self.next(call);
        let mut report = CallReport {
            elapsed: Duration::from_millis(1),
            ..CallReport::default()
        };
        let failed = |e: PhaseError| (Err(e), CallReport::default());
        match answer {
            Answer::Fail => {
                return failed(PhaseError::Plugin(PluginError::PreconditionFailed(
                    format!("scripted {call:?} failure"),
                )))
            }
            Answer::Trap => {
                return failed(PhaseError::Trap {
                    message: "wasm trap: unreachable".into(),
                })
            }
            Answer::Timeout => {
                return failed(PhaseError::Timeout {
                    limit: Duration::from_secs(grants.limits.phase_seconds),
                })
            }
            _ => {}
        }
        let target = match grants.sql.as_ref().map(|g| &g.endpoint) {
            Some(Endpoint::File(files)) => files.path.clone(),
            _ => panic!("the scripted plugin serves SQLite targets with a grant"),
        };
        let output = match (input, &answer) {
            (PhaseInput::Backup(_), _) => {
                let BackupAccess::Write { store, .. } = &grants.backup else {
                    panic!("backup without write access to the store")
                };
                let mut writer = store.create("db").unwrap();
                writer.write(&std::fs::read(&target).unwrap()).unwrap();
                report.written.push(store.finish(writer).unwrap());
                let host = datastores::fingerprint(
                    TargetKind::Sqlite,
                    &Endpoint::File(crate::plan::SqliteFiles::single(target.clone())),
                    vec!["items".into()],
                )
                .await
                .unwrap();
                let items = &host.tables["items"];
                PhaseOutput::Backup(BackupManifest {
                    artifacts: vec!["db".into()],
                    tables: vec![crate::runtime::TableState {
                        name: "items".into(),
                        rows: items.rows,
                        checksum: match answer {
                            Answer::Lie => "0".repeat(64),
                            _ => items.checksum.clone(),
                        },
                    }],
                    metadata: String::new(),
                    change: ChangeKind::Transactional,
                })
            }
            (PhaseInput::Migrate(ctx), _) => {
                let db = rusqlite::Connection::open(&target).unwrap();
                let step = &ctx.step_id;
                db.execute_batch(&format!(
                    "CREATE TABLE added_{step} (x INTEGER); INSERT INTO items (name) VALUES ('{step}');"
                ))
                .unwrap();
                PhaseOutput::Migrate
            }
            (PhaseInput::Validate(_), Answer::Metrics(m) | Answer::MetricsThenStop(m)) => {
                PhaseOutput::Validate(
                    m.iter()
                        .map(|(name, value)| Metric {
                            name: name.to_string(),
                            value: *value,
                            detail: String::new(),
                        })
                        .collect(),
                )
            }
            (PhaseInput::Validate(_), _) => PhaseOutput::Validate(Vec::new()),
            (PhaseInput::Rollback(..), Answer::Idle) => PhaseOutput::Rollback(Vec::new()),
            (PhaseInput::Rollback(..), _) => {
                let BackupAccess::Read { store, artifacts } = &grants.backup else {
                    panic!("rollback without read access to the backup")
                };
                let mut reader = store.open_artifact(&artifacts["db"]).unwrap();
                let mut bytes = Vec::new();
                let mut buf = vec![0; 1 << 16];
                loop {
                    let n = reader.read_chunk(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    bytes.extend_from_slice(&buf[..n]);
                }
                std::fs::write(&target, bytes).unwrap();
                PhaseOutput::Rollback(Vec::new())
            }
        };
        if matches!(answer, Answer::ThenStop | Answer::MetricsThenStop(_)) {
            self.stop.store(true, Ordering::SeqCst);
        }
        (Ok(output), report)
    }
}

impl PhaseCaller for Scripted {
    fn call<'a>(
        &'a self,
        _plugin: &'a LoadedPlugin,
        grants: CallGrants,
        input: PhaseInput,
    ) -> CallFuture<'a, PhaseResult> {
        Box::pin(self.phase(grants, input))
    }

    fn preview<'a>(
        &'a self,
        _plugin: &'a LoadedPlugin,
        _ctx: &'a StepContext,
        _limits: Limits,
        _probes: &'a [Probe],
    ) -> CallFuture<'a, Result<StepPreview, PhaseError>> {
        let answer = self.next(Call::Preview);
        let declared = self.declared.clone();
        Box::pin(async move {
            match answer {
                Answer::Reject => Err(PhaseError::Plugin(PluginError::InvalidParams(
                    "scripted: `migrate` is missing".into(),
                ))),
                _ => Ok(StepPreview {
                    summary: "scripted step".into(),
                    change: crate::runtime::bindings::ChangeKind::Transactional,
                    metrics: declared,
                    tables: vec!["items".into()],
                }),
            }
        })
    }
}
