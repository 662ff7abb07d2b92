//! `sluice new plugin <name>`: a new plugin crate, made from the template in
//! `host/templates/plugin/` (real files, embedded at build time), that builds
//! as it is and passes `sluice conformance`.
//!
//! The crate depends on the sdk by path: by default the sdk of the checkout
//! this binary was built from, so the plugin's WIT version is the one this
//! binary speaks; and it starts from that checkout's `Cargo.lock`, so it
//! builds with the crate versions sluice was tested with, offline when they
//! are already downloaded.

use std::path::{Path, PathBuf};

use thiserror::Error;

/// The sdk of the checkout this binary was built from.
pub const BUILT_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk");

/// One template file: where it goes in the new crate, its text, and whether
/// it is a script to make executable.
struct TemplateFile {
    path: &'static str,
    text: &'static str,
    executable: bool,
}

macro_rules! template {
    ($path:literal, $file:literal) => {
        template!($path, $file, false)
    };
    ($path:literal, $file:literal, $executable:expr) => {
        TemplateFile {
            path: $path,
            text: include_str!(concat!("../templates/plugin/", $file)),
            executable: $executable,
        }
    };
}

/// The template. Files ending `.tmpl` in the repository would otherwise be
/// read by cargo or git as this repository's own (`Cargo.toml`, `.gitignore`).
const TEMPLATE: &[TemplateFile] = &[
    template!("Cargo.toml", "Cargo.toml.tmpl"),
    template!(".gitignore", "gitignore.tmpl"),
    template!("README.md", "README.md.tmpl"),
    template!("build.sh", "build.sh", true),
    template!("conformance.sh", "conformance.sh", true),
    template!("fixture.sql", "fixture.sql"),
    template!("params.json", "params.json"),
    template!("src/lib.rs", "src/lib.rs"),
    template!("src/preview.rs", "src/preview.rs"),
    template!("src/backup.rs", "src/backup.rs"),
    template!("src/migrate.rs", "src/migrate.rs"),
    template!("src/validate.rs", "src/validate.rs"),
    template!("src/rollback.rs", "src/rollback.rs"),
];

/// Why a plugin crate could not be made.
#[derive(Debug, Error)]
pub enum ScaffoldError {
    /// The name cannot be a crate name.
    #[error("invalid plugin name `{name}`: {why}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The directory exists; nothing is overwritten.
    #[error("{} already exists; choose another name or --dir (nothing was written)", .0.display())]
    Exists(PathBuf),
    /// The sdk directory is not a sluice sdk.
    #[error("{} is not the sluice sdk (no Cargo.toml naming `sluice-sdk` there); pass --sdk <path to sluice/sdk>", .0.display())]
    NoSdk(PathBuf),
    /// Reading or writing failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// What [`new_plugin`] made.
#[derive(Debug)]
pub struct NewPlugin {
    /// The crate's directory.
    pub dir: PathBuf,
    /// The sdk it depends on (absolute).
    pub sdk: PathBuf,
    /// Files written, relative to `dir`.
    pub files: Vec<&'static str>,
}

/// Checks that `name` can be a plugin crate's name: lowercase ASCII letters,
/// digits, `-` and `_`, starting with a letter, at most 64 characters, and
/// not a name the crate's own dependencies or Rust already use.
pub fn check_name(name: &str) -> Result<(), ScaffoldError> {
    let invalid = |why| ScaffoldError::InvalidName {
        name: name.to_string(),
        why,
    };
    if name.is_empty() || name.len() > 64 {
        return Err(invalid("use 1 to 64 characters"));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(invalid("start with a lowercase letter"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        return Err(invalid("use only a-z, 0-9, `-` and `_`"));
    }
    if name.ends_with(['-', '_']) {
        return Err(invalid("end with a letter or digit"));
    }
    const TAKEN: &[&str] = &[
        "sluice",
        "sluice-sdk",
        "sluice_sdk",
        "serde",
        "serde_json",
        "std",
        "core",
        "alloc",
        "test",
        "proc_macro",
        "self",
        "crate",
        "super",
    ];
    if TAKEN.contains(&name) {
        return Err(invalid(
            "it names a crate the plugin already depends on, or one Rust reserves",
        ));
    }
    Ok(())
}

/// Makes the plugin crate `<parent>/<name>` depending on the sdk at `sdk`.
/// Refuses an existing directory, and writes nothing when the name or the sdk
/// is wrong.
pub fn new_plugin(name: &str, parent: &Path, sdk: &Path) -> Result<NewPlugin, ScaffoldError> {
    check_name(name)?;
    let io = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| ScaffoldError::Io {
            action,
            path,
            source,
        }
    };
    let sdk = std::fs::canonicalize(sdk).map_err(|_| ScaffoldError::NoSdk(sdk.to_path_buf()))?;
    let sdk_manifest = std::fs::read_to_string(sdk.join("Cargo.toml"))
        .map_err(|_| ScaffoldError::NoSdk(sdk.clone()))?;
    if !sdk_manifest
        .lines()
        .any(|l| l.trim() == "name = \"sluice-sdk\"")
    {
        return Err(ScaffoldError::NoSdk(sdk));
    }
    let dir = parent.join(name);
    if dir.exists() {
        return Err(ScaffoldError::Exists(dir));
    }
    std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
    // `create_dir` (not `_all`) fails if another process made it meanwhile.
    std::fs::create_dir(&dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => ScaffoldError::Exists(dir.clone()),
        _ => io("creating", &dir)(e),
    })?;
    // Absolute from here on: the paths printed are the ones to `cd` into.
    let dir = std::fs::canonicalize(&dir).map_err(io("resolving", &dir))?;
    std::fs::create_dir(dir.join("src")).map_err(io("creating", &dir.join("src")))?;

    let substitutions = [
        ("{{name}}", name.to_string()),
        ("{{crate_name}}", name.replace('-', "_")),
        ("{{Type}}", type_name(name)),
        (
            "{{sdk_path}}",
            toml::Value::String(sdk.display().to_string()).to_string(),
        ),
        ("{{sluice_version}}", env!("CARGO_PKG_VERSION").to_string()),
    ];
    let mut files = Vec::new();
    for file in TEMPLATE {
        let mut text = file.text.to_string();
        for (key, value) in &substitutions {
            text = text.replace(key, value);
        }
        let path = dir.join(file.path);
        std::fs::write(&path, text).map_err(io("writing", &path))?;
        if file.executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .map_err(io("making executable", &path))?;
        }
        files.push(file.path);
    }
    // The versions sluice was tested with; cargo drops what the plugin
    // does not use on its first build.
    let lock = sdk.join("../Cargo.lock");
    if lock.is_file() {
        std::fs::copy(&lock, dir.join("Cargo.lock")).map_err(io("copying", &lock))?;
        files.push("Cargo.lock");
    }
    Ok(NewPlugin { dir, sdk, files })
}

/// `my-store` → `MyStore`: the plugin's type name.
fn type_name(name: &str) -> String {
    name.split(['-', '_'])
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["demo", "my-store", "jsonb_drawers2", "a"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Demo",
            "2fast",
            "-x",
            "x-",
            "has space",
            "dots.no",
            "serde",
            "sluice-sdk",
            "ñandú",
            &"a".repeat(65),
        ] {
            assert!(
                matches!(check_name(bad), Err(ScaffoldError::InvalidName { .. })),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn type_names_are_camel_case() {
        assert_eq!(type_name("demo"), "Demo");
        assert_eq!(type_name("my-store_v2"), "MyStoreV2");
    }

    #[test]
    fn makes_every_template_file_and_refuses_to_overwrite() {
        let parent = tempfile::tempdir().unwrap();
        let made = new_plugin("my-store", parent.path(), Path::new(BUILT_SDK)).unwrap();
        for file in TEMPLATE {
            let text = std::fs::read_to_string(made.dir.join(file.path)).unwrap();
            assert!(!text.contains("{{"), "{} keeps a placeholder", file.path);
        }
        let manifest = std::fs::read_to_string(made.dir.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("name = \"my-store\""));
        assert!(manifest.contains(&format!("path = \"{}\"", made.sdk.display())));
        let lib = std::fs::read_to_string(made.dir.join("src/lib.rs")).unwrap();
        assert!(lib.contains("export_plugin!(MyStore)"));

        std::fs::write(made.dir.join("mine.txt"), "keep").unwrap();
        let again = new_plugin("my-store", parent.path(), Path::new(BUILT_SDK));
        assert!(matches!(again, Err(ScaffoldError::Exists(_))), "{again:?}");
        assert_eq!(
            std::fs::read_to_string(made.dir.join("mine.txt")).unwrap(),
            "keep"
        );
    }

    #[test]
    fn refuses_a_directory_that_is_not_the_sdk() {
        let parent = tempfile::tempdir().unwrap();
        let err = new_plugin("demo", parent.path(), parent.path()).unwrap_err();
        assert!(matches!(err, ScaffoldError::NoSdk(_)), "{err}");
        assert!(
            !parent.path().join("demo").exists(),
            "wrote despite the error"
        );
    }
}
