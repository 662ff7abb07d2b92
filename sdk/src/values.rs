//! Named values the plan grants to the step (connection strings, tokens).

use crate::__private::bindings::sluice::plugin::values as wit;
use crate::Error;

/// The value named `name`; [`Error::AccessDenied`] unless the step was
/// granted it.
pub fn get(name: &str) -> Result<String, Error> {
    wit::get(name)
}
