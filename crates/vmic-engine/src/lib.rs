//! vmic's engine: the parallel hashing pipeline (chunk digests on every core,
//! two SHA-256 lanes per core), the direct-I/O landing of downloads hashed
//! as they arrive, the transports that bring bytes from HTTP(S), `file://`
//! URLs and directories, and the verification of a whole publication.
//!
//! Depends only on `vmic-format`; knows nothing of the endorser's build or
//! of a site's state.

#![deny(missing_docs)]

pub mod attest;
mod block;
pub mod cancel;
pub mod detect;
pub mod fetch;
pub mod fsutil;
pub mod hashing;
pub mod partfile;
pub mod publication;
pub mod rotation_chain;
mod sha256x2;
mod stream_check;
pub mod stream_landing;
#[cfg(test)]
mod test_support;
pub mod transport;
pub mod verify;
pub mod vo_source;

// The format crate's modules, by their old names inside this crate.
pub use vmic_format::{Error, ErrorKind, Result};
use vmic_format::{digest, error, relpath};

// The entry points most callers need.
pub use hashing::{Engine, NoProgress, Problem, Progress};
pub use publication::Publication;
pub use transport::Transport;
