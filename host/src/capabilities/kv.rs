//! `sluice:plugin/kv`: key-value access (Redis) to the step's granted target,
//! scoped to key prefixes.

/// An open key-value connection resource.
pub struct KvConnectionHandle;

use crate::plan::Access;
use crate::secret::Secret;

/// Access to one key-value target, granted to one phase of one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvGrant {
    /// Target name in the plan.
    pub target: String,
    /// Connection URL (secret).
    pub url: Secret,
    /// Access mode, enforced by the host before the datastore sees a call.
    pub access: Access,
    /// Key prefixes the plugin may touch (`None`: every key).
    pub prefixes: Option<Vec<String>>,
}
