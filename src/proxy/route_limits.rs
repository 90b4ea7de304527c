//! A route's own limits (`routes[].limits`), never looser than the proxy's: open connections,
//! handshakes in progress (the fair share of [`handshake_gate`](crate::proxy::handshake_gate)) and
//! the handshake rate — on terminate routes the TLS handshakes snigate does, on passthrough and tcp
//! routes the new sessions it opens to the backend (each a handshake the backend does).
//!
//! [`RouteAdmission`] holds what these limits count, by route name, so a reload keeps the counts
//! and the buckets of the routes it keeps. A route without a limit costs nothing here: no lock,
//! no entry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::metrics::close_cause::{CloseCause, MqttRefusal};
use crate::proxy::mqtt::connack;
use crate::proxy::token_bucket::{Rate, TokenBucket};

/// The validated `routes[].limits`; `None`: only the proxy's limit applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteLimits {
    pub max_connections: Option<usize>,
    /// Terminate routes only.
    pub max_handshakes: Option<usize>,
    /// `handshakes_per_second` with `handshake_burst` (default: one second's worth).
    pub rate: Option<Rate>,
}

/// Which limit refused a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitRefusal {
    /// The route's `max_connections`.
    Connections,
    /// No token of the route's `handshakes_per_second` within the wait.
    RouteRate,
    /// No token of the proxy's `limits.handshakes_per_second` within the wait.
    ProxyRate,
}

impl LimitRefusal {
    pub fn cause(self) -> CloseCause {
        match self {
            LimitRefusal::Connections => CloseCause::RouteConnectionLimit,
            LimitRefusal::RouteRate | LimitRefusal::ProxyRate => CloseCause::HandshakeRate,
        }
    }

    /// The access log's detail: which limit, at what value.
    pub fn detail(self, route: &RouteLimits, proxy_rate: Option<Rate>) -> String {
        let per_second = |rate: Option<Rate>| rate.map_or(0, |rate| rate.per_second);
        match self {
            LimitRefusal::Connections => {
                format!("{} open connections on this route", route.max_connections.unwrap_or_default())
            }
            LimitRefusal::RouteRate => format!("over the route's {} handshakes per second", per_second(route.rate)),
            LimitRefusal::ProxyRate => format!("over the proxy's {} handshakes per second", per_second(proxy_rate)),
        }
    }

    /// How `snigate_mqtt_refusals_total` counts it on an `mqtt:` route.
    pub fn mqtt_refusal(self) -> MqttRefusal {
        match self {
            LimitRefusal::Connections => MqttRefusal::QuotaExceeded,
            LimitRefusal::RouteRate | LimitRefusal::ProxyRate => MqttRefusal::RateExceeded,
        }
    }

    /// The CONNACK an `mqtt:` route answers a read CONNECT with: MQTT 5 0x97 quota exceeded or
    /// 0x9F connection rate exceeded, 3.x return code 3 (server unavailable).
    pub fn connack(self) -> connack::Refusal {
        match self {
            LimitRefusal::Connections => connack::Refusal::QuotaExceeded,
            LimitRefusal::RouteRate | LimitRefusal::ProxyRate => connack::Refusal::ConnectionRateExceeded,
        }
    }
}

/// What the limits of every route, and the proxy's handshake rate, count.
#[derive(Debug, Default)]
pub struct RouteAdmission {
    /// Open connections of each route with `max_connections`.
    open: Mutex<HashMap<Box<str>, Arc<AtomicUsize>>>,
    /// The bucket of each route with `handshakes_per_second`.
    buckets: Mutex<HashMap<Box<str>, TokenBucket>>,
    /// `limits.handshakes_per_second`, across routes.
    global: Mutex<Option<TokenBucket>>,
}

/// One open connection counted against its route's `max_connections` (or nothing, without one);
/// dropping it gives the place back.
#[derive(Debug)]
pub struct RoutePermit {
    counted: Option<Arc<AtomicUsize>>,
}

impl RouteAdmission {
    pub fn new() -> Arc<RouteAdmission> {
        Arc::new(RouteAdmission::default())
    }

    /// A route's limits before its costly step: a place among its `max_connections`, then a token
    /// of its and the proxy's rate within `max_wait`; `Ok` says how long to wait for the token.
    pub fn admit(
        &self,
        route: &str,
        limits: &RouteLimits,
        proxy_rate: Option<Rate>,
        max_wait: Duration,
    ) -> Result<(RoutePermit, Duration), LimitRefusal> {
        let permit = self.open(route, limits.max_connections)?;
        if limits.rate.is_none() && proxy_rate.is_none() {
            return Ok((permit, Duration::ZERO));
        }
        let wait = self.reserve_handshake(route, limits.rate, proxy_rate, max_wait)?;
        Ok((permit, wait))
    }

    /// A place among the route's `max` open connections.
    fn open(&self, route: &str, max: Option<usize>) -> Result<RoutePermit, LimitRefusal> {
        let Some(max) = max else {
            return Ok(RoutePermit { counted: None });
        };
        let count = {
            let mut open = lock(&self.open);
            match open.get(route) {
                Some(count) => count.clone(),
                None => open.entry(route.into()).or_default().clone(),
            }
        };
        // Optimistic: counted first, given back if over; never more than `max` stay counted.
        if count.fetch_add(1, Ordering::AcqRel) >= max {
            count.fetch_sub(1, Ordering::AcqRel);
            return Err(LimitRefusal::Connections);
        }
        Ok(RoutePermit { counted: Some(count) })
    }

    /// A token of the route's rate and of the proxy's, waited for at most `max_wait`; `Ok` says
    /// how long to wait before starting. A route token taken when the proxy's bucket then refuses
    /// is spent (the route was over nothing, the proxy was).
    fn reserve_handshake(
        &self,
        route: &str,
        route_rate: Option<Rate>,
        proxy_rate: Option<Rate>,
        max_wait: Duration,
    ) -> Result<Duration, LimitRefusal> {
        let now = Instant::now();
        let mut wait = Duration::ZERO;
        if let Some(rate) = route_rate {
            let mut buckets = lock(&self.buckets);
            if buckets.get(route).is_none_or(|bucket| bucket.rate() != rate) {
                buckets.insert(route.into(), TokenBucket::new(rate, now));
            }
            let bucket = buckets.get_mut(route).expect("inserted above");
            wait = bucket.reserve(now, max_wait).map_err(|_| LimitRefusal::RouteRate)?.wait;
        }
        if let Some(rate) = proxy_rate {
            let mut global = lock(&self.global);
            if global.as_ref().is_none_or(|bucket| bucket.rate() != rate) {
                *global = None;
            }
            let bucket = global.get_or_insert_with(|| TokenBucket::new(rate, now));
            wait = wait.max(bucket.reserve(now, max_wait).map_err(|_| LimitRefusal::ProxyRate)?.wait);
        }
        Ok(wait)
    }

    /// After a reload: forgets the counts and buckets of routes no longer limited by name.
    pub fn retain(&self, limited: impl Fn(&str) -> (bool, bool)) {
        lock(&self.open).retain(|route, count| limited(route).0 || count.load(Ordering::Acquire) > 0);
        lock(&self.buckets).retain(|route, _| limited(route).1);
    }

    /// Open connections counted for `route` (tests).
    #[cfg(test)]
    fn open_count(&self, route: &str) -> usize {
        lock(&self.open).get(route).map_or(0, |count| count.load(Ordering::Acquire))
    }
}

impl Drop for RoutePermit {
    fn drop(&mut self) {
        if let Some(count) = &self.counted {
            count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_without_limits_is_not_counted() {
        let admission = RouteAdmission::new();
        let permits: Vec<_> = (0..100).map(|_| admission.open("a", None).unwrap()).collect();
        assert_eq!(admission.open_count("a"), 0);
        drop(permits);
        assert_eq!(admission.reserve_handshake("a", None, None, Duration::ZERO), Ok(Duration::ZERO));
    }

    #[test]
    fn max_connections_counts_per_route_and_frees_on_drop() {
        let admission = RouteAdmission::new();
        let first = admission.open("a", Some(2)).unwrap();
        let _second = admission.open("a", Some(2)).unwrap();
        assert_eq!(admission.open("a", Some(2)).unwrap_err(), LimitRefusal::Connections);
        assert!(admission.open("b", Some(2)).is_ok(), "another route has its own count");
        drop(first);
        let _third = admission.open("a", Some(2)).expect("the place came back");
        assert_eq!(admission.open_count("a"), 2);
    }

    #[test]
    fn the_route_and_the_proxy_rate_both_apply() {
        let admission = RouteAdmission::new();
        let route = Some(Rate { per_second: 1, burst: 2 });
        let proxy = Some(Rate { per_second: 1, burst: 3 });
        assert!(admission.reserve_handshake("a", route, proxy, Duration::ZERO).is_ok());
        assert!(admission.reserve_handshake("a", route, proxy, Duration::ZERO).is_ok());
        assert_eq!(admission.reserve_handshake("a", route, proxy, Duration::ZERO), Err(LimitRefusal::RouteRate));
        // b has no rate of its own, but the proxy's third token is the last one.
        assert!(admission.reserve_handshake("b", None, proxy, Duration::ZERO).is_ok());
        assert_eq!(admission.reserve_handshake("b", None, proxy, Duration::ZERO), Err(LimitRefusal::ProxyRate));
    }

    #[test]
    fn a_new_rate_starts_a_new_bucket() {
        let admission = RouteAdmission::new();
        let slow = Some(Rate { per_second: 1, burst: 1 });
        assert!(admission.reserve_handshake("a", slow, None, Duration::ZERO).is_ok());
        assert!(admission.reserve_handshake("a", slow, None, Duration::ZERO).is_err());
        let faster = Some(Rate { per_second: 10, burst: 5 });
        assert!(admission.reserve_handshake("a", faster, None, Duration::ZERO).is_ok());
    }

    #[test]
    fn retain_forgets_unlimited_routes_but_keeps_open_counts() {
        let admission = RouteAdmission::new();
        let open = admission.open("a", Some(5)).unwrap();
        let _ = admission.open("b", Some(5)).unwrap();
        admission.retain(|_| (false, false));
        assert_eq!(admission.open_count("a"), 1, "a connection still counted stays counted");
        assert_eq!(admission.open_count("b"), 0);
        drop(open);
    }
}
