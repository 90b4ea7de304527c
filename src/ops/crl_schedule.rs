//! When to fetch a `crl_urls` CRL next: a pure function of the last outcome, the CRL's
//! nextUpdate, `crl_refresh` and a random draw, so the schedule is tested without clocks or
//! sockets (`crl_fetch.rs` does the I/O).
//!
//! After a fresh CRL: at most `crl_refresh` later, and before its nextUpdate when that comes
//! first; always 5 to 10 % early, so proxies started together do not fetch together. After a
//! failed fetch, or a CRL already past its nextUpdate: 5 s, then doubling, never longer than
//! `crl_refresh`, with the same jitter.

use std::time::Duration;

/// First retry after a failure: a CA's web server restarting is usually back within seconds.
pub const FIRST_RETRY: Duration = Duration::from_secs(5);
/// The least time between two fetches, whatever a CRL's dates say: never a busy loop.
pub const MIN_DELAY: Duration = Duration::from_secs(1);
/// How early a fetch may come, as a share of its delay: between half of this and all of it.
const JITTER_SHARE: f64 = 0.1;
/// Doublings of [`FIRST_RETRY`] past which the back-off is `crl_refresh` anyway (5 s · 2¹⁶ > 3 d).
const MAX_DOUBLINGS: u32 = 16;

/// What the last fetch gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A CRL whose nextUpdate (Unix seconds, if it has one) is still ahead.
    Fresh { next_update: Option<i64> },
    /// No fresh CRL for this many fetches in a row (failed, or past nextUpdate).
    Retry { attempts: u32 },
}

/// The delay until the next fetch, for a fetch finished at Unix time `now`; `draw` is a random
/// number in [0, 1).
pub fn next_fetch_in(outcome: Outcome, now: i64, refresh: Duration, draw: f64) -> Duration {
    let base = match outcome {
        Outcome::Fresh { next_update: Some(next_update) } if next_update > now => {
            let until = Duration::from_secs(u64::try_from(next_update - now).unwrap_or(0));
            refresh.min(until)
        }
        Outcome::Fresh { .. } => refresh,
        Outcome::Retry { attempts } => back_off(attempts).min(refresh),
    };
    let early = JITTER_SHARE * (0.5 + draw.clamp(0.0, 1.0) / 2.0);
    base.mul_f64(1.0 - early).max(MIN_DELAY)
}

/// [`FIRST_RETRY`] doubled per attempt after the first.
fn back_off(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(MAX_DOUBLINGS);
    FIRST_RETRY.saturating_mul(1 << doublings)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;
    const REFRESH: Duration = Duration::from_secs(15 * 60);

    fn secs(delay: Duration) -> f64 {
        delay.as_secs_f64()
    }

    #[test]
    fn a_fresh_crl_is_fetched_again_within_crl_refresh_and_5_to_10_percent_early() {
        let far = Outcome::Fresh { next_update: Some(NOW + 7 * 86_400) };
        assert_eq!(secs(next_fetch_in(far, NOW, REFRESH, 0.0)), 900.0 * 0.95);
        assert!((secs(next_fetch_in(far, NOW, REFRESH, 0.999_999)) - 900.0 * 0.9).abs() < 0.01);
        let none = Outcome::Fresh { next_update: None };
        assert_eq!(next_fetch_in(none, NOW, REFRESH, 0.0), next_fetch_in(far, NOW, REFRESH, 0.0));
    }

    #[test]
    fn a_next_update_before_the_refresh_brings_the_fetch_before_it() {
        let soon = Outcome::Fresh { next_update: Some(NOW + 100) };
        for draw in [0.0, 0.5, 0.99] {
            let delay = secs(next_fetch_in(soon, NOW, REFRESH, draw));
            assert!((90.0..=95.0).contains(&delay), "{delay} s for draw {draw}");
        }
    }

    #[test]
    fn failures_back_off_by_doubling_up_to_crl_refresh() {
        let delays: Vec<f64> =
            (1..=12).map(|attempts| secs(next_fetch_in(Outcome::Retry { attempts }, NOW, REFRESH, 0.0))).collect();
        assert_eq!(delays[0], 5.0 * 0.95);
        assert_eq!(delays[1], 10.0 * 0.95);
        assert_eq!(delays[2], 20.0 * 0.95);
        assert!(delays.windows(2).all(|pair| pair[0] <= pair[1]), "{delays:?}");
        assert_eq!(delays[11], 900.0 * 0.95, "capped at crl_refresh");
        let huge = next_fetch_in(Outcome::Retry { attempts: u32::MAX }, NOW, REFRESH, 0.0);
        assert_eq!(secs(huge), 900.0 * 0.95);
    }

    #[test]
    fn a_short_refresh_caps_the_retry_and_nothing_is_below_one_second() {
        let one_second = Duration::from_secs(1);
        assert_eq!(next_fetch_in(Outcome::Retry { attempts: 1 }, NOW, one_second, 0.5), MIN_DELAY);
        let past = Outcome::Fresh { next_update: Some(NOW - 10) };
        assert_eq!(next_fetch_in(past, NOW, one_second, 0.0), MIN_DELAY);
        let now_due = Outcome::Fresh { next_update: Some(NOW + 1) };
        assert_eq!(next_fetch_in(now_due, NOW, REFRESH, 0.9), MIN_DELAY);
    }
}
