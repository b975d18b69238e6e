//! One error type for the whole library, carrying the class of failure that
//! decides the process exit code, and a message a user can act on alone.

use std::fmt;
use std::path::Path;

/// What kind of failure happened; maps one-to-one onto the documented exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Signature, digest, expiry, rollback or trust failure (exit 1).
    Verification,
    /// Bad usage, configuration or input (exit 2).
    Input,
    /// I/O or network failure that is worth retrying (exit 3).
    Io,
}

impl ErrorKind {
    /// The process exit code documented for this kind of failure.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Verification => 1,
            ErrorKind::Input => 2,
            ErrorKind::Io => 3,
        }
    }
}

/// A failure with its kind and a complete, human-readable message.
#[derive(Debug, Clone)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }

    pub fn verification(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Verification, message)
    }

    pub fn input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Input, message)
    }

    pub fn io_failure(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Io, message)
    }

    /// An I/O error on `path`. Missing files and permission problems are the
    /// user's input to fix (exit 2); anything else may be transient (exit 3).
    pub fn io(action: &str, path: &Path, err: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let kind = match err.kind() {
            K::NotFound | K::PermissionDenied | K::IsADirectory | K::NotADirectory => {
                ErrorKind::Input
            }
            _ => ErrorKind::Io,
        };
        Self::new(kind, format!("cannot {action} {}: {err}", path.display()))
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefix the message with more context, keeping the kind.
    pub fn context(self, context: impl fmt::Display) -> Self {
        Error {
            kind: self.kind,
            message: format!("{context}: {}", self.message),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;
