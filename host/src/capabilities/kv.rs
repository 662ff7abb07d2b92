//! `sluice:plugin/kv`: key-value access (Redis) to the step's granted target,
//! scoped to key prefixes.

/// An open key-value connection resource.
pub struct KvConnectionHandle;
