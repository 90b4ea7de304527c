//! CPU time of processes from /proc/PID/stat (utime + stime, every thread of the process).

use std::time::Instant;

/// The processes whose CPU a phase reports: the proxy's (all of nginx's), and this client.
pub struct Meter {
    proxy_pids: Vec<u32>,
    clk_tck: u64,
}

/// CPU ticks and the wall clock at one moment.
#[derive(Clone, Copy)]
pub struct Mark {
    proxy_ticks: u64,
    client_ticks: u64,
    at: Instant,
}

/// What was spent between two marks.
pub struct Usage {
    pub wall_s: f64,
    pub proxy_ms: f64,
    /// The proxy's CPU as a share of one core over the wall time.
    pub proxy_pct: f64,
    pub client_ms: f64,
}

impl Meter {
    pub fn new(proxy_pids: Vec<u32>, clk_tck: u64) -> Self {
        Self { proxy_pids, clk_tck: clk_tck.max(1) }
    }

    pub fn mark(&self) -> Mark {
        Mark {
            proxy_ticks: self.proxy_pids.iter().map(|pid| ticks(&pid.to_string())).sum(),
            client_ticks: ticks("self"),
            at: Instant::now(),
        }
    }

    pub fn between(&self, from: Mark, to: Mark) -> Usage {
        let ms = |ticks: u64| ticks as f64 * 1000.0 / self.clk_tck as f64;
        let proxy_ms = ms(to.proxy_ticks.saturating_sub(from.proxy_ticks));
        let wall_s = to.at.duration_since(from.at).as_secs_f64();
        Usage {
            wall_s,
            proxy_ms,
            proxy_pct: if wall_s > 0.0 { proxy_ms / wall_s / 10.0 } else { 0.0 },
            client_ms: ms(to.client_ticks.saturating_sub(from.client_ticks)),
        }
    }
}

/// utime + stime of `/proc/<pid>/stat` (fields 14 and 15), 0 for a process that is gone.
fn ticks(pid: &str) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // The command name (field 2) may hold spaces and parentheses: count fields after its last ')'.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let mut fields = rest.split_ascii_whitespace().skip(11); // field 3 is the first after ')'
    let mut next = || fields.next().and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    next() + next()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_own_ticks() {
        let start = std::time::Instant::now();
        while super::ticks("self") == 0 && start.elapsed().as_secs() < 5 {
            std::hint::black_box((0..10_000u64).sum::<u64>());
        }
        assert!(super::ticks("self") > 0);
    }
}
