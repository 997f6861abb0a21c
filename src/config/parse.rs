//! Parsing helpers of validation: [`parse_duration`], the [`IntRule`] and [`DurationRule`]
//! a numeric key is checked against, and the [`Checker`] that applies them and collects
//! every error instead of stopping at the first.

use std::time::Duration;

use super::error::DurationError;

/// Parses a duration such as `250ms`, `30s`, `5m`, `2h`, `7d`.
///
/// # Errors
/// A [`DurationError`] saying what was expected.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| DurationError::NotANumber(text.to_string()))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        "" => return Err(DurationError::NoUnit(text.to_string())),
        other => {
            return Err(DurationError::UnknownUnit(
                text.to_string(),
                other.to_string(),
            ));
        }
    };
    if !secs.is_finite() || secs > 10.0 * 365.0 * 86400.0 {
        return Err(DurationError::TooLarge(text.to_string()));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `d` in the largest unit that writes it whole (`200ms`, `30s`, `5m`, `7d`), as
/// [`parse_duration`] reads it back.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms > 0 && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Default and inclusive bounds of an integer key.
#[derive(Debug, Clone, Copy)]
pub(super) struct IntRule {
    /// Used when the key is absent (or invalid, while errors are collected).
    pub default: i64,
    /// Smallest allowed value.
    pub min: i64,
    /// Largest allowed value.
    pub max: i64,
}

impl IntRule {
    /// The rule of a key defaulting to `default` within `min..=max`.
    pub(super) const fn new(default: i64, min: i64, max: i64) -> IntRule {
        IntRule { default, min, max }
    }
}

/// Default and lower bound of a duration key.
#[derive(Debug, Clone, Copy)]
pub(super) struct DurationRule {
    /// Used when the key is absent (or invalid, while errors are collected).
    pub default: Duration,
    /// Shortest allowed value.
    pub min: Duration,
}

impl DurationRule {
    /// The rule of a key defaulting to `default`, at least `min`.
    pub(super) const fn new(default: Duration, min: Duration) -> DurationRule {
        DurationRule { default, min }
    }
}

/// Collects validation errors; every check returns a usable value (the default when the
/// input is bad) so validation goes on and reports every problem at once.
#[derive(Debug, Default)]
pub(super) struct Checker {
    /// Messages so far, each starting with its key.
    pub errors: Vec<String>,
}

impl Checker {
    /// Records `message`.
    pub fn push(&mut self, message: String) {
        self.errors.push(message);
    }

    /// The duration at `key`, checked against `rule`.
    pub fn duration(&mut self, key: &str, raw: Option<&str>, rule: DurationRule) -> Duration {
        match raw.map(parse_duration) {
            None => rule.default,
            Some(Ok(d)) if d >= rule.min => d,
            Some(Ok(_)) => {
                self.push(format!("{key}: must be at least {:?}", rule.min));
                rule.default
            }
            Some(Err(e)) => {
                let leaf = key.rsplit('.').next().unwrap_or(key);
                let example = format_duration(rule.default);
                self.push(format!("{key}: {e}; e.g. {leaf} = \"{example}\""));
                rule.default
            }
        }
    }

    /// The integer at `key`, checked against `rule`.
    pub fn int(&mut self, key: &str, raw: Option<i64>, rule: IntRule) -> i64 {
        let IntRule { default, min, max } = rule;
        match raw {
            None => default,
            Some(v) if (min..=max).contains(&v) => v,
            Some(v) => {
                self.push(format!("{key}: {v} is out of range ({min}..={max})"));
                default
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn formatted_durations_read_back() {
        for (d, text) in [
            (200, "200ms"),
            (30_000, "30s"),
            (300_000, "5m"),
            (604_800_000, "7d"),
        ] {
            assert_eq!(format_duration(Duration::from_millis(d)), text);
            assert_eq!(parse_duration(text).unwrap(), Duration::from_millis(d));
        }
    }

    #[test]
    fn duration_errors_keep_their_text() {
        assert_eq!(
            parse_duration("fast").unwrap_err().to_string(),
            "`fast` is not a duration (use e.g. 250ms, 30s, 5m, 2h, 7d)"
        );
        assert_eq!(
            parse_duration("5").unwrap_err().to_string(),
            "`5` has no unit (use ms, s, m, h or d)"
        );
        assert_eq!(
            parse_duration("5x").unwrap_err().to_string(),
            "`5x` has an unknown unit `x` (use ms, s, m, h or d)"
        );
        assert_eq!(
            parse_duration("99999999999d").unwrap_err().to_string(),
            "`99999999999d` is too large"
        );
    }
}
