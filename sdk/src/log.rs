//! Levelled, structured log records; the host tags them with plugin and step.

use crate::__private::bindings::sluice::plugin::log as wit;

pub use wit::Level;

/// Emits a record with structured `fields` (key, value).
pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<wit::Field> = fields
        .iter()
        .map(|(k, v)| wit::Field {
            key: (*k).to_string(),
            value: (*v).to_string(),
        })
        .collect();
    wit::log(level, message, &fields);
}

/// Emits an info record.
pub fn info(message: &str, fields: &[(&str, &str)]) {
    log(Level::Info, message, fields);
}

/// Emits a warning record.
pub fn warn(message: &str, fields: &[(&str, &str)]) {
    log(Level::Warn, message, fields);
}

/// Emits a debug record.
pub fn debug(message: &str, fields: &[(&str, &str)]) {
    log(Level::Debug, message, fields);
}
