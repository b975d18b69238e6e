//! vmic's wire formats and nothing else: the signed catalog
//! (`vmic.catalog/1` and `/2`) parsed into validated types, per-image chunk
//! indexes, minisign keys and signatures, chunk geometry, image-format detection from a byte prefix, the publication's
//! file names and every size limit.
//!
//! No network, database, thread pool or templating here, and no `unsafe`:
//! this is the crate another tool depends on to read and authenticate a vmic
//! catalog. Functions never print, never exit and never panic on input.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod authenticate;
pub mod catalog;
pub mod chunk_index;
pub mod chunks;
pub mod digest;
pub mod duration;
pub mod error;
pub mod external_refs;
pub mod ids;
pub mod image_format;
pub mod limits;
pub mod minisign;
pub mod publication;
pub mod relpath;
pub mod rotation;
pub mod strict_toml;
pub mod trusted_comment;
mod versioned;
pub mod vo;

pub use error::{Error, ErrorKind, Result};
