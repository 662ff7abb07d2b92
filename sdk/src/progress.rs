//! Progress of a long phase, shown to the operator.

use crate::__private::bindings::sluice::plugin::progress as wit;

/// Reports `done` of `total` units finished, with a short message.
pub fn report(done: u64, total: Option<u64>, message: &str) {
    wit::report(done, total, message);
}
