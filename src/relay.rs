//! Bidirectional copy between client and backend: half-close propagated (one side's EOF becomes
//! a write shutdown on the other), an idle timeout over both directions, bytes counted each way.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Copy buffer per direction.
const BUFFER_BYTES: usize = 16 * 1024;

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
    /// Short label for logs and metrics.
    pub fn cause(&self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::Idle => "idle_timeout",
            End::Shutdown => "shutdown",
            End::ClientError(_) => "client_error",
            End::BackendError(_) => "backend_error",
        }
    }
}

#[derive(Clone, Copy)]
enum Side {
    Client,
    Backend,
}

/// Relays until both directions are closed, one side fails, the connection idles out, or
/// `stop` is cancelled.
pub async fn relay<C, B>(client: C, backend: B, idle_timeout: Duration, stop: &CancellationToken) -> (Transferred, End)
where
    C: AsyncRead + AsyncWrite,
    B: AsyncRead + AsyncWrite,
{
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut backend_read, mut backend_write) = tokio::io::split(backend);
    let started = Instant::now();
    let last_activity_ms = AtomicU64::new(0);
    let upload = AtomicU64::new(0);
    let download = AtomicU64::new(0);

    let upstream = copy_half(&mut client_read, &mut backend_write, Side::Client, &upload, &last_activity_ms, started);
    let downstream =
        copy_half(&mut backend_read, &mut client_write, Side::Backend, &download, &last_activity_ms, started);
    tokio::pin!(upstream, downstream);
    let idle = tokio::time::sleep(idle_timeout);
    tokio::pin!(idle);
    let (mut upstream_done, mut downstream_done) = (false, false);

    let end = loop {
        tokio::select! {
            result = &mut upstream, if !upstream_done => match result {
                Ok(()) => upstream_done = true,
                Err(end) => break end,
            },
            result = &mut downstream, if !downstream_done => match result {
                Ok(()) => downstream_done = true,
                Err(end) => break end,
            },
            () = &mut idle => {
                let last = started + Duration::from_millis(last_activity_ms.load(Ordering::Relaxed));
                if last.elapsed() >= idle_timeout {
                    break End::Idle;
                }
                idle.as_mut().reset(last + idle_timeout);
            },
            () = stop.cancelled() => break End::Shutdown,
        }
        if upstream_done && downstream_done {
            break End::Closed;
        }
    };
    let transferred = Transferred {
        client_to_backend: upload.load(Ordering::Relaxed),
        backend_to_client: download.load(Ordering::Relaxed),
    };
    (transferred, end)
}

async fn copy_half<R, W>(
    reader: &mut R,
    writer: &mut W,
    from: Side,
    counter: &AtomicU64,
    last_activity_ms: &AtomicU64,
    started: Instant,
) -> Result<(), End>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let read_error = |error| match from {
        Side::Client => End::ClientError(error),
        Side::Backend => End::BackendError(error),
    };
    let write_error = |error| match from {
        Side::Client => End::BackendError(error),
        Side::Backend => End::ClientError(error),
    };
    let mut buffer = vec![0u8; BUFFER_BYTES];
    loop {
        let n = reader.read(&mut buffer).await.map_err(read_error)?;
        if n == 0 {
            return writer.shutdown().await.map_err(write_error);
        }
        writer.write_all(&buffer[..n]).await.map_err(write_error)?;
        counter.fetch_add(n as u64, Ordering::Relaxed);
        last_activity_ms.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

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
