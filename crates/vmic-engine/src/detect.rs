//! Image format detection from a file's magic bytes, never from its name.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use vmic_format::image_format::{ImageFormat, classify};

use crate::error::{Error, Result};

/// Read the few header (and, for VHD, footer) bytes needed and classify.
pub fn detect(path: &Path) -> Result<ImageFormat> {
    let mut file = File::open(path).map_err(|e| Error::io("open", path, e))?;
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
