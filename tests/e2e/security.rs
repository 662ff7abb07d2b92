//! Hostile plugins (tests/fixtures/plugins/README.md): each ends with a clear
//! error, the datastore unchanged, the host alive (a normal exit code), and
//! the plugin's store discarded.

use sluice_e2e::{plugin, Scenario};

/// The file grant the directory tests use.
const DATA_READ_ONLY: &str = r#"files = [{ name = "data", path = "data", access = "read-only" }]"#;

/// A one-step plan on the quickstart database run by `fixture`, with
/// `step_extra` lines on the step and the hostile `behaviour`.
fn hostile(fixture: &str, behaviour: &str, step_extra: &str) -> Scenario {
    let s = Scenario::quickstart();
    std::fs::create_dir_all(s.path().join("data")).unwrap();
    s.write("data/allowed.txt", "granted content");
    s.write("secret.txt", "outside the grant");
    std::os::unix::fs::symlink(
        s.path().join("secret.txt"),
        s.path().join("data/link-to-secret"),
    )
    .unwrap();
    s.write(
        "hostile.toml",
        &format!(
            r#"
[targets.shop]
kind = "sqlite"
path = "shop.db"

[plugins.p]
path = "{}"

[[steps]]
id = "hostile"
plugin = "p"
target = "shop"
access = "read-write"
{step_extra}

[steps.params]
migrate = {{ file = "copy-customers.sql" }}
behaviour = "{behaviour}"
"#,
            plugin(&format!("fixtures/{fixture}.wasm")).display()
        ),
    );
    s
}

/// Runs the hostile plan; asserts a normal failure exit, `message` in the
/// output and an unchanged database. Returns the output.
fn refused(s: &Scenario, codes: &[i32], message: &str) -> String {
    let before = s.state("shop.db");
    let run = s.run("hostile.toml");
    assert!(
        codes.contains(&run.code),
        "exit {} not in {codes:?}: {}",
        run.code,
        run.all()
    );
    assert!(run.all().contains(message), "`{message}` in: {}", run.all());
    assert_eq!(
        s.state("shop.db"),
        before,
        "the datastore must be unchanged"
    );
    run.all()
}

#[test]
fn an_ungranted_import_is_refused_before_running() {
    // Imports wasi:filesystem but the step grants no directory.
    let s = hostile("hostile-files", "read-granted", "");
    let out = refused(&s, &[2], "imports `wasi:filesystem/");
    assert!(
        out.contains("step `hostile`") && out.contains("files = [{ name"),
        "names step and grant: {out}"
    );
    assert!(
        !s.path().join(".sluice/journal.db").exists() || s.transitions("hostile").is_empty(),
        "nothing ran"
    );
}

#[test]
fn network_can_never_be_granted() {
    let s = hostile("hostile-net", "", DATA_READ_ONLY);
    refused(&s, &[2], "sluice does not grant network access");
}

#[test]
fn a_granted_directory_is_readable() {
    // The control for the escapes below: the same plugin reads inside its grant.
    let s = hostile("hostile-files", "read-granted", DATA_READ_ONLY);
    let run = s.run("hostile.toml");
    assert_eq!(run.code, 0, "{}", run.all());
}

#[test]
fn escaping_a_directory_with_dotdot_fails() {
    let s = hostile("hostile-files", "escape-dotdot", DATA_READ_ONLY);
    refused(&s, &[1], "escape-dotdot");
}

#[test]
fn escaping_a_directory_with_an_absolute_path_fails() {
    let s = hostile("hostile-files", "escape-absolute", DATA_READ_ONLY);
    refused(&s, &[1], "escape-absolute");
}

#[test]
fn escaping_a_directory_through_a_symlink_fails() {
    let s = hostile("hostile-files", "escape-symlink", DATA_READ_ONLY);
    refused(&s, &[1], "escape-symlink");
}

#[test]
fn writing_a_read_only_directory_fails() {
    let s = hostile("hostile-files", "write-read-only", DATA_READ_ONLY);
    refused(&s, &[1], "write-read-only");
    assert!(!s.path().join("data/written.txt").exists());
}

#[test]
fn a_table_outside_the_scope_is_refused_by_sqlite() {
    let s = hostile("hostile", "out-of-scope-table", r#"tables = ["clientes"]"#);
    refused(&s, &[1], "SQLITE_AUTH");
}

#[test]
fn writing_under_read_only_access_is_refused_by_sqlite() {
    let s = hostile("hostile", "write-under-read-only", "");
    let plan = s
        .read("hostile.toml")
        .replace("access = \"read-write\"", "access = \"read-only\"");
    s.write("hostile.toml", &plan);
    refused(&s, &[1], "SQLITE_READONLY");
}

#[test]
fn lifting_query_only_does_not_make_a_read_only_step_writable() {
    let s = hostile("hostile", "lift-read-only", "");
    let plan = s
        .read("hostile.toml")
        .replace("access = \"read-write\"", "access = \"read-only\"");
    s.write("hostile.toml", &plan);
    refused(&s, &[1], "SQLITE_READONLY");
}

#[test]
fn attaching_another_database_is_refused() {
    let s = hostile("hostile", "attach", "");
    refused(&s, &[1], "migrate failed");
    assert!(!std::path::Path::new("/tmp/sluice-hostile.db").exists());
}

#[test]
fn vacuum_into_another_file_is_refused() {
    let s = hostile("hostile", "vacuum-into", "");
    refused(&s, &[1], "migrate failed");
    assert!(!std::path::Path::new("/tmp/sluice-hostile-copy.db").exists());
}

#[test]
fn another_target_is_access_denied() {
    let s = hostile("hostile", "other-target", "");
    refused(&s, &[1], "not granted target `somewhere-else`");
}

#[test]
fn unbounded_allocation_hits_the_memory_limit() {
    let s = hostile("hostile", "alloc", "limits = { memory_mib = 64 }");
    refused(&s, &[1], "migrate failed: plugin trapped");
}

#[test]
fn a_stack_overflow_traps() {
    let s = hostile("hostile", "stack-overflow", "");
    // Rust's stack lives in linear memory: overflowing it is an
    // out-of-bounds trap (deep wasm frames hit the host's wasm stack limit).
    refused(&s, &[1], "migrate failed: plugin trapped");
}

#[test]
fn flooding_host_calls_is_stopped_by_the_deadline() {
    let s = hostile("hostile", "flood", "limits = { phase_seconds = 1 }");
    refused(&s, &[1], "deadline of 1s exceeded");
}

#[test]
fn a_gigantic_result_is_refused() {
    let s = hostile("hostile", "gigantic", "");
    refused(&s, &[1], "200000 metrics; the limit is 1000");
}

#[test]
fn a_manifest_naming_an_unwritten_artifact_is_refused() {
    let s = hostile("hostile", "manifest-lies", "");
    refused(
        &s,
        &[1],
        "names artifact `made-up.rows`, which this backup never wrote",
    );
}

#[test]
fn a_panic_in_validate_is_rolled_back() {
    let s = hostile("panics", "", "");
    let plan = s
        .read("hostile.toml")
        .replace("behaviour = \"\"", "panic_in = \"validate\"");
    s.write("hostile.toml", &plan);
    refused(&s, &[1], "validate failed: plugin trapped");
}

#[test]
fn a_plugin_built_against_a_newer_wit_is_refused() {
    let s = hostile("hostile", "", "");
    // The sdk's stamp, rewritten as if built against sluice:plugin 1.0.0.
    let mut bytes = std::fs::read(plugin("fixtures/hostile.wasm")).unwrap();
    let stamp = b"sluice-wit-version\x30\x2e\x31\x2e\x30";
    let at = bytes
        .windows(stamp.len())
        .position(|w| w == stamp)
        .expect("the sdk stamps its WIT version");
    bytes[at + stamp.len() - 5..at + stamp.len()].copy_from_slice(b"1.0.0");
    std::fs::write(s.path().join("newer.wasm"), bytes).unwrap();
    let plan = s.read("hostile.toml");
    let plan = plan.replace(
        &plugin("fixtures/hostile.wasm").display().to_string(),
        "newer.wasm",
    );
    s.write("hostile.toml", &plan);
    let before = s.state("shop.db");
    let run = s.sluice(&["audit", "--accept", "hostile.toml"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr
            .contains("built against sluice:plugin 1.0.0; this host supports sluice:plugin 0.1.x"),
        "{}",
        run.stderr
    );
    assert_eq!(s.state("shop.db"), before);
}
