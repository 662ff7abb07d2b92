//! sluice: runs datastore changes as plans of steps, each step's logic a
//! sandboxed WebAssembly component implementing `backup`, `migrate`,
//! `validate` and `rollback`.
//!
//! Data flows one way: [`plan`] → [`engine`] → [`runtime`] → [`capabilities`]
//! → [`datastores`]; the engine writes the [`journal`] and the [`backup`]
//! store; [`report`] reads the journal.

pub mod approval;
pub mod audit;
pub mod backup;
pub mod capabilities;
pub mod cli;
pub mod commands;
pub mod conformance;
pub mod datastores;
pub mod engine;
pub mod exit;
#[cfg(feature = "failpoints")]
#[doc(hidden)]
pub mod failpoints;
pub mod grants;
pub mod journal;
pub mod plan;
pub mod preview;
pub mod progress_bar;
pub mod rehearse;
pub mod report;
pub mod runtime;
pub mod scaffold;
pub mod secret;

/// Marks a point where tests may kill the process (see `failpoints`); no code
/// at all without the `failpoints` feature.
#[macro_export]
#[doc(hidden)]
macro_rules! failpoint {
    ($name:expr) => {
        #[cfg(feature = "failpoints")]
        $crate::failpoints::hit($name);
    };
}

/// Returns an injected I/O error at this point in tests (see `failpoints`);
/// always `Ok` without the `failpoints` feature.
#[macro_export]
#[doc(hidden)]
macro_rules! failpoint_io {
    ($name:expr) => {{
        #[cfg(feature = "failpoints")]
        let result = $crate::failpoints::io_error($name);
        #[cfg(not(feature = "failpoints"))]
        let result: std::io::Result<()> = Ok(());
        result
    }};
}
