//! Bidirectional copy between client and backend: half-close propagated (one side's EOF becomes
//! a write shutdown on the other), an idle timeout over both directions, bytes counted each way.
//! A TLS peer that closes TCP without close_notify (rustls: `UnexpectedEof`) has closed, like any
//! other EOF: MQTT and many TLS clients end that way after their last message, and the stream
//! above TLS (MQTT DISCONNECT, the protocol's own framing) says whether it was complete.
//!
//! The copy is readiness-driven: bytes are read into a per-thread scratch buffer and written on
//! at once, so an idle connection holds no copy buffer at all (MQTT fleets keep tens of thousands
//! of sessions open). Only when the writer cannot take everything is the rest kept in a
//! per-direction spill buffer, until it drains; reading in that direction pauses meanwhile, which
//! is the back-pressure. `tokio::io::copy_bidirectional` would hold two 8 KiB buffers per
//! connection for its whole life, which is why this is ours.

#[cfg(target_os = "linux")]
pub mod splice;

use std::cell::RefCell;
use std::future::poll_fn;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::proxy::close_cause::CloseCause;

/// The per-thread scratch buffer one read fills (the largest TLS record's plaintext).
const SCRATCH_BYTES: usize = 16 * 1024;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; SCRATCH_BYTES].into_boxed_slice());
}

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

/// Whether a shutdown failed only because the peer already left (it reset the connection after
/// its own close): nothing was left to deliver, so the close is still an orderly one.
pub(crate) fn peer_left(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::NotConnected | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset)
}

/// One direction's copy state.
#[derive(Default)]
struct Half {
    /// Bytes read but not yet taken by the writer; empty (no allocation) unless the writer is slow.
    spill: Vec<u8>,
    spill_written: usize,
    /// A write went out that the writer may still buffer (TLS records): flush before reading on.
    needs_flush: bool,
    /// The reader reached EOF: shut the writer down, then this direction is done.
    eof: bool,
    done: bool,
    bytes: u64,
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

impl Half {
    /// Moves bytes from `reader` to `writer` until the reader would block, the writer pushes back,
    /// or the reader's EOF has been passed on as a shutdown (`Ready(Ok)`).
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
        scratch: &mut [u8],
        last_activity: &mut Instant,
    ) -> Poll<Result<(), HalfError>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            if self.done {
                return Poll::Ready(Ok(()));
            }
            while self.spill_written < self.spill.len() {
                let n = ready!(writer.as_mut().poll_write(cx, &self.spill[self.spill_written..]))
                    .map_err(HalfError::Write)?;
                if n == 0 {
                    return Poll::Ready(Err(HalfError::Write(io::ErrorKind::WriteZero.into())));
                }
                self.spill_written += n;
            }
            if !self.spill.is_empty() {
                // Drained: give the memory back, an idle connection holds none.
                self.spill = Vec::new();
                self.spill_written = 0;
            }
            if self.needs_flush {
                ready!(writer.as_mut().poll_flush(cx)).map_err(HalfError::Write)?;
                self.needs_flush = false;
            }
            if self.eof {
                match ready!(writer.as_mut().poll_shutdown(cx)) {
                    Ok(()) => {}
                    Err(error) if peer_left(&error) => {}
                    Err(error) => return Poll::Ready(Err(HalfError::Write(error))),
                }
                self.done = true;
                continue;
            }
            let mut buffer = ReadBuf::new(scratch);
            match ready!(reader.as_mut().poll_read(cx, &mut buffer)) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {}
                Err(error) => return Poll::Ready(Err(HalfError::Read(error))),
            }
            let read = buffer.filled().len();
            if read == 0 {
                self.eof = true;
                continue;
            }
            self.bytes += read as u64;
            *last_activity = Instant::now();
            let mut written = 0;
            while written < read {
                match writer.as_mut().poll_write(cx, &scratch[written..read]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(HalfError::Write(io::ErrorKind::WriteZero.into()))),
                    Poll::Ready(Ok(n)) => written += n,
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(HalfError::Write(error))),
                    Poll::Pending => {
                        self.spill = scratch[written..read].to_vec();
                        self.spill_written = 0;
                        break;
                    }
                }
            }
            self.needs_flush = true;
        }
    }
}

/// Relays until both directions are closed, one side fails, the connection idles out, or
/// `stop` is cancelled.
/// (A plain function returning an `async` block: an `async fn` would keep its arguments twice in
/// the future, and a session lives in it.)
#[allow(clippy::manual_async_fn)]
pub fn relay<C, B>(
    mut client: C,
    mut backend: B,
    idle_timeout: Duration,
    stop: &CancellationToken,
) -> impl Future<Output = (Transferred, End)> + '_
where
    C: AsyncRead + AsyncWrite + Unpin + 'static,
    B: AsyncRead + AsyncWrite + Unpin + 'static,
{
    async move {
        let mut upstream = Half::default();
        let mut downstream = Half::default();
        let end = drive(idle_timeout, stop, |cx, last_activity| {
            SCRATCH.with_borrow_mut(|scratch| {
                let up = upstream.poll_copy(cx, Pin::new(&mut client), Pin::new(&mut backend), scratch, last_activity);
                let down =
                    downstream.poll_copy(cx, Pin::new(&mut backend), Pin::new(&mut client), scratch, last_activity);
                both(up, down)
            })
        })
        .await;
        let transferred = Transferred { client_to_backend: upstream.bytes, backend_to_client: downstream.bytes };
        (transferred, end)
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn half_close_is_propagated_and_bytes_counted() {
        let (client, mut client_peer) = duplex(1024);
        let (backend, mut backend_peer) = duplex(1024);
        let stop = CancellationToken::new();
        let relay = tokio::spawn(async move { relay(client, backend, Duration::from_secs(5), &stop).await });

        client_peer.write_all(b"ping").await.unwrap();
        client_peer.shutdown().await.unwrap();
        let mut got = Vec::new();
        backend_peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ping", "backend sees the data, then EOF");

        backend_peer.write_all(b"pong!").await.unwrap();
        backend_peer.shutdown().await.unwrap();
        let mut back = Vec::new();
        client_peer.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"pong!", "the other direction still flows after the half-close");

        let (transferred, end) = relay.await.unwrap();
        assert!(matches!(end, End::Closed), "{end:?}");
        assert_eq!(transferred, Transferred { client_to_backend: 4, backend_to_client: 5 });
    }

    #[tokio::test]
    async fn writer_slower_than_reader_spills_and_keeps_every_byte_in_order() {
        // 64-byte pipes make nearly every write partial, so the spill path carries the data.
        let (client, mut client_peer) = duplex(64);
        let (backend, mut backend_peer) = duplex(64);
        let stop = CancellationToken::new();
        let relay = tokio::spawn(async move { relay(client, backend, Duration::from_secs(5), &stop).await });
        let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let expected = sent.clone();
        let writer = tokio::spawn(async move {
            client_peer.write_all(&sent).await.unwrap();
            client_peer.shutdown().await.unwrap();
            client_peer
        });
        let mut got = Vec::new();
        backend_peer.read_to_end(&mut got).await.unwrap();
        assert!(got == expected, "{} bytes arrived, {} sent", got.len(), expected.len());
        drop(backend_peer);
        drop(writer.await.unwrap());
        let (transferred, _) = relay.await.unwrap();
        assert_eq!(transferred.client_to_backend, 200_000);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connection_is_closed_after_idle_timeout() {
        let (client, _client_peer) = duplex(64);
        let (backend, _backend_peer) = duplex(64);
        let stop = CancellationToken::new();
        let started = Instant::now();
        let (_, end) = relay(client, backend, Duration::from_secs(30), &stop).await;
        assert!(matches!(end, End::Idle), "{end:?}");
        assert!(started.elapsed() >= Duration::from_secs(30));
    }

    #[tokio::test]
    async fn stop_token_ends_the_relay() {
        let (client, _client_peer) = duplex(64);
        let (backend, _backend_peer) = duplex(64);
        let stop = CancellationToken::new();
        stop.cancel();
        let (_, end) = relay(client, backend, Duration::from_secs(30), &stop).await;
        assert!(matches!(end, End::Shutdown), "{end:?}");
    }
}
