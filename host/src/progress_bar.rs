//! Progress bars on stderr for long plugin phases, fed by the `progress`
//! capability through a [`ProgressSink`]; the engine knows nothing of bars.
//!
//! Bars are drawn only for a person watching: stderr a terminal and text logs
//! (JSON logs are for machines, and a bar would break their one-object-per-line
//! stream). `SLUICE_PROGRESS=always|never` overrides the terminal check, for
//! tests; it never turns bars on in JSON mode.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::capabilities::progress::{ProgressEvent, ProgressSink};
use crate::cli::LogFormat;

/// Environment variable that overrides the terminal check: `always` or `never`.
pub const ENV: &str = "SLUICE_PROGRESS";

/// Whether to draw bars, given whether stderr is a terminal, the log format
/// and the value of [`ENV`] (any value other than `always`/`never` is ignored).
pub fn enabled(stderr_is_terminal: bool, log_format: LogFormat, setting: Option<&str>) -> bool {
    if log_format == LogFormat::Json {
        return false;
    }
    match setting.map(str::trim) {
        Some("always") => true,
        Some("never") => false,
        _ => stderr_is_terminal,
    }
}

/// The bar of the phase in progress.
struct Phase {
    message: String,
    total: Option<u64>,
    done: u64,
    bar: ProgressBar,
}

/// Draws one bar (or a spinner when the total is unknown) per phase on stderr.
///
/// A phase is told apart from the previous one by a new message or total or
/// a count that went back; its bar is cleared when it reaches its total, when
/// the phase call ends, when the next phase reports, or by
/// [`ProgressBars::clear`].
#[derive(Clone)]
pub struct ProgressBars {
    current: Arc<Mutex<Option<Phase>>>,
}

impl ProgressBars {
    /// Bars on stderr when [`enabled`] says so for this process, else `None`.
    pub fn for_stderr(log_format: LogFormat) -> Option<Self> {
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let setting = std::env::var(ENV).ok();
        enabled(tty, log_format, setting.as_deref()).then(Self::new)
    }

    /// Bars drawn on stderr, terminal or not (the choice is [`enabled`]'s).
    pub fn new() -> Self {
        ProgressBars {
            current: Arc::new(Mutex::new(None)),
        }
    }

    /// The sink to put in `EngineOptions::progress`.
    pub fn sink(&self) -> ProgressSink {
        let bars = self.clone();
        Arc::new(move |event: &ProgressEvent| bars.report(event))
    }

    /// Clears the bar still shown (call before printing the summary).
    pub fn clear(&self) {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(phase) = current.take() {
            phase.bar.finish_and_clear();
        }
    }

    /// Where log lines go: stderr, with the bar lifted while a line is written
    /// so that lines and bar never share a terminal row.
    pub fn log_writer(bars: Option<Self>) -> LogWriter {
        LogWriter {
            current: bars.map(|b| b.current),
        }
    }

    fn report(&self, event: &ProgressEvent) {
        if event.phase_ended {
            self.clear();
            return;
        }
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let same_phase = current.as_ref().is_some_and(|phase| {
            phase.message == event.message && phase.total == event.total && phase.done <= event.done
        });
        if !same_phase {
            if let Some(old) = current.take() {
                old.bar.finish_and_clear();
            }
            let bar = new_bar(event);
            *current = Some(Phase {
                message: event.message.clone(),
                total: event.total,
                done: event.done,
                bar,
            });
        }
        let Some(phase) = current.as_mut() else {
            return;
        };
        phase.done = event.done;
        phase.bar.set_position(event.done);
        if event.total.is_some_and(|total| event.done >= total) {
            phase.bar.finish_and_clear();
            *current = None;
        }
    }
}

impl Default for ProgressBars {
    fn default() -> Self {
        Self::new()
    }
}

/// A phase with a known total: message, bar, done/total, rate.
const BAR_TEMPLATE: &str = "{msg} [{bar:30}] {human_pos}/{human_len} ({per_sec:0}, {elapsed})";
/// A phase without a total: spinner, message, done, rate.
const SPINNER_TEMPLATE: &str = "{spinner} {msg} {human_pos} ({per_sec:0}, {elapsed})";

fn new_bar(event: &ProgressEvent) -> ProgressBar {
    // Hidden until set up: a bar's default target is stderr, which would
    // draw a half-made bar that the real target below knows nothing of.
    let bar = ProgressBar::with_draw_target(event.total, ProgressDrawTarget::hidden());
    let template = match event.total {
        Some(_) => BAR_TEMPLATE,
        None => SPINNER_TEMPLATE,
    };
    // The templates are constants; a bad one is a bug caught by the tests.
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(event.message.clone());
    bar.set_position(event.done);
    // Drawn only now, fully set up. indicatif's own stderr target hides
    // itself when stderr is no terminal, which would make
    // `SLUICE_PROGRESS=always` untestable; a `Term` as a plain `TermLike` does not.
    bar.set_draw_target(ProgressDrawTarget::term_like_with_hz(
        Box::new(console::Term::stderr()),
        10,
    ));
    if event.total.is_none() {
        // A spinner turns even when the plugin reports rarely.
        bar.enable_steady_tick(Duration::from_millis(200));
    }
    bar
}

/// `tracing-subscriber` writer: stderr, with bars lifted during each write.
pub struct LogWriter {
    current: Option<Arc<Mutex<Option<Phase>>>>,
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine {
            current: self.current.clone(),
        }
    }
}

/// One log event being written (see [`LogWriter`]).
pub struct LogLine {
    current: Option<Arc<Mutex<Option<Phase>>>>,
}

impl LogLine {
    /// Runs `write` with the bar of the phase in progress, if any, lifted.
    fn lifted<R>(&self, write: impl FnOnce() -> R) -> R {
        let Some(current) = &self.current else {
            return write();
        };
        let current = current.lock().unwrap_or_else(PoisonError::into_inner);
        match &*current {
            Some(phase) => phase.bar.suspend(write),
            None => write(),
        }
    }
}

impl Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.lifted(|| std::io::stderr().write(buf))
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.lifted(|| std::io::stderr().write_all(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_follow_the_terminal_in_text_mode() {
        assert!(enabled(true, LogFormat::Text, None));
        assert!(!enabled(false, LogFormat::Text, None));
        // Unknown values leave the terminal check in charge.
        assert!(enabled(true, LogFormat::Text, Some("sometimes")));
        assert!(!enabled(false, LogFormat::Text, Some("")));
    }

    #[test]
    fn env_overrides_the_terminal_check() {
        assert!(enabled(false, LogFormat::Text, Some("always")));
        assert!(!enabled(true, LogFormat::Text, Some("never")));
    }

    #[test]
    fn json_logs_never_get_bars() {
        assert!(!enabled(true, LogFormat::Json, None));
        assert!(!enabled(true, LogFormat::Json, Some("always")));
        assert!(!enabled(false, LogFormat::Json, Some("always")));
    }

    #[test]
    fn templates_parse() {
        assert!(ProgressStyle::with_template(BAR_TEMPLATE).is_ok());
        assert!(ProgressStyle::with_template(SPINNER_TEMPLATE).is_ok());
        for total in [Some(10), None] {
            let bar = new_bar(&ProgressEvent {
                done: 1,
                total,
                message: "copy".into(),
                phase_ended: false,
            });
            assert_eq!(bar.position(), 1);
            assert_eq!(bar.length(), total);
        }
    }

    #[test]
    fn a_spinner_ends_with_its_phase_call() {
        let bars = ProgressBars::new();
        let sink = bars.sink();
        let event = |done, phase_ended| ProgressEvent {
            done,
            total: None,
            message: "scan".into(),
            phase_ended,
        };
        sink(&event(3, false));
        assert!(bars.current.lock().unwrap().is_some());
        sink(&event(0, true));
        assert!(bars.current.lock().unwrap().is_none(), "no spinner lingers");
    }
}
