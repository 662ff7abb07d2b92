//! The `sluice` binary: parse, run, map to a documented exit code.

use std::process::ExitCode;

use clap::Parser;
use sluice::cli::{Cli, Command, LogFormat};
use sluice::engine::{exit, Engine, EngineOptions};
use sluice::{engine, plan, report};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
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
    let code = runtime.block_on(run(cli.command));
    ExitCode::from(code as u8)
}

async fn run(command: Command) -> i32 {
    let plan_path = match &command {
        Command::Run { plan }
        | Command::Status { plan }
        | Command::Rollback { plan, .. }
        | Command::Check { plan } => plan.clone(),
    };
    let plan = match plan::load(&plan_path) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("{}", report::plan_error(&e));
            return exit::PLAN_ERROR;
        }
    };
    match command {
        Command::Check { .. } => {
            println!(
                "plan {} is valid: {} steps, {} plugins, {} targets",
                plan.name,
                plan.steps.len(),
                plan.plugins.len(),
                plan.targets.len()
            );
            exit::OK
        }
        Command::Status { .. } => match engine::status(&plan) {
            Ok(steps) => {
                print!("{}", report::status(&plan.name, &steps));
                exit::OK
            }
            Err(e) => internal(&e),
        },
        Command::Run { .. } | Command::Rollback { .. } => {
            let mut engine = match Engine::open(plan, EngineOptions::default()).await {
                Ok(engine) => engine,
                Err(e @ engine::EngineError::Load(_)) => {
                    eprintln!("error: {e}");
                    return exit::PLAN_ERROR;
                }
                Err(e) => return internal(&e),
            };
            let summary = match &command {
                Command::Rollback { to, .. } => engine.rollback(to.as_deref()).await,
                _ => engine.run().await,
            };
            match summary {
                Ok(summary) => {
                    print!("{}", report::summary(&summary));
                    summary.exit_code()
                }
                Err(e @ engine::EngineError::UnknownStep(_)) => {
                    eprintln!("error: {e}");
                    exit::PLAN_ERROR
                }
                Err(e) => internal(&e),
            }
        }
    }
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

fn init_logging(cli: &Cli) {
    let default = match cli.verbose {
        0 => "warn,plugin=info",
        1 => "debug,cranelift=info,wasmtime=info",
        _ => "trace,cranelift=info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| default.into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}
