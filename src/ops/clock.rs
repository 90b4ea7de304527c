//! The wall clock as the lifecycle tasks (CRL fetches, ACME certificates) compare it with
//! certificate and CRL dates: Unix seconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Now, Unix seconds (0 for a clock before 1970).
pub fn unix_now() -> i64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH);
    now.map_or(0, |since| i64::try_from(since.as_secs()).unwrap_or(i64::MAX))
}

/// `duration` in whole seconds, as dates are added to (saturating).
pub fn seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}
