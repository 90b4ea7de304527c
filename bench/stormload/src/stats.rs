//! Latency samples and outcome counts. Percentiles are nearest-rank on the sorted samples.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::json::Object;

/// Latencies in microseconds.
#[derive(Default)]
pub struct Samples(Vec<u64>);

impl Samples {
    pub fn push(&mut self, latency: Duration) {
        self.0.push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// `{"n":…,"p50":…,"p99":…,"max":…}` in milliseconds (null without samples).
    pub fn summary(mut self) -> Object {
        self.0.sort_unstable();
        let ms = |us: Option<u64>| us.map(|us| us as f64 / 1000.0);
        Object::new()
            .int("n", self.0.len() as u64)
            .opt_num("p50", ms(percentile(&self.0, 50.0)))
            .opt_num("p99", ms(percentile(&self.0, 99.0)))
            .opt_num("max", ms(self.0.last().copied()))
    }
}

/// The nearest-rank percentile of sorted samples: the smallest sample with at least `p` % of the
/// samples at or below it.
fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Outcomes by name (`close`, `alert`, …), written as a JSON object in name order.
#[derive(Default)]
pub struct Counts(BTreeMap<String, u64>);

impl Counts {
    pub fn add(&mut self, name: &str) {
        *self.0.entry(name.to_owned()).or_default() += 1;
    }

    pub fn get(&self, name: &str) -> u64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    pub fn merge(&mut self, other: &Counts) {
        for (name, n) in &other.0 {
            *self.0.entry(name.clone()).or_default() += n;
        }
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    pub fn to_json(&self) -> Object {
        self.0.iter().fold(Object::new(), |object, (name, n)| object.int(name, *n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let samples: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&samples, 50.0), Some(50));
        assert_eq!(percentile(&samples, 99.0), Some(99));
        assert_eq!(percentile(&samples, 100.0), Some(100));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[1, 2, 3], 0.0), Some(1));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn counts_total() {
        let mut counts = Counts::default();
        counts.add("close");
        counts.add("close");
        counts.add("alert");
        assert_eq!(counts.total(), 3);
        assert_eq!(counts.to_json().finish(), r#"{"alert":1,"close":2}"#);
    }
}
