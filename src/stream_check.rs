//! Checking a stream of blocks (a download) against its signed chunk
//! digests while it arrives.
//!
//! Each completed block is split into its chunks, and the chunks are hashed
//! on the engine's workers straight from the block, two at a time
//! (`sha256x2`), so hashing overlaps receiving and the bytes are never
//! copied or read a second time. Small chunks are grouped into tasks of at
//! least [`TASK_BYTES`] so that per-task overhead stays negligible.
//!
//! Memory is bounded by whoever supplies the blocks (a [`BlockPool`]
//! waits for blocks still being hashed); between calls this keeps back at
//! most one chunk (and so one block), waiting for a partner.
//!
//! [`BlockPool`]: crate::block::BlockPool

use std::ops::Range;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};

use crate::block::Block;
use crate::digest::Sha256Digest;
use crate::hashing::{Engine, Problem};
use crate::sha256x2::{self, Sha256Lane};

/// A hashing task covers at least this many bytes (and an even number of
/// chunks, except at the end of the stream).
const TASK_BYTES: u64 = 4 << 20;

/// One chunk inside a shared block.
struct ChunkRef {
    index: u64,
    block: Arc<Block>,
    range: Range<usize>,
}

impl ChunkRef {
    fn bytes(&self) -> &[u8] {
        &self.block.as_slice()[self.range.clone()]
    }
}

type Digests = Vec<(u64, Sha256Digest)>;

/// The state of one stream's check.
pub struct StreamCheck<'e> {
    engine: &'e Engine,
    size: u64,
    chunk_size: u64,
    expected: Vec<Sha256Digest>,
    actual: Vec<Option<Sha256Digest>>,
    /// Index of the chunk the next submitted block starts with.
    next_chunk: u64,
    /// Chunks not yet handed to a task.
    pending: Vec<ChunkRef>,
    pending_bytes: u64,
    in_flight: usize,
    tx: Sender<Digests>,
    rx: Receiver<Digests>,
}

impl<'e> StreamCheck<'e> {
    /// A stream of `size` bytes whose chunks of `chunk_size` bytes must have
    /// the `expected` digests.
    pub fn new(
        engine: &'e Engine,
        size: u64,
        chunk_size: u64,
        expected: Vec<Sha256Digest>,
    ) -> StreamCheck<'e> {
        let (tx, rx) = channel();
        StreamCheck {
            engine,
            size,
            chunk_size: chunk_size.max(1),
            actual: vec![None; expected.len()],
            expected,
            next_chunk: 0,
            pending: Vec::new(),
            pending_bytes: 0,
            in_flight: 0,
            tx,
            rx,
        }
    }

    pub fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    /// Check the first `len` bytes of `block`, the next bytes of the
    /// stream. A block starts on a chunk boundary, and only the last block
    /// of the stream may end inside a chunk.
    pub fn submit(&mut self, block: Arc<Block>, len: usize) {
        let chunk = self.chunk_size as usize;
        let mut start = 0;
        while start < len {
            let end = (start + chunk).min(len);
            self.pending.push(ChunkRef {
                index: self.next_chunk,
                block: Arc::clone(&block),
                range: start..end,
            });
            self.pending_bytes += (end - start) as u64;
            self.next_chunk += 1;
            start = end;
            if self.pending_bytes >= TASK_BYTES && self.pending.len().is_multiple_of(2) {
                self.spawn();
            }
        }
        // Keep back at most one chunk, waiting for a partner from the next
        // block: pending chunks pin their blocks, and a supplier with a
        // bounded pool would otherwise wait for blocks held here.
        if self.pending.len() > 1 {
            let partnerless = (!self.pending.len().is_multiple_of(2)).then(|| self.pending.pop());
            self.spawn();
            if let Some(Some(chunk)) = partnerless {
                self.pending_bytes = chunk.range.len() as u64;
                self.pending.push(chunk);
            }
        }
        self.collect_ready();
    }

    /// How many leading chunks have been received and match, once every
    /// submitted chunk is hashed.
    pub fn verified_chunks(&mut self) -> u64 {
        self.settle();
        self.expected
            .iter()
            .zip(&self.actual)
            .take_while(|(expected, actual)| actual.as_ref() == Some(*expected))
            .count() as u64
    }

    /// Forget chunk `index` and everything after it: the stream continues
    /// from that chunk's start.
    pub fn rewind(&mut self, index: u64) {
        self.settle();
        let from = (index as usize).min(self.actual.len());
        self.actual[from..].iter_mut().for_each(|a| *a = None);
        self.next_chunk = index;
    }

    /// Forget everything: the stream starts again from byte 0.
    pub fn restart(&mut self) {
        self.rewind(0);
    }

    /// Every problem found in a stream of which `received` bytes arrived:
    /// its size, and each chunk that differs or is missing.
    pub fn finish(mut self, received: u64) -> Vec<Problem> {
        self.settle();
        let mut problems = Vec::new();
        if received != self.size {
            problems.push(Problem::SizeMismatch {
                expected: self.size,
                actual: received,
            });
        }
        for (k, (expected, actual)) in self.expected.iter().zip(&self.actual).enumerate() {
            let k = k as u64;
            let start = k * self.chunk_size;
            let end = (start + self.chunk_size).min(self.size);
            match actual {
                Some(a) if a == expected => {}
                Some(a) => problems.push(Problem::ChunkMismatch {
                    index: k,
                    start,
                    end,
                    expected: *expected,
                    actual: *a,
                }),
                None => problems.push(Problem::ChunkShort {
                    index: k,
                    start,
                    end,
                    read: received.saturating_sub(start).min(end - start),
                }),
            }
        }
        problems
    }

    /// Hash whatever is pending and wait for every task.
    fn settle(&mut self) {
        if !self.pending.is_empty() {
            self.spawn();
        }
        while self.in_flight > 0 {
            match self.rx.recv() {
                Ok(digests) => self.record(digests),
                // Cannot happen while `self.tx` is alive; never spin.
                Err(_) => self.in_flight = 0,
            }
        }
    }

    fn spawn(&mut self) {
        let chunks = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let tx = self.tx.clone();
        self.engine.spawn(move || {
            let _ = tx.send(hash_in_pairs(&chunks));
        });
        self.in_flight += 1;
    }

    fn collect_ready(&mut self) {
        while let Ok(digests) = self.rx.try_recv() {
            self.record(digests);
        }
    }

    fn record(&mut self, digests: Digests) {
        self.in_flight -= 1;
        for (index, digest) in digests {
            if let Some(slot) = self.actual.get_mut(index as usize) {
                *slot = Some(digest);
            }
        }
    }
}

/// Digest every chunk, two at a time, interleaved.
fn hash_in_pairs(chunks: &[ChunkRef]) -> Digests {
    let mut out = Vec::with_capacity(chunks.len());
    for pair in chunks.chunks(2) {
        match pair {
            [a, b] => {
                let (mut lane_a, mut lane_b) = (Sha256Lane::new(), Sha256Lane::new());
                sha256x2::update_pair(&mut lane_a, a.bytes(), &mut lane_b, b.bytes());
                out.push((a.index, lane_a.finalize()));
                out.push((b.index, lane_b.finalize()));
            }
            [single] => out.push((single.index, Sha256Digest::of(single.bytes()))),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::BlockPool;
    use crate::test_support::pattern;

    fn chunk_digests(data: &[u8], chunk: usize) -> Vec<Sha256Digest> {
        data.chunks(chunk).map(Sha256Digest::of).collect()
    }

    /// Submit `data` in blocks of `block` bytes, as a download would.
    fn submit_all(check: &mut StreamCheck<'_>, pool: &mut BlockPool, data: &[u8], block: usize) {
        for piece in data.chunks(block) {
            let mut b = pool.take();
            b.as_mut_slice()[..piece.len()].copy_from_slice(piece);
            check.submit(Arc::new(b), piece.len());
        }
    }

    #[test]
    fn a_flip_is_pinpointed_in_any_chunk_of_a_pair_or_the_odd_last_one() {
        let engine = Engine::new(Some(2)).unwrap();
        for count in [4usize, 5] {
            let data = pattern((count - 1) * 4096 + 77, 4);
            let chunks = chunk_digests(&data, 4096);
            for k in 0..count {
                let mut bad = data.clone();
                bad[k * 4096 + 3] ^= 1;
                let mut pool = BlockPool::new(4096, 4);
                let mut check = StreamCheck::new(&engine, data.len() as u64, 4096, chunks.clone());
                submit_all(&mut check, &mut pool, &bad, 4096);
                let problems = check.finish(bad.len() as u64);
                assert!(
                    matches!(problems[..], [Problem::ChunkMismatch { index, .. }] if index == k as u64),
                    "{count} chunks, flip in {k}: {problems:?}"
                );
            }
        }
    }

    #[test]
    fn blocks_of_many_chunks_are_checked_in_tasks() {
        let engine = Engine::new(Some(2)).unwrap();
        // 3 blocks of 2 MiB (512 chunks each) and a short last one: tasks
        // span blocks, and the last chunk is short.
        let data = pattern((6 << 20) + 5000, 8);
        let chunks = chunk_digests(&data, 4096);
        let mut pool = BlockPool::new(2 << 20, 8);
        let mut ok = StreamCheck::new(&engine, data.len() as u64, 4096, chunks.clone());
        submit_all(&mut ok, &mut pool, &data, 2 << 20);
        assert_eq!(ok.verified_chunks(), chunks.len() as u64);
        assert!(ok.finish(data.len() as u64).is_empty());

        let mut bad = data.clone();
        let flipped = 1000usize;
        bad[flipped * 4096] ^= 0x80;
        let mut check = StreamCheck::new(&engine, data.len() as u64, 4096, chunks);
        submit_all(&mut check, &mut pool, &bad, 2 << 20);
        assert_eq!(check.verified_chunks(), flipped as u64);
        let problems = check.finish(bad.len() as u64);
        assert!(
            matches!(problems[..], [Problem::ChunkMismatch { index: 1000, start, .. }] if start == 1000 * 4096),
            "{problems:?}"
        );
    }

    #[test]
    fn restart_and_rewind_forget_what_came_before() {
        let engine = Engine::new(Some(2)).unwrap();
        let data = pattern(5 * 4096 + 10, 9);
        let chunks = chunk_digests(&data, 4096);
        let mut pool = BlockPool::new(4096, 4);
        let mut bad = data.clone();
        bad[2 * 4096 + 1] ^= 1;

        let mut check = StreamCheck::new(&engine, data.len() as u64, 4096, chunks.clone());
        submit_all(&mut check, &mut pool, &bad, 4096);
        assert_eq!(check.verified_chunks(), 2);
        check.restart();
        submit_all(&mut check, &mut pool, &data, 4096);
        assert!(check.finish(data.len() as u64).is_empty());

        let mut check = StreamCheck::new(&engine, data.len() as u64, 4096, chunks.clone());
        submit_all(&mut check, &mut pool, &bad, 4096);
        check.rewind(2);
        submit_all(&mut check, &mut pool, &data[2 * 4096..], 4096);
        assert_eq!(check.verified_chunks(), 6);
        assert!(check.finish(data.len() as u64).is_empty());
    }

    #[test]
    fn a_short_stream_reports_its_size_and_every_missing_chunk() {
        let engine = Engine::new(Some(2)).unwrap();
        let data = pattern(5 * 4096 + 10, 9);
        let chunks = chunk_digests(&data, 4096);
        let mut pool = BlockPool::new(4096, 4);
        let mut short = StreamCheck::new(&engine, data.len() as u64, 4096, chunks);
        submit_all(&mut short, &mut pool, &data[..4096 * 3], 4096);
        let problems = short.finish(4096 * 3);
        assert!(matches!(
            problems[0],
            Problem::SizeMismatch { actual: 12288, .. }
        ));
        assert!(matches!(
            problems[1..],
            [
                Problem::ChunkShort {
                    index: 3,
                    read: 0,
                    ..
                },
                Problem::ChunkShort { index: 4, .. },
                Problem::ChunkShort { index: 5, .. }
            ]
        ));
    }
}
