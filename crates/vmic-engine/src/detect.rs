//! Image format detection from a file's magic bytes, never from its name,
//! and the references an image holds to files outside itself (read from its
//! real headers, see [`vmic_format::external_refs`]).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use vmic_format::external_refs::{ExternalReference, external_references, qcow2_backing_name};
use vmic_format::image_format::{ImageFormat, classify};

use crate::error::{Error, Result};

/// Read the few header (and, for VHD, footer) bytes needed and classify.
pub fn detect(path: &Path) -> Result<ImageFormat> {
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    detect_open(file, path)
}

fn detect_open(mut file: File, path: &Path) -> Result<ImageFormat> {
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    let mut head = vec![0u8; 0x8006.min(len as usize)];
    file.read_exact(&mut head)
        .map_err(|e| Error::io("read", path, e))?;
    let mut footer = [0u8; 512];
    let has_footer = len >= 512 && {
        file.seek(SeekFrom::Start(len - 512))
            .and_then(|_| file.read_exact(&mut footer))
            .map_err(|e| Error::io("read", path, e))?;
        true
    };
    Ok(classify(&head, has_footer.then_some(&footer[..]), len))
}

/// What an image is, read from its own bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inspection {
    /// The format its magic bytes say.
    pub format: ImageFormat,
    /// Every reference it holds to something outside itself.
    pub external: Vec<ExternalReference>,
}

/// Detect the format of the regular file at `path` (not followed through a
/// symlink) and read every reference it holds outside itself.
pub fn inspect(path: &Path) -> Result<Inspection> {
    let file = crate::fsutil::open_regular(path, path)?;
    let reader = file.try_clone().map_err(|e| Error::io("open", path, e))?;
    let format = detect_open(file, path)?;
    Ok(Inspection {
        format,
        external: external_references(format, &mut |offset, len| read_at(&reader, offset, len)),
    })
}

/// The raw backing file name of the qcow2 image at `path` (not followed
/// through a symlink); `None` when it has none or is no qcow2.
pub fn qcow2_backing_file(path: &Path) -> Option<Vec<u8>> {
    let file = crate::fsutil::open_regular(path, path).ok()?;
    qcow2_backing_name(&mut |offset, len| read_at(&file, offset, len))
}

/// Up to `len` bytes at `offset` (fewer at the end of the file), for the
/// header readers of `vmic_format::external_refs`.
fn read_at(file: &File, offset: u64, len: usize) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(_) => return None,
        }
    }
    buf.truncate(filled);
    Some(buf)
}
