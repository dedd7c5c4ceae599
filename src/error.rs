//! One public error type for the library.
//!
//! Rules, so that a message read at 3 a.m. says what broke and what to do:
//!
//! * Every variant carries the name of the object (`data/ab/abcd…`, `index/…`) or the local
//!   path involved. "corrupt data" without a name is a bug.
//! * Variants are meanings, not sources: the binary maps them to exit codes
//!   (`NoRepository` -> 10, `WrongPassword` -> 12, `Locked` -> 11, everything else -> 1).
//! * Module-private error types convert into this one at the boundary; `anyhow` lives only
//!   in the binary.

use std::path::PathBuf;

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, by meaning.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An object the operation needs is not in the repository.
    #[error("{what} not found")]
    NotFound { what: String },

    /// A create-only write found the name taken.
    #[error("{what} already exists")]
    AlreadyExists { what: String },

    /// Stored bytes failed authentication or their content hash: corruption or tampering.
    #[error("integrity error in {object}: {reason}")]
    Integrity { object: String, reason: String },

    /// Bytes authenticated but do not decode as the expected structure, or use a newer
    /// format version than this build understands.
    #[error("cannot decode {object}: {reason}")]
    Format { object: String, reason: String },

    /// No key file in the repository opens with the given password.
    #[error("wrong password: none of the {keys} key(s) in {repo} opens with it")]
    WrongPassword { repo: String, keys: usize },

    /// There is no repository at the given location.
    #[error("no repository at {location}: {hint}")]
    NoRepository { location: String, hint: String },

    /// The storage backend failed (network, permissions, server error).
    #[error("storage {location}: {message}")]
    Backend { location: String, message: String },

    /// A local file operation failed. (The system's error is in the message, and not
    /// also a `source()`, so a printed error chain says it once.)
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },

    /// The input of a backup failed as a whole (a producer command exited non-zero).
    #[error("{0}")]
    Source(String),

    /// A lock held by another process prevents the operation.
    #[error("repository is locked: {0}")]
    Locked(String),

    /// An invalid argument, option or setting.
    #[error("{0}")]
    Config(String),

    /// The local cache could not be used.
    #[error("local cache {}: {message}", path.display())]
    Cache { path: PathBuf, message: String },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error,
        }
    }

    pub(crate) fn integrity(object: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Integrity {
            object: object.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn format(object: impl Into<String>, reason: impl ToString) -> Self {
        Error::Format {
            object: object.into(),
            reason: reason.to_string(),
        }
    }

    /// Does `e`, or an error it wraps, say the file system is full (or the quota used)?
    pub(crate) fn is_full(e: &(dyn std::error::Error + 'static)) -> bool {
        use std::io::ErrorKind::{QuotaExceeded, StorageFull};
        let mut at = Some(e);
        while let Some(e) = at {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if matches!(io.kind(), StorageFull | QuotaExceeded) {
                    return true;
                }
            }
            at = e.source();
        }
        false
    }

    /// True for errors that mean "the object is not there".
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }
}
