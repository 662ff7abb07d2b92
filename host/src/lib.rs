//! sluice: runs datastore changes as plans of steps, each step's logic a
//! sandboxed WebAssembly component implementing `backup`, `migrate`,
//! `validate` and `rollback`.
//!
//! Data flows one way: [`plan`] → [`engine`] → [`runtime`] → [`capabilities`]
//! → [`datastores`]; the engine writes the [`journal`] and the [`backup`]
//! store; [`report`] reads the journal.

pub mod audit;
pub mod backup;
pub mod capabilities;
pub mod cli;
pub mod datastores;
pub mod engine;
pub mod grants;
pub mod journal;
pub mod plan;
pub mod report;
pub mod runtime;
