//! Time helpers shared by the collector and its clients.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// `t - d`, or the earliest representable instant when that is before it.
pub fn before(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_sub(d).ok())
        .unwrap_or(Timestamp::MIN)
}

/// A skew for people, signed, in its two largest units, truncated:
/// `+45s`, `-12m05s`, `+2h03m`, `+365d00h`.
pub fn human_skew(skew_ms: i64) -> String {
    let sign = if skew_ms < 0 { '-' } else { '+' };
    let s = skew_ms.unsigned_abs() / 1000;
    let (d, h, m) = (s / 86_400, s / 3600 % 24, s / 60 % 60);
    match s {
        0..60 => format!("{sign}{s}s"),
        60..3600 => format!("{sign}{m}m{:02}s", s % 60),
        3600..86_400 => format!("{sign}{h}h{m:02}m"),
        _ => format!("{sign}{d}d{h:02}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YEAR: i64 = 365 * 86_400;

    #[test]
    fn skews_read_in_their_two_largest_units() {
        assert_eq!(human_skew(45_900), "+45s");
        assert_eq!(human_skew(-45_000), "-45s");
        assert_eq!(human_skew(725_000), "+12m05s");
        assert_eq!(human_skew(7_380_000), "+2h03m");
        assert_eq!(human_skew(-(YEAR * 1000 + 3_600_000)), "-365d01h");
        assert_eq!(human_skew(0), "+0s");
    }

    #[test]
    fn before_saturates_at_the_earliest_instant() {
        assert_eq!(before(Timestamp::MIN, Duration::from_secs(1)), Timestamp::MIN);
        assert_eq!(before(Timestamp::UNIX_EPOCH, Duration::MAX), Timestamp::MIN);
        assert_eq!(
            before(Timestamp::from_second(100).unwrap(), Duration::from_secs(40)),
            Timestamp::from_second(60).unwrap()
        );
    }
}
