//! The site side of vmic: trusted endorsers, site policy, the sync that
//! authenticates catalogs, plans and applies decisions, fetches and imports
//! verified images, the store, the SQLite state with its audit log, and the
//! hooks. Knows nothing of how catalogs are built.

#![deny(missing_docs)]

pub mod bundle;
mod chunks;
pub mod config;
mod contents;
mod hooks;
pub mod model;
pub mod plan;
pub mod query;
pub mod review;
pub mod scan;
pub mod site;
pub mod state;
mod store;
pub mod sync;
#[cfg(test)]
mod test_support;
pub mod trust;
pub mod vo;

use vmic_engine::{fsutil, hashing};
pub use vmic_format::{Error, ErrorKind, Result};
use vmic_format::{catalog, duration, error, minisign};

pub use hooks::HookSummary;
pub use site::Site;
pub use sync::{SyncOptions, SyncReport, sync};
