//! `sluice report --format html`: one self-contained page, checked as text,
//! then rendered by a real headless Chromium (DOM as Chromium parsed it, and a
//! screenshot that must show the timeline).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sluice_e2e::Scenario;

/// A cold Chromium start on a loaded CI machine takes seconds; a hang must
/// not hold the suite.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);
/// The browser window, and so the screenshot, in CSS pixels.
const WINDOW: (u32, u32) = (1280, 2000);

/// The phase colours of the timeline (`host/src/report/html.rs`), as RGB.
const PHASE_COLOURS: &[(&str, [u8; 3])] = &[
    ("backup", [0x00, 0x72, 0xb2]),
    ("migrate", [0xe6, 0x9f, 0x00]),
    ("validate", [0x00, 0x9e, 0x73]),
    ("rollback", [0xd5, 0x5e, 0x00]),
];

/// Chromium: `SLUICE_CHROMIUM` (set by `cargo xtask test`, which installs
/// Debian's `chromium` when missing), else `chromium` on the PATH.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("SLUICE_CHROMIUM") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "SLUICE_CHROMIUM={} is not a file",
            path.display()
        );
        return path;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("chromium"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "Chromium is missing: this test renders the HTML report in a real headless \
                 Chromium. `cargo xtask test` installs Debian's `chromium` and sets \
                 SLUICE_CHROMIUM; by hand, `cargo xtask chromium` installs it and prints its path"
            )
        })
}

/// Runs headless Chromium on `page` with `extra` arguments; its own profile
/// in a temp dir, killed after [`CHROMIUM_TIMEOUT`].
fn run_chromium(page: &Path, extra: &[String]) -> Output {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        // Root (CI, containers) cannot use Chromium's sandbox.
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-extensions",
        "--no-first-run",
        "--no-default-browser-check",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        &format!("--window-size={},{}", WINDOW.0, WINDOW.1),
        &format!("--user-data-dir={}", profile.path().display()),
    ])
    .args(extra)
    .arg(format!("file://{}", page.display()))
    .env("HOME", profile.path())
    .stdin(Stdio::null());
    let out_file = profile.path().join("stdout");
    let err_file = profile.path().join("stderr");
    cmd.stdout(std::fs::File::create(&out_file).unwrap())
        .stderr(std::fs::File::create(&err_file).unwrap());
    let mut child = cmd.spawn().expect("starting chromium");
    let deadline = Instant::now() + CHROMIUM_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium {extra:?} did not finish within {}s; stderr:\n{}",
                CHROMIUM_TIMEOUT.as_secs(),
                std::fs::read_to_string(&err_file).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Output {
        status,
        stdout: std::fs::read(&out_file).unwrap(),
        stderr: std::fs::read(&err_file).unwrap(),
    }
}

/// Where a human finds the page and its screenshot after the test: a folder
/// under the test reports (which `cargo xtask test` keeps in
/// target/test-reports).
fn artifacts_dir() -> PathBuf {
    let dir = std::env::var_os("SLUICE_REPORTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| sluice_e2e::root().join("target/test-reports"))
        .join("report-html");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Phase names of `step`'s transitions in the latest run, straight from SQL.
fn journal_phases(s: &Scenario, step: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(s.path().join(".sluice/journal.db")).unwrap();
    let run: String = conn
        .query_row(
            "SELECT run_id FROM transitions ORDER BY seq DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let mut stmt = conn
        .prepare("SELECT state FROM transitions WHERE step_id = ?1 AND run_id = ?2 ORDER BY seq")
        .unwrap();
    stmt.query_map([step, &run], |r| r.get::<_, String>(0))
        .unwrap()
        .filter_map(|state| match state.unwrap().as_str() {
            "backing-up" => Some("backup".to_string()),
            "migrating" => Some("migrate".to_string()),
            "validating" => Some("validate".to_string()),
            "rolling-back" => Some("rollback".to_string()),
            _ => None,
        })
        .collect()
}

/// The text of the timeline row of `step`: from its `<g class="row …"` to
/// the next row or the end of the SVG.
fn row<'a>(html: &'a str, step: &str) -> &'a str {
    let svg_start = html.find("id=\"timeline\"").expect("the timeline svg");
    let svg = &html[svg_start..];
    let svg = &svg[..svg.find("</svg>").expect("the timeline svg ends")];
    let marker = format!("data-step=\"{step}\"");
    let at = svg
        .match_indices("<g class=\"row ")
        .map(|(i, _)| i)
        .find(|&i| svg[i..].split('>').next().unwrap().contains(&marker))
        .unwrap_or_else(|| panic!("no timeline row for {step} in:\n{svg}"));
    let rest = &svg[at + 1..];
    let end = rest.find("<g class=\"row ").unwrap_or(rest.len());
    &svg[at..at + 1 + end]
}

/// `data-phase` of each bar of a row, in order.
fn bars(row: &str) -> Vec<String> {
    row.match_indices("<rect class=\"bar ")
        .map(|(i, _)| {
            let tag = row[i..].split('>').next().unwrap();
            let at = tag.find("data-phase=\"").expect("bar names its phase") + 12;
            tag[at..at + tag[at..].find('"').unwrap()].to_string()
        })
        .collect()
}

#[test]
fn the_html_report_is_self_contained_and_renders_its_timeline_in_chromium() {
    let s = Scenario::quickstart();
    let run = s.run("sluice.toml");
    assert_eq!(run.code, 1, "{}", run.all());
    let steps = ["copy-customers", "merge-legacy"];

    let dir = artifacts_dir();
    let page = dir.join("evidence.html");
    let _ = std::fs::remove_file(&page);
    let out = s.sluice(&[
        "report",
        "sluice.toml",
        "--format",
        "html",
        "--output",
        page.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.is_empty(), "--output writes the file only");
    let html = std::fs::read_to_string(&page).unwrap();
    // The same page on stdout without --output.
    let stdout = s.sluice(&["report", "sluice.toml", "--format", "html"]);
    assert_eq!(stdout.stdout, html);

    // Self-contained: nothing fetched, nothing scripted.
    assert!(html.starts_with("<!DOCTYPE html>"), "{}", &html[..200]);
    for external in [
        "<script", "<link", "<img", "<iframe", "src=", "href=", "@import", "url(",
    ] {
        assert!(!html.contains(external), "`{external}` in the page");
    }
    assert!(!html.contains("shop.db"), "no target address in the page");
    assert!(html.contains("<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"timeline\""));
    assert!(html.contains("id=\"timeline-legend\""));
    assert!(html.contains("id=\"timeline-axis\""));
    assert_eq!(html.matches("<g class=\"row ").count(), steps.len());
    let mut all_phases = BTreeSet::new();
    for id in steps {
        assert!(
            html.contains(&format!("data-step=\"{id}\">\n<h2><span class=\"num\">")),
            "a section for {id}"
        );
        // One bar per phase the journal recorded for the step, in order.
        let journal = journal_phases(&s, id);
        assert!(journal.len() >= 3, "{id}: {journal:?}");
        assert_eq!(bars(row(&html, id)), journal, "bars of {id}");
        all_phases.extend(journal);
    }
    assert!(row(&html, "merge-legacy").contains("marker thresholds not-met"));
    assert!(row(&html, "copy-customers").contains("marker thresholds held"));
    for needle in [
        "<code>duplicates == 0</code></td><td class=\"result\">✗ NOT MET",
        "<code>match_rate &gt;= 0.95</code></td><td class=\"result\">✓ held",
        "<h3>Rollback</h3>",
        "<h3>Backup</h3>",
        "Outcome: <strong>step-failed</strong>",
    ] {
        assert!(html.contains(needle), "{needle}");
    }

    // The DOM as Chromium parsed it: the rows are inside the svg, one per step.
    let dom = run_chromium(&page, &["--dump-dom".to_string()]);
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.status.success(),
        "chromium --dump-dom: {}\n{}",
        dom.status,
        String::from_utf8_lossy(&dom.stderr)
    );
    let svg_at = dom_text
        .find("id=\"timeline\"")
        .unwrap_or_else(|| panic!("no timeline svg in Chromium's DOM:\n{dom_text}"));
    let svg = &dom_text[svg_at..svg_at + dom_text[svg_at..].find("</svg>").unwrap()];
    assert_eq!(svg.matches("<g class=\"row ").count(), steps.len(), "{svg}");
    for id in steps {
        assert!(svg.contains(&format!("data-step=\"{id}\"")), "{id} row");
        assert!(dom_text.contains(&format!("<code class=\"step-name\">{id}</code>")));
        assert_eq!(bars(row(&dom_text, id)), journal_phases(&s, id));
    }
    assert!(!dom_text.contains("<script"));

    // The screenshot: a PNG of the window that shows text and every phase colour.
    let shot = dir.join("evidence.png");
    let _ = std::fs::remove_file(&shot);
    let out = run_chromium(&page, &[format!("--screenshot={}", shot.display())]);
    assert!(
        out.status.success() && shot.is_file(),
        "chromium --screenshot: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&shot).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR", "IHDR first");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((width, height), WINDOW, "screenshot size");

    let mut decoder = png::Decoder::new(std::io::Cursor::new(&bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    assert!(channels >= 3, "{:?}", info.color_type);
    let pixels: Vec<[u8; 3]> = buf[..info.buffer_size()]
        .chunks(channels)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    let colours: BTreeSet<[u8; 3]> = pixels.iter().copied().collect();
    let inked = pixels.iter().filter(|p| **p != [255, 255, 255]).count();
    let share = inked as f64 / pixels.len() as f64;
    assert!(colours.len() > 50, "{} distinct colours", colours.len());
    assert!(
        share > 0.03,
        "{:.1}% of the pixels are not white",
        share * 100.0
    );
    let mut found = Vec::new();
    for (phase, rgb) in PHASE_COLOURS {
        if !all_phases.contains(*phase) {
            continue;
        }
        let n = pixels
            .iter()
            .filter(|p| p.iter().zip(rgb).all(|(a, b)| a.abs_diff(*b) <= 6))
            .count();
        // A legend swatch alone is 14×14 pixels: more means bars were drawn.
        assert!(
            n > 200,
            "{n} pixels of the {phase} colour in {}",
            shot.display()
        );
        found.push(format!("{phase} {n}px"));
    }
    sluice_e2e::report(
        "report_html",
        &format!(
            "HTML report rendered by headless Chromium: {width}x{height} PNG, {} colours, {:.1}% \
             inked, phase colours {}; see {}",
            colours.len(),
            share * 100.0,
            found.join(", "),
            shot.display()
        ),
    );
}
