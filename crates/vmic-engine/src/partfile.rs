//! The `.part` file an image download lands in, checked while it arrives.
//!
//! The download is received straight into page-aligned 8 MiB blocks at
//! fixed offsets (whatever the image's chunk size). A completed block goes,
//! shared, to two places at once: a writer thread that writes it at its
//! offset, and the engine's workers that hash its chunks against the signed
//! digests ([`StreamCheck`]). So the bytes are copied once in user space,
//! hashing overlaps receiving, the receiving thread never waits for the
//! disk, and memory stays at most seven blocks per download.
//!
//! Full blocks are written with direct I/O (`O_DIRECT`) where the
//! filesystem allows it: the data goes from the block to the device
//! without a page-cache copy or a writeback backlog, so the fsync that must
//! precede an import has little left to do. Anything else (a filesystem
//! without direct I/O, the short last block) is written through the page
//! cache.
//!
//! Resuming: the writer writes blocks in order, so the file is always a
//! prefix of the bytes received. On open, that prefix is read back and its
//! complete chunks are checked; the download continues after the last
//! verified chunk, and everything from there on is discarded: damaged
//! chunks (a crash can leave unwritten garbage; a bad mirror can have sent
//! some), and the start of an incomplete chunk, which cannot be checked
//! until the rest of it arrives (found by fuzzing: kept, such garbage made
//! the finished image fail and be quarantined). Nothing is trusted because
//! it is on disk: every chunk is verified before [`PartFile::finish`]
//! declares the file whole.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel, sync_channel};
use std::thread::JoinHandle;

use crate::block::{ALIGN, Block, BlockPool};
use crate::error::{Error, Result};
use crate::fetch::Landing;
use crate::hashing::{Engine, Problem, Progress, chunk_count};
use crate::stream_check::StreamCheck;

/// Block size: big enough that per-block work vanishes next to the bytes,
/// small enough to bound memory with several blocks in flight; equal to
/// the default chunk size, so that default chunks never straddle blocks.
const TARGET_BLOCK: u64 = 8 << 20;
/// Memory for blocks in flight, per download (at least three blocks).
const BLOCK_MEMORY: u64 = 64 << 20;

/// An image's expected content, as the signed catalog declares it.
pub use vmic_format::chunks::ChunkDigests as Expected;

/// A download in progress into one `.part` file.
pub struct PartFile<'e> {
    path: PathBuf,
    file: File,
    size: u64,
    block_size: u64,
    pool: BlockPool,
    /// The block being filled, which starts at `block_start`.
    current: Option<Block>,
    fill: usize,
    block_start: u64,
    /// Bytes of the stream handed to the check; ahead of `block_start`
    /// only right after a resume, when the part of the current block read
    /// back from the file has been checked already.
    checked: u64,
    writer: Writer,
    check: StreamCheck<'e>,
    progress: &'e dyn Progress,
    restarts: u32,
    discarded: u64,
}

impl<'e> PartFile<'e> {
    /// Open (or create) `path` for a download of `expected`, and check what
    /// an earlier run left in it (reported to `progress` as done).
    pub fn open(
        path: &Path,
        expected: Expected,
        engine: &'e Engine,
        progress: &'e dyn Progress,
    ) -> Result<PartFile<'e>> {
        // The site's tmp directory may be reachable by others.
        let file = crate::fsutil::open_checked(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
            path,
            &path.display().to_string(),
        )?;
        let (size, chunk_size, chunks) = expected.into_parts();
        let block_size = block_size_for(size);
        let blocks = (BLOCK_MEMORY / block_size).min(2 * engine.jobs() as u64 + 3);
        let direct = open_direct(path);
        let writer = Writer::start(
            path,
            file.try_clone().map_err(|e| Error::io("open", path, e))?,
            direct,
        );
        let mut part = PartFile {
            path: path.to_path_buf(),
            file,
            size,
            block_size,
            pool: BlockPool::new(block_size as usize, blocks as usize),
            current: None,
            fill: 0,
            block_start: 0,
            checked: 0,
            writer,
            check: StreamCheck::new(engine, size, chunk_size, chunks),
            progress,
            restarts: 0,
            discarded: 0,
        };
        part.resume()?;
        Ok(part)
    }

    /// How many times the download had to start again from byte 0.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// Bytes an earlier run left that failed their check on open and were
    /// discarded.
    pub fn discarded(&self) -> u64 {
        self.discarded
    }

    /// The download ended: write what is left, make the file durable and
    /// report every problem with its content (none means it is exactly
    /// the declared image).
    pub fn finish(mut self) -> Result<Vec<Problem>> {
        if self.fill > 0 {
            self.complete_block();
        }
        self.writer.barrier()?;
        self.file
            .sync_all()
            .map_err(|e| Error::io("sync", &self.path, e))?;
        Ok(self.check.finish())
    }

    /// The download stopped early: keep everything received, for the next
    /// run to continue from.
    pub fn suspend(mut self) -> Result<()> {
        if let Some(block) = self.current.take() {
            self.writer
                .write(self.block_start, Arc::new(block), self.fill);
        }
        self.writer.barrier()
    }

    /// Read back and check what the file holds, cut it back before the
    /// first damaged chunk, and continue from there.
    fn resume(&mut self) -> Result<()> {
        let mut len = self
            .file
            .metadata()
            .map_err(|e| Error::io("inspect", &self.path, e))?
            .len();
        if len > self.size {
            // Not a prefix of this image; nothing to salvage.
            self.truncate(0)?;
            len = 0;
        }
        self.feed_back(0, len)?;
        let chunk_size = self.check.chunk_size();
        let complete_chunks = if len == self.size {
            chunk_count(self.size, chunk_size)
        } else {
            len / chunk_size
        };
        let intact = self.check.verified_chunks();
        // Only verified chunks are kept. After them come damaged chunks, or
        // the start of a chunk whose digest cannot be checked until the rest
        // of it arrives: a crash, or a mirror that sent garbage and hung up,
        // can leave anything there, so it is fetched again too.
        let resume_at = (intact * chunk_size).min(self.size).min(len);
        if resume_at < len {
            self.truncate(resume_at)?;
            self.check.rewind(intact);
            if intact < complete_chunks {
                self.discarded = len - resume_at;
            }
        }
        self.continue_from(resume_at)?;
        self.progress.advance(self.held());
        Ok(())
    }

    /// The file holds exactly the `at` checked bytes the download goes on
    /// after: continue into the block holding `at`, its start read back.
    fn continue_from(&mut self, at: u64) -> Result<()> {
        self.checked = at;
        self.block_start = at / self.block_size * self.block_size;
        self.fill = (at - self.block_start) as usize;
        self.current = None;
        if self.fill > 0 {
            self.current = Some(self.read_back(self.block_start, self.fill)?);
        }
        Ok(())
    }

    /// Hand the file's bytes `from..to` to the check, a block at a time.
    fn feed_back(&mut self, from: u64, to: u64) -> Result<()> {
        let mut at = from;
        while at < to {
            let piece = self.block_size.min(to - at) as usize;
            let block = self.read_back(at, piece)?;
            self.check.submit(Arc::new(block), 0..piece);
            at += piece as u64;
        }
        Ok(())
    }

    /// `len` bytes of the file at `offset`, in a block.
    fn read_back(&mut self, offset: u64, len: usize) -> Result<Block> {
        let mut block = self.pool.take();
        self.file
            .read_exact_at(&mut block.as_mut_slice()[..len], offset)
            .map_err(|e| Error::io("read back", &self.path, e))?;
        Ok(block)
    }

    fn truncate(&mut self, len: u64) -> Result<()> {
        self.writer.barrier()?;
        self.file
            .set_len(len)
            .map_err(|e| Error::io("truncate", &self.path, e))
    }

    /// Hand the current block to the writer and the checker.
    fn complete_block(&mut self) {
        let Some(block) = self.current.take() else {
            return;
        };
        let block = Arc::new(block);
        self.writer
            .write(self.block_start, Arc::clone(&block), self.fill);
        // Only the first block after a resume starts with checked bytes.
        let unchecked = (self.checked - self.block_start) as usize;
        if unchecked < self.fill {
            self.check.submit(block, unchecked..self.fill);
        }
        self.block_start += self.fill as u64;
        self.checked = self.block_start;
        self.fill = 0;
    }
}

impl Landing for PartFile<'_> {
    fn held(&self) -> u64 {
        self.block_start + self.fill as u64
    }

    fn restart(&mut self) -> Result<()> {
        self.current = None;
        self.fill = 0;
        self.block_start = 0;
        self.checked = 0;
        self.truncate(0)?;
        self.check.restart();
        self.restarts += 1;
        self.progress.begin(self.size);
        Ok(())
    }

    fn room(&mut self) -> Result<&mut [u8]> {
        if self.writer.failed() {
            // Stop the download at once: the disk refuses the bytes.
            self.writer.barrier()?;
        }
        let block_size = self.block_size as usize;
        let fill = self.fill;
        let block = self.current.get_or_insert_with(|| self.pool.take());
        Ok(&mut block.as_mut_slice()[fill..block_size])
    }

    fn trim_to_verified(&mut self) -> Result<()> {
        let chunk_size = self.check.chunk_size();
        let verified = self.check.verified_chunks();
        if verified * chunk_size >= self.size {
            return Ok(()); // everything is here and verified
        }
        // The current block was never handed to the check: unverified. The
        // verified chunks all lie before it.
        self.current = None;
        self.fill = 0;
        let keep = verified * chunk_size;
        self.truncate(keep)?;
        self.check.rewind(verified);
        self.continue_from(keep)
    }

    fn advance(&mut self, n: usize) -> Result<()> {
        self.fill += n;
        self.progress.advance(n as u64);
        if self.fill as u64 == self.block_size || self.held() == self.size {
            self.complete_block();
            // The image is wrong already: the rest need not come. Once the
            // last byte is here there is no rest, and `finish` reports
            // every problem; checking here too would only make the outcome
            // depend on how fast the hashing keeps up.
            if self.held() < self.size
                && let Some(problem) = self.check.first_mismatch()
            {
                return Err(Error::verification(format!(
                    "{}; download stopped at the first bad chunk",
                    problem.describe()
                )));
            }
        }
        Ok(())
    }
}

/// [`TARGET_BLOCK`], or for an image that fits in one block, the image's
/// own size in whole pages rather than megabytes it would not use. Always
/// whole pages, so that full blocks can be written with direct I/O.
fn block_size_for(size: u64) -> u64 {
    let whole_image = size.div_ceil(ALIGN as u64).max(1) * ALIGN as u64;
    TARGET_BLOCK.min(whole_image)
}

/// A second descriptor of `path` for direct I/O, where the filesystem
/// supports it (tmpfs and some network filesystems do not).
fn open_direct(path: &Path) -> Option<File> {
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()
}

enum WriteOp {
    Write {
        offset: u64,
        block: Arc<Block>,
        len: usize,
    },
    /// Reply once every write before this one is done, with the first
    /// failure if any.
    Barrier(std::sync::mpsc::SyncSender<Option<Error>>),
}

/// The thread that writes completed blocks, in order.
struct Writer {
    ops: Option<Sender<WriteOp>>,
    thread: Option<JoinHandle<()>>,
    failed: Arc<AtomicBool>,
}

impl Writer {
    fn start(path: &Path, plain: File, direct: Option<File>) -> Writer {
        let (ops, queue) = channel();
        let failed = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&failed);
        let path = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("vmic-writer".into())
            .spawn(move || write_all(&path, queue, &plain, direct, &flag))
            .ok();
        Writer {
            ops: thread.as_ref().map(|_| ops),
            thread,
            failed,
        }
    }

    fn write(&self, offset: u64, block: Arc<Block>, len: usize) {
        if let Some(ops) = &self.ops {
            let _ = ops.send(WriteOp::Write { offset, block, len });
        }
    }

    fn failed(&self) -> bool {
        self.ops.is_none() || self.failed.load(Ordering::Acquire)
    }

    /// Wait for every write so far; the first failure, if any.
    fn barrier(&self) -> Result<()> {
        let Some(ops) = &self.ops else {
            return Err(Error::io_failure(
                "cannot start the download writer thread".to_string(),
            ));
        };
        let (reply, answer) = sync_channel(1);
        if ops.send(WriteOp::Barrier(reply)).is_err() {
            return Err(Error::io_failure("the download writer stopped".to_string()));
        }
        match answer.recv() {
            Ok(None) => Ok(()),
            Ok(Some(error)) => Err(error),
            Err(_) => Err(Error::io_failure("the download writer stopped".to_string())),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.ops = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writer thread: every block at its offset, until the queue closes.
/// After a failure the rest is dropped unwritten: the file must stay a
/// prefix of what was received.
fn write_all(
    path: &Path,
    queue: Receiver<WriteOp>,
    plain: &File,
    mut direct: Option<File>,
    failed: &AtomicBool,
) {
    let mut failure: Option<Error> = None;
    for op in queue {
        match op {
            WriteOp::Write { offset, block, len } => {
                if failure.is_some() {
                    continue;
                }
                let bytes = &block.as_slice()[..len];
                if let Err(e) = write_block(plain, &mut direct, bytes, offset) {
                    failure = Some(Error::io("write", path, e));
                    failed.store(true, Ordering::Release);
                }
            }
            WriteOp::Barrier(reply) => {
                let _ = reply.send(failure.clone());
            }
        }
    }
}

fn write_block(
    plain: &File,
    direct: &mut Option<File>,
    bytes: &[u8],
    offset: u64,
) -> std::io::Result<()> {
    let aligned = offset.is_multiple_of(ALIGN as u64) && bytes.len().is_multiple_of(ALIGN);
    if let (Some(file), true) = (direct.as_ref(), aligned) {
        match file.write_all_at(bytes, offset) {
            Ok(()) => return Ok(()),
            // Refused after all (alignment rules of this device): write
            // through the page cache from now on.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => *direct = None,
            Err(e) => return Err(e),
        }
    }
    plain.write_all_at(bytes, offset)?;
    start_writeback(plain, offset, bytes.len());
    Ok(())
}

/// Start writing page-cache data to disk now rather than at the final
/// fsync, so that fsync has little left to do. Purely a performance
/// measure; errors surface at that fsync.
fn start_writeback(file: &File, offset: u64, len: usize) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range only takes a descriptor we own and integers.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as i64,
            len as i64,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_8_mib_or_the_whole_image_in_pages() {
        assert_eq!(block_size_for(2 << 30), 8 << 20);
        assert_eq!(block_size_for(8 << 20), 8 << 20);
        assert_eq!(block_size_for(100_000), 102_400);
        assert_eq!(block_size_for(0), 4096);
    }
}
