//! vmic: signed, static catalogs of virtual-machine images.
//!
//! The library holds the model and all logic; the `vmic` binary only parses
//! arguments and prints. Library code never prints and never exits.

pub mod build;
pub mod cache;
pub mod catalog;
pub mod digest;
pub mod duration;
pub mod error;
pub mod format;
pub mod fsutil;
pub mod hashing;
pub mod meta;
pub mod minisign;
pub mod relpath;
pub mod render;
pub mod source;
pub mod verify;

pub use error::{Error, ErrorKind, Result};
