//! Command-line definitions (clap). Parsing only: `commands` maps them to work.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// sluice runs datastore changes as plans of sandboxed plugin steps: a
/// verified backup before every change, validation against thresholds, and
/// automatic, proven rollback.
#[derive(Debug, Parser)]
// The exit codes come from their one home, `exit.rs`, as the README's do.
#[command(name = "sluice", version, about, long_about, after_help = crate::exit::help_text())]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// More log detail (-v: debug, -vv: trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Formats of `sluice report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// Markdown.
    Md,
    /// Pretty JSON.
    Json,
    /// One self-contained HTML page with a timeline of the phases (no
    /// script, nothing fetched): for approvers, and for printing.
    Html,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every pending step of a plan.
    Run {
        /// The plan file.
        plan: PathBuf,
    },
    /// Show each step's state from the journal.
    Status {
        /// The plan file.
        plan: PathBuf,
    },
    /// Roll back completed steps in reverse order.
    Rollback {
        /// The plan file.
        plan: PathBuf,
        /// Keep this step and the ones before it applied.
        #[arg(long)]
        to: Option<String>,
        /// Roll back even where the target changed after a step (an
        /// application's later writes), discarding those writes; without it
        /// such a rollback is refused (exit 6) and nothing is undone. The
        /// decision and what it discarded are recorded in the journal.
        #[arg(long)]
        discard_later_writes: bool,
    },
    /// The evidence of one run, from the journal: per step its grants,
    /// phases and their durations, backups, metrics against thresholds and
    /// rollback.
    Report {
        /// The plan file.
        plan: PathBuf,
        /// The run (default: the latest).
        #[arg(long)]
        run: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ReportFormat::Md)]
        format: ReportFormat,
        /// Write the report to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Approve a step paused for review or before it runs; the next
    /// `sluice run` goes on. Recorded with who, when, the plan hash and the
    /// evidence shown; a later change to the plan or plugin voids it.
    Approve {
        /// The plan file.
        plan: PathBuf,
        /// The paused step.
        step: String,
        /// The run that paused it (default: the one the journal names); give
        /// it to be sure you approve the evidence you reviewed.
        #[arg(long)]
        run: Option<String>,
        /// Who approves (default: $SLUICE_APPROVER, else the login).
        #[arg(long)]
        by: Option<String>,
        /// Why, for the record.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Reject a paused step: a migrated step is rolled back from its verified
    /// backup, one paused before it ran is left unchanged.
    Reject {
        /// The plan file.
        plan: PathBuf,
        /// The paused step.
        step: String,
        /// Who rejects (default: $SLUICE_APPROVER, else the login).
        #[arg(long)]
        by: Option<String>,
        /// Why, for the record.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Run the whole plan against copies of its targets (a SQLite file copy,
    /// a scratch PostgreSQL database, an empty Redis database), roll every
    /// applied step back, and write a staging report of each phase's
    /// timings, metrics, backups and rollbacks. Production is never touched:
    /// it is fingerprinted before and after (exit 4 if it changed).
    Rehearse {
        /// The plan file.
        plan: PathBuf,
        /// Where the report, journal and backups of the rehearsal go
        /// (default: `<plan dir>/.sluice/rehearsals/<UTC time>/`).
        #[arg(long)]
        output: Option<PathBuf>,
        /// Keep the copies afterwards (scratch databases are otherwise
        /// dropped, Redis databases emptied, files deleted).
        #[arg(long)]
        keep: bool,
    },
    /// What each step will do, before anything runs: plugin, target,
    /// grants, the plugin's summary, how the change can be undone, the
    /// metrics it reports against the thresholds, and the backup size.
    /// Nothing is changed; targets are only read to estimate backups.
    Plan {
        /// The plan file.
        plan: PathBuf,
        /// Print JSON for machines.
        #[arg(long)]
        json: bool,
    },
    /// Check a plan without running anything: parse it, load its plugins,
    /// and check each step's params and threshold metrics with the plugin.
    Check {
        /// The plan file.
        plan: PathBuf,
    },
    /// Remove another run's lease on a target (a dead run on another host).
    Unlock {
        /// The plan file (its journal holds the lease).
        plan: PathBuf,
        /// The target, as named in the plan.
        target: String,
        /// Required: you take responsibility that the holder is dead.
        #[arg(long)]
        force: bool,
        /// Why; recorded in the journal (asked for when not given).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Check a plugin against the plugin contract on a scratch target:
    /// restores, rollback-twice, idempotent, validate-read-only,
    /// declared-imports, backup-read-back, deadline. Exit 0 all pass, 1 a
    /// check failed, 2 bad input.
    Conformance {
        /// The plugin component.
        plugin: PathBuf,
        /// `sqlite` (a scratch file), `sqlite:<path>` (a copy of it),
        /// `postgres://…` or `redis://…` (a scratch database: it will be
        /// changed).
        #[arg(
            long,
            required_unless_present = "target_env",
            conflicts_with = "target_env"
        )]
        target: Option<String>,
        /// Read the target URL from this environment variable (keeps a
        /// password out of the command line).
        #[arg(long, value_name = "VAR")]
        target_env: Option<String>,
        /// The step params, a JSON object.
        #[arg(long, conflicts_with = "params_file")]
        params: Option<String>,
        /// The step params from a JSON file.
        #[arg(long, value_name = "FILE")]
        params_file: Option<PathBuf>,
        /// Data loaded into the scratch target first: a SQL script, or for
        /// Redis one command per line (`SET k v`).
        #[arg(long, value_name = "FILE")]
        fixture: Option<PathBuf>,
        /// Grant a directory read-only to the plugin as `NAME` (repeatable).
        #[arg(long = "file", value_name = "NAME=DIR")]
        files: Vec<String>,
        /// Print JSON for machines.
        #[arg(long)]
        json: bool,
    },
    /// Show what a plugin is and what it can reach, before it runs.
    Inspect {
        /// The plugin component.
        plugin: PathBuf,
        /// Print JSON for machines.
        #[arg(long)]
        json: bool,
    },
    /// Make something new from a template: `sluice new plugin <name>`.
    New {
        /// What to make.
        #[command(subcommand)]
        what: NewCommand,
    },
    /// Per step: requested vs granted, surplus and risky grants; check the
    /// plan against its lock file.
    Audit {
        /// The plan file.
        plan: PathBuf,
        /// Accept the plan's current plugins and grants into the lock file.
        #[arg(long)]
        accept: bool,
        /// Print JSON for machines.
        #[arg(long)]
        json: bool,
    },
}

/// What `sluice new` makes.
#[derive(Debug, Subcommand)]
pub enum NewCommand {
    /// A plugin crate, outside this repository, that builds as it is
    /// (`./build.sh`), passes `sluice conformance` (`./conformance.sh`) and
    /// has a README for its author.
    Plugin {
        /// The crate's name: a-z, 0-9, `-`, `_`, starting with a letter.
        name: String,
        /// The directory to create the crate in (default: the current one);
        /// an existing `<dir>/<name>` is never overwritten.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The sluice sdk to depend on (default: the sdk of the checkout
        /// this binary was built from).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
}
