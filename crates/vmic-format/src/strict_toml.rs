//! Strict TOML for vmic's own files (catalog.toml, sidecars, site.toml):
//! errors name the file and line, so a user can fix the input from the
//! message alone.

use serde::Deserialize;

use crate::error::{Error, Result};

/// Parse `text` (read from `origin`, named in errors) as TOML into `T`.
pub fn parse<T: for<'de> Deserialize<'de>>(text: &str, origin: &str) -> Result<T> {
    toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        let at = line.map(|l| format!(" (line {l})")).unwrap_or_default();
        Error::input(format!("{origin}{at}: {}", e.message()))
    })
}
