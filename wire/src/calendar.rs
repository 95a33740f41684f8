//! Gregorian dates as day counts, for every place that turns times into dates.
//!
//! Audit exports, access reports, handover packets, working-day deadlines and
//! the CLI's date arguments all convert between "days since 1970-01-01" and a
//! year, month and day. One pair of functions (Howard Hinnant's algorithms, on
//! the proleptic Gregorian calendar, counting 400-year eras from 1 March so that
//! leap days fall at the end of a year) serves them all.

/// Milliseconds in a day.
pub const DAY_MS: u64 = 86_400_000;

/// Days since 1970-01-01 of a date (negative before it). The month is 1 to 12.
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The year, month (1 to 12) and day (1 to 31) of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 } as u32;
    (year_of_era + era * 400 + i64::from(month <= 2), month, day)
}

/// The date of a moment given in milliseconds since the Unix epoch (UTC).
pub fn civil_from_ms(at_ms: u64) -> (i64, u32, u32) {
    civil_from_days((at_ms / DAY_MS) as i64)
}

/// Milliseconds since the Unix epoch as an RFC 3339 UTC time with milliseconds (`2026-12-02T04:18:25.000Z`),
/// the form audit exports and the SDK's witnessed head use.
pub fn format_ms(at_ms: u64) -> String {
    let seconds = at_ms / 1000;
    let (year, month, day) = civil_from_ms(at_ms);
    let second_of_day = seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60,
        at_ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_dates_convert_both_ways() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2026, 11, 23), 20_780);
        assert_eq!(civil_from_days(20_780), (2026, 11, 23));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        for days in [-800_000, -1, 0, 59, 60, 11_016, 20_780, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, i64::from(m), i64::from(d)), days);
        }
        assert_eq!(civil_from_ms(1_700_000_000_123), (2023, 11, 14));
    }
}
