//! Image format detection from a file's magic bytes, never from its name,
//! and the references an image holds to files outside itself (read from its
//! real headers, see [`vmic_format::external_refs`]).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use vmic_format::external_refs::{ExternalReference, external_references};
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
    use std::os::unix::fs::FileExt;
    let file = crate::fsutil::open_regular(path, path)?;
    let reader = file.try_clone().map_err(|e| Error::io("open", path, e))?;
    let format = detect_open(file, path)?;
    let mut read = |offset: u64, len: usize| -> Option<Vec<u8>> {
        let mut buf = vec![0u8; len];
        let mut filled = 0;
        while filled < len {
            match reader.read_at(&mut buf[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(_) => return None,
            }
        }
        buf.truncate(filled);
        Some(buf)
    };
    Ok(Inspection {
        format,
        external: external_references(format, &mut read),
    })
}
