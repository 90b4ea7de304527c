//! Closing a refused client so that it reads its refusal.
//!
//! A socket closed with bytes still unread in its receive queue sends a reset, not a FIN, and a
//! reset may destroy data the client has not read yet — such as the CONNACK that says why it was
//! refused. A client that pipelined packets after its CONNECT (paho and MQTT.js both can) is
//! exactly that case. So a refused client's connection is half-closed first (TLS: close_notify,
//! then FIN) and what the client still sends is read and dropped, briefly and boundedly, until it
//! closes its side; only then is the socket closed.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How long a refused client may go on sending before it is closed anyway: a client that read
/// its refusal closes within a round trip; this only bounds one that does not.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);
/// The most bytes read and dropped from a refused client (a few of the largest MQTT packets a
/// device would pipeline); past this it is closed, reset or not.
const REFUSAL_DRAIN_BYTES: usize = 256 * 1024;
/// The read buffer, on the heap and only while draining (never in the session's future).
const DRAIN_CHUNK_BYTES: usize = 4096;

/// Half-closes `stream`, then reads and drops what the client sends until it closes, for at most
/// [`REFUSAL_LINGER`] and [`REFUSAL_DRAIN_BYTES`]. Errors end it early: the client is gone.
pub(crate) async fn close_after_refusal<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut chunk = vec![0u8; DRAIN_CHUNK_BYTES];
        let mut dropped_bytes = 0;
        while dropped_bytes < REFUSAL_DRAIN_BYTES {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => dropped_bytes += n,
            }
        }
    };
    let _ = tokio::time::timeout(REFUSAL_LINGER, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn half_closes_then_drains_until_the_client_closes() {
        let (mut proxy_side, mut client) = tokio::io::duplex(64);
        let client_task = tokio::spawn(async move {
            let mut refusal = Vec::new();
            // The client still writes after the proxy's half-close, then reads to EOF and closes.
            client.write_all(&[7u8; 1000]).await.unwrap();
            client.read_to_end(&mut refusal).await.unwrap();
            client.shutdown().await.unwrap();
            refusal
        });
        proxy_side.write_all(b"refused").await.unwrap();
        close_after_refusal(&mut proxy_side).await;
        assert_eq!(client_task.await.unwrap(), b"refused");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_closes_is_dropped_after_the_linger() {
        let (mut proxy_side, _client) = tokio::io::duplex(64);
        let started = tokio::time::Instant::now();
        close_after_refusal(&mut proxy_side).await;
        assert_eq!(started.elapsed(), REFUSAL_LINGER);
    }
}
