//! Checking a stream of blocks (a download) against its signed chunk
//! digests while it arrives.
//!
//! Blocks may cut the stream anywhere. A chunk that lies wholly inside one
//! block is hashed straight from it on the engine's workers, two chunks at
//! a time (`sha256x2`); small chunks are grouped into tasks of at least
//! [`TASK_BYTES`] so that per-task overhead stays negligible. A chunk that
//! straddles blocks (chunks larger than a block, or sizes that do not divide
//! the block size) is hashed piece by piece, in order, by one task at a time
//! per chunk, so its blocks can be recycled long before the chunk is
//! complete. Either way hashing overlaps receiving and the bytes are never
//! copied or read a second time.
//!
//! Memory is bounded by whoever supplies the blocks (a [`BlockPool`]
//! waits for blocks still being hashed); between calls this keeps back at
//! most one whole chunk (and so one block), waiting for a partner.
//!
//! [`BlockPool`]: crate::block::BlockPool

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

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
    /// The lowest chunk hashed so far that differs from its digest.
    first_mismatch: Option<u64>,
    /// Bytes submitted since the start (or the last rewind).
    received: u64,
    /// The straddling chunk being received in pieces, if any.
    chain: Option<Chain>,
    /// Whole chunks not yet handed to a task.
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
            first_mismatch: None,
            expected,
            received: 0,
            chain: None,
            pending: Vec::new(),
            pending_bytes: 0,
            in_flight: 0,
            tx,
            rx,
        }
    }

    /// The chunk size being checked.
    pub fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    /// Check `bytes` of `block`, the next bytes of the stream.
    pub fn submit(&mut self, block: Arc<Block>, bytes: Range<usize>) {
        let mut at = bytes.start;
        while at < bytes.end {
            let offset = self.received + (at - bytes.start) as u64;
            let index = offset / self.chunk_size;
            let chunk_start = index * self.chunk_size;
            let chunk_end = self.chunk_end(index);
            let piece_end = (offset + (bytes.end - at) as u64).min(chunk_end);
            let range = at..at + (piece_end - offset) as usize;
            at = range.end;
            if offset == chunk_start && piece_end == chunk_end {
                self.add_whole(index, Arc::clone(&block), range);
            } else {
                self.add_piece(index, Arc::clone(&block), range, piece_end == chunk_end);
            }
        }
        self.received += bytes.len() as u64;
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

    /// Where chunk `index` ends: a chunk size further, or at the end of the
    /// stream for the last one.
    fn chunk_end(&self, index: u64) -> u64 {
        let full = (index + 1) * self.chunk_size;
        if index * self.chunk_size < self.size {
            full.min(self.size)
        } else {
            full
        }
    }

    fn add_whole(&mut self, index: u64, block: Arc<Block>, range: Range<usize>) {
        self.pending_bytes += range.len() as u64;
        self.pending.push(ChunkRef {
            index,
            block,
            range,
        });
        if self.pending_bytes >= TASK_BYTES && self.pending.len().is_multiple_of(2) {
            self.spawn();
        }
    }

    /// Queue a piece of a straddling chunk; a task hashes the chunk's
    /// pieces in order and reports its digest after the `last` one.
    fn add_piece(&mut self, index: u64, block: Arc<Block>, range: Range<usize>, last: bool) {
        if self.chain.as_ref().is_none_or(|c| c.index != index) {
            self.chain = Some(Chain::new(index));
        }
        let Some(chain) = &self.chain else { return };
        let piece = ChunkRef {
            index,
            block,
            range,
        };
        let start_task = {
            let mut state = lock(&chain.state);
            state.queue.push_back((piece, last));
            !std::mem::replace(&mut state.running, true)
        };
        if start_task {
            let state = Arc::clone(&chain.state);
            let tx = self.tx.clone();
            self.engine.spawn(move || {
                let _ = tx.send(drain_chain(&state));
            });
            self.in_flight += 1;
        }
        if last {
            self.chain = None;
        }
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
        self.first_mismatch = self.first_mismatch.filter(|&first| first < index);
        self.chain = None;
        self.received = index * self.chunk_size;
    }

    /// Forget everything: the stream starts again from byte 0.
    pub fn restart(&mut self) {
        self.rewind(0);
    }

    /// Every problem found in the stream submitted: its size, and each
    /// chunk that differs or is missing.
    pub fn finish(mut self) -> Vec<Problem> {
        self.settle();
        let received = self.received;
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
                if self.expected[index as usize] != digest
                    && self.first_mismatch.is_none_or(|first| index < first)
                {
                    self.first_mismatch = Some(index);
                }
            }
        }
    }

    /// The first chunk found so far not to match (hashing runs behind the
    /// stream by a few blocks), so a download can stop instead of fetching
    /// the rest of an image that is already known to be wrong.
    pub fn first_mismatch(&mut self) -> Option<Problem> {
        self.collect_ready();
        let index = self.first_mismatch?;
        let start = index * self.chunk_size;
        Some(Problem::ChunkMismatch {
            index,
            start,
            end: (start + self.chunk_size).min(self.size),
            expected: self.expected[index as usize],
            actual: self.actual[index as usize]?,
        })
    }
}

/// A chunk received in pieces, hashed in order by at most one task at a
/// time.
struct Chain {
    index: u64,
    state: Arc<Mutex<ChainState>>,
}

#[derive(Default)]
struct ChainState {
    /// The digest so far; taken out by the task while it hashes a piece.
    lane: Option<Sha256Lane>,
    /// Pieces not yet hashed, each marked when it is the chunk's last.
    queue: VecDeque<(ChunkRef, bool)>,
    /// A task is hashing this chunk's pieces.
    running: bool,
}

impl Chain {
    fn new(index: u64) -> Chain {
        Chain {
            index,
            state: Arc::new(Mutex::new(ChainState::default())),
        }
    }
}

/// Hash the queued pieces of a chunk in order until none is left; the
/// chunk's digest once its last piece is in.
fn drain_chain(state: &Mutex<ChainState>) -> Digests {
    loop {
        let (piece, last, mut lane) = {
            let mut guard = lock(state);
            let Some((piece, last)) = guard.queue.pop_front() else {
                guard.running = false;
                return Vec::new();
            };
            let lane = guard.lane.take().unwrap_or_default();
            (piece, last, lane)
        };
        lane.update(piece.bytes());
        if last {
            lock(state).running = false;
            return vec![(piece.index, lane.finalize())];
        }
        lock(state).lane = Some(lane);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
            check.submit(Arc::new(b), 0..piece.len());
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
                let problems = check.finish();
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
        assert!(ok.finish().is_empty());

        let mut bad = data.clone();
        let flipped = 1000usize;
        bad[flipped * 4096] ^= 0x80;
        let mut check = StreamCheck::new(&engine, data.len() as u64, 4096, chunks);
        submit_all(&mut check, &mut pool, &bad, 2 << 20);
        assert_eq!(check.verified_chunks(), flipped as u64);
        let problems = check.finish();
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
        assert!(check.finish().is_empty());

        let mut check = StreamCheck::new(&engine, data.len() as u64, 4096, chunks.clone());
        submit_all(&mut check, &mut pool, &bad, 4096);
        check.rewind(2);
        submit_all(&mut check, &mut pool, &data[2 * 4096..], 4096);
        assert_eq!(check.verified_chunks(), 6);
        assert!(check.finish().is_empty());
    }

    /// Submit `data` cut at `cuts` (offsets, ascending), from a pool of
    /// blocks large enough for any piece.
    fn submit_cut(check: &mut StreamCheck<'_>, data: &[u8], cuts: &[usize]) {
        let mut pool = BlockPool::new(data.len().max(1), 6);
        let mut start = 0;
        for &end in cuts.iter().chain(std::iter::once(&data.len())) {
            let end = end.clamp(start, data.len());
            if end == start {
                continue;
            }
            let mut b = pool.take();
            b.as_mut_slice()[..end - start].copy_from_slice(&data[start..end]);
            check.submit(Arc::new(b), 0..end - start);
            start = end;
        }
    }

    #[test]
    fn chunks_straddling_blocks_are_hashed_piece_by_piece() {
        let engine = Engine::new(Some(2)).unwrap();
        // Chunks of 10,000 bytes (not a page multiple) in blocks of 4096:
        // every chunk straddles, most span three blocks.
        let data = pattern(95_000, 5);
        let chunks = chunk_digests(&data, 10_000);
        let cuts: Vec<usize> = (1..24).map(|k| k * 4096).collect();
        let mut ok = StreamCheck::new(&engine, data.len() as u64, 10_000, chunks.clone());
        submit_cut(&mut ok, &data, &cuts);
        assert_eq!(ok.verified_chunks(), 10);
        assert!(ok.finish().is_empty());
        for flip in [0usize, 9_999, 10_000, 40_960, 94_999] {
            let mut bad = data.clone();
            bad[flip] ^= 2;
            let mut check = StreamCheck::new(&engine, data.len() as u64, 10_000, chunks.clone());
            submit_cut(&mut check, &bad, &cuts);
            let problems = check.finish();
            assert!(
                matches!(problems[..], [Problem::ChunkMismatch { index, .. }] if index == (flip / 10_000) as u64),
                "flip at {flip}: {problems:?}"
            );
        }
    }

    #[test]
    fn rewinding_into_a_straddling_chunk_starts_it_over() {
        let engine = Engine::new(Some(2)).unwrap();
        let data = pattern(50_000, 6);
        let chunks = chunk_digests(&data, 12_000);
        let mut bad = data.clone();
        bad[30_000] ^= 1;
        let mut check = StreamCheck::new(&engine, data.len() as u64, 12_000, chunks);
        // Stop in the middle of chunk 2 (24,000..36,000), after the flip.
        submit_cut(&mut check, &bad[..32_768], &[8192, 16_384, 24_576]);
        assert_eq!(check.verified_chunks(), 2);
        check.rewind(2);
        submit_cut(&mut check, &data[24_000..], &[100, 12_000, 12_001]);
        assert_eq!(check.verified_chunks(), 5);
        assert!(check.finish().is_empty());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        #[test]
        fn any_cut_of_the_stream_gives_the_same_verdict(
            size in 0usize..120_000,
            chunk in 4096u64..40_000,
            cuts in proptest::collection::vec(0usize..120_000, 0..12),
            flip in proptest::option::of(0usize..120_000),
        ) {
            let engine = Engine::new(Some(2)).unwrap();
            let data = pattern(size, size as u64 + chunk);
            let chunks = chunk_digests(&data, chunk as usize);
            let mut sent = data.clone();
            let flip = flip.filter(|&f| f < size);
            if let Some(f) = flip {
                sent[f] ^= 0x10;
            }
            let mut cuts = cuts;
            cuts.sort_unstable();
            let mut check = StreamCheck::new(&engine, size as u64, chunk, chunks);
            submit_cut(&mut check, &sent, &cuts);
            let problems = check.finish();
            match flip {
                None => proptest::prop_assert!(problems.is_empty(), "{:?}", problems),
                Some(f) => proptest::prop_assert!(
                    matches!(problems[..], [Problem::ChunkMismatch { index, .. }] if index == f as u64 / chunk),
                    "flip at {}: {:?}", f, problems
                ),
            }
        }
    }

    #[test]
    fn a_short_stream_reports_its_size_and_every_missing_chunk() {
        let engine = Engine::new(Some(2)).unwrap();
        let data = pattern(5 * 4096 + 10, 9);
        let chunks = chunk_digests(&data, 4096);
        let mut pool = BlockPool::new(4096, 4);
        let mut short = StreamCheck::new(&engine, data.len() as u64, 4096, chunks);
        submit_all(&mut short, &mut pool, &data[..4096 * 3], 4096);
        let problems = short.finish();
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
