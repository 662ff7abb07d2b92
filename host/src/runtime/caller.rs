//! The seam between the engine and the plugins it runs: every phase call
//! (backup, migrate, validate, rollback, preview) goes through
//! [`PhaseCaller`]. [`Runtime`] is the real one; the engine's state-machine
//! tests put a scripted plugin behind it, so every path through a step is
//! exercised without compiling a component.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::plan::{Limits, Probe};
use crate::runtime::{
    CallGrants, CallReport, LoadedPlugin, PhaseError, PhaseInput, PhaseOutput, Runtime,
    StepContext, StepPreview,
};

/// A boxed phase call in flight.
pub type CallFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a phase call returns, and what happened besides.
pub type PhaseResult = (Result<PhaseOutput, PhaseError>, CallReport);

/// Calls the phases of a loaded plugin.
pub trait PhaseCaller: Send + Sync {
    /// One phase call (backup, migrate, validate, rollback) with `grants`.
    fn call<'a>(
        &'a self,
        plugin: &'a LoadedPlugin,
        grants: CallGrants,
        input: PhaseInput,
    ) -> CallFuture<'a, PhaseResult>;

    /// The plugin's `preview` of a step, granted nothing.
    fn preview<'a>(
        &'a self,
        plugin: &'a LoadedPlugin,
        ctx: &'a StepContext,
        limits: Limits,
        probes: &'a [Probe],
    ) -> CallFuture<'a, Result<StepPreview, PhaseError>>;
}

impl PhaseCaller for Runtime {
    fn call<'a>(
        &'a self,
        plugin: &'a LoadedPlugin,
        grants: CallGrants,
        input: PhaseInput,
    ) -> CallFuture<'a, PhaseResult> {
        Box::pin(Runtime::call(self, plugin, grants, input))
    }

    fn preview<'a>(
        &'a self,
        plugin: &'a LoadedPlugin,
        ctx: &'a StepContext,
        limits: Limits,
        probes: &'a [Probe],
    ) -> CallFuture<'a, Result<StepPreview, PhaseError>> {
        Box::pin(Runtime::preview(self, plugin, ctx, limits, probes))
    }
}

/// A shared caller calls like the one it shares.
impl<C: PhaseCaller + ?Sized> PhaseCaller for Arc<C> {
    fn call<'a>(
        &'a self,
        plugin: &'a LoadedPlugin,
        grants: CallGrants,
        input: PhaseInput,
    ) -> CallFuture<'a, PhaseResult> {
        (**self).call(plugin, grants, input)
    }

    fn preview<'a>(
        &'a self,
        plugin: &'a LoadedPlugin,
        ctx: &'a StepContext,
        limits: Limits,
        probes: &'a [Probe],
    ) -> CallFuture<'a, Result<StepPreview, PhaseError>> {
        (**self).preview(plugin, ctx, limits, probes)
    }
}
