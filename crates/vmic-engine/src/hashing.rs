//! The hashing engine shared by build, verify and sync.
//!
//! Every image is described by its whole-file SHA-256 and by the SHA-256 of
//! each fixed-size chunk. SHA-256 is inherently serial, so:
//! - **digesting** (build) reads each file once, front to back. For a file
//!   of several chunks a reader thread copies chunks ahead into buffers, the
//!   worker feeds them to the whole-file hasher (the one serial pass), and
//!   the chunk digests of the same buffers are computed on the other
//!   workers, two chunks at a time; when every worker is busy the worker
//!   hashes the chunk itself, interleaved with the whole-file digest;
//! - **checking** (verify) needs only the chunk digests, which are
//!   independent, so every pair of chunks of every image is an independent
//!   task spread over all workers: one huge image uses every core just like
//!   many small ones do.
//!
//! "Two at a time" is `sha256x2`: two SHA-256 computations interleaved on one
//! core, about 20 % faster than one after the other with SHA-NI.
//!
//! Memory is bounded by the number of workers, never by file size: digesting
//! keeps at most `5 × jobs` chunk buffers alive (two per pool task, three per
//! file being read); checking streams each chunk through two small buffers
//! per worker.

use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::sha256x2::{self, Sha256Lane};

pub use vmic_format::chunks::{
    ChunkDigests, DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, chunk_count,
};
/// Read size when a piece is hashed right after it is read (checking, and
/// digesting single-chunk files): small enough to stay in a core's L2 cache
/// between the read that fills it and the hash that consumes it.
const READ_PIECE: usize = 256 << 10;

/// Progress callbacks; the CLI draws bars, the library never prints.
pub trait Progress: Sync {
    /// The total of bytes about to be processed.
    fn begin(&self, _total_bytes: u64) {}
    /// The item now being processed.
    fn working_on(&self, _name: &str) {}
    /// `bytes` more are done.
    fn advance(&self, _bytes: u64) {}
}

/// A progress sink that ignores everything.
pub struct NoProgress;
impl Progress for NoProgress {}

/// The digests of one file, computed from a single read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileDigest {
    /// Whole-file SHA-256.
    pub sha256: Sha256Digest,
    /// Size, chunk size and chunk digests.
    pub digests: ChunkDigests,
    /// (mtime ns, ctime ns, inode) observed before and after hashing, equal.
    pub stamp: FileStamp,
}

/// What identifies an unchanged file for the digest cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileStamp {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Status-change time, nanoseconds since the epoch.
    pub ctime_ns: i128,
    /// Inode number.
    pub inode: u64,
    /// Device number.
    pub dev: u64,
}

impl FileStamp {
    /// The stamp of a file's metadata.
    pub fn of(meta: &std::fs::Metadata) -> FileStamp {
        FileStamp {
            size: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
            inode: meta.ino(),
            dev: meta.dev(),
        }
    }
}

/// One file to check against the digests a catalog declares.
#[derive(Clone, Debug)]
pub struct CheckItem {
    /// Name for messages (`id@version`).
    pub name: String,
    /// Where the file is.
    pub path: PathBuf,
    /// What the file must be.
    pub expected: ChunkDigests,
}

/// Everything found wrong with one file. Empty means verified.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Problem {
    /// The file does not exist.
    Missing {
        /// The file.
        path: String,
    },
    /// The file could not be read.
    Unreadable {
        /// The file.
        path: String,
        /// The system's error.
        error: String,
    },
    /// The path is not a regular file.
    NotAFile {
        /// The path.
        path: String,
    },
    /// The catalog names a path that resolves outside the source (a planted
    /// symlink); it was not read.
    OutsideSource {
        /// The path as the catalog names it.
        path: String,
        /// Why it was refused.
        error: String,
    },
    /// The file has another size than declared.
    SizeMismatch {
        /// Declared size.
        expected: u64,
        /// Size found.
        actual: u64,
    },
    /// A chunk's bytes do not match its signed digest.
    ChunkMismatch {
        /// Chunk index, from 0.
        index: u64,
        /// First byte of the chunk.
        start: u64,
        /// One past its last byte.
        end: u64,
        /// The signed digest.
        expected: Sha256Digest,
        /// The digest of the bytes found.
        actual: Sha256Digest,
    },
    /// The image's chunk index (catalog format 2) could not be read, or
    /// no copy of it matched its signed digest: the image was not checked.
    ChunkIndex {
        /// The index file as the catalog names it.
        path: String,
        /// Why, for every source tried.
        error: String,
    },
    /// A chunk ended early: the file shrank while it was read.
    ChunkShort {
        /// Chunk index, from 0.
        index: u64,
        /// First byte of the chunk.
        start: u64,
        /// One past its last byte.
        end: u64,
        /// Bytes read before the end.
        read: u64,
    },
}

impl Problem {
    /// One line a user can act on: what, where, expected and actual.
    pub fn describe(&self) -> String {
        match self {
            Problem::Missing { path } => format!("missing: {path} does not exist"),
            Problem::Unreadable { path, error } => format!("cannot read {path}: {error}"),
            Problem::NotAFile { path } => format!("{path} is not a regular file"),
            Problem::OutsideSource { error, .. } => error.clone(),
            Problem::ChunkIndex { path, error } => {
                format!("chunk index {path} unusable, image not checked: {error}")
            }
            Problem::SizeMismatch { expected, actual } => {
                format!("size is {actual} bytes, expected {expected}")
            }
            Problem::ChunkMismatch {
                index,
                start,
                end,
                expected,
                actual,
            } => format!(
                "chunk {index} (bytes {start}..{end}) has sha256 {actual}, expected {expected}"
            ),
            Problem::ChunkShort {
                index,
                start,
                end,
                read,
            } => format!(
                "chunk {index} (bytes {start}..{end}) is truncated: only {read} bytes could be read"
            ),
        }
    }
}

/// Result of checking one file.
#[derive(Clone, Debug)]
pub struct CheckOutcome {
    /// Everything wrong with the file; empty means verified.
    pub problems: Vec<Problem>,
}

/// Statistics a caller may report (and tests use to see `--jobs` at work).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct EngineStats {
    /// Workers in the pool.
    pub jobs: usize,
    /// Distinct threads that did work.
    pub threads_used: usize,
    /// Bytes hashed.
    pub bytes_hashed: u64,
}

/// A hashing engine bound to its own worker pool.
pub struct Engine {
    pool: rayon::ThreadPool,
    jobs: usize,
}

impl Engine {
    /// `jobs` workers; `None` means one per core.
    pub fn new(jobs: Option<usize>) -> Result<Engine> {
        let jobs = match jobs {
            Some(0) => return Err(Error::input("--jobs must be at least 1")),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(jobs)
            .thread_name(|i| format!("vmic-hash-{i}"))
            .build()
            .map_err(|e| Error::io_failure(format!("cannot start {jobs} hashing threads: {e}")))?;
        Ok(Engine { pool, jobs })
    }

    /// Workers in the pool.
    pub fn jobs(&self) -> usize {
        self.jobs
    }

    /// Run `task` on one of the engine's workers.
    pub(crate) fn spawn(&self, task: impl FnOnce() + Send + 'static) {
        self.pool.spawn(task);
    }

    /// Digest files (whole file + chunks) in one read each; each file comes
    /// with the size it had when listed, and a file that no longer has it is
    /// reported as changed rather than hashed. Results come back
    /// in input order. Largest files start first so that a huge file at the
    /// end of the list never leaves the other workers idle at the end.
    pub fn digest_files(
        &self,
        files: &[(PathBuf, u64)],
        chunk_size: u64,
        progress: &dyn Progress,
    ) -> (Vec<Result<FileDigest>>, EngineStats) {
        let mut order: Vec<usize> = (0..files.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(files[i].1));
        let results: Vec<Mutex<Option<Result<FileDigest>>>> =
            files.iter().map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        let budget = Budget::new(self.jobs);
        let buffers = BufferPool::new(chunk_size as usize);
        let threads = ThreadTracker::default();
        progress.begin(files.iter().map(|f| f.1).sum());
        self.pool.scope(|scope| {
            for _ in 0..self.jobs {
                scope.spawn(|_| {
                    loop {
                        let slot = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&index) = order.get(slot) else { break };
                        let (path, listed_size) = &files[index];
                        progress.working_on(&path.display().to_string());
                        let sizes = (*listed_size, chunk_size);
                        let outcome =
                            digest_one(path, sizes, &budget, &buffers, &threads, progress);
                        *lock(&results[index]) = Some(outcome);
                    }
                });
            }
        });
        let results = results
            .into_iter()
            .map(|m| {
                m.into_inner()
                    .unwrap_or_else(|p| p.into_inner())
                    .unwrap_or_else(|| {
                        Err(Error::io_failure("internal error: file was not hashed"))
                    })
            })
            .collect::<Vec<_>>();
        let bytes_hashed = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|d| d.digests.size())
            .sum();
        (results, threads.stats(self.jobs, bytes_hashed))
    }

    /// SHA-512 of whole files (for formats that want it, such as HEPiX
    /// image lists), one file per worker at a time, in input order.
    pub fn sha512_files(&self, files: &[PathBuf]) -> Vec<Result<[u8; 64]>> {
        use rayon::prelude::*;
        self.pool
            .install(|| files.par_iter().map(|p| sha512_file(p)).collect())
    }

    /// Check files against declared sizes and chunk digests, every chunk of
    /// every file being one task on the pool.
    pub fn check_files(
        &self,
        items: &[CheckItem],
        progress: &dyn Progress,
    ) -> (Vec<CheckOutcome>, EngineStats) {
        // Files are only stat-ed here and opened by each chunk task, so a
        // catalog of 100,000 images never holds 100,000 descriptors.
        let mut problems: Vec<Mutex<Vec<Problem>>> = Vec::with_capacity(items.len());
        let mut tasks: Vec<(usize, u64)> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let mut found = Vec::new();
            match stat_for_check(item) {
                Err(problem) => found.push(problem),
                Ok(actual) => {
                    if actual != item.expected.size() {
                        found.push(Problem::SizeMismatch {
                            expected: item.expected.size(),
                            actual,
                        });
                    }
                    tasks.extend((0..item.expected.chunks().len() as u64).map(|k| (i, k)));
                }
            }
            problems.push(Mutex::new(found));
        }
        progress.begin(tasks.iter().map(|&(i, k)| chunk_len(&items[i], k)).sum());
        let threads = ThreadTracker::default();
        // Chunks go out in pairs so each worker can interleave two SHA-256
        // computations (see `sha256x2`); a pair may span two images.
        let pairs: Vec<&[(usize, u64)]> = tasks.chunks(2).collect();
        self.pool.install(|| {
            pairs.par_iter().with_max_len(1).for_each_init(
                || [vec![0u8; READ_PIECE], vec![0u8; READ_PIECE]],
                |[buf_a, buf_b], pair| {
                    threads.record();
                    let mut jobs = pair.iter().map(|&(i, k)| ChunkJob::open(&items[i], k));
                    let (first, second) = (jobs.next(), jobs.next());
                    let found = match (first, second) {
                        (Some(a), Some(b)) => {
                            let (found_a, found_b) = ChunkJob::run_pair(a, buf_a, b, buf_b);
                            [found_a, found_b]
                        }
                        (Some(a), None) => [a.run(buf_a), None],
                        _ => [None, None],
                    };
                    for (&(i, k), problem) in pair.iter().zip(found) {
                        if let Some(problem) = problem {
                            let mut list = lock(&problems[i]);
                            if !list.contains(&problem) {
                                list.push(problem);
                            }
                        }
                        progress.advance(chunk_len(&items[i], k));
                    }
                },
            );
        });
        let bytes: u64 = tasks.iter().map(|&(i, k)| chunk_len(&items[i], k)).sum();
        let outcomes = problems
            .into_iter()
            .map(|m| {
                let mut problems = m.into_inner().unwrap_or_else(|p| p.into_inner());
                problems.sort_by_key(problem_order);
                CheckOutcome { problems }
            })
            .collect();
        (outcomes, threads.stats(self.jobs, bytes))
    }
}

fn problem_order(p: &Problem) -> u64 {
    match p {
        Problem::ChunkMismatch { index, .. } | Problem::ChunkShort { index, .. } => index + 1,
        _ => 0,
    }
}

fn chunk_len(item: &CheckItem, k: u64) -> u64 {
    chunk_len_of(item.expected.size(), item.expected.chunk_size(), k)
}

/// Length of chunk `k` of a file of `size` bytes (0 past the end).
fn chunk_len_of(size: u64, chunk_size: u64, k: u64) -> u64 {
    size.saturating_sub(k * chunk_size).min(chunk_size)
}

/// The size of a file to check, or why it cannot be checked.
fn stat_for_check(item: &CheckItem) -> std::result::Result<u64, Problem> {
    let path = item.path.display().to_string();
    match std::fs::metadata(&item.path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Problem::Missing { path }),
        Err(e) => Err(Problem::Unreadable {
            path,
            error: e.to_string(),
        }),
        Ok(m) if !m.is_file() => Err(Problem::NotAFile { path }),
        Ok(m) => Ok(m.len()),
    }
}

/// Checking one chunk: chunk `k` of `item`, read with positional reads (no
/// shared cursor, so any number of workers can read one file at once).
struct ChunkJob<'i> {
    item: &'i CheckItem,
    index: u64,
    file: std::result::Result<File, Problem>,
    start: u64,
    len: u64,
    done: u64,
    ended: bool,
    hasher: Sha256Lane,
}

impl<'i> ChunkJob<'i> {
    fn open(item: &'i CheckItem, index: u64) -> ChunkJob<'i> {
        let file = File::open(&item.path).map_err(|e| Problem::Unreadable {
            path: item.path.display().to_string(),
            error: e.to_string(),
        });
        ChunkJob {
            item,
            index,
            ended: file.is_err(),
            file,
            start: index * item.expected.chunk_size(),
            len: chunk_len(item, index),
            done: 0,
            hasher: Sha256Lane::new(),
        }
    }

    fn finished(&self) -> bool {
        self.ended || self.done == self.len
    }

    /// Read the next piece of the chunk into `buf`; empty once the chunk is
    /// complete or the file ended early (a short read is reported later).
    fn next_piece<'b>(&mut self, buf: &'b mut [u8]) -> &'b [u8] {
        let Ok(file) = &self.file else { return &[] };
        while !self.finished() {
            let want = (self.len - self.done).min(buf.len() as u64) as usize;
            match file.read_at(&mut buf[..want], self.start + self.done) {
                Ok(0) => {}
                Ok(n) => {
                    self.done += n as u64;
                    return &buf[..n];
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => {}
            }
            self.ended = true;
        }
        &[]
    }

    fn run(mut self, buf: &mut [u8]) -> Option<Problem> {
        while !self.finished() {
            let piece = self.next_piece(buf);
            self.hasher.update(piece);
        }
        self.verdict()
    }

    /// Check two chunks at once, interleaving their SHA-256 computations.
    fn run_pair(
        mut a: ChunkJob,
        buf_a: &mut [u8],
        mut b: ChunkJob,
        buf_b: &mut [u8],
    ) -> (Option<Problem>, Option<Problem>) {
        while !(a.finished() && b.finished()) {
            let piece_a = a.next_piece(buf_a);
            let piece_b = b.next_piece(buf_b);
            sha256x2::update_pair(&mut a.hasher, piece_a, &mut b.hasher, piece_b);
        }
        (a.verdict(), b.verdict())
    }

    fn verdict(self) -> Option<Problem> {
        let (index, start, end) = (self.index, self.start, self.start + self.len);
        if let Err(problem) = self.file {
            return Some(problem);
        }
        if self.done < self.len {
            return Some(Problem::ChunkShort {
                index,
                start,
                end,
                read: self.done,
            });
        }
        let actual = self.hasher.finalize();
        let expected = self.item.expected.chunks()[index as usize];
        (actual != expected).then_some(Problem::ChunkMismatch {
            index,
            start,
            end,
            expected,
            actual,
        })
    }
}

/// Digest one file: the calling worker reads sequentially and feeds the
/// whole-file hasher; chunk digests of the same buffers are spawned onto the
/// pool while the in-flight budget allows, and computed inline otherwise
/// (which bounds memory without ever blocking a worker).
fn digest_one(
    path: &Path,
    (listed_size, chunk_size): (u64, u64),
    budget: &Budget,
    buffers: &BufferPool,
    threads: &ThreadTracker,
    progress: &dyn Progress,
) -> Result<FileDigest> {
    threads.record();
    let (mut file, before) = open_for_digest(path, listed_size)?;
    let size = before.size;
    let count = chunk_count(size, chunk_size);
    let chunks: Vec<Mutex<Option<Sha256Digest>>> = (0..count).map(|_| Mutex::new(None)).collect();
    let mut whole = Sha256Lane::new();
    let read = if count <= 1 {
        // One chunk: its digest is the whole-file digest, read and hashed here.
        let mut buf = buffers.take();
        let outcome = read_and_digest(&mut file, size, &mut buf, &mut whole);
        buffers.give(buf);
        progress.advance(size);
        match outcome {
            Ok(n) if n == size => Ok(()),
            Ok(_) => Err(ReadFailure::Short),
            Err(e) => Err(ReadFailure::Io(e)),
        }
    } else {
        let ctx = ChunkContext {
            chunks: &chunks,
            budget,
            buffers,
            threads,
            progress,
        };
        digest_with_reader(&mut file, (size, chunk_size), &mut whole, &ctx)
    };
    read.map_err(|e| match e {
        ReadFailure::Io(e) => Error::io("read", path, e),
        ReadFailure::Short => changed_while_hashed(path),
    })?;
    check_unchanged(&mut file, path, &before)?;
    let sha256 = whole.finalize();
    let chunks = if count == 1 {
        vec![sha256]
    } else {
        collect_chunks(chunks, path)?
    };
    let digests = ChunkDigests::new(size, chunk_size, chunks)
        .map_err(|e| Error::input(format!("{}: {e}", path.display())))?;
    Ok(FileDigest {
        sha256,
        digests,
        stamp: before,
    })
}

/// Open a regular file whose size is still the one listed, and note its
/// stamp to compare with after hashing.
fn open_for_digest(path: &Path, listed_size: u64) -> Result<(File, FileStamp)> {
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let meta = file.metadata().map_err(|e| Error::io("stat", path, e))?;
    if !meta.is_file() {
        return Err(Error::input(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let before = FileStamp::of(&meta);
    advise_sequential(&file);
    if before.size != listed_size {
        return Err(Error::io_failure(format!(
            "{} changed between listing and hashing ({listed_size} bytes, now {}); finish writing it, then run again",
            path.display(),
            before.size
        )));
    }
    Ok((file, before))
}

/// A reader thread copies the file into chunk buffers ahead of this worker,
/// which then does nothing but the serial whole-file digest (and hands
/// chunks to the pool); the copy would otherwise be on the serial path.
fn digest_with_reader(
    file: &mut File,
    (size, chunk_size): (u64, u64),
    whole: &mut Sha256Lane,
    ctx: &ChunkContext,
) -> std::result::Result<(), ReadFailure> {
    let buffers = ctx.buffers;
    std::thread::scope(|io_scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        io_scope.spawn(move || read_chunks(file, (size, chunk_size), buffers, tx));
        // Dropping `rx` on an early return stops the reader.
        digest_chunks(rx, (size, chunk_size), whole, ctx)
    })
}

fn changed_while_hashed(path: &Path) -> Error {
    Error::io_failure(format!(
        "{} changed while it was being hashed; its digest would be stale. Finish writing it, then run again",
        path.display()
    ))
}

/// Nothing past the end, and the same stamp as before: the digest is of
/// the file as it is.
fn check_unchanged(file: &mut File, path: &Path, before: &FileStamp) -> Result<()> {
    let mut probe = [0u8; 1];
    if read_full(file, &mut probe).map_err(|e| Error::io("read", path, e))? != 0 {
        return Err(changed_while_hashed(path));
    }
    let after = FileStamp::of(&std::fs::metadata(path).map_err(|e| Error::io("stat", path, e))?);
    if after != *before {
        return Err(changed_while_hashed(path));
    }
    Ok(())
}

fn collect_chunks(
    chunks: Vec<Mutex<Option<Sha256Digest>>>,
    path: &Path,
) -> Result<Vec<Sha256Digest>> {
    chunks
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| {
            Error::io_failure(format!(
                "internal error: a chunk of {} was not hashed",
                path.display()
            ))
        })
}

/// A completed chunk: its index and the buffer holding its bytes.
type ChunkBuf = (u64, Vec<u8>);

/// One chunk, or two to be hashed interleaved.
type ChunkPair = (ChunkBuf, Option<ChunkBuf>);

/// Digest one or two chunk buffers, interleaved when two; each digest comes
/// back with its chunk index and its buffer.
fn hash_chunk_pair(pair: ChunkPair) -> Vec<(u64, Sha256Digest, Vec<u8>)> {
    match pair {
        ((ka, a), Some((kb, b))) => {
            let (mut lane_a, mut lane_b) = (Sha256Lane::new(), Sha256Lane::new());
            sha256x2::update_pair(&mut lane_a, &a, &mut lane_b, &b);
            vec![(ka, lane_a.finalize(), a), (kb, lane_b.finalize(), b)]
        }
        ((k, buf), None) => {
            let digest = Sha256Digest::of(&buf);
            vec![(k, digest, buf)]
        }
    }
}

/// Digest one or two chunk buffers (interleaved when two), returning each
/// buffer to the pool afterwards.
fn digest_chunk_pair(pair: ChunkPair, buffers: &BufferPool) -> Vec<(u64, Sha256Digest)> {
    hash_chunk_pair(pair)
        .into_iter()
        .map(|(index, digest, buf)| {
            buffers.give(buf);
            (index, digest)
        })
        .collect()
}

/// Read `size` bytes of `file` through the front of `buf`, piece by piece,
/// feeding each piece to `whole` right after it is read, while it is still
/// in the CPU cache. Returns the bytes read: less than `size` only if the
/// file ended early.
fn read_and_digest(
    file: &mut File,
    size: u64,
    buf: &mut Vec<u8>,
    whole: &mut Sha256Lane,
) -> std::io::Result<u64> {
    if buf.len() < READ_PIECE {
        buf.resize(READ_PIECE, 0);
    }
    let mut done = 0;
    while done < size {
        let want = (size - done).min(READ_PIECE as u64) as usize;
        let n = read_full(file, &mut buf[..want])?;
        whole.update(&buf[..n]);
        done += n as u64;
        if n < want {
            break;
        }
    }
    Ok(done)
}

/// Why a chunk could not be read in full.
enum ReadFailure {
    Io(std::io::Error),
    /// The file ended early: it shrank while being hashed.
    Short,
}

/// The reader thread of `digest_one`: every chunk of the file in order, each
/// in a buffer of exactly the chunk's length, or the failure that stopped it.
fn read_chunks(
    file: &mut File,
    (size, chunk_size): (u64, u64),
    buffers: &BufferPool,
    tx: std::sync::mpsc::SyncSender<std::result::Result<Vec<u8>, ReadFailure>>,
) {
    for k in 0..chunk_count(size, chunk_size) {
        let len = chunk_len_of(size, chunk_size, k) as usize;
        let mut buf = buffers.take();
        buf.resize(len, 0);
        let message = match read_full(file, &mut buf) {
            Ok(n) if n == len => Ok(buf),
            Ok(_) => Err(ReadFailure::Short),
            Err(e) => Err(ReadFailure::Io(e)),
        };
        let stop = message.is_err();
        if tx.send(message).is_err() || stop {
            return;
        }
    }
}

/// What `digest_chunks` shares with the pool tasks it spawns.
struct ChunkContext<'a> {
    chunks: &'a [Mutex<Option<Sha256Digest>>],
    budget: &'a Budget,
    buffers: &'a BufferPool,
    threads: &'a ThreadTracker,
    progress: &'a dyn Progress,
}

/// Feed the chunks of one file, in order, to the whole-file digest; the
/// chunk digests go to the pool two at a time while the budget allows, and
/// are computed here, interleaved with the whole-file digest, when every
/// worker is busy.
fn digest_chunks(
    received: std::sync::mpsc::Receiver<std::result::Result<Vec<u8>, ReadFailure>>,
    (size, chunk_size): (u64, u64),
    whole: &mut Sha256Lane,
    ctx: &ChunkContext,
) -> std::result::Result<(), ReadFailure> {
    let count = chunk_count(size, chunk_size);
    rayon::scope(move |scope| {
        // A chunk that holds a budget slot while it waits for its partner.
        let mut held: Option<ChunkBuf> = None;
        for k in 0..count {
            let buf = match received.recv().ok() {
                Some(Ok(buf)) => buf,
                failure => {
                    if let Some((_, partner)) = held.take() {
                        ctx.buffers.give(partner);
                        ctx.budget.release();
                    }
                    return Err(failure.and_then(Result::err).unwrap_or(ReadFailure::Short));
                }
            };
            ctx.progress.advance(buf.len() as u64);
            if held.is_none() && !ctx.budget.try_acquire() {
                let mut chunk = Sha256Lane::new();
                sha256x2::update_pair(whole, &buf, &mut chunk, &buf);
                *lock(&ctx.chunks[k as usize]) = Some(chunk.finalize());
                ctx.buffers.give(buf);
                continue;
            }
            whole.update(&buf);
            let pair = match held.take() {
                None if k + 1 < count => {
                    held = Some((k, buf));
                    continue;
                }
                None => ((k, buf), None),
                Some(first) => (first, Some((k, buf))),
            };
            let (chunks, buffers, budget, threads) =
                (ctx.chunks, ctx.buffers, ctx.budget, ctx.threads);
            scope.spawn(move |_| {
                threads.record();
                for (index, digest) in digest_chunk_pair(pair, buffers) {
                    *lock(&chunks[index as usize]) = Some(digest);
                }
                budget.release();
            });
        }
        Ok(())
    })
}

fn read_full(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Ask the kernel for aggressive read-ahead; purely advisory.
fn advise_sequential(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: posix_fadvise only takes a descriptor we own and plain integers.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A counter of chunk buffers allowed in flight.
struct Budget {
    available: AtomicUsize,
}

impl Budget {
    fn new(n: usize) -> Budget {
        Budget {
            available: AtomicUsize::new(n),
        }
    }

    fn try_acquire(&self) -> bool {
        self.available
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }

    fn release(&self) {
        self.available.fetch_add(1, Ordering::AcqRel);
    }
}

/// Recycled chunk buffers: allocating and faulting in a fresh multi-MiB
/// buffer per chunk would cost about as much as hashing it.
struct BufferPool {
    size: usize,
    free: Mutex<Vec<Vec<u8>>>,
}

impl BufferPool {
    fn new(size: usize) -> BufferPool {
        BufferPool {
            size,
            free: Mutex::new(Vec::new()),
        }
    }

    fn take(&self) -> Vec<u8> {
        lock(&self.free)
            .pop()
            .unwrap_or_else(|| vec![0u8; self.size])
    }

    /// Take back a buffer; its length may have changed (callers resize to
    /// what they need, which only costs anything when it grows).
    fn give(&self, buf: Vec<u8>) {
        lock(&self.free).push(buf);
    }
}

/// Which pool threads did hashing work (reported in `--json` statistics).
#[derive(Default)]
struct ThreadTracker {
    seen: Mutex<HashSet<std::thread::ThreadId>>,
}

impl ThreadTracker {
    fn record(&self) {
        lock(&self.seen).insert(std::thread::current().id());
    }

    fn stats(&self, jobs: usize, bytes_hashed: u64) -> EngineStats {
        EngineStats {
            jobs,
            threads_used: lock(&self.seen).len(),
            bytes_hashed,
        }
    }
}

/// SHA-512 of one file, read in 1 MiB pieces.
fn sha512_file(path: &Path) -> Result<[u8; 64]> {
    use sha2::Digest;
    let mut file = crate::fsutil::open_regular(path, path)?;
    let mut hasher = sha2::Sha512::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Error::io("read", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::pattern;
    use std::io::Write;

    fn write_file(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
        let p = dir.join(name);
        File::create(&p).unwrap().write_all(data).unwrap();
        p
    }

    fn reference(data: &[u8], chunk: usize) -> (Sha256Digest, Vec<Sha256Digest>) {
        let chunks = if data.is_empty() {
            vec![]
        } else {
            data.chunks(chunk).map(Sha256Digest::of).collect()
        };
        (Sha256Digest::of(data), chunks)
    }

    #[test]
    fn boundary_sizes_match_reference() {
        let dir = tempfile::tempdir().unwrap();
        let chunk = 4096usize;
        let engine = Engine::new(Some(2)).unwrap();
        for size in [0, 1, chunk - 1, chunk, chunk + 1, 5 * chunk + 17] {
            let data = pattern(size, size as u64);
            let p = write_file(dir.path(), &format!("f{size}"), &data);
            let (res, _) = engine.digest_files(&[(p, size as u64)], chunk as u64, &NoProgress);
            let d = res.into_iter().next().unwrap().unwrap();
            let (whole, chunks) = reference(&data, chunk);
            assert_eq!(d.sha256, whole, "size {size}");
            assert_eq!(d.digests.chunks(), chunks, "size {size}");
        }
    }

    #[test]
    fn chunks_checked_in_pairs_across_images_report_exactly_their_own_problems() {
        // Chunks are checked two per task, and a pair can span two images:
        // a flip in any one chunk, or one missing image, must be reported
        // against exactly that chunk or image.
        let dir = tempfile::tempdir().unwrap();
        let chunk = 4096u64;
        let sizes = [3 * 4096 + 1, 2 * 4096, 1, 4096 + 9];
        let engine = Engine::new(Some(2)).unwrap();
        let mut items = Vec::new();
        for (n, size) in sizes.iter().enumerate() {
            let data = pattern(*size, n as u64);
            let p = write_file(dir.path(), &format!("img{n}"), &data);
            let (res, _) = engine.digest_files(&[(p.clone(), *size as u64)], chunk, &NoProgress);
            let d = res.into_iter().next().unwrap().unwrap();
            items.push((
                data,
                CheckItem {
                    name: format!("img{n}"),
                    path: p,
                    expected: d.digests.clone(),
                },
            ));
        }
        let check_items: Vec<CheckItem> = items.iter().map(|(_, i)| i.clone()).collect();
        let (clean, _) = engine.check_files(&check_items, &NoProgress);
        assert!(clean.iter().all(|o| o.problems.is_empty()), "{clean:?}");
        for (n, (data, item)) in items.iter().enumerate() {
            for k in 0..item.expected.chunks().len() {
                let mut bad = data.clone();
                bad[k * chunk as usize] ^= 0x40;
                std::fs::write(&item.path, &bad).unwrap();
                let (out, _) = engine.check_files(&check_items, &NoProgress);
                std::fs::write(&item.path, data).unwrap();
                for (m, outcome) in out.iter().enumerate() {
                    if m != n {
                        assert!(
                            outcome.problems.is_empty(),
                            "img{m} when img{n}#{k} flipped"
                        );
                        continue;
                    }
                    assert_eq!(outcome.problems.len(), 1, "img{n}#{k}: {outcome:?}");
                    assert!(
                        matches!(outcome.problems[0], Problem::ChunkMismatch { index, .. } if index == k as u64),
                        "img{n}#{k}: {outcome:?}"
                    );
                }
            }
        }
        std::fs::remove_file(&items[1].1.path).unwrap();
        let (out, _) = engine.check_files(&check_items, &NoProgress);
        assert!(
            matches!(out[1].problems[..], [Problem::Missing { .. }]),
            "{out:?}"
        );
        assert!(
            out.iter()
                .enumerate()
                .all(|(m, o)| m == 1 || o.problems.is_empty())
        );
    }

    #[test]
    fn flipped_byte_is_reported_in_its_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let chunk = 4096u64;
        let mut data = pattern(10 * 4096 + 5, 7);
        let p = write_file(dir.path(), "img", &data);
        let engine = Engine::new(Some(2)).unwrap();
        let (res, _) = engine.digest_files(&[(p.clone(), data.len() as u64)], chunk, &NoProgress);
        let d = res.into_iter().next().unwrap().unwrap();
        data[3 * 4096 + 100] ^= 1;
        write_file(dir.path(), "img", &data);
        let item = CheckItem {
            name: "img".into(),
            path: p,
            expected: d.digests.clone(),
        };
        let (out, _) = engine.check_files(&[item], &NoProgress);
        assert_eq!(out[0].problems.len(), 1);
        match &out[0].problems[0] {
            Problem::ChunkMismatch {
                index, start, end, ..
            } => {
                assert_eq!((*index, *start, *end), (3, 3 * 4096, 4 * 4096));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Appends to the file the first time a chunk has been read.
    struct Grower<'a> {
        path: &'a Path,
        done: std::sync::atomic::AtomicBool,
    }

    impl Progress for Grower<'_> {
        fn advance(&self, _bytes: u64) {
            if !self.done.swap(true, Ordering::SeqCst) {
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(self.path)
                    .unwrap();
                f.write_all(b"more bytes").unwrap();
            }
        }
    }

    #[test]
    fn file_growing_while_hashed_is_reported_not_digested() {
        let dir = tempfile::tempdir().unwrap();
        for size in [100usize, 3 * 4096 + 7] {
            let p = write_file(dir.path(), "growing", &pattern(size, 3));
            let grower = Grower {
                path: &p,
                done: false.into(),
            };
            let engine = Engine::new(Some(2)).unwrap();
            let (res, _) = engine.digest_files(&[(p.clone(), size as u64)], 4096, &grower);
            let err = res.into_iter().next().unwrap().unwrap_err();
            assert!(
                err.message().contains("changed while it was being hashed"),
                "{err}"
            );
        }
    }

    struct Shrinker<'a> {
        path: &'a Path,
        done: std::sync::atomic::AtomicBool,
    }

    impl Progress for Shrinker<'_> {
        fn advance(&self, _bytes: u64) {
            if !self.done.swap(true, Ordering::SeqCst) {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(self.path)
                    .unwrap();
                f.set_len(4096 + 10).unwrap();
            }
        }
    }

    #[test]
    fn file_shrinking_while_hashed_is_reported_not_digested() {
        let dir = tempfile::tempdir().unwrap();
        let size = 40 * 4096 + 3;
        let p = write_file(dir.path(), "shrinking", &pattern(size, 5));
        let shrinker = Shrinker {
            path: &p,
            done: false.into(),
        };
        let engine = Engine::new(Some(2)).unwrap();
        let (res, _) = engine.digest_files(&[(p.clone(), size as u64)], 4096, &shrinker);
        let err = res.into_iter().next().unwrap().unwrap_err();
        assert!(
            err.message().contains("changed while it was being hashed"),
            "{err}"
        );
    }

    #[test]
    fn file_changed_since_listing_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_file(dir.path(), "f", &pattern(5000, 1));
        let engine = Engine::new(Some(1)).unwrap();
        let (res, _) = engine.digest_files(&[(p, 4000)], 4096, &NoProgress);
        let err = res.into_iter().next().unwrap().unwrap_err();
        assert!(
            err.message()
                .contains("changed between listing and hashing"),
            "{err}"
        );
    }

    #[test]
    fn zero_jobs_is_a_usage_error() {
        assert_eq!(
            Engine::new(Some(0)).err().unwrap().kind(),
            crate::error::ErrorKind::Input
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        #[test]
        fn random_sizes_and_chunk_sizes_match_reference(size in 0usize..200_000, chunk_pow in 12u32..16) {
            let chunk = 1usize << chunk_pow;
            let dir = tempfile::tempdir().unwrap();
            let data = pattern(size, size as u64 + 1);
            let p = write_file(dir.path(), "f", &data);
            let engine = Engine::new(Some(2)).unwrap();
            let (res, _) = engine.digest_files(&[(p.clone(), size as u64)], chunk as u64, &NoProgress);
            let d = res.into_iter().next().unwrap().unwrap();
            let (whole, chunks) = reference(&data, chunk);
            proptest::prop_assert_eq!(d.sha256, whole);
            proptest::prop_assert_eq!(&d.digests.chunks(), &chunks);
            let item = CheckItem { name: "f".into(), path: p, expected: ChunkDigests::new(size as u64, chunk as u64, chunks).unwrap() };
            let (out, _) = engine.check_files(&[item], &NoProgress);
            proptest::prop_assert!(out[0].problems.is_empty());
        }
    }
}
