//! `sluice:plugin/log`: levelled, structured records, tagged with plugin and step.

use wasmtime::component::{HasData, Linker};

use crate::runtime::bindings::sluice::plugin::log::{self as wit, Field, Level};

/// Records one call may emit; past it they are counted, not printed, so a
/// plugin cannot flood the operator's log.
pub const MAX_RECORDS_PER_CALL: u64 = 10_000;
/// Longest message or field value kept.
const MAX_TEXT: usize = 4096;

/// State of the `log` capability in one store.
pub struct LogCapability {
    plugin: String,
    step: String,
    records: u64,
}

impl LogCapability {
    /// Records are tagged with `plugin` and `step`.
    pub fn new(plugin: &str, step: &str) -> Self {
        LogCapability {
            plugin: plugin.to_string(),
            step: step.to_string(),
            records: 0,
        }
    }

    /// Records dropped because of [`MAX_RECORDS_PER_CALL`].
    pub fn dropped(&self) -> u64 {
        self.records.saturating_sub(MAX_RECORDS_PER_CALL)
    }
}

struct Log;

impl HasData for Log {
    type Data<'a> = &'a mut LogCapability;
}

/// Adds `log` to a linker.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut LogCapability,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, Log>(linker, get)
}

fn cut(s: &str) -> &str {
    if s.len() <= MAX_TEXT {
        return s;
    }
    let mut end = MAX_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl wit::Host for LogCapability {
    async fn log(
        &mut self,
        level: Level,
        message: String,
        fields: Vec<Field>,
    ) -> wasmtime::Result<()> {
        self.records += 1;
        if self.records > MAX_RECORDS_PER_CALL {
            return Ok(());
        }
        let fields: String = fields
            .iter()
            .map(|f| format!(" {}={}", cut(&f.key), cut(&f.value)))
            .collect();
        let (plugin, step, message) = (&self.plugin, &self.step, cut(&message));
        match level {
            Level::Trace => tracing::trace!(target: "plugin", plugin, step, "{message}{fields}"),
            Level::Debug => tracing::debug!(target: "plugin", plugin, step, "{message}{fields}"),
            Level::Info => tracing::info!(target: "plugin", plugin, step, "{message}{fields}"),
            Level::Warn => tracing::warn!(target: "plugin", plugin, step, "{message}{fields}"),
            Level::Error => tracing::error!(target: "plugin", plugin, step, "{message}{fields}"),
        }
        Ok(())
    }
}
