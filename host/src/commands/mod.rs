//! One file per subcommand. Each `run` does its work, prints its result on
//! stdout and returns the exit code ([`crate::exit`]); a failure comes back
//! as a [`CommandError`] that `main` prints once, on stderr.

pub mod approve;
pub mod audit;
pub mod check;
pub mod conformance;
pub mod inspect;
pub mod new;
pub mod plan;
pub mod rehearse;
pub mod reject;
pub mod report;
pub mod rollback;
pub mod run;
pub mod status;
pub mod unlock;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::cli::Command;
use crate::exit;
use crate::plan::{Plan, PlanError};
use crate::progress_bar::ProgressBars;
use crate::runtime::{ComponentCache, Runtime};

/// Any error, boxed: what a command could not do, with its chain.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a command failed, by the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The plan is wrong; shown with its source line and caret (exit 2).
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The command line or an input sluice cannot use: a plugin file, an
    /// unknown step, run or target (exit 2).
    #[error(transparent)]
    Usage(BoxError),
    /// Refused before anything changed: lock, lease, approval (exit 3).
    #[error("refused: {0}")]
    Refused(BoxError),
    /// A result could not be written out (exit 70).
    #[error("cannot write {what}: {source}")]
    Write {
        /// What and where.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// sluice itself failed: journal, backup store, engine (exit 70).
    #[error(transparent)]
    Internal(BoxError),
    /// A failure that knows its own exit code (rehearsal, conformance).
    #[error("{source}")]
    Coded {
        /// The exit code.
        code: i32,
        /// What failed.
        source: BoxError,
    },
}

impl CommandError {
    /// A usage error from any error or message.
    pub fn usage(e: impl Into<BoxError>) -> Self {
        Self::Usage(e.into())
    }

    /// A refusal from any error or message.
    pub fn refused(e: impl Into<BoxError>) -> Self {
        Self::Refused(e.into())
    }

    /// An internal failure from any error.
    pub fn internal(e: impl Into<BoxError>) -> Self {
        Self::Internal(e.into())
    }

    /// The exit code of the process.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Plan(_) | Self::Usage(_) => exit::PLAN_ERROR,
            Self::Refused(_) => exit::REFUSED,
            Self::Write { .. } | Self::Internal(_) => exit::INTERNAL,
            Self::Coded { code, .. } => *code,
        }
    }

    /// What `main` prints on stderr. An error the operator acts on is its
    /// own message (a plan error with its source line); an internal one
    /// carries its chain of causes, which is what a bug report needs.
    pub fn report(&self) -> String {
        match self {
            Self::Plan(e) => crate::report::plan_error(e),
            Self::Internal(e) => {
                let mut message = format!("error: {e}");
                let mut source = e.source();
                while let Some(s) = source {
                    message.push_str(&format!("\n  caused by: {s}"));
                    source = s.source();
                }
                message
            }
            e => format!("error: {e}"),
        }
    }
}

/// Runs one subcommand; `Ok` is the exit code.
pub async fn dispatch(command: Command, bars: Option<ProgressBars>) -> Result<i32, CommandError> {
    match command {
        Command::Run { plan } => run::run(&plan, bars).await,
        Command::Status { plan } => status::run(&plan).await,
        Command::Rollback {
            plan,
            to,
            discard_later_writes,
        } => rollback::run(&plan, to.as_deref(), discard_later_writes, bars).await,
        Command::Report {
            plan,
            run,
            format,
            output,
        } => report::run(&plan, run.as_deref(), format, output.as_deref()).await,
        Command::Approve {
            plan,
            step,
            run,
            by,
            reason,
        } => approve::run(&plan, &step, run.as_deref(), by, reason.as_deref()).await,
        Command::Reject {
            plan,
            step,
            by,
            reason,
        } => reject::run(&plan, &step, by, reason.as_deref(), bars).await,
        Command::Rehearse { plan, output, keep } => rehearse::run(&plan, output, keep, bars).await,
        Command::Plan { plan, json } => plan::run(&plan, json).await,
        Command::Check { plan } => check::run(&plan).await,
        Command::Unlock {
            plan,
            target,
            force,
            reason,
        } => unlock::run(&plan, &target, force, reason).await,
        Command::Conformance {
            plugin,
            target,
            target_env,
            params,
            params_file,
            fixture,
            files,
            json,
        } => {
            let inputs = conformance::Inputs {
                plugin,
                target,
                target_env,
                params,
                params_file,
                fixture,
                files,
            };
            conformance::run(inputs, json).await
        }
        Command::Inspect { plugin, json } => inspect::run(&plugin, json).await,
        Command::New { what } => new::run(&what).await,
        Command::Audit { plan, accept, json } => audit::run(&plan, accept, json).await,
    }
}

/// Reads and validates the plan (every command that takes one starts here).
fn load_plan(path: &Path) -> Result<Plan, CommandError> {
    Ok(crate::plan::load(path)?)
}

/// The wasmtime runtime, with the on-disk cache of compiled components.
fn runtime() -> Result<Runtime, CommandError> {
    Runtime::new(ComponentCache::new(ComponentCache::default_dir())).map_err(CommandError::internal)
}

/// The plan's plugins, loaded; one that cannot be is a usage error.
async fn plugins(
    runtime: &Runtime,
    plan: &Plan,
) -> Result<crate::runtime::PluginSet, CommandError> {
    crate::runtime::PluginSet::load(runtime, plan)
        .await
        .map_err(CommandError::usage)
}

/// Nothing runs (or is rehearsed) until a reviewer has accepted these
/// plugins and grants into the lock file.
fn check_lock(plan: &Plan) -> Result<(), CommandError> {
    crate::audit::check_lock(plan).map_err(CommandError::refused)
}

/// The first SIGINT or SIGTERM asks the engine to stop at the next phase
/// boundary; a second one exits at once (the journal is written ahead, so
/// the next run resumes).
fn stop_on_signals() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    tokio::spawn(async move {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        for _ in 0..2 {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if flag.swap(true, Ordering::SeqCst) {
                eprintln!(
                    "sluice: second signal, exiting now; the next run resumes from the journal"
                );
                std::process::exit(exit::STOPPED);
            }
            eprintln!("sluice: stopping after the current phase (signal again to exit at once)");
        }
    });
    stop
}
