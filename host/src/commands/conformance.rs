//! `sluice conformance`: a plugin against the plugin contract on a scratch
//! target.

use std::path::PathBuf;
use std::sync::Arc;

use crate::conformance::{ConformanceOptions, TargetSpec};

use super::CommandError;

/// The command line of `sluice conformance`, as given.
pub struct Inputs {
    /// The plugin component.
    pub plugin: PathBuf,
    /// `--target`.
    pub target: Option<String>,
    /// `--target-env`: the variable holding the target URL.
    pub target_env: Option<String>,
    /// `--params`, JSON text.
    pub params: Option<String>,
    /// `--params-file`.
    pub params_file: Option<PathBuf>,
    /// `--fixture`.
    pub fixture: Option<PathBuf>,
    /// `--file NAME=DIR`, repeated.
    pub files: Vec<String>,
}

/// Runs the checks; exit 0 all pass, 1 a check failed, 2 bad input.
pub async fn run(inputs: Inputs, json: bool) -> Result<i32, CommandError> {
    let options = options(inputs).map_err(CommandError::usage)?;
    let runtime = Arc::new(super::runtime()?);
    let report = crate::conformance::run(options, runtime)
        .await
        .map_err(|e| CommandError::Coded {
            code: e.exit_code(),
            source: e.into(),
        })?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("serializes")
        );
    } else {
        print!("{}", report.text());
    }
    Ok(report.exit_code())
}

/// Resolves the arguments: reads the params, fixture and target variable,
/// splits `--file NAME=DIR`.
fn options(inputs: Inputs) -> Result<ConformanceOptions, String> {
    let Inputs {
        plugin,
        target,
        target_env,
        params,
        params_file,
        fixture,
        files,
    } = inputs;
    let target = match (target, target_env) {
        (Some(target), _) => target,
        (None, Some(var)) => std::env::var(&var)
            .map_err(|_| format!("--target-env {var}: the variable is not set"))?,
        (None, None) => return Err("--target or --target-env is required".into()),
    };
    let target = TargetSpec::parse(&target)?;
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
                .map(|(name, dir)| (name.to_string(), PathBuf::from(dir)))
                .ok_or_else(|| format!("--file `{grant}`: expected NAME=DIR"))
        })
        .collect::<Result<_, _>>()?;
    Ok(ConformanceOptions {
        plugin,
        target,
        params,
        fixture,
        files,
    })
}
