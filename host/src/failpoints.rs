//! Test-only fault injection. Compiled only with the `failpoints` feature,
//! which `cargo xtask test` turns on for a separate test binary; the `sluice`
//! binary operators run has none of this.
//!
//! - `SLUICE_FAILPOINT_TRACE=<file>` appends `name@n` for every point hit
//!   (the n-th hit of `name` in this process), so a test can enumerate them;
//! - `SLUICE_FAILPOINT=name@n` makes the n-th hit of `name` print
//!   `SLUICE-FAILPOINT-HIT name@n` on stderr and hang, for the test to
//!   SIGKILL the process right there;
//! - `SLUICE_FAILPOINT_DELAY=name@n:millis` sleeps at that hit instead (to
//!   hold a lease while other runs start).

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

static HITS: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);

/// An I/O error injected at a failpoint: `SLUICE_FAILPOINT_ERROR=name@n`
/// makes the n-th hit fail as a full disk would.
pub fn io_error(name: &str) -> std::io::Result<()> {
    let n = {
        let mut hits = HITS.lock().expect("not poisoned");
        let count = hits
            .get_or_insert_with(HashMap::new)
            .entry(format!("io:{name}"))
            .or_insert(0);
        *count += 1;
        *count
    };
    if std::env::var("SLUICE_FAILPOINT_ERROR").is_ok_and(|p| p == format!("{name}@{n}")) {
        return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
    }
    Ok(())
}

/// Called at a failpoint.
pub fn hit(name: &str) {
    let n = {
        let mut hits = HITS.lock().expect("not poisoned");
        let count = hits
            .get_or_insert_with(HashMap::new)
            .entry(name.to_string())
            .or_insert(0);
        *count += 1;
        *count
    };
    let point = format!("{name}@{n}");
    if let Some(trace) = std::env::var_os("SLUICE_FAILPOINT_TRACE") {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(trace)
        {
            let _ = writeln!(f, "{point}");
        }
    }
    if let Ok(delay) = std::env::var("SLUICE_FAILPOINT_DELAY") {
        if let Some((at, millis)) = delay.rsplit_once(':') {
            if at == point {
                eprintln!("SLUICE-FAILPOINT-DELAY {point}");
                std::thread::sleep(Duration::from_millis(millis.parse().unwrap_or(0)));
            }
        }
    }
    if std::env::var("SLUICE_FAILPOINT").is_ok_and(|p| p == point) {
        eprintln!("SLUICE-FAILPOINT-HIT {point}");
        let _ = std::io::stderr().flush();
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}
