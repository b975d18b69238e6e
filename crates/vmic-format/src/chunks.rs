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

use serde::Serialize;

use crate::digest::Sha256Digest;
use crate::ids::InvalidValue;
use crate::limits::MAX_IMAGE_SIZE;

/// What a file must be: its size, the chunk size, and exactly one SHA-256
/// per chunk. Built only through [`ChunkDigests::new`], so the count always
/// matches the size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChunkDigests {
    size: u64,
    chunk_size: u64,
    chunks: Vec<Sha256Digest>,
}

impl ChunkDigests {
    /// Check the size limit, the chunk-size range and the digest count.
    pub fn new(
        size: u64,
        chunk_size: u64,
        chunks: Vec<Sha256Digest>,
    ) -> Result<ChunkDigests, InvalidValue> {
        if size > MAX_IMAGE_SIZE {
            return Err(InvalidValue(format!(
                "size {size} is absurd (more than 1 PiB)"
            )));
        }
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            return Err(InvalidValue(format!(
                "chunk_size {chunk_size} is outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}"
            )));
        }
        let expected = chunk_count(size, chunk_size);
        if chunks.len() as u64 != expected {
            return Err(InvalidValue(format!(
                "has {} chunk digests, but size {size} in chunks of {chunk_size} needs {expected}",
                chunks.len()
            )));
        }
        Ok(ChunkDigests {
            size,
            chunk_size,
            chunks,
        })
    }

    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The chunk size in bytes (the last chunk may be shorter).
    pub fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    /// One digest per chunk, in order.
    pub fn chunks(&self) -> &[Sha256Digest] {
        &self.chunks
    }

    /// Take the parts apart: (size, chunk size, digests).
    pub fn into_parts(self) -> (u64, u64, Vec<Sha256Digest>) {
        (self.size, self.chunk_size, self.chunks)
    }

    /// The whole-file digest that the chunks determine on their own: for a
    /// file of at most one chunk it is that chunk's (or the empty input's).
    pub fn implied_file_digest(&self) -> Option<Sha256Digest> {
        match self.chunks.as_slice() {
            [] => Some(Sha256Digest::of(b"")),
            [only] => Some(*only),
            _ => None,
        }
    }
}
