//! Every size limit that protects a reader from hostile input, in one place.

/// 1 PiB: anything larger is a hostile or corrupt catalog, not an image.
pub const MAX_IMAGE_SIZE: u64 = 1 << 50;
/// Images one catalog may list.
pub const MAX_IMAGES: usize = 1_000_000;
/// Free text (titles, descriptions, reasons), in bytes.
pub const MAX_TEXT: usize = 64 * 1024;
/// Ids, versions, endorser names, in bytes.
pub const MAX_TOKEN: usize = 128;
/// Relative paths, in bytes (PATH_MAX-ish).
pub const MAX_REL_PATH: usize = 1024;
/// Default cap on catalog.json: a 10,000-image catalog of multi-GB images
/// is a few tens of MiB; anything much larger is an endless-data attack.
pub const DEFAULT_MAX_CATALOG_BYTES: u64 = 256 << 20;
/// A minisign signature is a few hundred bytes.
pub const MAX_SIGNATURE_BYTES: u64 = 64 << 10;
