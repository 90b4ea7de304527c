//! The buffered relay, used for terminate routes (and wherever splice is not available).
//!
//! The copy is readiness-driven: bytes are read into a per-thread scratch buffer and written on
//! at once, so an idle connection holds no copy buffer at all (MQTT fleets keep tens of thousands
//! of sessions open). Only when the writer cannot take everything is the rest kept in a
//! per-direction spill buffer, until it drains; reading in that direction pauses meanwhile, which
//! is the back-pressure. `tokio::io::copy_bidirectional` would hold two 8 KiB buffers per
//! connection for its whole life, which is why this is ours.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{both, drive, peer_left, End, HalfError, Spill, Transferred};

/// The per-thread scratch buffer one read fills (the largest TLS record's plaintext).
pub(super) const SCRATCH_BYTES: usize = 16 * 1024;

thread_local! {
    /// Also the splice relay's buffer for small messages (never borrowed across an await).
    pub(super) static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; SCRATCH_BYTES].into_boxed_slice());
}

/// One direction's copy state.
#[derive(Default)]
struct Half {
    spill: Spill,
    /// A write went out that the writer may still buffer (TLS records): flush before reading on.
    needs_flush: bool,
    /// The reader reached EOF: shut the writer down, then this direction is done.
    eof: bool,
    done: bool,
    bytes: u64,
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
            while !self.spill.pending().is_empty() {
                let n = ready!(writer.as_mut().poll_write(cx, self.spill.pending())).map_err(HalfError::Write)?;
                if n == 0 {
                    return Poll::Ready(Err(HalfError::Write(io::ErrorKind::WriteZero.into())));
                }
                self.spill.advance(n);
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
                        self.spill.keep(&scratch[written..read]);
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
