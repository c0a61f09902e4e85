//! When a presigned URL stops working: SigV4's `X-Amz-Date` (`YYYYMMDDTHHMMSSZ`) plus
//! `X-Amz-Expires` (seconds), or SigV2's `Expires` (Unix seconds), read from its query.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The moment `url` expires; `None` when its query says nothing readable about it.
pub fn expiry(url: &str) -> Option<SystemTime> {
    let query = url.split_once('?')?.1;
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    };
    if let (Some(date), Some(expires)) = (param("X-Amz-Date"), param("X-Amz-Expires")) {
        let signed = parse_amz_date(date)?;
        let expires: u64 = expires.parse().ok()?;
        return signed.checked_add(Duration::from_secs(expires));
    }
    let unix: u64 = param("Expires")?.parse().ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(unix))
}

/// `20261201T194500Z` as a moment.
fn parse_amz_date(text: &str) -> Option<SystemTime> {
    let bytes = text.as_bytes();
    if bytes.len() != 16 || bytes[8] != b'T' || bytes[15] != b'Z' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (year, month, day) = (number(0..4)?, number(4..6)?, number(6..8)?);
    let (hour, minute, second) = (number(9..11)?, number(11..13)?, number(13..15)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second;
    UNIX_EPOCH.checked_add(Duration::from_secs(u64::try_from(seconds).ok()?))
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(t: SystemTime) -> u64 {
        t.duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn sigv4_date_plus_expires() {
        let url = "http://s3/b/k?partNumber=1&uploadId=x&X-Amz-Algorithm=AWS4-HMAC-SHA256\
                   &X-Amz-Date=20261201T194500Z&X-Amz-Expires=3600&X-Amz-Signature=ab";
        // 2026-12-01T19:45:00Z is 1796154300 (date -d @1796154300 -u).
        assert_eq!(expiry(url).map(unix), Some(1_796_154_300 + 3_600));
    }

    #[test]
    fn the_epoch_and_leap_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
    }

    #[test]
    fn sigv2_expires_and_nothing() {
        assert_eq!(
            expiry("http://s3/b/k?AWSAccessKeyId=a&Expires=1700000000&Signature=s").map(unix),
            Some(1_700_000_000)
        );
        assert_eq!(expiry("http://s3/b/k?partNumber=1"), None);
        assert_eq!(expiry("http://s3/b/k"), None);
        assert_eq!(
            expiry("http://s3/b/k?X-Amz-Date=2026&X-Amz-Expires=60"),
            None
        );
    }
}
