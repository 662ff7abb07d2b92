//! Bad plans: one clear error with file, line and column; nothing executed.

use sluice_e2e::{plugin, Scenario};

fn plan_with(s: &Scenario, body: &str) {
    s.write("bad.toml", body);
}

fn base() -> String {
    format!(
        r#"[targets.shop]
kind = "sqlite"
path = "shop.db"

[plugins.sqlite]
path = "{}"

[[steps]]
id = "copy"
plugin = "sqlite"
target = "shop"
access = "read-write"
thresholds = ["duplicates == 0"]

[steps.params]
migrate = "CREATE TABLE t (x)"

[[steps.params.metrics]]
name = "duplicates"
duplicates = {{ table = "t", key = ["x"] }}
"#,
        plugin("sqlite.wasm").display()
    )
}

/// Asserts the plan is refused with exit 2, the error names `at` (line:col)
/// and contains `message`, and nothing ran.
fn refused(body: &str, at: &str, message: &str) {
    let s = Scenario::quickstart();
    let before = s.state("shop.db");
    plan_with(&s, body);
    let run = s.sluice(&["run", "bad.toml"]);
    assert_eq!(run.code, 2, "{}", run.all());
    let first = run.stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("error: ") && first.contains(&format!("bad.toml:{at}:")),
        "location {at} in: {first}"
    );
    assert!(first.contains(message), "`{message}` in: {first}");
    assert!(run.stdout.is_empty(), "nothing runs: {}", run.stdout);
    assert!(
        !s.path().join(".sluice").exists(),
        "no journal or backup is created"
    );
    assert_eq!(s.state("shop.db"), before);
}

#[test]
fn an_unknown_key_is_named_with_its_location() {
    refused(
        &base().replace("access = ", "acess = \"x\"\naccess = "),
        "12:1",
        "unknown field `acess`",
    );
}

#[test]
fn a_missing_plugin_file_is_named() {
    refused(
        &base().replace("sqlite.wasm\"", "nope.wasm\""),
        "6:8",
        "plugin `sqlite`: cannot read",
    );
}

#[test]
fn a_wrong_sha256_is_refused() {
    let body = base().replace(
        "[[steps]]",
        "sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n\n[[steps]]",
    );
    refused(&body, "8:10", "but the plan pins 0000");
}

#[test]
fn an_unknown_target_is_refused() {
    refused(
        &base().replace("target = \"shop\"", "target = \"prod\""),
        "11:10",
        "uses target `prod`, which is not declared",
    );
}

#[test]
fn a_bad_threshold_expression_points_at_the_error() {
    refused(
        &base().replace("duplicates == 0", "duplicates = 0"),
        "13:27",
        "`=` is not a comparison; write `==`",
    );
}

#[test]
fn a_bad_access_value_is_refused() {
    refused(
        &base().replace("\"read-write\"", "\"rw\""),
        "12:10",
        "unknown variant `rw`",
    );
}

#[test]
fn a_missing_sql_file_is_refused() {
    refused(
        &base().replace("\"CREATE TABLE t (x)\"", "{ file = \"missing.sql\" }"),
        "15:1",
        "params.migrate: cannot read",
    );
}

#[test]
fn a_wrong_sha256_pin_mentions_the_actual_digest_and_a_right_one_runs() {
    let s = Scenario::quickstart();
    let digest = sha256_hex(&std::fs::read(plugin("sqlite.wasm")).unwrap());
    plan_with(
        &s,
        &base().replace("[[steps]]", &format!("sha256 = \"{digest}\"\n\n[[steps]]")),
    );
    let run = s.sluice(&["check", "bad.toml"]);
    assert_eq!(run.code, 0, "{}", run.all());
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn attach_schemas_and_scopes_are_checked() {
    refused(
        &base().replace(
            "path = \"shop.db\"",
            "path = \"shop.db\"\nattach = { main = \"x.db\" }",
        ),
        "4:19",
        "attach schema `main` must be",
    );
    refused(
        &base().replace(
            "path = \"shop.db\"",
            "path = \"shop.db\"\nattach = { again = \"shop.db\" }",
        ),
        "4:20",
        "attached twice or is the database itself",
    );
    // A table scope naming a schema the target does not attach.
    refused(
        &base().replace(
            "access = \"read-write\"",
            "access = \"read-write\"\ntables = [\"t\", \"sqitch.changes\"]",
        ),
        "13:16",
        "table `sqitch.changes` names schema `sqitch`, which target `shop` does not attach",
    );
}
