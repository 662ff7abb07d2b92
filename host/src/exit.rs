//! The documented exit codes of the `sluice` binary, in one place.
//!
//! [`CODES`] is the table; `sluice --help` prints [`help_text`] and the
//! README's exit-code section is [`markdown_table`] (a test compares them),
//! so the three cannot drift apart.

use std::fmt::Write;

/// Every step completed (or was already applied).
pub const OK: i32 = 0;
/// A step failed and was rolled back; the target is in its pre-step state.
pub const STEP_FAILED: i32 = 1;
/// The plan or the command line is wrong; nothing ran.
pub const PLAN_ERROR: i32 = 2;
/// Refused before anything changed: no or changed lock, drift, an
/// interrupted step, a target leased by another run, an approval for stale
/// evidence.
pub const REFUSED: i32 = 3;
/// A rollback failed or was refused: the target needs attention.
pub const NEEDS_ATTENTION: i32 = 4;
/// A step waits for `sluice approve` or `sluice reject`; the journal holds
/// its state and evidence. Run again after the decision.
pub const AWAITING_APPROVAL: i32 = 5;
/// A rollback was refused before it undid anything: the target changed
/// after the step, and restoring it would discard those later writes. The
/// step waits in `rollback-refused` for `sluice rollback --discard-later-writes`.
pub const ROLLBACK_REFUSED: i32 = 6;
/// sluice itself failed (journal, backup store, engine).
pub const INTERNAL: i32 = 70;
/// Stopped by SIGINT/SIGTERM at a phase boundary; the step in progress was
/// finished or rolled back and the journal is consistent.
pub const STOPPED: i32 = 130;

/// One documented exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitCodeDoc {
    /// The process exit status.
    pub code: i32,
    /// A short name, as reports and JSON output spell the outcome.
    pub name: &'static str,
    /// What it means for the operator, one line.
    pub meaning: &'static str,
}

/// The documented exit codes, in ascending order.
pub const CODES: &[ExitCodeDoc] = &[
    ExitCodeDoc {
        code: OK,
        name: "ok",
        meaning: "every step completed (or was already applied)",
    },
    ExitCodeDoc {
        code: STEP_FAILED,
        name: "step-failed",
        meaning: "a step failed and was rolled back: the target is in its pre-step state",
    },
    ExitCodeDoc {
        code: PLAN_ERROR,
        name: "plan-error",
        meaning: "the plan or the command line is wrong: nothing ran",
    },
    ExitCodeDoc {
        code: REFUSED,
        name: "refused",
        meaning: "refused, nothing changed: no or changed lock, drift, an interrupted step, \
                  a target leased by another run, a step whose rollback failed, \
                  an approval for stale evidence",
    },
    ExitCodeDoc {
        code: NEEDS_ATTENTION,
        name: "needs-attention",
        meaning: "a rollback failed or was refused (or production changed during a \
                  rehearsal): the target needs attention",
    },
    ExitCodeDoc {
        code: AWAITING_APPROVAL,
        name: "awaiting-approval",
        meaning:
            "paused, awaiting `sluice approve` or `sluice reject`; run again after the decision",
    },
    ExitCodeDoc {
        code: ROLLBACK_REFUSED,
        name: "rollback-refused",
        meaning: "a rollback was refused before undoing anything: the target changed after \
                  the step and restoring would discard those writes; decide, then \
                  `sluice rollback --discard-later-writes` (or keep the step)",
    },
    ExitCodeDoc {
        code: INTERNAL,
        name: "internal",
        meaning: "sluice itself failed (journal, backup store, engine)",
    },
    ExitCodeDoc {
        code: STOPPED,
        name: "stopped",
        meaning: "stopped by SIGINT/SIGTERM at a phase boundary: the step in progress \
                  was finished or rolled back",
    },
];

/// The entry for `code`, if it is documented.
pub fn doc(code: i32) -> Option<&'static ExitCodeDoc> {
    CODES.iter().find(|d| d.code == code)
}

/// The exit-code section of `sluice --help`.
pub fn help_text() -> String {
    let mut out = String::from("Exit codes:\n");
    for d in CODES {
        let _ = writeln!(out, "  {:>3}  {}", d.code, d.meaning);
    }
    out
}

/// The README's exit-code table (Markdown).
pub fn markdown_table() -> String {
    let mut out = String::from("| code | name | meaning |\n|---:|---|---|\n");
    for d in CODES {
        let _ = writeln!(out, "| {} | `{}` | {} |", d.code, d.name, d.meaning);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_ascending() {
        for pair in CODES.windows(2) {
            assert!(pair[0].code < pair[1].code, "{pair:?}");
        }
        assert_eq!(doc(STOPPED).map(|d| d.name), Some("stopped"));
        assert_eq!(doc(42), None);
    }

    /// The README shows the table exactly as `exit.rs` says it.
    #[test]
    fn readme_lists_the_exit_codes_of_this_file() {
        let readme = include_str!("../../README.md");
        let table = markdown_table();
        assert!(
            readme.contains(&table),
            "README.md's exit-code table differs from host/src/exit.rs; it should read:\n\n{table}"
        );
    }

    /// `sluice --help` prints the same table.
    #[test]
    fn help_lists_the_exit_codes_of_this_file() {
        use clap::CommandFactory;
        let help = crate::cli::Cli::command().render_long_help().to_string();
        assert!(
            help.contains(help_text().trim_end()),
            "`sluice --help` does not list the exit codes of host/src/exit.rs:\n{help}"
        );
        for d in CODES {
            assert!(help.contains(d.meaning), "{} missing from:\n{help}", d.code);
        }
        let short = crate::cli::Cli::command().render_help().to_string();
        assert!(short.contains(help_text().trim_end()), "{short}");
    }
}
