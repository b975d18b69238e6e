//! The names of the files a publication (the output of `vmic build`) holds.
//! Spelled once, here, for the endorser that writes them and the site and
//! verifier that read them.

/// The signed catalog.
pub const CATALOG_FILE: &str = "catalog.json";
/// Its minisign signature.
pub const SIGNATURE_FILE: &str = "catalog.json.minisig";
/// The human-readable page.
pub const INDEX_FILE: &str = "index.html";
/// coreutils checksums of every image and of the catalog.
pub const SUMS_FILE: &str = "SHA256SUMS";
/// The minisign signature of `SHA256SUMS` (same key): stock `minisign` and
/// `sha256sum -c` then prove every byte without vmic.
pub const SUMS_SIGNATURE_FILE: &str = "SHA256SUMS.minisig";
/// Where images live inside a publication.
pub const IMAGES_SUBDIR: &str = "images";
/// Immutable catalog generations: `catalogs/<sha256 hex>.json`, never
/// overwritten, named by the signed trusted comment of `catalog.json.minisig`.
pub const GENERATIONS_DIR: &str = "catalogs";

/// The generation file holding the catalog whose SHA-256 is `sha256`.
pub fn generation_name(sha256: &crate::digest::Sha256Digest) -> String {
    format!("{GENERATIONS_DIR}/{sha256}.json")
}

/// Per-image chunk indexes (catalog format 2): `chunks/<sha256 hex>.json`,
/// named by their digest in the signed catalog, never overwritten.
pub const CHUNK_INDEX_DIR: &str = "chunks";

/// The chunk index file whose SHA-256 is `sha256`.
pub fn chunk_index_name(sha256: &crate::digest::Sha256Digest) -> String {
    format!("{CHUNK_INDEX_DIR}/{sha256}.json")
}

/// The suffix minisign gives a detached signature.
pub const SIGNATURE_SUFFIX: &str = ".minisig";

/// The detached signature's name for a file name or path text.
pub fn signature_name(file: &str) -> String {
    format!("{file}{SIGNATURE_SUFFIX}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_file_is_the_catalog_plus_the_minisign_suffix() {
        assert_eq!(SIGNATURE_FILE, signature_name(CATALOG_FILE));
        assert_eq!(SUMS_SIGNATURE_FILE, signature_name(SUMS_FILE));
    }
}
