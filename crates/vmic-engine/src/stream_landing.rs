//! A landing that checks a download against its signed chunk digests and
//! keeps nothing: `vmic verify` of a remote publication hashes every image
//! as it streams past, at download speed, without writing it anywhere.

use std::sync::Arc;

use crate::block::BlockPool;
use crate::error::Result;
use crate::fetch::Landing;
use crate::hashing::{Engine, Problem};
use crate::stream_check::StreamCheck;
use vmic_format::chunks::ChunkDigests;

/// Bytes kept in flight for hashing.
const BLOCK_SIZE: usize = 4 << 20;
const BLOCKS: usize = 8;

/// Checks a stream chunk by chunk, keeping only the blocks being hashed.
pub struct StreamLanding<'e> {
    pool: BlockPool,
    current: Option<crate::block::Block>,
    fill: usize,
    received: u64,
    check: StreamCheck<'e>,
}

impl<'e> StreamLanding<'e> {
    /// A landing for a file that must match `expected`.
    pub fn new(expected: &ChunkDigests, engine: &'e Engine) -> StreamLanding<'e> {
        let (size, chunk_size, chunks) = expected.clone().into_parts();
        StreamLanding {
            pool: BlockPool::new(BLOCK_SIZE, BLOCKS),
            current: None,
            fill: 0,
            received: 0,
            check: StreamCheck::new(engine, size, chunk_size, chunks),
        }
    }

    fn submit_current(&mut self) {
        if let Some(block) = self.current.take() {
            let fill = std::mem::take(&mut self.fill);
            if fill > 0 {
                self.check.submit(Arc::new(block), 0..fill);
            }
        }
    }

    /// Everything wrong with what streamed past (its size, each chunk that
    /// differs or is missing); empty means verified.
    pub fn finish(mut self) -> Vec<Problem> {
        self.submit_current();
        self.check.finish()
    }
}

impl Landing for StreamLanding<'_> {
    fn held(&self) -> u64 {
        self.received
    }

    fn restart(&mut self) -> Result<()> {
        self.current = None;
        self.fill = 0;
        self.received = 0;
        self.check.restart();
        Ok(())
    }

    fn room(&mut self) -> Result<&mut [u8]> {
        let fill = self.fill;
        let block = self.current.get_or_insert_with(|| self.pool.take());
        Ok(&mut block.as_mut_slice()[fill..BLOCK_SIZE])
    }

    fn advance(&mut self, n: usize) -> Result<()> {
        self.fill += n;
        self.received += n as u64;
        if self.fill >= BLOCK_SIZE {
            self.submit_current();
        }
        Ok(())
    }

    /// Nothing is kept, so another source starts from the beginning.
    fn trim_to_verified(&mut self) -> Result<()> {
        self.restart()
    }
}
