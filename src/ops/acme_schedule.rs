//! When an ACME certificate is renewed and when a failed attempt is retried: pure functions (the
//! caller passes the clock and the random draw), like `crl_schedule.rs`.

use std::time::Duration;

use crate::ops::clock::seconds;

/// The first retry after the CA could not be reached: it saw nothing, so trying again soon costs
/// it nothing, and a proxy that started before its network was up gets its certificate quickly.
pub const UNREACHABLE_FIRST_RETRY: Duration = Duration::from_secs(2);
/// The longest wait between attempts to reach the CA.
pub const UNREACHABLE_MAX_RETRY: Duration = Duration::from_secs(10 * 60);
/// The first retry after the CA said no (a problem document, a failed validation): CAs count those
/// (Let's Encrypt allows 5 failed validations per name and hour), so a minute, then doubling.
pub const REFUSED_FIRST_RETRY: Duration = Duration::from_secs(60);
/// The longest wait between attempts the CA refused.
pub const REFUSED_MAX_RETRY: Duration = Duration::from_secs(6 * 3600);
/// The longest sleep before the stored certificate is looked at again (a clock jump, a suspended
/// host, an ARI window that moved).
pub const MAX_SLEEP: Duration = Duration::from_secs(24 * 3600);
/// The least time between two issuances of one certificate by one task.
pub const MIN_RENEWAL_GAP: Duration = Duration::from_secs(1);
/// ± this share of a retry's wait is random, so a fleet that failed together does not retry together.
const JITTER: f64 = 0.1;

/// How an attempt failed, for its back-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Nothing reached the CA, or its answer could not be read.
    Unreachable,
    /// The CA answered and refused, or could not validate.
    Refused,
}

/// Unix seconds when a certificate valid from `not_before` to `not_after` is renewed:
/// `renew_before` its expiry, but not before half its lifetime (a `renew_before` longer than a
/// short-lived certificate's lifetime would otherwise renew it again at once, forever).
pub fn renew_at(not_before: i64, not_after: i64, renew_before: Duration) -> i64 {
    let by_setting = not_after.saturating_sub(seconds(renew_before));
    let half_lifetime = not_before.saturating_add(not_after.saturating_sub(not_before) / 2);
    by_setting.max(half_lifetime)
}

/// Unix seconds before which a certificate issued at `issued_at` (valid `not_before` to
/// `not_after`) is not renewed again: a tenth of its lifetime, at least [`MIN_RENEWAL_GAP`] —
/// whatever a fast clock, a `renew_before` or an ARI window in the past say.
pub fn earliest_renewal(issued_at: i64, not_before: i64, not_after: i64) -> i64 {
    let tenth = not_after.saturating_sub(not_before) / 10;
    issued_at.saturating_add(tenth.max(seconds(MIN_RENEWAL_GAP)))
}

/// A moment in the CA's suggested renewal window `start..end` (RFC 9773 §4.2: uniformly at
/// random, so the CA's clients spread out), `draw` in `[0, 1)`.
pub fn in_window(start: i64, end: i64, draw: f64) -> i64 {
    let width = end.saturating_sub(start).max(0);
    start.saturating_add((width as f64 * draw.clamp(0.0, 1.0)) as i64)
}

/// The wait after the `attempts`-th failure in a row (1 = the first): doubling from the kind's
/// first retry up to its cap, ±[`JITTER`], and never shorter than the CA's `Retry-After`.
pub fn retry_in(failure: Failure, attempts: u32, retry_after: Option<Duration>, draw: f64) -> Duration {
    let (first, max) = match failure {
        Failure::Unreachable => (UNREACHABLE_FIRST_RETRY, UNREACHABLE_MAX_RETRY),
        Failure::Refused => (REFUSED_FIRST_RETRY, REFUSED_MAX_RETRY),
    };
    let doublings = attempts.saturating_sub(1).min(31);
    let backoff = first.saturating_mul(1 << doublings).min(max);
    let jittered = backoff.mul_f64(1.0 - JITTER + 2.0 * JITTER * draw.clamp(0.0, 1.0));
    jittered.max(retry_after.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    #[test]
    fn renewal_is_renew_before_expiry_but_not_before_half_the_lifetime() {
        let thirty_days = Duration::from_secs(30 * DAY as u64);
        assert_eq!(renew_at(0, 90 * DAY, thirty_days), 60 * DAY, "a 90-day certificate");
        assert_eq!(renew_at(0, 6 * DAY, thirty_days), 3 * DAY, "a 6-day certificate renews at 3 days");
        assert_eq!(renew_at(1000, 1030, Duration::from_secs(25)), 1015, "30 s, renew_before 25 s");
        assert_eq!(renew_at(0, 90 * DAY, Duration::MAX), 45 * DAY);
    }

    #[test]
    fn a_certificate_just_issued_waits_a_tenth_of_its_lifetime() {
        assert_eq!(earliest_renewal(1000, 1000, 1000 + 90 * DAY), 1000 + 9 * DAY);
        assert_eq!(earliest_renewal(1000, 990, 1020), 1003, "30 s: 3 s");
        assert_eq!(earliest_renewal(1000, 1000, 1000), 1001, "no lifetime: the least gap");
    }

    #[test]
    fn a_window_moment_lies_in_the_window() {
        assert_eq!(in_window(100, 200, 0.0), 100);
        assert_eq!(in_window(100, 200, 0.5), 150);
        assert!(in_window(100, 200, 0.999) < 200);
        assert_eq!(in_window(200, 100, 0.5), 200, "an inverted window is its start");
    }

    #[test]
    fn retries_double_to_their_cap_with_jitter_and_respect_retry_after() {
        let exact = |failure, attempts| retry_in(failure, attempts, None, 0.5);
        assert_eq!(exact(Failure::Unreachable, 1), Duration::from_secs(2));
        assert_eq!(exact(Failure::Unreachable, 2), Duration::from_secs(4));
        assert_eq!(exact(Failure::Unreachable, 3), Duration::from_secs(8));
        assert_eq!(exact(Failure::Unreachable, 40), UNREACHABLE_MAX_RETRY);
        assert_eq!(exact(Failure::Refused, 1), Duration::from_secs(60));
        assert_eq!(exact(Failure::Refused, 100), REFUSED_MAX_RETRY);
        let low = retry_in(Failure::Refused, 1, None, 0.0);
        let high = retry_in(Failure::Refused, 1, None, 0.999_999);
        assert!(low >= Duration::from_secs(54) && high <= Duration::from_secs(66), "{low:?} {high:?}");
        let told = Duration::from_secs(3600);
        assert_eq!(retry_in(Failure::Refused, 1, Some(told), 0.5), told, "Retry-After wins when later");
        assert_eq!(retry_in(Failure::Refused, 20, Some(Duration::from_secs(1)), 0.5), REFUSED_MAX_RETRY);
    }
}
