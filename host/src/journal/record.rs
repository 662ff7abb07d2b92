//! The journal's own record types: what it stores of a step's metrics, its
//! backup manifest and why each transition happened. They are sluice's
//! types, not the WIT's: the runtime converts at its boundary
//! (`runtime/mod.rs`), so a change to the plugin contract is not a change to
//! the journal format. The format is versioned ([`FORMAT`]); what each
//! version added is listed in docs/FORMATS.md.

use serde::{Deserialize, Serialize};

use super::outcome::Phase;
use super::StepState;

/// The journal format this sluice writes: 2 added each transition's typed
/// [`Cause`]. Format 1 is every journal written before formats were
/// recorded; it opens, migrated on first use.
pub const FORMAT: u32 = 2;

/// A metric a plugin's `validate` measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// Name, as threshold expressions use it (`match_rate`).
    pub name: String,
    /// The measured value.
    pub value: f64,
    /// How it was measured, in the plugin's words.
    pub detail: String,
}

/// Row count and content checksum of one table, as a plugin measured it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableState {
    /// Table name.
    pub name: String,
    /// Number of rows.
    pub rows: u64,
    /// Order-independent checksum of its rows (hex).
    pub checksum: String,
}

/// How a step's migrate changes its target, as the plugin declares it.
/// (Spelled as format 1 stored it: the variant names.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeKind {
    /// One transaction: a failing migrate leaves nothing behind.
    Transactional,
    /// Statement by statement: a failure may leave part of it applied.
    NonTransactional,
    /// Only the backup can undo it; the operator acknowledged that.
    Irreversible,
}

impl ChangeKind {
    /// The word reports and `sluice plan` use.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Transactional => "transactional",
            ChangeKind::NonTransactional => "non-transactional",
            ChangeKind::Irreversible => "irreversible",
        }
    }
}

/// What a plugin's backup wrote, handed back verbatim to its rollback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupManifest {
    /// The artifacts it wrote through the backup store.
    pub artifacts: Vec<String>,
    /// The backed-up tables as the plugin measured them.
    pub tables: Vec<TableState>,
    /// Plugin-defined data (JSON) its rollback needs.
    pub metadata: String,
    /// How the step's migrate changes the target.
    pub change: ChangeKind,
}

/// What kind of failure stopped a step: what the engine decides on and the
/// reports show, without reading the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// The plugin returned an error.
    PluginError,
    /// The plugin trapped (panic, memory limit, …).
    Trap,
    /// The phase ran out of time.
    Timeout,
    /// sluice failed to run the phase or to check its result.
    Host,
    /// The backup could not be verified.
    BackupUnverified,
    /// validate returned metrics that cannot be used.
    UnusableMetrics,
    /// The step's gates said roll back (or a watch check breached them).
    Thresholds,
    /// A signal stopped the run after migrate.
    Signal,
    /// An operator rejected the paused step.
    Rejected,
    /// An operator asked for the rollback (`sluice rollback`), or a later
    /// step's breach rolls back every step of the run.
    Requested,
    /// A run was interrupted while migrate may have run: restored before
    /// the step runs again.
    Interrupted,
    /// The target changed after the step; the rollback was not started.
    LaterWrites,
    /// The host could not prove the target equals its pre-step state.
    Unproven,
    /// Recorded by a sluice that did not type its failures (format 1).
    Unrecorded,
}

/// Why a step failed: the phase, the kind, and the words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepFailure {
    /// The phase that failed.
    pub phase: Phase,
    /// What kind of failure.
    pub kind: FailureKind,
    /// In words, as the operator sees it.
    pub message: String,
}

impl StepFailure {
    /// A failure of `phase`.
    pub fn new(phase: Phase, kind: FailureKind, message: impl Into<String>) -> Self {
        StepFailure {
            phase,
            kind,
            message: message.into(),
        }
    }

    /// The same failure, its message given more context.
    pub fn map_message(mut self, f: impl FnOnce(String) -> String) -> Self {
        self.message = f(self.message);
        self
    }
}

impl std::fmt::Display for StepFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Why a step entered a state: recorded with every transition, beside the
/// words (`detail`) shown to people. Reports read this, never the words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cause", rename_all = "kebab-case")]
pub enum Cause {
    /// A phase started (backup, migrate, validate).
    Started {
        /// The phase.
        phase: Phase,
    },
    /// The backup was written and verified.
    BackupVerified,
    /// Gates met (and the watch window passed): the step is done.
    Completed,
    /// Gates met; the watch window began.
    Watching,
    /// The plan's approval point before the step: waiting for a decision.
    ApprovalRequired,
    /// A rehearsal passes approval points without a decision.
    ApprovalWaived,
    /// An operator approved the step.
    Approved {
        /// Who.
        by: String,
        /// When (RFC 3339).
        at: String,
    },
    /// Migrated and validated; waiting for an operator's review.
    AwaitingReview,
    /// An earlier run was interrupted in `from`; this run took it over.
    Resumed {
        /// The state it was left in.
        from: StepState,
    },
    /// A signal stopped the run before the step changed anything.
    Stopped,
    /// The step failed (state `failed`), or is rolled back because it did
    /// (`rolling-back`), or its rollback failed (`rollback-failed`).
    Failed(StepFailure),
    /// A read-only step failed and its target was verified unchanged.
    VerifiedUnchanged(StepFailure),
    /// Rollback refused: the target changed after the step.
    LaterWrites {
        /// What changed, one line per table.
        changed: Vec<String>,
    },
    /// Restored, and proven equal to the pre-step state.
    RolledBack,
    /// Migrated from format 1, whose words did not say.
    Unrecorded,
}

/// Why a transition happened, in both forms the journal stores.
#[derive(Debug, Clone, PartialEq)]
pub struct Why {
    /// Typed: what reports and the engine read.
    pub cause: Cause,
    /// In words: what people read.
    pub detail: String,
}

impl Why {
    /// A cause with its words.
    pub fn new(cause: Cause, detail: impl Into<String>) -> Self {
        Why {
            cause,
            detail: detail.into(),
        }
    }

    /// A failure; its message is the words.
    pub fn failed(failure: &StepFailure) -> Self {
        Why::new(Cause::Failed(failure.clone()), failure.message.clone())
    }

    /// The cause as the journal stores it (JSON).
    pub fn cause_json(&self) -> String {
        serde_json::to_string(&self.cause).expect("causes serialize")
    }
}

/// Decodes a stored cause; a row without one (written by a format-1 sluice,
/// possibly still running beside this one on a shared journal) is read from
/// its words.
pub fn decode_cause(stored: Option<&str>, state: StepState, detail: &str) -> Result<Cause, String> {
    match stored {
        Some(json) => serde_json::from_str(json).map_err(|e| format!("transition cause: {e}")),
        None => Ok(Cause::of_format_1(state, detail)),
    }
}

/// The stored cause (JSON) of a format-1 transition, read from its words;
/// `None` for a state no sluice wrote (reading the row reports it corrupt,
/// as before). Both journals' 1 → 2 migrations store this.
pub fn format_1_cause_json(state: &str, detail: &str) -> Option<String> {
    let state = state.parse().ok()?;
    Some(serde_json::to_string(&Cause::of_format_1(state, detail)).expect("causes serialize"))
}

impl Cause {
    /// Whether this transition took over a step an interrupted run left.
    pub fn is_resumption(&self) -> bool {
        match self {
            Cause::Resumed { .. } => true,
            Cause::Failed(f) => f.kind == FailureKind::Interrupted,
            _ => false,
        }
    }

    /// The cause a format-1 transition most likely had, read from the words
    /// it stored: the one place sluice reads its own messages, and only to
    /// migrate journals written before causes were recorded.
    pub fn of_format_1(state: StepState, detail: &str) -> Cause {
        let failure = |phase| StepFailure::new(phase, FailureKind::Unrecorded, detail.to_string());
        match state {
            StepState::BackingUp => Cause::Started {
                phase: Phase::Backup,
            },
            StepState::Migrating => Cause::Started {
                phase: Phase::Migrate,
            },
            StepState::Validating => Cause::Started {
                phase: Phase::Validate,
            },
            StepState::RollingBack if detail.starts_with("resumed: ") => Cause::Failed(
                StepFailure::new(Phase::Migrate, FailureKind::Interrupted, detail.to_string()),
            ),
            _ if detail.starts_with("resumed: interrupted while ") => {
                let from = detail["resumed: interrupted while ".len()..]
                    .split(' ')
                    .next()
                    .and_then(|s| s.parse().ok());
                from.map_or(Cause::Unrecorded, |from| Cause::Resumed { from })
            }
            StepState::BackedUp if detail.starts_with("backup verified") => Cause::BackupVerified,
            StepState::Completed => Cause::Completed,
            StepState::Watching => Cause::Watching,
            StepState::AwaitingReview => Cause::AwaitingReview,
            StepState::AwaitingApproval => Cause::ApprovalRequired,
            StepState::RolledBack => Cause::RolledBack,
            StepState::RollbackRefused => Cause::LaterWrites {
                changed: Vec::new(),
            },
            StepState::Pending if detail.starts_with("approved by ") => {
                let rest = &detail["approved by ".len()..];
                match rest.rsplit_once(" at ") {
                    Some((by, at)) => Cause::Approved {
                        by: by.into(),
                        at: at.into(),
                    },
                    None => Cause::Unrecorded,
                }
            }
            StepState::Pending if detail.starts_with("rehearsal: the approval point") => {
                Cause::ApprovalWaived
            }
            StepState::Pending if detail.starts_with("stopped by a signal") => Cause::Stopped,
            StepState::Failed
                if detail.ends_with("(read-only step: target verified unchanged)") =>
            {
                Cause::VerifiedUnchanged(failure(Phase::Rollback))
            }
            StepState::Failed => Cause::Failed(failure(Phase::Backup)),
            StepState::RollingBack | StepState::RollbackFailed => {
                Cause::Failed(failure(Phase::Rollback))
            }
            _ => Cause::Unrecorded,
        }
    }
}

/// Words with no cause, for tests that only check how transitions are
/// stored.
#[cfg(test)]
pub(crate) fn words(detail: &str) -> Why {
    Why::new(Cause::Unrecorded, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_serialize_tagged_and_round_trip() {
        let cases = [
            (
                Cause::Started {
                    phase: Phase::Migrate,
                },
                r#"{"cause":"started","phase":"migrate"}"#,
            ),
            (Cause::BackupVerified, r#"{"cause":"backup-verified"}"#),
            (
                Cause::Resumed {
                    from: StepState::RollingBack,
                },
                r#"{"cause":"resumed","from":"rolling-back"}"#,
            ),
            (
                Cause::Failed(StepFailure::new(
                    Phase::Validate,
                    FailureKind::Timeout,
                    "deadline of 5s exceeded",
                )),
                r#"{"cause":"failed","phase":"validate","kind":"timeout","message":"deadline of 5s exceeded"}"#,
            ),
        ];
        for (cause, json) in cases {
            assert_eq!(serde_json::to_string(&cause).unwrap(), json);
            assert_eq!(serde_json::from_str::<Cause>(json).unwrap(), cause);
        }
    }

    #[test]
    fn format_1_words_migrate_to_causes() {
        use StepState::*;
        let cases = [
            (BackingUp, "backup started", Cause::Started { phase: Phase::Backup }),
            (BackedUp, "backup verified: 1 artifacts, 10 bytes", Cause::BackupVerified),
            (
                Pending,
                "resumed: interrupted while migrating (run 1-ab, 2026-01-01T00:00:00Z); nothing had changed, running it again",
                Cause::Resumed { from: Migrating },
            ),
            (
                Pending,
                "approved by ana (root) at 2026-01-01T00:00:00.5Z",
                Cause::Approved {
                    by: "ana (root)".into(),
                    at: "2026-01-01T00:00:00.5Z".into(),
                },
            ),
            (Completed, "gates met", Cause::Completed),
            (
                Failed,
                "validate failed (read-only step: target verified unchanged)",
                Cause::VerifiedUnchanged(StepFailure::new(
                    Phase::Rollback,
                    FailureKind::Unrecorded,
                    "validate failed (read-only step: target verified unchanged)",
                )),
            ),
            (Pending, "something else", Cause::Unrecorded),
        ];
        for (state, detail, cause) in cases {
            assert_eq!(Cause::of_format_1(state, detail), cause, "{detail}");
        }
    }

    #[test]
    fn manifests_read_as_format_1_wrote_them() {
        // Written by sluice at 4b81e39, when the journal stored WIT types.
        let json = r#"{"artifacts":["rows.csv"],"tables":[{"name":"t","rows":2,"checksum":"ab"}],"metadata":"{}","change":"NonTransactional"}"#;
        let m: BackupManifest = serde_json::from_str(json).unwrap();
        assert_eq!(m.change, ChangeKind::NonTransactional);
        assert_eq!(serde_json::to_string(&m).unwrap(), json);
    }
}
