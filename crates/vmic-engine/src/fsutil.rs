//! Filesystem helpers: atomic writes, secret files, copies and links, containment
//! checks and directory locks.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::relpath::SafeRelPath;

/// Write `bytes` to `path` atomically: temp file in the same directory,
/// fsync, rename over the target, fsync the directory. Readers see the old
/// file or the new one, never a mix.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    atomic_write_mode(path, bytes, 0o644)
}

fn atomic_write_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = parent_of(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(".vmic-tmp-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
        .tempfile_in(dir)
        .map_err(|e| Error::io("create a temporary file in", dir, e))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| Error::io("write", tmp.path(), e))?;
    tmp.persist(path)
        .map_err(|e| Error::io("rename into place", path, e.error))?;
    sync_dir(dir)
}

/// Remove a file; a missing one is fine.
pub fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

/// Create a new secret file with mode 0600. Refuses to replace an existing
/// file unless `force`; even then the old file is replaced atomically.
pub fn write_secret(path: &Path, bytes: &[u8], force: bool) -> Result<()> {
    if !force && fs::symlink_metadata(path).is_ok() {
        return Err(Error::input(format!(
            "{} already exists; refusing to overwrite a key (use --force to replace it)",
            path.display()
        )));
    }
    atomic_write_mode(path, bytes, 0o600)
}

/// Fail if `path` exists (used for the public half of a new key pair).
pub fn refuse_existing(path: &Path, force: bool) -> Result<()> {
    if !force && fs::symlink_metadata(path).is_ok() {
        return Err(Error::input(format!(
            "{} already exists; refusing to overwrite it (use --force to replace it)",
            path.display()
        )));
    }
    Ok(())
}

/// fsync a directory, so that renames in it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("sync directory", dir, e))
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Open `path` for reading, refusing anything but a regular file (see
/// [`open_checked`]). `label` names the file in errors.
pub fn open_regular(path: &Path, label: &Path) -> Result<File> {
    open_checked(
        OpenOptions::new().read(true),
        path,
        &label.display().to_string(),
    )
}

/// Open `path` as `options` say, in a directory others may write: the last
/// component is not followed if it is a symbolic link (a planted link would
/// redirect the read or write), and a FIFO or device is refused at once
/// instead of blocking the caller (and any lock it holds) forever. `name`
/// describes the file in errors ("lock file /…", or its path or URL).
pub fn open_checked(options: &mut OpenOptions, path: &Path, name: &str) -> Result<File> {
    let not_regular = |kind: &str| {
        Error::verification(format!(
            "{name} is not a regular file ({kind}); refusing to use it"
        ))
    };
    let file = options
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => Error::verification(format!(
                "{name} is a symbolic link; refusing to follow it (remove it if you did not plant it)"
            )),
            // A FIFO without a reader, opened for writing without blocking.
            Some(libc::ENXIO) => not_regular("a FIFO"),
            _ => Error::io("open", Path::new(name), e),
        })?;
    let meta = file
        .metadata()
        .map_err(|e| Error::io("inspect", Path::new(name), e))?;
    if !meta.is_file() {
        return Err(not_regular(file_kind(&meta)));
    }
    Ok(file)
}

fn file_kind(meta: &fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let kind = meta.file_type();
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a plain file"
    }
}

/// How [`place_file`] puts a file at its destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// An independent copy (a reflink where the filesystem can make one):
    /// a write to the destination cannot reach the source.
    Copy,
    /// A hard link where both are on one filesystem (else a copy): no
    /// extra space, but source and destination are one file.
    HardLink,
}

/// Make `dst` hold the bytes of `src` (the file a symlink points to, never
/// the symlink itself), as `placement` says, via a temporary name and a
/// rename, so `dst` is never partial.
pub fn place_file(src: &Path, dst: &Path, placement: Placement) -> Result<()> {
    let resolved = fs::canonicalize(src).map_err(|e| Error::io("resolve", src, e))?;
    let src = resolved.as_path();
    let src_meta = fs::metadata(src).map_err(|e| Error::io("stat", src, e))?;
    let dir = parent_of(dst);
    fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    let tmp = temp_name(dst);
    let _ = fs::remove_file(&tmp);
    let linked = placement == Placement::HardLink && fs::hard_link(src, &tmp).is_ok();
    if !linked {
        copy_file(src, &tmp, &src_meta)?;
    }
    fs::rename(&tmp, dst).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io("rename into place", dst, e)
    })
}

fn copy_file(src: &Path, tmp: &Path, src_meta: &fs::Metadata) -> Result<()> {
    let result = (|| -> std::io::Result<()> {
        let mut input = File::open(src)?;
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(tmp)?;
        if !reflink(&input, &out) {
            // copy_file_range underneath: in-kernel, and itself a clone on
            // some filesystems.
            std::io::copy(&mut input, &mut out)?;
        }
        out.set_modified(src_meta.modified()?)?;
        out.sync_all()
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(tmp);
        Error::io("copy into", tmp, e)
    })
}

/// Share `input`'s extents with the empty `out` (Btrfs, XFS, bcachefs):
/// an instant copy that later writes to either side do not affect.
fn reflink(input: &File, out: &File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: FICLONE takes two open descriptors, both borrowed for the call.
    unsafe { libc::ioctl(out.as_raw_fd(), libc::FICLONE, input.as_raw_fd()) == 0 }
}

/// A hidden sibling name used while a file is being put in place.
pub fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent_of(path).join(format!(".vmic-tmp-{}-{name}", std::process::id()))
}

/// Resolve `rel` under `root` and make sure the result (after following any
/// symlinks) is still inside `root`. Used for every catalog-named path.
pub fn resolve_inside(root: &Path, rel: &SafeRelPath) -> Result<PathBuf> {
    let joined = rel.join_to(root);
    let canon_root = root
        .canonicalize()
        .map_err(|e| Error::io("resolve", root, e))?;
    match joined.canonicalize() {
        Ok(real) if real.starts_with(&canon_root) => Ok(joined),
        Ok(real) => Err(Error::verification(format!(
            "{rel} resolves to {} which is outside {}; refusing to follow the link",
            real.display(),
            root.display()
        ))),
        // Missing files are reported by the caller with more context.
        Err(_) => Ok(joined),
    }
}

/// " by process PID (COMMAND LINE)" for the pid recorded in a lock file, as
/// far as it can be told; empty when nothing usable is recorded.
fn describe_process(pid: &str) -> String {
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return String::new();
    }
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let words: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|w| !w.is_empty())
        .take(6)
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    if words.is_empty() {
        format!(" by process {pid}")
    } else {
        format!(" by process {pid} ({})", words.join(" "))
    }
}

/// An exclusive advisory lock on a directory, released on drop.
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Take the lock file `name` inside `dir`, failing at once if another
    /// process holds it.
    pub fn acquire(dir: &Path, name: &str, what: &str) -> Result<DirLock> {
        use std::os::fd::AsRawFd;
        let path = dir.join(name);
        // The directory may be writable by others: a symlink planted as the
        // lock file would get our PID written into its target.
        let file = open_checked(
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o644),
            &path,
            &format!("lock file {}", path.display()),
        )?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let holder = fs::read_to_string(&path).unwrap_or_default();
            let who = describe_process(holder.trim());
            return Err(Error::io_failure(format!(
                "another vmic {what} is running on {} (lock {} is held{who}); try again when it has finished",
                dir.display(),
                path.display()
            )));
        }
        // Record who holds the lock, for the message a second process prints.
        let _ = file.set_len(0);
        let _ = (&file).write_all(std::process::id().to_string().as_bytes());
        Ok(DirLock { _file: file })
    }
}
