//! Two independent SHA-256 computations interleaved on one core.
//!
//! Why this exists: with the x86 SHA extensions a single SHA-256 stream is
//! bound by the latency of `sha256rnds2`, not by its throughput, so a core
//! running one stream leaves most of its SHA unit idle. Feeding it two
//! independent messages at once fills those gaps (about +20 % per core on
//! the benchmark machine, see docs/PERFORMANCE.md). Chunk digests are
//! independent by design, so verify hashes chunks in pairs, and build hashes
//! a chunk beside the whole-file digest when no other worker is free.
//!
//! Only the interleaved two-message compression is written here. Single
//! messages, leftovers and the final padded block go through the `sha2`
//! crate's compression function, and on CPUs without SHA-NI the pair is
//! simply compressed one message after the other by `sha2`. Every digest is
//! checked against `sha2` by the tests below, for random lengths and splits.

use sha2::block_api::compress256;

use crate::digest::Sha256Digest;

const BLOCK: usize = 64;

/// SHA-256 initial hash value (FIPS 180-4, 5.3.3).
const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// One SHA-256 computation in progress: its chaining state, the bytes of a
/// not yet complete block, and the message length so far.
#[derive(Clone)]
pub struct Sha256Lane {
    state: [u32; 8],
    pending: [u8; BLOCK],
    pending_len: usize,
    total_len: u64,
}

impl Default for Sha256Lane {
    fn default() -> Self {
        Sha256Lane::new()
    }
}

impl Sha256Lane {
    /// A fresh SHA-256 state.
    pub fn new() -> Sha256Lane {
        Sha256Lane {
            state: H0,
            pending: [0; BLOCK],
            pending_len: 0,
            total_len: 0,
        }
    }

    /// Feed bytes to this lane alone.
    pub fn update(&mut self, data: &[u8]) {
        let rest = self.absorb_pending(data);
        let (blocks, tail) = rest.as_chunks::<BLOCK>();
        compress256(&mut self.state, blocks);
        self.keep(tail);
    }

    /// The digest of everything fed so far.
    pub fn finalize(mut self) -> Sha256Digest {
        let bit_len = self.total_len.wrapping_mul(8);
        let mut last = [0u8; 2 * BLOCK];
        last[..self.pending_len].copy_from_slice(&self.pending[..self.pending_len]);
        last[self.pending_len] = 0x80;
        // The length needs 8 bytes after the 0x80 marker: one block or two.
        let end = if self.pending_len < BLOCK - 8 {
            BLOCK
        } else {
            2 * BLOCK
        };
        last[end - 8..end].copy_from_slice(&bit_len.to_be_bytes());
        let (blocks, _) = last[..end].as_chunks::<BLOCK>();
        compress256(&mut self.state, blocks);
        let mut out = [0u8; 32];
        for (bytes, word) in out.chunks_exact_mut(4).zip(self.state) {
            bytes.copy_from_slice(&word.to_be_bytes());
        }
        Sha256Digest(out)
    }

    /// Complete a pending partial block from the front of `data` (compressing
    /// it once full) and return what is left of `data`.
    fn absorb_pending<'d>(&mut self, data: &'d [u8]) -> &'d [u8] {
        self.total_len += data.len() as u64;
        if self.pending_len == 0 {
            return data;
        }
        let take = (BLOCK - self.pending_len).min(data.len());
        self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&data[..take]);
        self.pending_len += take;
        if self.pending_len == BLOCK {
            compress256(&mut self.state, &[self.pending]);
            self.pending_len = 0;
        }
        &data[take..]
    }

    /// Keep a tail shorter than a block for later (the pending block is empty
    /// whenever a tail is left, since absorbing stops short only at the end).
    fn keep(&mut self, tail: &[u8]) {
        if !tail.is_empty() {
            self.pending[..tail.len()].copy_from_slice(tail);
            self.pending_len = tail.len();
        }
    }
}

/// Feed `data_a` to lane `a` and `data_b` to lane `b`, interleaving the two
/// computations on this core where the CPU allows. The lanes are independent
/// and the slices may have any lengths (including empty or the same bytes).
pub fn update_pair(a: &mut Sha256Lane, data_a: &[u8], b: &mut Sha256Lane, data_b: &[u8]) {
    let rest_a = a.absorb_pending(data_a);
    let rest_b = b.absorb_pending(data_b);
    let (blocks_a, tail_a) = rest_a.as_chunks::<BLOCK>();
    let (blocks_b, tail_b) = rest_b.as_chunks::<BLOCK>();
    let both = blocks_a.len().min(blocks_b.len());
    compress_pair(
        &mut a.state,
        &blocks_a[..both],
        &mut b.state,
        &blocks_b[..both],
    );
    compress256(&mut a.state, &blocks_a[both..]);
    compress256(&mut b.state, &blocks_b[both..]);
    a.keep(tail_a);
    b.keep(tail_b);
}

/// Compress equally many blocks into two states.
fn compress_pair(
    state_a: &mut [u32; 8],
    blocks_a: &[[u8; BLOCK]],
    state_b: &mut [u32; 8],
    blocks_b: &[[u8; BLOCK]],
) {
    debug_assert_eq!(blocks_a.len(), blocks_b.len());
    #[cfg(target_arch = "x86_64")]
    if shani::available() {
        // SAFETY: the CPU supports every feature the function is compiled for.
        unsafe { shani::compress_pair(state_a, blocks_a, state_b, blocks_b) };
        return;
    }
    compress256(state_a, blocks_a);
    compress256(state_b, blocks_b);
}

#[cfg(target_arch = "x86_64")]
mod shani {
    //! The interleaved compression with the x86 SHA extensions. It follows
    //! the single-message SHA-NI schedule (as in Intel's reference code and
    //! the `sha2` crate) with the two messages' instructions alternating.

    use std::arch::x86_64::*;

    use super::BLOCK;

    /// SHA-256 round constants (FIPS 180-4, 4.2.2).
    static K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];

    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("sha")
            && std::arch::is_x86_feature_detected!("sse4.1")
            && std::arch::is_x86_feature_detected!("ssse3")
    }

    /// A state in the (ABEF, CDGH) register layout `sha256rnds2` works on.
    #[derive(Clone, Copy)]
    struct Regs {
        abef: __m128i,
        cdgh: __m128i,
    }

    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn load(state: &[u32; 8]) -> Regs {
        let p: *const __m128i = state.as_ptr().cast();
        // SAFETY: `state` is 32 readable bytes; the loads are unaligned ones.
        let (dcba, hgfe) = unsafe { (_mm_loadu_si128(p), _mm_loadu_si128(p.add(1))) };
        let cdab = _mm_shuffle_epi32(dcba, 0xB1);
        let efgh = _mm_shuffle_epi32(hgfe, 0x1B);
        Regs {
            abef: _mm_alignr_epi8(cdab, efgh, 8),
            cdgh: _mm_blend_epi16(efgh, cdab, 0xF0),
        }
    }

    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn store(regs: Regs, state: &mut [u32; 8]) {
        let feba = _mm_shuffle_epi32(regs.abef, 0x1B);
        let dchg = _mm_shuffle_epi32(regs.cdgh, 0xB1);
        let p: *mut __m128i = state.as_mut_ptr().cast();
        // SAFETY: `state` is 32 writable bytes; the stores are unaligned ones.
        unsafe {
            _mm_storeu_si128(p, _mm_blend_epi16(feba, dchg, 0xF0));
            _mm_storeu_si128(p.add(1), _mm_alignr_epi8(dchg, feba, 8));
        }
    }

    /// Message words 16..64 four at a time, from the previous sixteen
    /// (`w` holds them as a ring of four vectors).
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn schedule(w: &[__m128i; 4], i: usize) -> __m128i {
        let t1 = _mm_sha256msg1_epu32(w[i % 4], w[(i + 1) % 4]);
        let t2 = _mm_alignr_epi8(w[(i + 3) % 4], w[(i + 2) % 4], 4);
        _mm_sha256msg2_epu32(_mm_add_epi32(t1, t2), w[(i + 3) % 4])
    }

    /// # Safety
    /// The CPU must support SHA, SSE2, SSSE3 and SSE4.1 (see `available`).
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub(super) unsafe fn compress_pair(
        state_a: &mut [u32; 8],
        blocks_a: &[[u8; BLOCK]],
        state_b: &mut [u32; 8],
        blocks_b: &[[u8; BLOCK]],
    ) {
        let byte_swap = _mm_set_epi64x(
            0x0C0D_0E0F_0809_0A0Bu64 as i64,
            0x0405_0607_0001_0203u64 as i64,
        );
        let k: *const __m128i = K.as_ptr().cast();
        let mut a = load(state_a);
        let mut b = load(state_b);
        for (block_a, block_b) in blocks_a.iter().zip(blocks_b) {
            let (saved_a, saved_b) = (a, b);
            let pa: *const __m128i = block_a.as_ptr().cast();
            let pb: *const __m128i = block_b.as_ptr().cast();
            let mut wa = [_mm_setzero_si128(); 4];
            let mut wb = [_mm_setzero_si128(); 4];
            for i in 0..16 {
                let (xa, xb) = if i < 4 {
                    // SAFETY: i < 4, so 16·i..16·i+16 lies inside the 64-byte blocks.
                    unsafe {
                        (
                            _mm_shuffle_epi8(_mm_loadu_si128(pa.add(i)), byte_swap),
                            _mm_shuffle_epi8(_mm_loadu_si128(pb.add(i)), byte_swap),
                        )
                    }
                } else {
                    (schedule(&wa, i), schedule(&wb, i))
                };
                wa[i % 4] = xa;
                wb[i % 4] = xb;
                // SAFETY: i < 16, so the load stays inside the 64 constants.
                let ki = unsafe { _mm_loadu_si128(k.add(i)) };
                let (ta, tb) = (_mm_add_epi32(xa, ki), _mm_add_epi32(xb, ki));
                a.cdgh = _mm_sha256rnds2_epu32(a.cdgh, a.abef, ta);
                b.cdgh = _mm_sha256rnds2_epu32(b.cdgh, b.abef, tb);
                a.abef = _mm_sha256rnds2_epu32(a.abef, a.cdgh, _mm_shuffle_epi32(ta, 0x0E));
                b.abef = _mm_sha256rnds2_epu32(b.abef, b.cdgh, _mm_shuffle_epi32(tb, 0x0E));
            }
            a.abef = _mm_add_epi32(a.abef, saved_a.abef);
            a.cdgh = _mm_add_epi32(a.cdgh, saved_a.cdgh);
            b.abef = _mm_add_epi32(b.abef, saved_b.abef);
            b.cdgh = _mm_add_epi32(b.cdgh, saved_b.cdgh);
        }
        store(a, state_a);
        store(b, state_b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::pattern;
    use proptest::prelude::*;

    #[test]
    fn known_answers() {
        // FIPS 180-4 examples.
        let mut lane = Sha256Lane::new();
        lane.update(b"abc");
        assert_eq!(
            lane.finalize().to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            Sha256Lane::new().finalize().to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn padding_boundaries_match_sha2() {
        for len in [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 1000] {
            let data = pattern(len, 7);
            let (mut a, mut b) = (Sha256Lane::new(), Sha256Lane::new());
            update_pair(&mut a, &data, &mut b, &data[..len / 2]);
            assert_eq!(a.finalize(), Sha256Digest::of(&data), "len {len}");
            assert_eq!(
                b.finalize(),
                Sha256Digest::of(&data[..len / 2]),
                "len {len}"
            );
        }
    }

    proptest! {
        #[test]
        fn pairs_fed_in_random_pieces_match_sha2(
            len_a in 0usize..5000,
            len_b in 0usize..5000,
            cuts in proptest::collection::vec((0usize..700, 0usize..700), 0..12),
        ) {
            let (data_a, data_b) = (pattern(len_a, 1), pattern(len_b, 2));
            let (mut lane_a, mut lane_b) = (Sha256Lane::new(), Sha256Lane::new());
            let (mut at_a, mut at_b) = (0, 0);
            for (step_a, step_b) in cuts {
                let end_a = (at_a + step_a).min(len_a);
                let end_b = (at_b + step_b).min(len_b);
                update_pair(&mut lane_a, &data_a[at_a..end_a], &mut lane_b, &data_b[at_b..end_b]);
                (at_a, at_b) = (end_a, end_b);
            }
            lane_a.update(&data_a[at_a..]);
            update_pair(&mut lane_b, &data_b[at_b..], &mut Sha256Lane::new(), &[]);
            prop_assert_eq!(lane_a.finalize(), Sha256Digest::of(&data_a));
            prop_assert_eq!(lane_b.finalize(), Sha256Digest::of(&data_b));
        }
    }
}
