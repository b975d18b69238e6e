//! Validated identifiers: image ids, versions and endorser names share one
//! alphabet (safe in file names and in the environment of a hook), spelled
//! once here; the catalog serial is a positive integer that SQLite can store
//! without loss.

use std::fmt;
use std::marker::PhantomData;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::limits::MAX_TOKEN;

/// Why a value from outside could not become a validated type. The message
/// names the field and the value; the caller adds where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidValue(pub String);

impl fmt::Display for InvalidValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidValue {}

/// What kind of token a [`Token`] is: names it in error messages.
pub trait TokenKind {
    /// The field name used in messages, e.g. `id`.
    const WHAT: &'static str;
}

/// Marker for image ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdKind;
impl TokenKind for IdKind {
    const WHAT: &'static str = "id";
}

/// Marker for image versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VersionKind;
impl TokenKind for VersionKind {
    const WHAT: &'static str = "version";
}

/// Marker for the names a site gives its endorsers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndorserKind;
impl TokenKind for EndorserKind {
    const WHAT: &'static str = "endorser name";
}

/// 1–128 characters of `A–Z a–z 0–9 . _ - +`, not starting with `.` or `-`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token<K> {
    text: String,
    kind: PhantomData<K>,
}

/// An image's stable id.
pub type ImageId = Token<IdKind>;
/// An image's version.
pub type Version = Token<VersionKind>;
/// The name under which a site trusts an endorser.
pub type EndorserName = Token<EndorserKind>;

impl<K: TokenKind> Token<K> {
    /// Parse `text`, refusing anything outside the token alphabet.
    pub fn parse(text: &str) -> Result<Self, InvalidValue> {
        check_token(K::WHAT, text)?;
        Ok(Token {
            text: text.to_string(),
            kind: PhantomData,
        })
    }

    /// The token's text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// The token alphabet: `A–Z a–z 0–9 . _ - +`.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+')
}

/// The token rules, spelled once.
fn check_token(what: &str, value: &str) -> Result<(), InvalidValue> {
    if value.is_empty() || value.len() > MAX_TOKEN {
        return Err(InvalidValue(format!(
            "{what} {value:?} must be 1 to {MAX_TOKEN} characters"
        )));
    }
    if !value.chars().all(is_token_char) || value.starts_with(['.', '-']) {
        return Err(InvalidValue(format!(
            "{what} {value:?} may contain only letters, digits, '.', '_', '-', '+', and may not start with '.' or '-'"
        )));
    }
    Ok(())
}

/// Turn any text into a valid token: characters outside the alphabet become
/// `-`, leading `.`/`-` are dropped, the length is capped; `fallback` when
/// nothing is left. Used to derive ids from file names.
pub fn sanitize_token(text: &str, fallback: &str) -> String {
    let mut token: String = text
        .chars()
        .map(|c| if is_token_char(c) { c } else { '-' })
        .collect();
    token = token.trim_start_matches(['.', '-']).to_string();
    token.truncate(MAX_TOKEN);
    if token.is_empty() {
        fallback.into()
    } else {
        token
    }
}

impl<K> fmt::Display for Token<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<K> fmt::Debug for Token<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

impl<K> PartialEq<str> for Token<K> {
    fn eq(&self, other: &str) -> bool {
        self.text == other
    }
}

impl<K> Serialize for Token<K> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de, K: TokenKind> Deserialize<'de> for Token<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Token::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The largest serial: SQLite integers are signed 64-bit, and a serial that
/// cannot be stored exactly cannot protect against rollback.
pub const MAX_SERIAL: u64 = i64::MAX as u64;

/// A catalog serial: 1 ..= 2^63 − 1, incremented by every build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(u64);

impl Serial {
    /// The serial of a first catalog.
    pub const FIRST: Serial = Serial(1);

    /// Validate a serial read from outside.
    pub fn new(value: u64) -> Result<Serial, InvalidValue> {
        if value == 0 || value > MAX_SERIAL {
            return Err(InvalidValue(format!(
                "serial {value} is outside 1..={MAX_SERIAL}"
            )));
        }
        Ok(Serial(value))
    }

    /// The serial after this one, if there is one.
    pub fn next(self) -> Result<Serial, InvalidValue> {
        Serial::new(self.0 + 1)
    }

    /// The number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for Serial {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for Serial {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Serial::new(u64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_alphabet() {
        for ok in ["a", "centos-stream-9", "1.0+build_2", "A"] {
            assert!(ImageId::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".hidden",
            "-x",
            "a/b",
            "../../etc",
            "a b",
            "é",
            &"x".repeat(129),
        ] {
            let err = Version::parse(bad).unwrap_err();
            assert!(err.0.starts_with("version "), "{err}");
        }
        assert_eq!(sanitize_token("sub/CentOS 7", "image"), "sub-CentOS-7");
        assert_eq!(sanitize_token("..//", "image"), "image");
    }

    #[test]
    fn serial_range() {
        assert!(Serial::new(0).is_err());
        assert!(Serial::new(MAX_SERIAL + 1).is_err());
        assert_eq!(Serial::new(MAX_SERIAL).unwrap().get(), MAX_SERIAL);
        assert!(Serial::new(MAX_SERIAL).unwrap().next().is_err());
        let parsed: Result<Serial, _> = serde_json::from_str("18446744073709551615");
        assert!(parsed.is_err());
    }
}
