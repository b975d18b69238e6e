//! vmic: signed, static catalogs of virtual-machine images.
//!
//! The library holds the model and all logic; the `vmic` binary only parses
//! arguments and prints. Library code never prints and never exits.

pub mod block;
pub mod build;
pub mod cache;
pub mod catalog;
pub mod config;
pub mod digest;
pub mod duration;
pub mod error;
pub mod fetch;
pub mod format;
pub mod fsutil;
pub mod hashing;
pub mod hooks;
pub mod meta;
pub mod minisign;
pub mod partfile;
pub mod relpath;
pub mod render;
pub mod review;
pub mod sha256x2;
pub mod site;
pub mod source;
pub mod state;
pub mod store;
pub mod stream_check;
pub mod sync;
#[cfg(test)]
mod test_support;
pub mod trust;
pub mod verify;

pub use error::{Error, ErrorKind, Result};
