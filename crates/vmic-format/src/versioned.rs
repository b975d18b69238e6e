//! Versioned JSON documents (`vmic.catalog/N`, `vmic.vo/N`). The format
//! field is read and checked first, so a future format is named as such
//! rather than reported as whatever field it changed; then the whole
//! document is parsed. Written back pretty-printed, with a final newline.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One kind of versioned document.
pub(crate) struct Versioned {
    /// `vmic.catalog/`: the format string without the version.
    pub prefix: &'static str,
    /// The major versions this vmic reads, oldest first.
    pub majors: &'static [u64],
    /// The format string this vmic writes.
    pub current: &'static str,
    /// What it is called in messages (`catalog`, `VO list`).
    pub noun: &'static str,
    /// Its file name in messages.
    pub file: &'static str,
}

impl Versioned {
    /// Accept `PREFIX MAJOR` or `PREFIX MAJOR.MINOR` with the supported
    /// major version, each a plain decimal number without sign or leading
    /// zero.
    /// Returns the major version.
    pub fn check(&self, format: &str) -> Result<u64> {
        let number = |t: &str| -> Option<u64> {
            let canonical = !t.is_empty()
                && t.bytes().all(|b| b.is_ascii_digit())
                && (t == "0" || !t.starts_with('0'));
            canonical.then(|| t.parse().ok()).flatten()
        };
        let major = format.strip_prefix(self.prefix).and_then(|v| {
            let (major, minor) = v.split_once('.').unwrap_or((v, "0"));
            number(minor)?;
            number(major)
        });
        let noun = self.noun;
        match major {
            Some(m) if self.majors.contains(&m) => Ok(m),
            Some(other) => Err(Error::verification(format!(
                "{noun} format {format:?} has major version {other}; this vmic understands only version {}. Upgrade vmic to read it",
                self.majors
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(" and ")
            ))),
            None => Err(Error::verification(format!(
                "{noun} format {format:?} is not a vmic {noun} (expected {:?})",
                self.current
            ))),
        }
    }

    /// The format field first, then the whole document.
    pub fn parse<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T> {
        let invalid =
            |e: serde_json::Error| Error::verification(format!("{} is invalid: {e}", self.file));
        #[derive(Deserialize)]
        struct Header {
            format: String,
        }
        let header: Header = serde_json::from_slice(bytes).map_err(invalid)?;
        self.check(&header.format)?;
        serde_json::from_slice(bytes).map_err(invalid)
    }

    /// The exact bytes to publish and sign.
    pub fn to_bytes<T: Serialize>(&self, value: &T) -> Result<Vec<u8>> {
        let mut bytes = serde_json::to_vec_pretty(value)
            .map_err(|e| Error::io_failure(format!("cannot serialise the {}: {e}", self.noun)))?;
        bytes.push(b'\n');
        Ok(bytes)
    }
}
