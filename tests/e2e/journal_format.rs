//! Journals written before format 2 — by sluice at 4b81e39, the commit
//! before it (`tests/fixtures/journals/format-1/make.sh`) — open in this
//! sluice, migrated on first use with a message: `status` and both reports
//! read as that sluice printed them (the HTML byte for byte), and sluice goes
//! on working with them. A journal of a newer format is refused, naming both
//! versions, and left untouched.

use std::path::Path;

use sluice_e2e::services::pg_scratch;
use sluice_e2e::{plugin, root, Outcome, Scenario};

fn fixture(kind: &str) -> std::path::PathBuf {
    root().join("tests/fixtures/journals/format-1").join(kind)
}

/// The fixture's plan, database and journal in a fresh folder, with this
/// build's SQLite plugin where the plan expects it.
fn scenario(kind: &str) -> Scenario {
    let s = Scenario::new();
    copy_dir(&fixture(kind), s.path());
    std::fs::create_dir_all(s.path().join("plugins")).unwrap();
    std::fs::copy(plugin("sqlite.wasm"), s.path().join("plugins/sqlite.wasm")).unwrap();
    s
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let dest = to.join(path.file_name().unwrap());
        if path.is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
            copy_dir(&path, &dest);
        } else {
            std::fs::copy(&path, &dest).unwrap();
        }
    }
}

/// `status`, `report` and `report --format html` print what the sluice that
/// wrote the journal printed.
fn reads_as_written(s: &Scenario, kind: &str, envs: &[(&str, &str)]) {
    let bin = sluice_e2e::sluice_bin();
    let status = s.sluice_with(&bin, &["status", "sluice.toml"], envs);
    assert_eq!(status.code, 0, "{}", status.all());
    assert!(
        status.stderr.contains("migrated from format 1 to format 2"),
        "the first use says the journal was migrated: {}",
        status.stderr
    );
    let expected = |name: &str| std::fs::read_to_string(fixture(kind).join(name)).unwrap();
    assert_eq!(status.stdout, expected("status.txt"), "status");
    let md = s.sluice_with(&bin, &["report", "sluice.toml"], envs);
    assert_eq!(md.code, 0, "{}", md.all());
    assert!(
        !md.stderr.contains("migrated"),
        "migrated once, not on every open: {}",
        md.stderr
    );
    assert_eq!(md.stdout, expected("report.md"), "Markdown report");
    let html = s.sluice_with(&bin, &["report", "sluice.toml", "--format", "html"], envs);
    assert_eq!(html.code, 0, "{}", html.all());
    assert!(
        html.stdout == expected("report.html"),
        "the HTML report differs from the one the old sluice wrote"
    );
}

/// The completed step of the fixture rolls back: the journal recorded no
/// post-step fingerprint (format 1 predates it), so the undo contract
/// refuses until the operator decides, then restores and proves it.
fn goes_on_working(s: &Scenario, envs: &[(&str, &str)]) -> Outcome {
    let bin = sluice_e2e::sluice_bin();
    let refused = s.sluice_with(&bin, &["rollback", "sluice.toml"], envs);
    assert_eq!(refused.code, 6, "{}", refused.all());
    let done = s.sluice_with(
        &bin,
        &["rollback", "sluice.toml", "--discard-later-writes"],
        envs,
    );
    assert_eq!(done.code, 0, "{}", done.all());
    let clientes: i64 = rusqlite::Connection::open(s.path().join("shop.db"))
        .unwrap()
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'clientes'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(clientes, 0, "copy-customers is undone");
    done
}

#[test]
fn a_format_1_sqlite_journal_opens_migrated_and_reads_as_written() {
    let s = scenario("sqlite");
    reads_as_written(&s, "sqlite", &[]);
    let format: String = rusqlite::Connection::open(s.path().join(".sluice/journal.db"))
        .unwrap()
        .query_row("SELECT value FROM meta WHERE key = 'format'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(format, "2");
    goes_on_working(&s, &[]);
}

#[test]
fn a_format_1_postgres_journal_opens_migrated_and_reads_as_written() {
    let db = pg_scratch();
    let mut c = db.client();
    c.batch_execute(&std::fs::read_to_string(fixture("postgres").join("journal.sql")).unwrap())
        .unwrap();
    let s = scenario("postgres");
    let envs = [("SLUICE_JOURNAL_URL", db.url.as_str())];
    reads_as_written(&s, "postgres", &envs);
    let format: String = c
        .query_one(
            "SELECT value FROM sluice_journal.meta WHERE key = 'format'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(format, "2");
    let causes: i64 = c
        .query_one(
            "SELECT count(*) FROM sluice_journal.transitions WHERE cause IS NULL",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(causes, 0, "every transition has its cause after migration");
    goes_on_working(&s, &envs);
}

#[test]
fn a_journal_of_a_newer_format_is_refused_naming_both_versions_and_left_alone() {
    // SQLite.
    let s = scenario("sqlite");
    let journal = s.path().join(".sluice/journal.db");
    let status = s.sluice(&["status", "sluice.toml"]);
    assert_eq!(status.code, 0, "{}", status.all());
    rusqlite::Connection::open(&journal)
        .unwrap()
        .execute_batch(
            "UPDATE meta SET value = '3' WHERE key = 'format';
             UPDATE meta SET value = '9.9.0' WHERE key = 'written_by';",
        )
        .unwrap();
    let before = std::fs::read(&journal).unwrap();
    let refused = s.sluice(&["run", "sluice.toml"]);
    assert_ne!(refused.code, 0, "{}", refused.all());
    // `sluice 0.1.0` → `0.1.0`
    let version = s.sluice(&["--version"]).stdout;
    let ours = version.trim().rsplit(' ').next().unwrap().to_string();
    for needle in ["format 3", "sluice 9.9.0", &format!("this sluice {ours}")] {
        assert!(
            refused.stderr.contains(needle),
            "{needle}: {}",
            refused.stderr
        );
    }
    assert_eq!(std::fs::read(&journal).unwrap(), before, "left untouched");

    // The shared PostgreSQL journal, where hosts of two versions meet.
    let db = pg_scratch();
    let mut c = db.client();
    c.batch_execute(&std::fs::read_to_string(fixture("postgres").join("journal.sql")).unwrap())
        .unwrap();
    let s = scenario("postgres");
    let envs = [("SLUICE_JOURNAL_URL", db.url.as_str())];
    let bin = sluice_e2e::sluice_bin();
    assert_eq!(
        s.sluice_with(&bin, &["status", "sluice.toml"], &envs).code,
        0
    );
    c.batch_execute(
        "UPDATE sluice_journal.meta SET value = '3' WHERE key = 'format';
         UPDATE sluice_journal.meta SET value = '9.9.0' WHERE key = 'written_by';",
    )
    .unwrap();
    let refused = s.sluice_with(&bin, &["status", "sluice.toml"], &envs);
    assert_ne!(refused.code, 0, "{}", refused.all());
    for needle in ["format 3", "sluice 9.9.0", &format!("this sluice {ours}")] {
        assert!(
            refused.stderr.contains(needle),
            "{needle}: {}",
            refused.stderr
        );
    }
}
