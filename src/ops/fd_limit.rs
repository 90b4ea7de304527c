//! The open-file limit (`RLIMIT_NOFILE`) and what it allows: at start the soft limit is raised to
//! the hard one, and `max_connections` is capped to the sessions the limit can hold (two
//! descriptors each), so a proxy short of descriptors stops accepting instead of accepting clients
//! it then cannot connect to a backend.

use std::io;

use rustix::process::{getrlimit, setrlimit, Resource};

/// Descriptors one session holds: the client socket and the backend socket.
pub const DESCRIPTORS_PER_SESSION: u64 = 2;

/// Descriptors kept out of the session budget: stdio (3), the runtime's epoll and wakers (~4),
/// the config/certificate watch and the files a reload reads (~16), the listeners and health-check
/// connects (~24), and the admin endpoint's listener and its connections (17: it serves 16 at most).
const RESERVED_DESCRIPTORS: u64 = 64;

/// Drained splice pipes each runtime thread keeps (two descriptors a pipe): they are not a
/// session's, so they come out of the reserve too.
#[cfg(target_os = "linux")]
const POOLED_PIPE_DESCRIPTORS_PER_THREAD: u64 = 2 * crate::proxy::relay::splice::POOLED_PIPES_PER_THREAD as u64;
#[cfg(not(target_os = "linux"))]
const POOLED_PIPE_DESCRIPTORS_PER_THREAD: u64 = 0;

#[derive(Debug, thiserror::Error)]
pub enum FdLimitError {
    #[error("cannot raise the open-file limit from {soft} to {hard}: {source}")]
    Raise { soft: u64, hard: u64, source: io::Error },
}

/// The soft and hard open-file limits (`None`: unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nofile {
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

/// The current open-file limits.
pub fn current() -> Nofile {
    let limit = getrlimit(Resource::Nofile);
    Nofile { soft: limit.current, hard: limit.maximum }
}

/// Raises the soft open-file limit to the hard one; returns the limits now in force.
pub fn raise() -> Result<Nofile, FdLimitError> {
    let mut limit = getrlimit(Resource::Nofile);
    let before = Nofile { soft: limit.current, hard: limit.maximum };
    if limit.current == limit.maximum {
        return Ok(before);
    }
    limit.current = limit.maximum;
    match setrlimit(Resource::Nofile, limit) {
        Ok(()) => Ok(current()),
        Err(errno) => Err(FdLimitError::Raise {
            soft: before.soft.unwrap_or(u64::MAX),
            hard: before.hard.unwrap_or(u64::MAX),
            source: errno.into(),
        }),
    }
}

/// How many sessions a soft limit of `soft` descriptors holds besides the reserve.
pub fn session_capacity(soft: Option<u64>, runtime_threads: u64) -> usize {
    let Some(soft) = soft else { return usize::MAX };
    let reserve = RESERVED_DESCRIPTORS + POOLED_PIPE_DESCRIPTORS_PER_THREAD * runtime_threads;
    usize::try_from(soft.saturating_sub(reserve) / DESCRIPTORS_PER_SESSION).unwrap_or(usize::MAX)
}

/// The connection cap in force: `max_connections`, or fewer if the open-file limit cannot hold
/// that many sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionCap {
    pub configured: usize,
    pub effective: usize,
    pub soft_limit: Option<u64>,
}

impl ConnectionCap {
    /// The cap for `max_connections` under the current limit (at least one connection).
    pub fn for_max_connections(configured: usize) -> ConnectionCap {
        let soft_limit = current().soft;
        let capacity = session_capacity(soft_limit, runtime_threads()).max(1);
        ConnectionCap { configured, effective: configured.min(capacity), soft_limit }
    }

    /// Logs once that the limit holds fewer sessions than `max_connections`.
    pub fn warn_if_lowered(&self) {
        if self.effective < self.configured {
            tracing::warn!(
                max_connections = self.configured,
                effective_max_connections = self.effective,
                open_file_limit = self.soft_limit,
                "the open-file limit cannot hold max_connections sessions (two descriptors each); \
                 accepting at most effective_max_connections (raise `ulimit -n` / LimitNOFILE)"
            );
        }
    }
}

/// The runtime's worker threads (tokio's default: one per CPU).
fn runtime_threads() -> u64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_what_the_limit_holds_beyond_the_reserve_two_descriptors_each() {
        let reserve = RESERVED_DESCRIPTORS + POOLED_PIPE_DESCRIPTORS_PER_THREAD * 2;
        assert_eq!(session_capacity(Some(reserve + 200), 2), 100);
        assert_eq!(session_capacity(Some(reserve / 2), 2), 0, "a limit below the reserve holds none");
        assert_eq!(session_capacity(None, 2), usize::MAX, "unlimited");
    }
}
