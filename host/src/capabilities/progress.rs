//! `sluice:plugin/progress`: how far a long phase has come.

use std::sync::Arc;

use wasmtime::component::{HasData, Linker};

use crate::runtime::bindings::sluice::plugin::progress as wit;

/// One progress report of a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressEvent {
    /// Units done.
    pub done: u64,
    /// Units in all, when known.
    pub total: Option<u64>,
    /// What is being worked on.
    pub message: String,
    /// The phase call that reported ended (its store is gone): whatever it
    /// showed is over, even if it never reached its total.
    pub phase_ended: bool,
}

/// Receives progress reports (a progress bar, a log).
pub type ProgressSink = Arc<dyn Fn(&ProgressEvent) + Send + Sync>;

/// Longest progress message kept; the rest is cut.
const MAX_MESSAGE: usize = 200;

/// State of the `progress` capability in one store.
pub struct ProgressCapability {
    sink: Option<ProgressSink>,
    reported: bool,
}

impl ProgressCapability {
    /// Reports go to `sink` (or only to the trace log).
    pub fn new(sink: Option<ProgressSink>) -> Self {
        ProgressCapability {
            sink,
            reported: false,
        }
    }
}

/// The store of a phase call drops its capabilities when the call ends:
/// the one boundary every phase has, whatever the plugin reported.
impl Drop for ProgressCapability {
    fn drop(&mut self) {
        if let (Some(sink), true) = (&self.sink, self.reported) {
            sink(&ProgressEvent {
                done: 0,
                total: None,
                message: String::new(),
                phase_ended: true,
            });
        }
    }
}

struct Progress;

impl HasData for Progress {
    type Data<'a> = &'a mut ProgressCapability;
}

/// Adds `progress` to a linker.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut ProgressCapability,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, Progress>(linker, get)
}

impl wit::Host for ProgressCapability {
    async fn report(
        &mut self,
        done: u64,
        total: Option<u64>,
        mut message: String,
    ) -> wasmtime::Result<()> {
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        tracing::trace!(done, total, %message, "progress");
        if let Some(sink) = &self.sink {
            self.reported = true;
            sink(&ProgressEvent {
                done,
                total,
                message,
                phase_ended: false,
            });
        }
        Ok(())
    }
}
