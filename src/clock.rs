//! Calendar dates for the dashboard, without a date crate.
//!
//! The `time` crate is compiled only into the TLS build (through rcgen; the certificates'
//! dates use it in `tls.rs`); the dashboard is in every build, so it keeps this one function.

/// (year, month, day) of a count of days since 1970-01-01 (proleptic Gregorian, UTC).
fn civil_date(days: i64) -> (i32, u8, u8) {
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year as i32, month as u8, day as u8)
}

/// `YYYY-MM-DD HH:MM:SS.mmm` (UTC) of epoch milliseconds.
pub fn utc_millis(millis: u64) -> String {
    let secs = millis / 1000;
    let (y, m, d) = civil_date((secs / 86_400) as i64);
    let in_day = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        in_day / 3600,
        in_day % 3600 / 60,
        in_day % 60,
        millis % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(59), (1970, 3, 1));
        assert_eq!(civil_date(11_016), (2000, 2, 29));
        assert_eq!(civil_date(19_723), (2024, 1, 1));
        assert_eq!(civil_date(-1), (1969, 12, 31));
    }

    #[test]
    fn utc_times() {
        assert_eq!(utc_millis(0), "1970-01-01 00:00:00.000");
        assert_eq!(utc_millis(1_704_067_199_999), "2023-12-31 23:59:59.999");
    }
}
