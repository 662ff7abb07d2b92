//! Progress bars: drawn on stderr from the plugins' progress reports when
//! asked for, absent otherwise (CI logs and piped stderr stay clean).

use sluice_e2e::{sluice_bin, Scenario};

/// Accepts the quickstart's lock, then runs it with extra environment.
fn run_quickstart(envs: &[(&str, &str)]) -> sluice_e2e::Outcome {
    let s = Scenario::quickstart();
    let accepted = s.sluice(&["audit", "--accept", "sluice.toml"]);
    assert_eq!(accepted.code, 0, "audit --accept: {}", accepted.all());
    s.sluice_with(&sluice_bin(), &["run", "sluice.toml"], envs)
}

#[test]
fn forced_bars_show_the_plugin_progress_messages() {
    let out = run_quickstart(&[("SLUICE_PROGRESS", "always")]);
    // The SQLite plugin reports its backup per table, by table name.
    assert!(
        out.stderr.contains("customers"),
        "no progress message on stderr: {:?}",
        out.stderr
    );
    // Bars are cleared before the summary, which stays on stdout.
    assert!(out.stderr.contains("\x1b[2K"), "{:?}", out.stderr);
    assert!(!out.stdout.contains('\x1b'), "{:?}", out.stdout);
}

#[test]
fn piped_stderr_gets_no_bars() {
    for envs in [&[][..], &[("SLUICE_PROGRESS", "never")][..]] {
        let out = run_quickstart(envs);
        assert!(
            !out.stderr.contains('\x1b') && !out.stderr.contains('\r'),
            "progress-bar control sequences on stderr: {:?}",
            out.stderr
        );
    }
}

#[test]
fn json_logs_get_no_bars_even_when_forced() {
    let s = Scenario::quickstart();
    let accepted = s.sluice(&["audit", "--accept", "sluice.toml"]);
    assert_eq!(accepted.code, 0, "audit --accept: {}", accepted.all());
    let out = s.sluice_with(
        &sluice_bin(),
        &["--log-format", "json", "run", "sluice.toml"],
        &[("SLUICE_PROGRESS", "always")],
    );
    assert!(!out.stderr.contains('\x1b'), "{:?}", out.stderr);
}
