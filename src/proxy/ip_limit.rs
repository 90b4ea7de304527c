//! Per-source-IP connection cap (`limits.max_connections_per_ip`): one address cannot take more
//! than its share of the proxy's connection slots. The address is the real client's — the one a
//! trusted inbound PROXY header names, when there is one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Counts open connections per client address.
#[derive(Debug)]
pub struct IpLimiter {
    max_per_ip: AtomicUsize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One counted connection (or nothing, with the cap off); dropping it gives the slot back.
#[derive(Debug)]
pub struct IpPermit {
    counted: Option<(Arc<IpLimiter>, IpAddr)>,
}

impl IpLimiter {
    /// `max_per_ip == 0` turns the cap off.
    pub fn new(max_per_ip: usize) -> Arc<IpLimiter> {
        Arc::new(IpLimiter { max_per_ip: AtomicUsize::new(max_per_ip), open: Mutex::new(HashMap::new()) })
    }

    /// A new cap from a reload; connections already open are kept.
    pub fn set_max(&self, max_per_ip: usize) {
        self.max_per_ip.store(max_per_ip, Ordering::Relaxed);
    }

    /// A permit for one more connection from `address`, or `None` when it is at its cap.
    pub fn try_acquire(self: &Arc<Self>, address: IpAddr) -> Option<IpPermit> {
        let max_per_ip = self.max_per_ip.load(Ordering::Relaxed);
        if max_per_ip == 0 {
            return Some(IpPermit { counted: None });
        }
        let address = address.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = open.entry(address).or_insert(0);
        if *count >= max_per_ip {
            return None;
        }
        *count += 1;
        Some(IpPermit { counted: Some((Arc::clone(self), address)) })
    }

    /// Addresses with at least one open connection.
    #[cfg(test)]
    fn tracked_addresses(&self) -> usize {
        self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
    }
}

impl Drop for IpPermit {
    fn drop(&mut self) {
        let Some((limiter, address)) = &self.counted else {
            return;
        };
        let mut open = limiter.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = open.get_mut(address) {
            *count -= 1;
            if *count == 0 {
                open.remove(address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_is_per_address_and_released_on_drop() {
        let limiter = IpLimiter::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = limiter.try_acquire(a).unwrap();
        let second = limiter.try_acquire(a).unwrap();
        assert!(limiter.try_acquire(a).is_none(), "third from the same address is refused");
        assert!(limiter.try_acquire(b).is_some(), "another address is not affected");
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert!(limiter.try_acquire(mapped).is_none(), "IPv4-mapped IPv6 counts as the same address");
        drop(first);
        assert!(limiter.try_acquire(a).is_some());
        drop(second);
        assert_eq!(limiter.tracked_addresses(), 0, "no entry outlives its connections");
    }

    #[test]
    fn zero_means_unlimited() {
        let limiter = IpLimiter::new(0);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let permits: Vec<_> = (0..1000).map(|_| limiter.try_acquire(a).unwrap()).collect();
        assert_eq!(permits.len(), 1000);
        assert_eq!(limiter.tracked_addresses(), 0);
    }
}
