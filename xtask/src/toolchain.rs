//! The guest toolchain: rustup's `wasm32-wasip2` target when it is (or can
//! be) installed, otherwise the offline Debian route of
//! `xtask/toolchain/setup-wasm-toolchain.sh`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

const TARGET: &str = "wasm32-wasip2";
/// How long `rustup target add` may take before the Debian route is used.
const RUSTUP_TIMEOUT: Duration = Duration::from_secs(150);

/// How plugins are compiled.
pub enum Guest {
    /// rustup's toolchain has the target.
    Rustup,
    /// Debian's rustc with a prebuilt std sysroot.
    Debian {
        /// Where setup-wasm-toolchain.sh installed things.
        prefix: PathBuf,
    },
}

impl Guest {
    /// A cargo command that builds for `wasm32-wasip2`.
    pub fn cargo(&self, root: &Path) -> Command {
        match self {
            Guest::Rustup => {
                let mut cmd =
                    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
                cmd.current_dir(root);
                cmd
            }
            Guest::Debian { prefix } => {
                let mut cmd = Command::new("/usr/bin/cargo");
                let sysroot = prefix.join("sysroot");
                cmd.current_dir(root)
                    .arg("--config")
                    .arg(format!(
                        "target.{TARGET}.rustflags=['--sysroot={}']",
                        sysroot.display()
                    ))
                    .env("RUSTC", "/usr/bin/rustc")
                    .env("RUSTDOC", "/usr/bin/rustdoc")
                    .env_remove("RUSTFLAGS")
                    .env_remove("CARGO")
                    .env(
                        "PATH",
                        format!(
                            "{}:/usr/bin:{}",
                            prefix.join("bin").display(),
                            std::env::var("PATH").unwrap_or_default()
                        ),
                    );
                cmd
            }
        }
    }
}

fn rustup_has_target() -> bool {
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == TARGET)
        })
        .unwrap_or(false)
}

fn rustup_add_target() -> bool {
    eprintln!(
        "xtask: rustup target add {TARGET} (at most {}s)",
        RUSTUP_TIMEOUT.as_secs()
    );
    let Ok(mut child) = Command::new("rustup")
        .args(["target", "add", TARGET])
        .spawn()
    else {
        return false;
    };
    let started = std::time::Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if started.elapsed() > RUSTUP_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                eprintln!("xtask: rustup took too long; using the offline Debian route");
                return false;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(200)),
            Err(_) => return false,
        }
    }
}

/// Makes sure plugins can be built; returns how.
pub fn ensure(root: &Path) -> Result<Guest> {
    let forced = std::env::var("SLUICE_GUEST_TOOLCHAIN").unwrap_or_default();
    if forced != "debian" && (rustup_has_target() || rustup_add_target()) {
        return Ok(Guest::Rustup);
    }
    let prefix = PathBuf::from(
        std::env::var("WASM_TOOLCHAIN_HOME").unwrap_or_else(|_| "/opt/wasm-toolchain".into()),
    );
    let script = root.join("xtask/toolchain/setup-wasm-toolchain.sh");
    eprintln!(
        "xtask: setting up the offline Debian wasm toolchain in {}",
        prefix.display()
    );
    let status = Command::new("bash")
        .arg(&script)
        .env("WASM_TOOLCHAIN_HOME", &prefix)
        .env("WASM_TOOLS", "0")
        .env("FORCE_DEBIAN", "1")
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    if !status.success() {
        bail!(
            "{} failed ({status}); see its output above",
            script.display()
        );
    }
    Ok(Guest::Debian { prefix })
}
