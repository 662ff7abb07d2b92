//! Plans written inline for the loader's unit tests: each test writes its
//! plan text into a fresh temporary directory (with a plugin file `p.wasm`
//! and a directory `files/` beside it) and reads back what `load` said.

use std::path::Path;

use super::{load, Plan};

/// The bytes of `p.wasm`: `load` reads and digests plugins, it never compiles them.
pub const PLUGIN: &[u8] = b"\0asm not really";

/// A sqlite target `db`, a plugin `p` and one read-write step `s` on them;
/// [`step`] appends to the step from line 13 on.
pub const STEP: &str = r#"[targets.db]
kind = "sqlite"
path = "db.sqlite"

[plugins.p]
path = "p.wasm"

[[steps]]
id = "s"
plugin = "p"
target = "db"
access = "read-write"
"#;

/// [`STEP`] with `extra` from line 13 on.
pub fn step(extra: &str) -> String {
    format!("{STEP}{extra}")
}

/// A redis target `kv` (its URL in value `url`), a plugin `p` and one
/// read-write step `s` on them; [`kv_step`] appends to the step from line 16 on.
pub const KV_STEP: &str = r#"[values]
url = "redis://127.0.0.1/0"

[targets.kv]
kind = "redis"
connection = "url"

[plugins.p]
path = "p.wasm"

[[steps]]
id = "s"
plugin = "p"
target = "kv"
access = "read-write"
"#;

/// [`KV_STEP`] with `extra` from line 16 on.
pub fn kv_step(extra: &str) -> String {
    format!("{KV_STEP}{extra}")
}

/// A plan directory with `sluice.toml` holding `text`.
pub fn write(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("p.wasm"), PLUGIN).expect("p.wasm");
    std::fs::create_dir(dir.path().join("files")).expect("files/");
    std::fs::write(dir.path().join("sluice.toml"), text).expect("sluice.toml");
    dir
}

/// Loads `text`, which must be valid.
pub fn loads(text: &str) -> Plan {
    let dir = write(text);
    load(&dir.path().join("sluice.toml")).expect("the plan loads")
}

/// Loads `text`, which must be refused at a place in the plan file, and
/// returns `line:column: message` (the file's path left out, the plan's
/// directory shown as `<dir>`).
pub fn refused(text: &str) -> String {
    let dir = write(text);
    refused_in(dir.path())
}

/// Like [`refused`], for a plan directory the test prepared itself.
pub fn refused_in(dir: &Path) -> String {
    let path = dir.join("sluice.toml");
    let shown = load(&path).expect_err("the plan is refused").to_string();
    let prefix = format!("{}:", path.display());
    match shown.strip_prefix(&prefix) {
        Some(rest) => rest.replace(&dir.display().to_string(), "<dir>"),
        None => panic!("not located in the plan file: {shown}"),
    }
}
