//! Relative paths that cannot escape the directory they are joined to.
//!
//! Every path that comes from a catalog (or from a directory walk that will be
//! written into one) is parsed into a [`SafeRelPath`] before it touches the
//! filesystem: no absolute paths, no `..`, no empty or `.` components, no NUL,
//! no backslashes, no control characters.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

use crate::limits::MAX_REL_PATH as MAX_LEN;

/// A validated, `/`-separated relative path.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct SafeRelPath(String);

impl SafeRelPath {
    /// Parse a catalog path; see the module docs for the rules.
    pub fn parse(raw: &str) -> Result<SafeRelPath> {
        let bad = |why: &str| Error::verification(format!("unsafe path {raw:?}: {why}"));
        if raw.is_empty() {
            return Err(bad("empty"));
        }
        if raw.len() > MAX_LEN {
            return Err(bad("longer than 1024 bytes"));
        }
        if raw.contains('\0') {
            return Err(bad("contains a NUL byte"));
        }
        if raw.contains('\\') {
            return Err(bad("contains a backslash"));
        }
        if raw.chars().any(char::is_control) {
            return Err(bad("contains a control character"));
        }
        if raw.starts_with('/') {
            return Err(bad("is absolute"));
        }
        for part in raw.split('/') {
            match part {
                "" => return Err(bad("has an empty component")),
                "." | ".." => return Err(bad("has a '.' or '..' component")),
                _ => {}
            }
        }
        Ok(SafeRelPath(raw.to_string()))
    }

    /// Build from a path relative to a walked root, e.g. `images/a.qcow2`.
    pub fn from_path(path: &Path) -> Result<SafeRelPath> {
        let text = path
            .to_str()
            .ok_or_else(|| Error::input(format!("path {} is not valid UTF-8", path.display())))?;
        SafeRelPath::parse(text).map_err(|e| Error::input(e.message()))
    }

    /// The path text, `/`-separated.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// This path under `root`. Cannot leave `root` lexically; symlinks are
    /// the caller's concern (see `vmic_engine::fsutil::resolve_inside`).
    pub fn join_to(&self, root: &Path) -> PathBuf {
        let mut p = root.to_path_buf();
        for part in self.0.split('/') {
            p.push(part);
        }
        p
    }

    /// `prefix/self`.
    pub fn prefixed(&self, prefix: &str) -> Result<SafeRelPath> {
        SafeRelPath::parse(&format!("{prefix}/{}", self.0))
    }
}

impl fmt::Display for SafeRelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_relative_paths() {
        for ok in ["a", "images/a.qcow2", "x/y/z-1.0_b.img", "..a", "a..b/c"] {
            assert!(SafeRelPath::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_escapes() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            "a\\b",
            "a\0b",
            "..",
            ".",
            "a\nb",
        ] {
            assert!(SafeRelPath::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn join_stays_under_root() {
        let p = SafeRelPath::parse("images/a.raw").unwrap();
        assert_eq!(
            p.join_to(Path::new("/srv/out")),
            PathBuf::from("/srv/out/images/a.raw")
        );
    }
}
