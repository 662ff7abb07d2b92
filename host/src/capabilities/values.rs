//! `sluice:plugin/values`: named values granted to the step, by name.

use std::collections::BTreeMap;

use wasmtime::component::{HasData, Linker};

use crate::runtime::bindings::sluice::plugin::types::Error;
use crate::runtime::bindings::sluice::plugin::values as wit;

/// State of the `values` capability in one store: exactly the granted values.
pub struct ValuesCapability {
    granted: BTreeMap<String, String>,
}

impl ValuesCapability {
    /// Serves `granted` (name → value) and nothing else.
    pub fn new(granted: BTreeMap<String, String>) -> Self {
        ValuesCapability { granted }
    }

    /// Whether this grant lets a plugin read `name`.
    pub fn allows(&self, name: &str) -> bool {
        self.granted.contains_key(name)
    }
}

struct Values;

impl HasData for Values {
    type Data<'a> = &'a mut ValuesCapability;
}

/// Adds `values` to a linker.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut ValuesCapability,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, Values>(linker, get)
}

impl wit::Host for ValuesCapability {
    async fn get(&mut self, name: String) -> wasmtime::Result<Result<String, Error>> {
        if !self.allows(&name) {
            return Ok(Err(Error::AccessDenied(format!(
                "this step is not granted value `{name}`"
            ))));
        }
        Ok(Ok(self.granted[&name].clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_granted_names_are_allowed() {
        let cap = ValuesCapability::new([("token".to_string(), "s3cret".to_string())].into());
        for (name, want) in [
            ("token", true),
            ("TOKEN", false),
            ("other", false),
            ("", false),
        ] {
            assert_eq!(cap.allows(name), want, "{name}");
        }
    }
}
