//! One error type for all vmic libraries: a typed kind (what class of
//! failure, which a caller may act on; the binary maps it to an exit code)
//! and a message a user can act on alone. Nothing matches on the message.

use std::fmt;
use std::path::Path;

/// What kind of failure happened. The `vmic` binary maps each kind onto
/// one documented exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorKind {
    /// Signature, digest, expiry, rollback or trust failure (exit 1).
    Verification,
    /// Bad usage, configuration or input (exit 2).
    Input,
    /// I/O or network failure that is worth retrying (exit 3).
    Io,
}

impl ErrorKind {
    /// How serious a failure is when several are summed up in one outcome:
    /// a verification failure outranks a retryable one, which outranks an
    /// input error.
    pub fn severity(self) -> u8 {
        match self {
            ErrorKind::Verification => 3,
            ErrorKind::Io => 2,
            ErrorKind::Input => 1,
        }
    }

    /// The most severe of several failures, if any.
    pub fn most_severe(kinds: impl IntoIterator<Item = ErrorKind>) -> Option<ErrorKind> {
        kinds.into_iter().max_by_key(|k| k.severity())
    }
}

/// A failure with its kind and a complete, human-readable message.
#[derive(Debug, Clone)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    /// What was asked for does not exist at its source (HTTP 404/410, no
    /// such file): lets a caller tell "gone" from "unreachable".
    absent: bool,
}

impl Error {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            absent: false,
        }
    }

    /// A retryable failure because the source does not have what was asked
    /// for (HTTP 404 or 410, a missing file).
    pub fn absent(message: impl Into<String>) -> Self {
        Error {
            absent: true,
            ..Self::io_failure(message)
        }
    }

    /// Whether the source said that what was asked for does not exist.
    pub fn is_absent(&self) -> bool {
        self.absent
    }

    /// A verification or trust failure.
    pub fn verification(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Verification, message)
    }

    /// A usage, configuration or input error.
    pub fn input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Input, message)
    }

    /// A failure worth retrying.
    pub fn io_failure(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Io, message)
    }

    /// An I/O error on `path`. Missing files, permission problems and files
    /// that are not what was asked for (a binary file where text is needed)
    /// are the user's input to fix; anything else may be transient.
    pub fn io(action: &str, path: &Path, err: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let kind = match err.kind() {
            K::NotFound
            | K::PermissionDenied
            | K::IsADirectory
            | K::NotADirectory
            | K::InvalidData
            | K::InvalidInput => ErrorKind::Input,
            _ => ErrorKind::Io,
        };
        Error {
            absent: err.kind() == K::NotFound,
            ..Self::new(kind, format!("cannot {action} {}: {err}", path.display()))
        }
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The whole message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefix the message with more context, keeping the kind.
    pub fn context(self, context: impl fmt::Display) -> Self {
        Error {
            message: format!("{context}: {}", self.message),
            ..self
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// A result with vmic's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
