//! `sluice new plugin`: a plugin crate from the template.

use crate::cli::NewCommand;
use crate::exit;

use super::CommandError;

/// Makes the crate and says what to do next.
pub async fn run(what: &NewCommand) -> Result<i32, CommandError> {
    let NewCommand::Plugin { name, dir, sdk } = what;
    let sdk = sdk
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from(crate::scaffold::BUILT_SDK));
    let made = crate::scaffold::new_plugin(name, dir, &sdk).map_err(CommandError::usage)?;
    println!(
        "created plugin crate {} (sdk: {})\n\n  cd {}\n  ./build.sh          # the component's path\n  ./conformance.sh    # sluice conformance on a scratch SQLite database\n\nREADME.md says how to test, grant and publish it.",
        made.dir.display(),
        made.sdk.display(),
        made.dir.display()
    );
    Ok(exit::OK)
}
