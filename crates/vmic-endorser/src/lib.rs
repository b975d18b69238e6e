//! The endorser side of vmic: discover the images of a directory, describe
//! them (sidecars, `catalog.toml`, detected format), hash them through the
//! engine (reusing the digest cache), sign the catalog and render the
//! publication. Knows nothing of sites.

#![deny(missing_docs)]

pub mod build;
mod cache;
pub mod export;
pub mod generations;
pub mod meta;
pub mod mirror;
mod render;
pub mod resign;
pub mod rotate;
pub mod vo;

use vmic_engine::{fsutil, hashing};
pub use vmic_format::{Error, ErrorKind, Result};
use vmic_format::{catalog, digest, duration, error, minisign, relpath};

pub use build::{BuildOptions, BuildReport, build};
