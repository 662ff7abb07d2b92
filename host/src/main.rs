//! The `sluice` binary: parse, run the subcommand, print its error once,
//! exit with its documented code (`exit.rs`).

use std::process::ExitCode;

use clap::Parser;
use sluice::cli::{Cli, LogFormat};
use sluice::exit;
use sluice::progress_bar::ProgressBars;

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
    let code = match runtime.block_on(sluice::commands::dispatch(cli.command, bars)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{}", e.report());
            e.exit_code()
        }
    };
    ExitCode::from(code as u8)
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
