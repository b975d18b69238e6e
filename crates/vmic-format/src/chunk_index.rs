//! Per-image chunk indexes (`vmic.chunks/1`), the catalog-format-2 home of
//! chunk digests. A 64 GiB image has 8,192 chunk digests; keeping them in
//! the catalog made its size grow with the bytes published. In format 2 the
//! catalog names, per image, the chunking scheme, the chunk size and the
//! SHA-256 and length of a separate index file (`chunks/<sha256>.json`), so
//! a catalog entry has the same size whatever the image's, and a reader
//! fetches an index only for an image it imports or verifies.
//!
//! An index is authenticated by its signed digest before a byte of it is
//! parsed, and must then agree with the catalog entry (scheme, size, chunk
//! size, digest count).

use serde::{Deserialize, Serialize};

use crate::chunks::{ChunkDigests, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, chunk_count};
use crate::digest::Sha256Digest;
use crate::ids::InvalidValue;
use crate::limits::MAX_IMAGE_SIZE;
use crate::publication::chunk_index_name;

/// The format string of an index file.
pub const INDEX_FORMAT: &str = "vmic.chunks/1";
/// Bytes an index may take per chunk (a quoted hex digest and a comma)
/// plus room for its header: a signed entry declaring more is refused, so a
/// reader never reads an index of absurd size.
const INDEX_BYTES_PER_CHUNK: u64 = 67;
const INDEX_HEADER_BYTES: u64 = 4096;

/// How an image is cut into chunks. Readers refuse to verify an image whose
/// scheme they do not know, but still read the catalog: a new scheme (a
/// content-defined chunker, for delta downloads) needs no new major format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChunkScheme {
    /// Fixed-size chunks of `chunk_size` bytes, the last one shorter.
    Fixed,
    /// A scheme this vmic does not implement.
    Other(String),
}

impl ChunkScheme {
    /// `fixed`, or another lower-case token of at most 32 characters.
    pub fn parse(text: &str) -> Result<ChunkScheme, InvalidValue> {
        if text == "fixed" {
            return Ok(ChunkScheme::Fixed);
        }
        let token = !text.is_empty()
            && text.len() <= 32
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !token {
            return Err(InvalidValue(format!(
                "chunking {text:?} is not a scheme name (lower-case letters, digits, '-')"
            )));
        }
        Ok(ChunkScheme::Other(text.into()))
    }

    /// The scheme's name.
    pub fn as_str(&self) -> &str {
        match self {
            ChunkScheme::Fixed => "fixed",
            ChunkScheme::Other(name) => name,
        }
    }
}

impl Serialize for ChunkScheme {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Which index file holds an image's chunk digests: its SHA-256 (which is
/// also its name) and its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkIndexRef {
    /// SHA-256 of the index file's bytes.
    pub sha256: Sha256Digest,
    /// Length of the index file in bytes.
    pub size: u64,
}

/// An image's chunking as a format-2 catalog signs it: size, scheme, chunk
/// size and the index holding the digests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IndexedChunks {
    size: u64,
    chunking: ChunkScheme,
    #[serde(skip_serializing_if = "Option::is_none")]
    chunk_size: Option<u64>,
    chunk_index: ChunkIndexRef,
}

/// An index file as JSON.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexFile {
    format: String,
    chunking: String,
    size: u64,
    chunk_size: u64,
    chunks: Vec<Sha256Digest>,
}

impl IndexedChunks {
    /// Check the size limit and, for the fixed scheme, the chunk size and
    /// that the declared index length fits the number of chunks.
    pub fn new(
        size: u64,
        chunking: ChunkScheme,
        chunk_size: Option<u64>,
        chunk_index: ChunkIndexRef,
    ) -> Result<IndexedChunks, InvalidValue> {
        if size > MAX_IMAGE_SIZE {
            return Err(InvalidValue(format!(
                "size {size} is absurd (more than 1 PiB)"
            )));
        }
        if chunking == ChunkScheme::Fixed {
            let chunk_size = chunk_size
                .ok_or_else(|| InvalidValue("chunking \"fixed\" needs a chunk_size".to_string()))?;
            if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
                return Err(InvalidValue(format!(
                    "chunk_size {chunk_size} is outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}"
                )));
            }
            let most = chunk_count(size, chunk_size) * INDEX_BYTES_PER_CHUNK + INDEX_HEADER_BYTES;
            if chunk_index.size > most {
                return Err(InvalidValue(format!(
                    "chunk index of {} bytes is more than {most} bytes, the most {} chunks need",
                    chunk_index.size,
                    chunk_count(size, chunk_size)
                )));
            }
        }
        Ok(IndexedChunks {
            size,
            chunking,
            chunk_size,
            chunk_index,
        })
    }

    /// The writer's side: the index file for `digests` and the entry naming
    /// it.
    pub fn for_digests(digests: &ChunkDigests) -> (IndexedChunks, Vec<u8>) {
        let file = IndexFile {
            format: INDEX_FORMAT.into(),
            chunking: ChunkScheme::Fixed.as_str().into(),
            size: digests.size(),
            chunk_size: digests.chunk_size(),
            chunks: digests.chunks().to_vec(),
        };
        // Serialising plain strings and numbers cannot fail.
        let mut bytes = serde_json::to_vec(&file).unwrap_or_default();
        bytes.push(b'\n');
        let indexed = IndexedChunks {
            size: digests.size(),
            chunking: ChunkScheme::Fixed,
            chunk_size: Some(digests.chunk_size()),
            chunk_index: ChunkIndexRef {
                sha256: Sha256Digest::of(&bytes),
                size: bytes.len() as u64,
            },
        };
        (indexed, bytes)
    }

    /// The image's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// How the image is cut.
    pub fn chunking(&self) -> &ChunkScheme {
        &self.chunking
    }

    /// The chunk size, for the fixed scheme.
    pub fn chunk_size(&self) -> Option<u64> {
        self.chunk_size
    }

    /// The index file's digest and length.
    pub fn index(&self) -> &ChunkIndexRef {
        &self.chunk_index
    }

    /// The index file's path in a publication: `chunks/<sha256>.json`.
    pub fn file_name(&self) -> String {
        chunk_index_name(&self.chunk_index.sha256)
    }

    /// Authenticate `bytes` as this image's index (length, then SHA-256,
    /// before any parsing), then check it agrees with the signed entry.
    pub fn open(&self, bytes: &[u8]) -> Result<ChunkDigests, InvalidValue> {
        let name = self.file_name();
        if bytes.len() as u64 != self.chunk_index.size {
            return Err(InvalidValue(format!(
                "chunk index {name} has {} bytes, the catalog signed {}",
                bytes.len(),
                self.chunk_index.size
            )));
        }
        let actual = Sha256Digest::of(bytes);
        if actual != self.chunk_index.sha256 {
            return Err(InvalidValue(format!(
                "chunk index {name} has SHA-256 {actual}, the catalog signed {}",
                self.chunk_index.sha256
            )));
        }
        if self.chunking != ChunkScheme::Fixed {
            return Err(InvalidValue(format!(
                "chunking {:?} is not one this vmic implements; upgrade vmic to verify this image",
                self.chunking.as_str()
            )));
        }
        let file: IndexFile = serde_json::from_slice(bytes)
            .map_err(|e| InvalidValue(format!("chunk index {name} is invalid: {e}")))?;
        let agrees = file.format == INDEX_FORMAT
            && file.chunking == self.chunking.as_str()
            && file.size == self.size
            && Some(file.chunk_size) == self.chunk_size;
        if !agrees {
            return Err(InvalidValue(format!(
                "chunk index {name} (format {:?}, chunking {:?}, size {}, chunk size {}) disagrees with its catalog entry",
                file.format, file.chunking, file.size, file.chunk_size
            )));
        }
        ChunkDigests::new(file.size, file.chunk_size, file.chunks)
            .map_err(|e| InvalidValue(format!("chunk index {name}: {}", e.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digests(size: u64, chunk_size: u64) -> ChunkDigests {
        let n = chunk_count(size, chunk_size) as usize;
        let chunks = (0..n).map(|i| Sha256Digest::of(&i.to_le_bytes())).collect();
        ChunkDigests::new(size, chunk_size, chunks).unwrap()
    }

    #[test]
    fn an_index_round_trips_through_its_signed_entry() {
        let d = digests(100 << 20, 8 << 20);
        let (entry, bytes) = IndexedChunks::for_digests(&d);
        assert_eq!(entry.open(&bytes).unwrap(), d);
        assert_eq!(
            entry.file_name(),
            format!("chunks/{}.json", Sha256Digest::of(&bytes))
        );
    }

    #[test]
    fn a_tampered_or_resized_index_is_refused_before_parsing() {
        let (entry, bytes) = IndexedChunks::for_digests(&digests(40 << 20, 8 << 20));
        let mut flipped = bytes.clone();
        let n = flipped.len() - 10;
        flipped[n] ^= 1;
        assert!(entry.open(&flipped).unwrap_err().0.contains("SHA-256"));
        assert!(entry.open(&bytes[1..]).unwrap_err().0.contains("bytes"));
    }

    #[test]
    fn an_index_that_disagrees_with_its_entry_is_refused() {
        let (entry, _) = IndexedChunks::for_digests(&digests(40 << 20, 8 << 20));
        let (_, other) = IndexedChunks::for_digests(&digests(40 << 20, 4 << 20));
        let forged = IndexedChunks {
            chunk_index: ChunkIndexRef {
                sha256: Sha256Digest::of(&other),
                size: other.len() as u64,
            },
            ..entry
        };
        assert!(forged.open(&other).unwrap_err().0.contains("disagrees"));
    }

    #[test]
    fn an_unknown_scheme_is_read_but_not_verified() {
        let (entry, bytes) = IndexedChunks::for_digests(&digests(1 << 20, 64 << 10));
        let cdc = IndexedChunks::new(
            entry.size,
            ChunkScheme::parse("cdc-fastcdc").unwrap(),
            None,
            entry.chunk_index,
        )
        .unwrap();
        assert!(cdc.open(&bytes).unwrap_err().0.contains("upgrade vmic"));
        assert!(ChunkScheme::parse("Fixed!").is_err());
    }

    #[test]
    fn an_entry_declaring_an_absurd_index_length_is_refused() {
        let too_big = ChunkIndexRef {
            sha256: Sha256Digest::of(b""),
            size: 1 << 30,
        };
        let err = IndexedChunks::new(8 << 20, ChunkScheme::Fixed, Some(8 << 20), too_big);
        assert!(err.unwrap_err().0.contains("the most 1 chunks need"));
    }
}
