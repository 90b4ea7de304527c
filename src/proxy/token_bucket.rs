//! `handshakes_per_second` / `handshake_burst`: a token bucket, kept as the generic cell rate
//! algorithm (GCRA) — one instant per bucket, the "theoretical arrival time" of the next token,
//! instead of a token count refilled by a timer. A caller reserves a token and learns how long to
//! wait for it; a token that would come later than the caller may wait is refused at once, so a
//! client over the rate costs one lock and one comparison, never a TLS handshake.
//!
//! The bucket holds `burst` tokens and refills one every `1 / per_second`: a burst of `burst`
//! passes at once, then clients pass at the rate. Pure: the caller passes the clock.

use std::time::{Duration, Instant};

/// A validated rate: tokens per second and the bucket's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// At least 1.
    pub per_second: u32,
    /// At least 1: how many pass at once after a quiet spell.
    pub burst: u32,
}

/// The bucket's state for one [`Rate`].
#[derive(Debug)]
pub struct TokenBucket {
    rate: Rate,
    /// Time between two tokens.
    interval: Duration,
    /// How far ahead of now the next token's time may be and still pass at once: `burst - 1`
    /// intervals.
    tolerance: Duration,
    /// When the bucket is full again (the next token's theoretical arrival time).
    full_at: Instant,
}

/// A token reserved: pass after this wait (zero when one was in the bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reserved {
    pub wait: Duration,
}

/// No token within the wait the caller allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted;

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: Rate, now: Instant) -> TokenBucket {
        let interval = Duration::from_secs(1) / rate.per_second.max(1);
        let tolerance = interval * rate.burst.max(1).saturating_sub(1);
        TokenBucket { rate, interval, tolerance, full_at: now }
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Takes the next token if it comes within `max_wait` of `now`; the wait is the caller's to
    /// sleep. A refused caller takes nothing, so refusals do not push later clients back.
    pub fn reserve(&mut self, now: Instant, max_wait: Duration) -> Result<Reserved, Exhausted> {
        let arrival = self.full_at.max(now);
        // The token passes at `arrival - tolerance`, or now if that is already past.
        let wait = arrival.saturating_duration_since(now).saturating_sub(self.tolerance);
        if wait > max_wait {
            return Err(Exhausted);
        }
        self.full_at = arrival + self.interval;
        Ok(Reserved { wait })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_WAIT: Duration = Duration::ZERO;

    fn bucket(per_second: u32, burst: u32) -> (TokenBucket, Instant) {
        let now = Instant::now();
        (TokenBucket::new(Rate { per_second, burst }, now), now)
    }

    #[test]
    fn a_full_bucket_passes_its_burst_at_once_then_refuses() {
        let (mut bucket, now) = bucket(10, 5);
        for _ in 0..5 {
            assert_eq!(bucket.reserve(now, NO_WAIT), Ok(Reserved { wait: Duration::ZERO }));
        }
        assert_eq!(bucket.reserve(now, NO_WAIT), Err(Exhausted));
    }

    #[test]
    fn tokens_come_back_at_the_rate() {
        let (mut bucket, now) = bucket(10, 1);
        assert!(bucket.reserve(now, NO_WAIT).is_ok());
        assert_eq!(bucket.reserve(now + Duration::from_millis(99), NO_WAIT), Err(Exhausted));
        assert!(bucket.reserve(now + Duration::from_millis(100), NO_WAIT).is_ok());
        // 1 s later the bucket holds one token again (its burst), not ten.
        let later = now + Duration::from_millis(1100);
        assert!(bucket.reserve(later, NO_WAIT).is_ok());
        assert_eq!(bucket.reserve(later, NO_WAIT), Err(Exhausted));
    }

    #[test]
    fn a_caller_may_wait_for_a_token_within_its_bound() {
        let (mut bucket, now) = bucket(4, 1);
        assert!(bucket.reserve(now, NO_WAIT).is_ok());
        // The next tokens come at 250 ms and 500 ms: each waiter learns its own wait.
        assert_eq!(bucket.reserve(now, Duration::from_secs(1)), Ok(Reserved { wait: Duration::from_millis(250) }));
        assert_eq!(bucket.reserve(now, Duration::from_secs(1)), Ok(Reserved { wait: Duration::from_millis(500) }));
        assert_eq!(bucket.reserve(now, Duration::from_millis(600)), Err(Exhausted));
    }

    #[test]
    fn refused_callers_take_no_token() {
        let (mut bucket, now) = bucket(10, 1);
        assert!(bucket.reserve(now, NO_WAIT).is_ok());
        for _ in 0..1000 {
            assert_eq!(bucket.reserve(now, NO_WAIT), Err(Exhausted));
        }
        assert!(bucket.reserve(now + Duration::from_millis(100), NO_WAIT).is_ok());
    }

    #[test]
    fn over_a_second_the_rate_plus_the_burst_pass() {
        let (mut bucket, start) = bucket(100, 20);
        let passed = (0..1000)
            .map(|ms| start + Duration::from_millis(ms))
            .flat_map(|now| std::iter::repeat_n(now, 5))
            .filter(|&now| bucket.reserve(now, NO_WAIT).is_ok())
            .count();
        // 20 at once, then one per 10 ms for the rest of the second.
        assert!((118..=121).contains(&passed), "{passed} passed");
    }
}
