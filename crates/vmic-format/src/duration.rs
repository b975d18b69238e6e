//! Human durations such as `90s`, `12h`, `30d`, `2w`.

use crate::error::{Error, Result};

/// Parse a duration into seconds. One integer and one unit, nothing else:
/// an expiry is security-relevant and must not be guessed.
pub fn parse_seconds(text: &str) -> Result<u64> {
    let text = text.trim();
    let bad = || {
        Error::input(format!(
            "invalid duration {text:?}: use a whole number and a unit, e.g. 90s, 45m, 12h, 30d, 2w"
        ))
    };
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    let secs = n.checked_mul(scale).ok_or_else(bad)?;
    if secs == 0 || secs > 10 * 366 * 86_400 {
        return Err(Error::input(format!(
            "duration {text:?} is out of range (more than 0 and at most about 10 years)"
        )));
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_seconds("90s").unwrap(), 90);
        assert_eq!(parse_seconds("12h").unwrap(), 43_200);
        assert_eq!(parse_seconds("30d").unwrap(), 2_592_000);
        for bad in [
            "",
            "d",
            "30",
            "3.5d",
            "-1d",
            "30 days",
            "0s",
            "99999999999w",
        ] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
    }
}
