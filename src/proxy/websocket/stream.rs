//! [`WsStream`]: a WebSocket connection seen as the byte stream its binary messages carry, so the
//! MQTT admission, the CONNACK refusals, the lingering close and the buffered relay work on it
//! unchanged.
//!
//! Reads unmask the client's data frames into the caller's buffer (the relay's per-thread
//! scratch); each write becomes one binary frame, its header written with the payload in one
//! vectored write. Pings are answered, a close is echoed, a protocol violation is answered with
//! its close code and then fails the read. What the stream holds between calls is small and
//! inline: the decoder's partial header and control frame, a pending control reply, the header
//! of a frame being written and how much of its payload is still due.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::frame::{
    self, Decoder, FrameError, Opcode, CLOSE_NORMAL, MAX_CONTROL_PAYLOAD_BYTES, MAX_SERVER_HEADER_BYTES,
};

/// The error a read fails with after a protocol violation (inside an `io::Error` of kind
/// `InvalidData`), so the connection can say which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("websocket: {0}")]
pub struct WsError(pub FrameError);

impl WsError {
    /// The violation behind an I/O error of a [`WsStream`], if that is what it is.
    pub fn of(error: &io::Error) -> Option<FrameError> {
        error.get_ref().and_then(|inner| inner.downcast_ref::<WsError>()).map(|ws| ws.0)
    }
}

/// A control frame to send (pong or close), and how much of it is out.
#[derive(Debug)]
struct Reply {
    bytes: [u8; 2 + MAX_CONTROL_PAYLOAD_BYTES],
    len: u8,
    written: u8,
}

impl Reply {
    fn is_due(&self) -> bool {
        self.written < self.len
    }

    fn started(&self) -> bool {
        self.written > 0 && self.is_due()
    }

    /// Replaces a reply not yet started (a pong for the latest ping is enough).
    fn set(&mut self, opcode: Opcode, payload: &[u8]) {
        self.len = frame::encode_control(opcode, payload, &mut self.bytes) as u8;
        self.written = 0;
    }
}

/// The server side of a WebSocket connection over `S` (TLS or TCP), as a byte stream.
#[derive(Debug)]
pub struct WsStream<S> {
    inner: S,
    decoder: Decoder,
    reply: Reply,
    /// The header of the frame being written, and how much of it is out.
    out_header: [u8; MAX_SERVER_HEADER_BYTES],
    out_header_len: u8,
    out_header_written: u8,
    /// Payload bytes the frame being written still announces.
    out_payload_due: u64,
    /// The client's close frame arrived: reads end.
    close_received: bool,
    /// Ours is queued or out: writes are dropped.
    close_queued: bool,
    failed: Option<FrameError>,
}

impl<S> WsStream<S> {
    pub fn new(inner: S, max_message_bytes: u64) -> Self {
        WsStream {
            inner,
            decoder: Decoder::new(max_message_bytes),
            reply: Reply { bytes: [0; 2 + MAX_CONTROL_PAYLOAD_BYTES], len: 0, written: 0 },
            out_header: [0; MAX_SERVER_HEADER_BYTES],
            out_header_len: 0,
            out_header_written: 0,
            out_payload_due: 0,
            close_received: false,
            close_queued: false,
            failed: None,
        }
    }

    /// A data frame is partly written: no control frame may go out until it is complete.
    fn mid_frame(&self) -> bool {
        self.out_header_written < self.out_header_len || self.out_payload_due > 0
    }

    fn queue_close(&mut self, code: u16) {
        if !self.close_queued && !self.reply.started() {
            self.reply.set(Opcode::Close, &code.to_be_bytes());
            self.close_queued = true;
        }
    }
}

fn violation(error: FrameError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, WsError(error))
}

impl<S: AsyncWrite + Unpin> WsStream<S> {
    /// Writes and flushes the pending control reply; it must not be called mid-frame.
    fn poll_send_reply(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.reply.is_due() {
            return Poll::Ready(Ok(()));
        }
        while self.reply.is_due() {
            let pending = &self.reply.bytes[usize::from(self.reply.written)..usize::from(self.reply.len)];
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.reply.written += n as u8;
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    /// Sends the reply if no data frame is in the way; a write that would block leaves it due
    /// (the inner stream wakes the task when it can take it).
    fn try_send_reply(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.mid_frame() {
            return Ok(());
        }
        match self.poll_send_reply(cx) {
            Poll::Ready(result) => result,
            Poll::Pending => Ok(()),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if let Some(error) = this.failed {
                if !this.mid_frame() {
                    ready!(this.poll_send_reply(cx))?;
                }
                return Poll::Ready(Err(violation(error)));
            }
            if this.reply.started() {
                ready!(this.poll_send_reply(cx))?;
            }
            if this.close_received || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let raw = buf.initialize_unfilled();
            let mut raw_buf = ReadBuf::new(raw);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut raw_buf))?;
            let read = raw_buf.filled().len();
            if read == 0 {
                return Poll::Ready(Ok(()));
            }
            let decoded = match this.decoder.decode(&mut raw[..read]) {
                Ok(decoded) => decoded,
                Err(error) => {
                    this.queue_close(error.close_code());
                    this.failed = Some(error);
                    continue;
                }
            };
            if let Some(close) = decoded.close {
                this.close_received = true;
                this.queue_close(close.close_code().unwrap_or(CLOSE_NORMAL));
            } else if let Some(ping) = decoded.ping {
                if !this.reply.started() && !this.close_queued {
                    this.reply.set(Opcode::Pong, ping.as_slice());
                }
            }
            this.try_send_reply(cx)?;
            if decoded.data_bytes > 0 {
                buf.advance(decoded.data_bytes);
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if let Some(error) = this.failed {
            return Poll::Ready(Err(violation(error)));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if !this.mid_frame() {
            ready!(this.poll_send_reply(cx))?;
            if this.close_queued {
                // After a close no data frame may follow; what the backend still sends is dropped.
                return Poll::Ready(Ok(buf.len()));
            }
            this.out_header_len =
                frame::encode_server_header(true, Opcode::Binary, buf.len() as u64, &mut this.out_header) as u8;
            this.out_header_written = 0;
            this.out_payload_due = buf.len() as u64;
        }
        loop {
            let header = &this.out_header[usize::from(this.out_header_written)..usize::from(this.out_header_len)];
            let payload = &buf[..buf.len().min(this.out_payload_due as usize)];
            let slices = [IoSlice::new(header), IoSlice::new(payload)];
            let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, &slices))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let header_part = n.min(header.len());
            this.out_header_written += header_part as u8;
            let payload_part = n - header_part;
            if payload_part > 0 {
                this.out_payload_due -= payload_part as u64;
                return Poll::Ready(Ok(payload_part));
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.mid_frame() {
            ready!(this.poll_send_reply(cx))?;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    /// Sends our close (1000) unless one went out, then shuts the inner stream down.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.mid_frame() {
            if this.reply.started() {
                ready!(this.poll_send_reply(cx))?;
            }
            this.queue_close(CLOSE_NORMAL);
            ready!(this.poll_send_reply(cx))?;
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};

    const MASK: [u8; 4] = [1, 2, 3, 4];

    fn client_frame(opcode_bits: u8, payload: &[u8]) -> Vec<u8> {
        assert!(payload.len() < 126);
        let mut frame = vec![0x80 | opcode_bits, 0x80 | payload.len() as u8];
        frame.extend_from_slice(&MASK);
        let mut masked = payload.to_vec();
        frame::apply_mask(MASK, 0, &mut masked);
        frame.extend(masked);
        frame
    }

    fn pair() -> (WsStream<DuplexStream>, DuplexStream) {
        let (server, client) = duplex(4096);
        (WsStream::new(server, 1024), client)
    }

    async fn read_exact_vec(client: &mut DuplexStream, n: usize) -> Vec<u8> {
        let mut got = vec![0u8; n];
        client.read_exact(&mut got).await.unwrap();
        got
    }

    #[test]
    fn the_adapter_adds_under_half_a_kib_to_the_stream_it_wraps() {
        let added_bytes = std::mem::size_of::<WsStream<DuplexStream>>() - std::mem::size_of::<DuplexStream>();
        assert!(added_bytes <= 512, "{added_bytes} bytes per session");
    }

    #[tokio::test]
    async fn binary_frames_read_as_bytes_and_writes_go_out_as_binary_frames() {
        let (mut ws, mut client) = pair();
        client.write_all(&client_frame(0x2, b"\x10\x02ab")).await.unwrap();
        let mut got = [0u8; 16];
        let n = ws.read(&mut got).await.unwrap();
        assert_eq!(&got[..n], b"\x10\x02ab");
        ws.write_all(b"\x20\x02\x00\x00").await.unwrap();
        ws.flush().await.unwrap();
        assert_eq!(read_exact_vec(&mut client, 6).await, b"\x82\x04\x20\x02\x00\x00");
    }

    #[tokio::test]
    async fn a_ping_is_answered_with_a_pong_of_its_payload() {
        let (mut ws, mut client) = pair();
        client.write_all(&client_frame(0x9, b"hi")).await.unwrap();
        client.write_all(&client_frame(0x2, b"x")).await.unwrap();
        let mut got = [0u8; 16];
        let n = ws.read(&mut got).await.unwrap();
        assert_eq!(&got[..n], b"x");
        assert_eq!(read_exact_vec(&mut client, 4).await, b"\x8A\x02hi");
    }

    #[tokio::test]
    async fn a_client_close_is_echoed_and_ends_the_reads() {
        let (mut ws, mut client) = pair();
        client.write_all(&client_frame(0x8, &1000u16.to_be_bytes())).await.unwrap();
        let mut got = Vec::new();
        ws.read_to_end(&mut got).await.unwrap();
        assert!(got.is_empty());
        assert_eq!(read_exact_vec(&mut client, 4).await, b"\x88\x02\x03\xE8");
        ws.write_all(b"dropped after the close").await.unwrap();
        ws.shutdown().await.unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "nothing after the echoed close: {rest:?}");
    }

    #[tokio::test]
    async fn shutdown_sends_a_normal_close() {
        let (mut ws, mut client) = pair();
        ws.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"\x88\x02\x03\xE8");
    }

    #[tokio::test]
    async fn a_text_frame_is_closed_with_1003_and_fails_the_read() {
        let (mut ws, mut client) = pair();
        client.write_all(&client_frame(0x1, b"{}")).await.unwrap();
        let error = ws.read(&mut [0u8; 16]).await.unwrap_err();
        assert_eq!(WsError::of(&error), Some(FrameError::TextFrame));
        assert_eq!(read_exact_vec(&mut client, 4).await, b"\x88\x02\x03\xEB");
    }

    #[tokio::test]
    async fn a_write_split_by_back_pressure_stays_one_frame() {
        let (server, mut client) = duplex(8);
        let mut ws = WsStream::new(server, 1024);
        let payload: Vec<u8> = (0..200u8).collect();
        let expected = payload.clone();
        let writer = tokio::spawn(async move {
            ws.write_all(&payload).await.unwrap();
            ws.flush().await.unwrap();
        });
        let got = read_exact_vec(&mut client, 4 + 200).await;
        writer.await.unwrap();
        assert_eq!(&got[..4], &[0x82, 126, 0, 200]);
        assert!(got[4..] == expected[..]);
    }
}
