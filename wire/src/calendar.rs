//! Dates and times of day for every place that turns moments into them.
//!
//! Audit exports, access reports, handover packets, working-day deadlines and
//! the CLI's date arguments all convert between "days since 1970-01-01" (or
//! milliseconds since the Unix epoch) and a calendar date. These functions do
//! it through the `time` crate, held to the years it represents (±9999), so
//! that no caller does calendar arithmetic of its own.

use time::macros::format_description;
use time::{Date, Month, OffsetDateTime};

/// Milliseconds in a day.
pub const DAY_MS: u64 = 86_400_000;

/// The Julian day number of 1970-01-01.
const EPOCH_JULIAN_DAY: i64 = 2_440_588;

/// Days since 1970-01-01 of a date (negative before it), or `None` when there is no such date
/// (month 13, 30 February, a year beyond ±9999). The month is 1 to 12.
pub fn days_from_civil(year: i64, month: i64, day: i64) -> Option<i64> {
    let month = Month::try_from(u8::try_from(month).ok()?).ok()?;
    let date = Date::from_calendar_date(i32::try_from(year).ok()?, month, u8::try_from(day).ok()?).ok()?;
    Some(i64::from(date.to_julian_day()) - EPOCH_JULIAN_DAY)
}

/// The date of a day count since 1970-01-01, held within the years `time` represents.
fn date_of_days(days: i64) -> Date {
    let (first, last) = (i64::from(Date::MIN.to_julian_day()), i64::from(Date::MAX.to_julian_day()));
    let julian = days.saturating_add(EPOCH_JULIAN_DAY).clamp(first, last);
    i32::try_from(julian).ok().and_then(|j| Date::from_julian_day(j).ok()).unwrap_or(Date::MAX)
}

/// The year, month (1 to 12) and day (1 to 31) of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let date = date_of_days(days);
    (i64::from(date.year()), u32::from(u8::from(date.month())), u32::from(date.day()))
}

/// The date of a moment given in milliseconds since the Unix epoch (UTC).
pub fn civil_from_ms(at_ms: u64) -> (i64, u32, u32) {
    civil_from_days((at_ms / DAY_MS) as i64)
}

/// A moment in milliseconds since the Unix epoch, in UTC; the last representable one beyond.
fn moment(at_ms: u64) -> OffsetDateTime {
    let nanos = i128::from(at_ms) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or_else(|_| date_of_days(i64::MAX).midnight().assume_utc())
}

/// Milliseconds since the Unix epoch as an RFC 3339 UTC time with milliseconds (`2026-12-02T04:18:25.000Z`),
/// the form audit exports and the SDK's witnessed head use.
pub fn format_ms(at_ms: u64) -> String {
    let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    moment(at_ms).format(&format).unwrap_or_default()
}

/// A moment as `YYYY-MM-DD HH:MM UTC`, as reports and the desk show it to people.
pub fn format_minutes(at_ms: u64) -> String {
    moment(at_ms).format(format_description!("[year]-[month]-[day] [hour]:[minute] UTC")).unwrap_or_default()
}

/// The same moment `months` calendar months later (UTC), on the month's last day when it is shorter:
/// 31 January plus one month is 28 or 29 February. Held at the last representable day.
pub fn add_months(at_ms: u64, months: u32) -> u64 {
    let at = moment(at_ms);
    let date = at.date();
    let index = i64::from(date.year()) * 12 + i64::from(u8::from(date.month())) - 1 + i64::from(months);
    let (Ok(year), Ok(month)) = (i32::try_from(index.div_euclid(12)), u8::try_from(index.rem_euclid(12) + 1)) else {
        return u64::MAX;
    };
    let Ok(month) = Month::try_from(month) else { return u64::MAX };
    let day = date.day().min(time::util::days_in_month(month, year));
    match Date::from_calendar_date(year, month, day) {
        Ok(later) => {
            let nanos = later.with_time(at.time()).assume_utc().unix_timestamp_nanos() / 1_000_000;
            u64::try_from(nanos).unwrap_or(u64::MAX)
        }
        Err(_) => u64::MAX,
    }
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn format_seconds(secs: i64) -> String {
    let at = OffsetDateTime::from_unix_timestamp(secs)
        .unwrap_or_else(|_| date_of_days(secs.signum() * i64::MAX).midnight().assume_utc());
    at.format(format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_dates_convert_both_ways() {
        assert_eq!(days_from_civil(1970, 1, 1), Some(0));
        assert_eq!(days_from_civil(2026, 11, 23), Some(20_780));
        assert_eq!(days_from_civil(2026, 2, 30), None);
        assert_eq!(days_from_civil(2026, 13, 1), None);
        assert_eq!(civil_from_days(20_780), (2026, 11, 23));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        for days in [-800_000, -1, 0, 59, 60, 11_016, 20_780, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, i64::from(m), i64::from(d)), Some(days));
        }
        assert_eq!(civil_from_ms(1_700_000_000_123), (2023, 11, 14));
        assert_eq!(civil_from_days(i64::MAX), (9999, 12, 31), "held to the last representable day");
    }

    #[test]
    fn months_are_added_on_the_calendar() {
        let ms = |y, m, d| days_from_civil(y, m, d).unwrap() as u64 * DAY_MS;
        assert_eq!(add_months(ms(2026, 1, 31), 1), ms(2026, 2, 28));
        assert_eq!(add_months(ms(2024, 1, 31), 1), ms(2024, 2, 29));
        assert_eq!(add_months(ms(2026, 3, 16), 12), ms(2027, 3, 16));
        assert_eq!(add_months(ms(2026, 11, 30) + 5, 15), ms(2028, 2, 29) + 5);
        assert_eq!(add_months(ms(9999, 12, 1), 1), u64::MAX);
    }

    #[test]
    fn moments_are_formatted_in_utc() {
        assert_eq!(format_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(format_minutes(1_700_000_000_123), "2023-11-14 22:13 UTC");
        assert_eq!(format_seconds(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(format_ms(u64::MAX), "9999-12-31T00:00:00.000Z");
    }
}
