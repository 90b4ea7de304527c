//! Bidirectional copy between client and backend: half-close propagated (one side's EOF becomes
//! a write shutdown on the other), an idle timeout over both directions, bytes counted each way.
//! A TLS peer that closes TCP without close_notify (rustls: `UnexpectedEof`) has closed, like any
//! other EOF: MQTT and many TLS clients end that way after their last message, and the stream
//! above TLS (MQTT DISCONNECT, the protocol's own framing) says whether it was complete.
//!
//! Two relays share these rules (`drive` runs either one): `buffered` copies through a
//! per-thread scratch buffer and serves terminate routes and any stream; `splice` (Linux) moves
//! bytes between two TCP sockets through a pipe for passthrough and tcp routes.

mod buffered;
#[cfg(target_os = "linux")]
pub mod splice;

pub use buffered::relay;

use std::future::poll_fn;
use std::future::Future;
use std::io;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::close_cause::CloseCause;

/// Bytes moved each way.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Transferred {
    pub client_to_backend: u64,
    pub backend_to_client: u64,
}

/// Why the relay ended.
#[derive(Debug)]
pub enum End {
    /// Both directions saw EOF and were shut down.
    Closed,
    /// No bytes either way for `idle_timeout`.
    Idle,
    /// The server's drain deadline passed.
    Shutdown,
    ClientError(io::Error),
    BackendError(io::Error),
}

impl End {
    /// The connection's close cause.
    pub fn cause(&self) -> CloseCause {
        match self {
            End::Closed => CloseCause::Closed,
            End::Idle => CloseCause::IdleTimeout,
            End::Shutdown => CloseCause::Shutdown,
            End::ClientError(_) => CloseCause::ClientError,
            End::BackendError(_) => CloseCause::BackendError,
        }
    }
}

/// Bytes a direction read but its writer has not taken yet. Empty (no allocation) unless the
/// writer is slow, and the memory is given back as soon as it drains: an idle connection holds
/// none. While it holds bytes, reading in that direction pauses (the back-pressure).
#[derive(Debug, Default)]
pub(crate) struct Spill {
    bytes: Vec<u8>,
    written: usize,
}

impl Spill {
    /// Keeps `rest`, which the writer would not take now.
    pub(crate) fn keep(&mut self, rest: &[u8]) {
        self.bytes = rest.to_vec();
        self.written = 0;
    }

    /// What is still to be written (empty when drained).
    pub(crate) fn pending(&self) -> &[u8] {
        &self.bytes[self.written..]
    }

    /// `n` more bytes were written; once all are, the buffer is freed.
    pub(crate) fn advance(&mut self, n: usize) {
        self.written += n;
        if self.written >= self.bytes.len() {
            *self = Spill::default();
        }
    }
}

/// Whether a shutdown failed only because the peer already left (it reset the connection after
/// its own close): nothing was left to deliver, so the close is still an orderly one.
pub(crate) fn peer_left(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::NotConnected | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset)
}

/// A direction's failure: which side of it failed.
pub(crate) enum HalfError {
    Read(io::Error),
    Write(io::Error),
}

impl HalfError {
    /// As an end of the client-to-backend direction.
    pub(crate) fn upstream(self) -> End {
        match self {
            HalfError::Read(error) => End::ClientError(error),
            HalfError::Write(error) => End::BackendError(error),
        }
    }

    /// As an end of the backend-to-client direction.
    pub(crate) fn downstream(self) -> End {
        match self {
            HalfError::Read(error) => End::BackendError(error),
            HalfError::Write(error) => End::ClientError(error),
        }
    }
}

/// The two directions' progress as one: the first failure ends the relay (the client-to-backend
/// one first); done when both are.
pub(crate) fn both(up: Poll<Result<(), HalfError>>, down: Poll<Result<(), HalfError>>) -> Poll<Result<(), End>> {
    match (up, down) {
        (Poll::Ready(Err(error)), _) => Poll::Ready(Err(error.upstream())),
        (_, Poll::Ready(Err(error))) => Poll::Ready(Err(error.downstream())),
        (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => Poll::Ready(Ok(())),
        _ => Poll::Pending,
    }
}

/// Polls `copy` (both directions; it stamps `last_activity` when bytes move) until it is done or
/// fails, no bytes moved for `idle_timeout`, or `stop` is cancelled.
pub(crate) async fn drive<F>(idle_timeout: Duration, stop: &CancellationToken, mut copy: F) -> End
where
    F: FnMut(&mut Context<'_>, &mut Instant) -> Poll<Result<(), End>>,
{
    let mut last_activity = Instant::now();
    let stopped = stop.cancelled();
    let idle = tokio::time::sleep(idle_timeout);
    tokio::pin!(stopped, idle);
    poll_fn(|cx| {
        if stopped.as_mut().poll(cx).is_ready() {
            return Poll::Ready(End::Shutdown);
        }
        match copy(cx, &mut last_activity) {
            Poll::Ready(Ok(())) => return Poll::Ready(End::Closed),
            Poll::Ready(Err(end)) => return Poll::Ready(end),
            Poll::Pending => {}
        }
        while idle.as_mut().poll(cx).is_ready() {
            let deadline = last_activity + idle_timeout;
            if Instant::now() >= deadline {
                return Poll::Ready(End::Idle);
            }
            idle.as_mut().reset(deadline);
        }
        Poll::Pending
    })
    .await
}
