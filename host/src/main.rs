//! The `sluice` binary: parse, run, map to a documented exit code.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Parser;
use sluice::cli::{Cli, Command, LogFormat, NewCommand};
use sluice::engine::{exit, Engine, EngineOptions};
use sluice::progress_bar::ProgressBars;
use sluice::runtime::{ComponentCache, Runtime};
use sluice::{audit, engine, plan, preview, report};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let bars = ProgressBars::for_stderr(cli.log_format);
    init_logging(&cli, bars.clone());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::INTERNAL as u8);
        }
    };
    let code = runtime.block_on(run(cli.command, bars));
    ExitCode::from(code as u8)
}

async fn run(command: Command, bars: Option<ProgressBars>) -> i32 {
    if matches!(command, Command::Conformance { .. }) {
        return conformance(command).await;
    }
    let plan_path = match &command {
        Command::Inspect { plugin, json } => return inspect(plugin, *json).await,
        Command::New { what } => return new(what),
        Command::Conformance { .. } => unreachable!("handled above"),
        Command::Run { plan }
        | Command::Status { plan }
        | Command::Report { plan, .. }
        | Command::Rollback { plan, .. }
        | Command::Check { plan }
        | Command::Plan { plan, .. }
        | Command::Rehearse { plan, .. }
        | Command::Unlock { plan, .. }
        | Command::Approve { plan, .. }
        | Command::Reject { plan, .. }
        | Command::Audit { plan, .. } => plan.clone(),
    };
    let plan = match plan::load(&plan_path) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("{}", report::plan_error(&e));
            return exit::PLAN_ERROR;
        }
    };
    match command {
        Command::Inspect { .. } | Command::New { .. } | Command::Conformance { .. } => {
            unreachable!("handled above")
        }
        Command::Check { .. } => match previews(&plan, preview::Estimate::Skip).await {
            Ok(_) => {
                println!(
                    "plan {} is valid: {} steps, {} plugins, {} targets",
                    plan.name,
                    plan.steps.len(),
                    plan.plugins.len(),
                    plan.targets.len()
                );
                exit::OK
            }
            Err(code) => code,
        },
        Command::Plan { json, .. } => match previews(&plan, preview::Estimate::Measure).await {
            Ok(steps) if json => {
                let out =
                    serde_json::json!({ "plan": plan.path, "name": plan.name, "steps": steps });
                println!(
                    "{}",
                    serde_json::to_string_pretty(&out).expect("serializes")
                );
                exit::OK
            }
            Ok(steps) => {
                print!("{}", preview::text(&plan, &steps));
                exit::OK
            }
            Err(code) => code,
        },
        Command::Status { .. } => match engine::status(&plan) {
            Ok(steps) => {
                print!("{}", report::status(&plan.name, &steps));
                exit::OK
            }
            Err(e) => internal(&e),
        },
        Command::Report {
            run,
            format,
            output,
            ..
        } => report(&plan, run.as_deref(), format, output.as_deref()),
        Command::Audit { accept, json, .. } => audit(plan, accept, json).await,
        Command::Rehearse { output, keep, .. } => rehearse(&plan, output, keep, bars).await,
        Command::Unlock {
            target,
            force,
            reason,
            ..
        } => unlock(&plan, &target, force, reason),
        Command::Approve {
            step,
            run,
            by,
            reason,
            ..
        } => approve(&plan, &step, run.as_deref(), by, reason.as_deref()),
        Command::Run { .. } | Command::Rollback { .. } | Command::Reject { .. } => {
            // Nothing runs until a reviewer has accepted these plugins and grants.
            if let Err(e) = audit::check_lock(&plan) {
                eprintln!("error: refused: {e}");
                return exit::REFUSED;
            }
            let options = EngineOptions {
                stop: Some(stop_on_signals()),
                progress: bars.as_ref().map(ProgressBars::sink),
                rehearsal: false,
                discard_later_writes: matches!(
                    command,
                    Command::Rollback {
                        discard_later_writes: true,
                        ..
                    }
                ),
            };
            let mut engine = match Engine::open(plan, options).await {
                Ok(engine) => engine,
                Err(e @ (engine::EngineError::Load(_) | engine::EngineError::Ungranted(_))) => {
                    eprintln!("error: {e}");
                    return exit::PLAN_ERROR;
                }
                Err(e) => return internal(&e),
            };
            let summary = match &command {
                Command::Rollback { to, .. } => engine.rollback(to.as_deref()).await,
                Command::Reject {
                    step, by, reason, ..
                } => {
                    let by = by
                        .clone()
                        .unwrap_or_else(sluice::approval::default_approver);
                    engine.reject(step, &by, reason.as_deref()).await
                }
                _ => engine.run().await,
            };
            if let Some(bars) = &bars {
                bars.clear();
            }
            match summary {
                Ok(summary) => {
                    print!("{}", report::summary(&summary));
                    summary.exit_code()
                }
                Err(e @ engine::EngineError::UnknownStep(_)) => {
                    eprintln!("error: {e}");
                    exit::PLAN_ERROR
                }
                Err(engine::EngineError::Preview(sluice::preview::PreviewError::Plan(e))) => {
                    eprintln!("{}", report::plan_error(&e));
                    exit::PLAN_ERROR
                }
                Err(e @ engine::EngineError::Preview(_)) => {
                    eprintln!("error: {e}");
                    exit::PLAN_ERROR
                }
                Err(engine::EngineError::Approval(e)) => {
                    eprintln!("error: refused: {e}");
                    exit::REFUSED
                }
                Err(
                    e @ engine::EngineError::Lease(sluice::journal::lease::LeaseError::Held {
                        ..
                    }),
                ) => {
                    eprintln!("error: refused: {e}");
                    exit::REFUSED
                }
                Err(e) => internal(&e),
            }
        }
    }
}

/// `sluice approve`: records the decision; the next `sluice run` acts on it.
fn approve(
    plan: &plan::Plan,
    step: &str,
    run: Option<&str>,
    by: Option<String>,
    reason: Option<&str>,
) -> i32 {
    let journal = match sluice::journal::open_for(plan) {
        Ok(journal) => journal,
        Err(e) => return internal(&e),
    };
    let by = by.unwrap_or_else(sluice::approval::default_approver);
    match sluice::approval::approve(journal.as_ref(), plan, step, run, &by, reason) {
        Ok(a) => {
            println!(
                "approved step `{step}` (paused by run {}) by {} at {}, for plan {}; `sluice run {}` goes on",
                a.run_id,
                a.by,
                a.at,
                &a.plan_hash[..12.min(a.plan_hash.len())],
                plan.path.display()
            );
            exit::OK
        }
        Err(sluice::approval::ApprovalError::Journal(e)) => internal(&e),
        Err(e @ sluice::approval::ApprovalError::UnknownStep(_)) => {
            eprintln!("error: {e}");
            exit::PLAN_ERROR
        }
        Err(e) => {
            eprintln!("error: refused: {e}");
            exit::REFUSED
        }
    }
}

fn report(
    plan: &plan::Plan,
    run: Option<&str>,
    format: sluice::cli::ReportFormat,
    output: Option<&std::path::Path>,
) -> i32 {
    use report::evidence::{self, EvidenceError};
    let journal = match sluice::journal::open_for(plan) {
        Ok(journal) => journal,
        Err(e) => return internal(&e),
    };
    match evidence::build(plan, journal.as_ref(), run) {
        Ok(e) => {
            let text = match format {
                sluice::cli::ReportFormat::Json => format!("{}\n", evidence::json(&e)),
                sluice::cli::ReportFormat::Md => evidence::markdown(&e),
                sluice::cli::ReportFormat::Html => report::html::html(&e),
            };
            match output {
                None => print!("{text}"),
                Some(path) => {
                    if let Err(err) = std::fs::write(path, text) {
                        eprintln!(
                            "error: cannot write the report to {}: {err}",
                            path.display()
                        );
                        return exit::INTERNAL;
                    }
                }
            }
            exit::OK
        }
        Err(e @ (EvidenceError::UnknownRun { .. } | EvidenceError::NoRuns(_))) => {
            eprintln!("error: {e}");
            exit::PLAN_ERROR
        }
        Err(e) => internal(&e),
    }
}

/// `sluice rehearse`: the plan on copies of its targets; exits as `run`
/// would have, or 4 when production changed.
async fn rehearse(
    plan: &plan::Plan,
    output: Option<std::path::PathBuf>,
    keep: bool,
    bars: Option<ProgressBars>,
) -> i32 {
    // The plugins that will run for real are the ones rehearsed: reviewed first.
    if let Err(e) = audit::check_lock(plan) {
        eprintln!("error: refused: {e}");
        return exit::REFUSED;
    }
    let options = sluice::rehearse::RehearsalOptions {
        output,
        keep,
        engine: EngineOptions {
            stop: Some(stop_on_signals()),
            progress: bars.as_ref().map(ProgressBars::sink),
            rehearsal: true,
            discard_later_writes: false,
        },
    };
    let result = sluice::rehearse::rehearse(plan, options).await;
    if let Some(bars) = &bars {
        bars.clear();
    }
    match result {
        Ok(r) => {
            print!("{}", sluice::rehearse::report::summary(&r));
            println!("{}", r.output.join("rehearsal.md").display());
            r.exit_code
        }
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

/// Loads the plan's plugins and previews every step (`sluice plan`,
/// `sluice check`): params the plugin rejects and thresholds naming metrics
/// it will not report are plan errors. Errors are printed; `Err` holds the
/// exit code.
async fn previews(
    plan: &plan::Plan,
    estimate: preview::Estimate,
) -> Result<Vec<preview::StepPreview>, i32> {
    let runtime = Runtime::new(ComponentCache::new(ComponentCache::default_dir()))
        .map_err(|e| internal(&e))?;
    let mut loaded = std::collections::BTreeMap::new();
    for (name, plugin) in &plan.plugins {
        match runtime.load(plugin).await {
            Ok(p) => {
                loaded.insert(name.clone(), p);
            }
            Err(e) => {
                eprintln!("error: {e}");
                return Err(exit::PLAN_ERROR);
            }
        }
    }
    let steps = match preview::preview(plan, &runtime, &loaded, estimate).await {
        Ok(steps) => steps,
        Err(preview::PreviewError::Plan(e)) => {
            eprintln!("{}", report::plan_error(&e));
            return Err(exit::PLAN_ERROR);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return Err(exit::PLAN_ERROR);
        }
    };
    if let Err(e) = preview::check_metrics(plan, &steps) {
        eprintln!("{}", report::plan_error(&e));
        return Err(exit::PLAN_ERROR);
    }
    Ok(steps)
}

fn unlock(plan: &plan::Plan, target: &str, force: bool, reason: Option<String>) -> i32 {
    let Some(t) = plan.targets.get(target) else {
        eprintln!("error: the plan has no target `{target}`");
        return exit::PLAN_ERROR;
    };
    if !force {
        eprintln!(
            "error: unlocking takes a lease from a run that may still be alive; \
             make sure it is dead, then add --force"
        );
        return exit::PLAN_ERROR;
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
        eprintln!("error: give a reason (--reason \"…\"); it is recorded in the journal");
        return exit::PLAN_ERROR;
    }
    let journal = match sluice::journal::open_for(plan) {
        Ok(journal) => journal,
        Err(e) => return internal(&e),
    };
    let keys = match plan.lease_keys(t) {
        Ok(keys) => keys,
        Err(e) => {
            eprintln!("error: target `{target}`: {e}");
            return exit::PLAN_ERROR;
        }
    };
    // The database's lease, then one per attached file (a run takes them all).
    for (i, key) in keys.iter().enumerate() {
        let what = if i == 0 {
            format!("target `{target}`")
        } else {
            format!("target `{target}`'s attached file ({key})")
        };
        match journal.force_unlock(key, &reason) {
            Ok(Some(holder)) => println!(
                "unlocked {what}: removed the lease of run {} (host {}, pid {}, since {}); reason recorded",
                holder.run_id, holder.host, holder.pid, holder.since
            ),
            Ok(None) if i == 0 => {
                println!("{what} was not leased; the request is recorded")
            }
            Ok(None) => {}
            Err(e) => return internal(&e),
        }
    }
    exit::OK
}

fn new(what: &NewCommand) -> i32 {
    let NewCommand::Plugin { name, dir, sdk } = what;
    let sdk = sdk
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from(sluice::scaffold::BUILT_SDK));
    match sluice::scaffold::new_plugin(name, dir, &sdk) {
        Ok(made) => {
            println!(
                "created plugin crate {} (sdk: {})\n\n  cd {}\n  ./build.sh          # the component's path\n  ./conformance.sh    # sluice conformance on a scratch SQLite database\n\nREADME.md says how to test, grant and publish it.",
                made.dir.display(),
                made.sdk.display(),
                made.dir.display()
            );
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::PLAN_ERROR
        }
    }
}

async fn inspect(path: &std::path::Path, json: bool) -> i32 {
    let plugin = match plan::PluginRef::read("plugin", path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::PLAN_ERROR;
        }
    };
    let runtime = match Runtime::new(ComponentCache::new(ComponentCache::default_dir())) {
        Ok(r) => r,
        Err(e) => return internal(&e),
    };
    match runtime.load(&plugin).await {
        Ok(loaded) => {
            let inspection = audit::inspect(path, &loaded);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&inspection).expect("serializes")
                );
            } else {
                print!("{}", audit::inspection_text(&inspection));
            }
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::PLAN_ERROR
        }
    }
}

async fn conformance(command: Command) -> i32 {
    let Command::Conformance {
        plugin,
        target,
        target_env,
        params,
        params_file,
        fixture,
        files,
        json,
    } = command
    else {
        unreachable!("called for `conformance` only")
    };
    let options = match conformance_options(
        plugin,
        target,
        target_env,
        params,
        params_file,
        fixture,
        files,
    ) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::PLAN_ERROR;
        }
    };
    let runtime = match Runtime::new(ComponentCache::new(ComponentCache::default_dir())) {
        Ok(r) => Arc::new(r),
        Err(e) => return internal(&e),
    };
    match sluice::conformance::run(options, runtime).await {
        Ok(report) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("serializes")
                );
            } else {
                print!("{}", report.text());
            }
            report.exit_code()
        }
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

/// Resolves the `conformance` arguments: reads the params, fixture and
/// target variable, splits `--file NAME=DIR`.
fn conformance_options(
    plugin: std::path::PathBuf,
    target: Option<String>,
    target_env: Option<String>,
    params: Option<String>,
    params_file: Option<std::path::PathBuf>,
    fixture: Option<std::path::PathBuf>,
    files: Vec<String>,
) -> Result<sluice::conformance::ConformanceOptions, String> {
    let target = match (target, target_env) {
        (Some(target), _) => target,
        (None, Some(var)) => std::env::var(&var)
            .map_err(|_| format!("--target-env {var}: the variable is not set"))?,
        (None, None) => return Err("--target or --target-env is required".into()),
    };
    let target = sluice::conformance::TargetSpec::parse(&target)?;
    let params_text = match (params, params_file) {
        (Some(text), _) => text,
        (None, Some(path)) => std::fs::read_to_string(&path)
            .map_err(|e| format!("--params-file {}: {e}", path.display()))?,
        (None, None) => "{}".to_string(),
    };
    let params: serde_json::Value = serde_json::from_str(&params_text)
        .map_err(|e| format!("params are not valid JSON: {e}"))?;
    let fixture = fixture
        .map(|path| {
            std::fs::read_to_string(&path).map_err(|e| format!("--fixture {}: {e}", path.display()))
        })
        .transpose()?;
    let files = files
        .iter()
        .map(|grant| {
            grant
                .split_once('=')
                .filter(|(name, dir)| !name.is_empty() && !dir.is_empty())
                .map(|(name, dir)| (name.to_string(), std::path::PathBuf::from(dir)))
                .ok_or_else(|| format!("--file `{grant}`: expected NAME=DIR"))
        })
        .collect::<Result<_, _>>()?;
    Ok(sluice::conformance::ConformanceOptions {
        plugin,
        target,
        params,
        fixture,
        files,
    })
}

async fn audit(plan: plan::Plan, accept: bool, json: bool) -> i32 {
    let runtime = match Runtime::new(ComponentCache::new(ComponentCache::default_dir())) {
        Ok(r) => r,
        Err(e) => return internal(&e),
    };
    let mut loaded = std::collections::BTreeMap::new();
    for (name, plugin) in &plan.plugins {
        match runtime.load(plugin).await {
            Ok(p) => {
                loaded.insert(name.clone(), p);
            }
            Err(e) => {
                eprintln!("error: {e}");
                return exit::PLAN_ERROR;
            }
        }
    }
    let steps: Vec<audit::StepAudit> = plan
        .steps
        .iter()
        .map(|s| audit::audit_step(s, &plan.targets[&s.target], &loaded[&s.plugin]))
        .collect();
    let current = audit::Lock::of(&plan);
    let (status, code) = match audit::Lock::read(&plan) {
        Err(e) => (format!("unreadable: {e}"), exit::REFUSED),
        Ok(Some(lock)) if lock == current => ("up to date".to_string(), exit::OK),
        Ok(previous) => {
            let diff = match &previous {
                None => "no lock file yet".to_string(),
                Some(lock) => lock.diff(&current).join("\n  "),
            };
            if accept {
                if let Err(e) = current.write(&plan) {
                    eprintln!(
                        "error: cannot write {}: {e}",
                        audit::Lock::path(&plan).display()
                    );
                    return exit::INTERNAL;
                }
                (
                    format!(
                        "accepted into {}:\n  {diff}",
                        audit::Lock::path(&plan).display()
                    ),
                    exit::OK,
                )
            } else {
                (
                    format!(
                        "DIFFERS from {}:\n  {diff}\n(accept with `sluice audit --accept`)",
                        audit::Lock::path(&plan).display()
                    ),
                    exit::REFUSED,
                )
            }
        }
    };
    if json {
        let out = serde_json::json!({ "plan": plan.path, "steps": steps, "lock": status });
        println!(
            "{}",
            serde_json::to_string_pretty(&out).expect("serializes")
        );
    } else {
        print!("{}", audit::audit_text(&plan, &steps, &status));
    }
    code
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

fn internal(e: &dyn std::error::Error) -> i32 {
    let mut message = format!("error: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(&format!("\n  caused by: {s}"));
        source = s.source();
    }
    eprintln!("{message}");
    exit::INTERNAL
}

fn init_logging(cli: &Cli, bars: Option<ProgressBars>) {
    let default = match cli.verbose {
        0 => "warn,plugin=info",
        1 => "debug,cranelift=info,wasmtime=info",
        _ => "trace,cranelift=info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| default.into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(ProgressBars::log_writer(bars));
    match cli.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}
