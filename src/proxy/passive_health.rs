//! Passive health for backend servers without an active check (nginx `max_fails`/`fail_timeout`):
//! `max_fails` connect failures in a row mark a server down for `fail_timeout`; connections skip
//! it meanwhile (unless every server is down), and the first connect after that either brings it
//! back (a success) or marks it down again (a failure).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A server's passive state: failures in a row and, once marked down, until when.
#[derive(Debug, Default)]
pub struct PassiveHealth {
    state: Mutex<State>,
}

#[derive(Debug, Default, Clone, Copy)]
struct State {
    failures: u32,
    down_until: Option<Instant>,
}

/// What a recorded connect result changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    None,
    WentDown,
    CameBack,
}

impl PassiveHealth {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether connections should skip this server now (marked down and `fail_timeout` not over).
    pub fn is_resting(&self, now: Instant) -> bool {
        self.lock().down_until.is_some_and(|until| now < until)
    }

    /// Marked down and not brought back by a successful connect yet (the gauge's view; a
    /// resting server past `fail_timeout` is still down until a connect succeeds).
    pub fn is_down(&self) -> bool {
        self.lock().down_until.is_some()
    }

    /// Takes over the state of the same server in the table a reload replaces, so a reload
    /// neither forgets failures nor brings a down server back.
    pub fn carry_from(&self, previous: &PassiveHealth) {
        let previous = *previous.lock();
        *self.lock() = previous;
    }

    /// A connect failed: with `max_fails` in a row (0: never), down for `fail_timeout`.
    pub fn record_failure(&self, max_fails: u32, fail_timeout: Duration, now: Instant) -> Change {
        if max_fails == 0 {
            return Change::None;
        }
        let mut state = self.lock();
        state.failures = state.failures.saturating_add(1);
        if state.failures < max_fails {
            return Change::None;
        }
        let was_down = state.down_until.is_some();
        state.down_until = Some(now + fail_timeout);
        if was_down {
            Change::None
        } else {
            Change::WentDown
        }
    }

    /// A connect succeeded: the failures are forgotten and a down server is up again.
    pub fn record_success(&self) -> Change {
        let mut state = self.lock();
        state.failures = 0;
        match state.down_until.take() {
            Some(_) => Change::CameBack,
            None => Change::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    #[test]
    fn max_fails_failures_in_a_row_rest_the_server_for_fail_timeout() {
        let health = PassiveHealth::default();
        let now = Instant::now();
        assert_eq!(health.record_failure(2, TIMEOUT, now), Change::None);
        assert!(!health.is_resting(now));
        assert_eq!(health.record_failure(2, TIMEOUT, now), Change::WentDown);
        assert!(health.is_resting(now + TIMEOUT / 2));
        assert!(!health.is_resting(now + TIMEOUT), "tried again once fail_timeout is over");
        assert_eq!(health.record_failure(2, TIMEOUT, now + TIMEOUT), Change::None, "still down, no new change");
        assert!(health.is_resting(now + TIMEOUT + TIMEOUT / 2), "a failed retry rests it again");
        assert_eq!(health.record_success(), Change::CameBack);
        assert!(!health.is_resting(now + TIMEOUT + TIMEOUT / 2));
    }

    #[test]
    fn a_success_resets_the_failures_in_a_row() {
        let health = PassiveHealth::default();
        let now = Instant::now();
        health.record_failure(2, TIMEOUT, now);
        assert_eq!(health.record_success(), Change::None);
        assert_eq!(health.record_failure(2, TIMEOUT, now), Change::None);
    }

    #[test]
    fn max_fails_zero_never_marks_down() {
        let health = PassiveHealth::default();
        let now = Instant::now();
        for _ in 0..5 {
            assert_eq!(health.record_failure(0, TIMEOUT, now), Change::None);
        }
        assert!(!health.is_resting(now));
    }
}
