//! Page-aligned I/O blocks, recycled through a bounded pool.
//!
//! A download is received straight into a block, written to disk from it
//! with direct I/O (which needs page-aligned memory) and hashed from it on
//! the engine's workers, so the bytes are copied once in user space (out of
//! the HTTP client's buffer) and never again. A block is shared by the
//! writer and the hashers through an `Arc`; whoever drops the last
//! reference sends its memory back to the pool, from whatever thread.
//!
//! The pool is bounded: taking a block when all of them are out waits until
//! one comes back. Blocks only ever come back from work already under way
//! (a write, a hash), so waiting cannot deadlock as long as the taker does
//! not itself hold all of them, which [`BlockPool::new`] guards by allowing
//! at least [`MIN_BLOCKS`].

use std::sync::mpsc::{Receiver, Sender, channel};

/// Direct I/O wants buffers, file offsets and lengths aligned to the
/// device's logical block size; 4096 covers every common device.
pub const ALIGN: usize = 4096;

/// One block being filled, one waiting for a hashing partner, one being
/// written: fewer could stall the stream.
pub const MIN_BLOCKS: usize = 3;

#[derive(Clone, Copy)]
#[repr(C, align(4096))]
struct Page([u8; ALIGN]);

/// Page-aligned memory of a fixed size; returns itself to its pool when
/// dropped.
pub struct Block {
    pages: Vec<Page>,
    home: Sender<Vec<Page>>,
}

impl Block {
    /// Bytes in the block.
    pub fn len(&self) -> usize {
        self.pages.len() * ALIGN
    }

    /// The block's bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `Page` is a plain byte array with no padding, so the
        // vector's storage is `len()` initialised, contiguous bytes.
        unsafe { std::slice::from_raw_parts(self.pages.as_ptr().cast::<u8>(), self.len()) }
    }

    /// The block's bytes, for filling.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.pages.as_mut_ptr().cast::<u8>(), self.len()) }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        // The pool may be gone already (its owner finished); then the
        // memory is simply freed.
        let _ = self.home.send(std::mem::take(&mut self.pages));
    }
}

/// A bounded set of equally sized blocks.
pub struct BlockPool {
    pages_per_block: usize,
    limit: usize,
    allocated: usize,
    home: Sender<Vec<Page>>,
    returned: Receiver<Vec<Page>>,
}

impl BlockPool {
    /// Blocks of `block_size` bytes (rounded up to whole pages), at most
    /// `limit` of them (at least [`MIN_BLOCKS`]) alive at once.
    pub fn new(block_size: usize, limit: usize) -> BlockPool {
        let (home, returned) = channel();
        BlockPool {
            pages_per_block: block_size.div_ceil(ALIGN).max(1),
            limit: limit.max(MIN_BLOCKS),
            allocated: 0,
            home,
            returned,
        }
    }

    /// A free block: a recycled one if any is back, a new one while under
    /// the limit, otherwise the next one to come back.
    pub fn take(&mut self) -> Block {
        let fresh = |n| vec![Page([0; ALIGN]); n];
        let pages = match self.returned.try_recv() {
            Ok(pages) => pages,
            Err(_) if self.allocated < self.limit => {
                self.allocated += 1;
                fresh(self.pages_per_block)
            }
            // Cannot fail (this pool holds a sender itself); if it did,
            // a fresh block beats a wrong-sized one.
            Err(_) => self
                .returned
                .recv()
                .unwrap_or_else(|_| fresh(self.pages_per_block)),
        };
        Block {
            pages,
            home: self.home.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn blocks_are_page_aligned_and_sized() {
        let mut pool = BlockPool::new(10_000, 4);
        let mut block = pool.take();
        assert_eq!(block.len(), 12_288);
        assert_eq!(block.as_slice().as_ptr() as usize % ALIGN, 0);
        block.as_mut_slice()[12_287] = 7;
        assert_eq!(block.as_slice()[12_287], 7);
    }

    #[test]
    fn dropped_blocks_are_reused_and_the_limit_holds() {
        let mut pool = BlockPool::new(ALIGN, 3);
        let a = pool.take();
        let b = pool.take();
        let c = pool.take();
        assert_eq!(pool.allocated, 3);
        let address = b.as_slice().as_ptr();
        drop(b);
        let d = pool.take();
        assert_eq!(
            d.as_slice().as_ptr(),
            address,
            "the returned block is reused"
        );
        assert_eq!(pool.allocated, 3);
        drop((a, c, d));
    }

    #[test]
    fn taking_waits_for_a_block_released_on_another_thread() {
        let mut pool = BlockPool::new(ALIGN, 3);
        let held: Vec<Arc<Block>> = (0..3).map(|_| Arc::new(pool.take())).collect();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            drop(held);
        });
        let block = pool.take();
        assert_eq!(block.len(), ALIGN);
        assert_eq!(pool.allocated, 3);
        releaser.join().unwrap();
    }
}
