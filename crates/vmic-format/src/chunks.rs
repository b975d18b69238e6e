//! Chunk geometry: how an image is cut into fixed-size chunks, each with its
//! own SHA-256, so verification can spread one image over every core.

/// Default chunk size: small enough that a 2 GiB image makes 256 parallel
/// tasks, large enough that a 100 GB image lists only ~12,000 digests.
pub const DEFAULT_CHUNK_SIZE: u64 = 8 << 20;
/// Smallest chunk size a catalog may declare.
pub const MIN_CHUNK_SIZE: u64 = 4 << 10;
/// Largest chunk size a catalog may declare.
pub const MAX_CHUNK_SIZE: u64 = 1 << 30;

/// Number of chunks for a file of `size` bytes.
pub fn chunk_count(size: u64, chunk_size: u64) -> u64 {
    size.div_ceil(chunk_size)
}
