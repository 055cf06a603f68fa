//! UTC timestamps.

use std::time::SystemTime;

/// `YYYY-mm-dd_HH_MM_SS` in UTC, as Ganeti names quarantined chroots.
pub(crate) fn utc_stamp(t: SystemTime) -> String {
    // RFC 3339 (`2026-11-27T17:07:34Z`) with Ganeti's separators.
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .trim_end_matches('Z')
        .replace(['T', ':'], "_")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn epoch_is_1970() {
        assert_eq!(utc_stamp(UNIX_EPOCH), "1970-01-01_00_00_00");
    }

    #[test]
    fn leap_day_2024() {
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096);
        assert_eq!(utc_stamp(t), "2024-02-29_12_34_56");
    }
}
