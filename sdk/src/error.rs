use crate::{DatastoreError, Error};

/// Shorthands for building [`Error`] values.
pub trait ErrorExt {
    /// A datastore error with its driver code and message.
    fn datastore(code: impl Into<String>, message: impl Into<String>) -> Self;
    /// A human one-line description of the error.
    fn describe(&self) -> String;
}

impl ErrorExt for Error {
    fn datastore(code: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Datastore(DatastoreError {
            code: code.into(),
            message: message.into(),
        })
    }

    fn describe(&self) -> String {
        match self {
            Error::InvalidParams(m) => format!("invalid params: {m}"),
            Error::AccessDenied(m) => format!("access denied: {m}"),
            Error::Datastore(e) => format!("datastore error {}: {}", e.code, e.message),
            Error::PreconditionFailed(m) => format!("precondition failed: {m}"),
            Error::NotFound(m) => format!("not found: {m}"),
            Error::BackupInvalid(m) => format!("backup invalid: {m}"),
            Error::Unsupported(m) => format!("unsupported: {m}"),
            Error::Internal(m) => format!("internal error: {m}"),
        }
    }
}
