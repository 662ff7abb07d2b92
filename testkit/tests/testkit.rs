//! The testkit as a plugin author uses it: the SQLite plugin passes on its
//! own fixture data, and a broken fixture plugin fails the check meant to
//! catch it, with `assert_passed` panicking with the table. Needs the
//! plugins `cargo xtask build` makes (`SLUICE_PLUGINS`, default
//! `target/plugins`).

use std::path::PathBuf;

use sluice_testkit::{Conformance, Target, CHECKS};

fn plugins() -> PathBuf {
    std::env::var_os("SLUICE_PLUGINS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/plugins")))
}

const SHOP: &str = include_str!("../../tests/fixtures/conformance/sqlite/fixture.sql");

fn params() -> serde_json::Value {
    serde_json::from_str(include_str!(
        "../../tests/fixtures/conformance/sqlite/params.json"
    ))
    .unwrap()
}

#[test]
fn the_sqlite_plugin_passes_every_check() {
    let report = Conformance::new(plugins().join("sqlite.wasm"))
        .target(Target::sqlite_scratch())
        .fixture_sql(SHOP)
        .params(params())
        .run()
        .expect("the checks ran");
    report.assert_passed();
    let names: Vec<&str> = report.checks().iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, CHECKS);
}

#[test]
fn a_copy_target_is_checked_on_copies() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shop.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(SHOP)
        .unwrap();
    let before = std::fs::read(&db).unwrap();
    Conformance::new(plugins().join("sqlite.wasm"))
        .target(Target::sqlite_copy(&db))
        .params(params())
        .run()
        .expect("the checks ran")
        .assert_passed();
    assert_eq!(std::fs::read(&db).unwrap(), before);
}

#[test]
fn a_broken_plugin_fails_and_assert_passed_shows_why() {
    let report = Conformance::new(plugins().join("fixtures/under-declares.wasm"))
        .fixture_sql(SHOP)
        .params(params())
        .run()
        .expect("the checks ran");
    let check = report.check("declared-imports").expect("listed");
    assert!(!check.passed);
    assert!(check.reason.contains("no `sql` need"), "{}", check.reason);
    let panic = std::panic::catch_unwind(|| report.assert_passed()).unwrap_err();
    let message = panic.downcast_ref::<String>().expect("a formatted message");
    assert!(
        message
            .lines()
            .any(|l| l.trim_start().starts_with("declared-imports") && l.contains("FAIL")),
        "{message}"
    );
}

#[test]
fn bad_params_are_an_error_not_a_report() {
    let err = Conformance::new(plugins().join("sqlite.wasm"))
        .params(serde_json::json!(["not", "an", "object"]))
        .run()
        .unwrap_err();
    assert!(err.to_string().contains("JSON object"), "{err}");
}
