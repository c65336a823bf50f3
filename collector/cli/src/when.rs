//! The times an operator types: RFC 3339, local wall-clock times, and
//! times relative to now.

use jiff::civil::{DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// Parses `text` as a moment, relative to `now` in `tz` (the local zone):
///
/// - `now`;
/// - RFC 3339: `2026-11-25T03:00:00Z`, `2026-11-25T04:00:00+01:00`;
/// - a local date and time: `2026-11-25 03:00`, `2026-11-25T03:00:00`;
/// - a local time today, or yesterday: `03:00`, `today 03:00`, `yesterday 03:00`;
/// - an age: `-2h`, `2h ago`, `-1d 6h`, `30m ago`.
pub fn parse(text: &str, now: Timestamp, tz: &TimeZone) -> Result<Timestamp, String> {
    let text = text.trim();
    let bad = || {
        format!(
            "cannot read the time {text:?}: write RFC 3339 (2026-11-25T03:00:00Z), a local time \
             (2026-11-25 03:00, yesterday 03:00, 03:00) or an age (-2h, 2h ago)"
        )
    };
    if text == "now" {
        return Ok(now);
    }
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t);
    }
    if let Some(age) = text.strip_prefix('-').or_else(|| text.strip_suffix(" ago")) {
        let age = humantime::parse_duration(age.trim()).map_err(|_| bad())?;
        let age = jiff::SignedDuration::try_from(age).map_err(|_| bad())?;
        return now.checked_sub(age).map_err(|_| bad());
    }
    let today = now.to_zoned_datetime(tz.clone()).date();
    let local = if let Some(rest) = text.strip_prefix("yesterday ") {
        let time: Time = rest.trim().parse().map_err(|_| bad())?;
        today.checked_sub(1.day()).map_err(|_| bad())?.to_datetime(time)
    } else if let Some(rest) = text.strip_prefix("today ") {
        today.to_datetime(rest.trim().parse::<Time>().map_err(|_| bad())?)
    } else if let Ok(datetime) = text.replacen(' ', "T", 1).parse::<DateTime>() {
        datetime
    } else {
        today.to_datetime(text.parse::<Time>().map_err(|_| bad())?)
    };
    Ok(local.to_zoned_datetime(tz.clone()).map_err(|_| bad())?.timestamp())
}

/// The value of a time option, as clap reads it. Time options take values that begin with `-`
/// (`--since -5m`, written as a separate argument: `allow_hyphen_values`), so a forgotten value
/// (`--since --until -1h`) would be read as the time `--until`: such a value is refused here
/// with the fix. The time itself is read later, by [`parse`], against one `now` for every option.
pub fn arg(text: &str) -> Result<String, String> {
    match text.starts_with("--") {
        true => Err(format!(
            "{text:?} is an option, not a time: give the time option a value first (-5m, 2h ago, yesterday 03:00)"
        )),
        false => Ok(text.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-11-25T10:30:00Z".parse().unwrap()
    }

    fn p(text: &str) -> String {
        parse(text, now(), &TimeZone::UTC)
            .map(|t| t.to_string())
            .unwrap_or_else(|e| e)
    }

    #[test]
    fn rfc3339_and_now_are_read_as_they_are() {
        assert_eq!(p("now"), "2026-11-25T10:30:00Z");
        assert_eq!(p("2026-11-24T03:00:00Z"), "2026-11-24T03:00:00Z");
        assert_eq!(p("2026-11-24T04:00:00+01:00"), "2026-11-24T03:00:00Z");
    }

    #[test]
    fn ages_count_back_from_now() {
        assert_eq!(p("-2h"), "2026-11-25T08:30:00Z");
        assert_eq!(p("2h ago"), "2026-11-25T08:30:00Z");
        assert_eq!(p("-1d 6h"), "2026-11-24T04:30:00Z");
        assert_eq!(p("30m ago"), "2026-11-25T10:00:00Z");
    }

    #[test]
    fn ages_as_the_help_writes_them_are_read() {
        assert_eq!(p("-5m"), "2026-11-25T10:25:00Z");
        assert_eq!(p("-1h"), "2026-11-25T09:30:00Z");
        assert_eq!(p("-1h30m"), "2026-11-25T09:00:00Z");
        assert_eq!(p("-2d"), "2026-11-23T10:30:00Z");
        assert_eq!(p("-90s"), "2026-11-25T10:28:30Z");
    }

    #[test]
    fn a_time_option_followed_by_another_option_says_its_value_is_missing() {
        assert_eq!(arg("-5m").as_deref(), Ok("-5m"));
        assert_eq!(arg("2h ago").as_deref(), Ok("2h ago"));
        assert!(arg("--until").unwrap_err().contains("is an option, not a time"));
    }

    #[test]
    fn local_times_use_the_local_zone() {
        assert_eq!(p("03:00"), "2026-11-25T03:00:00Z");
        assert_eq!(p("today 03:00"), "2026-11-25T03:00:00Z");
        assert_eq!(p("yesterday 03:00"), "2026-11-24T03:00:00Z");
        assert_eq!(p("2026-11-01 12:15"), "2026-11-01T12:15:00Z");
        let paris = TimeZone::get("Europe/Paris").unwrap();
        assert_eq!(
            parse("yesterday 03:00", now(), &paris).unwrap().to_string(),
            "2026-11-24T02:00:00Z"
        );
    }

    #[test]
    fn anything_else_says_what_to_write() {
        for bad in ["", "tomorrowish", "-2 parsecs", "25:00", "yesterday noon"] {
            assert!(p(bad).contains("write RFC 3339"), "{bad}: {}", p(bad));
        }
    }
}
