//! MQTT over WebSocket, unwrapped at the edge (`routes[].websocket`): after the TLS handshake
//! (terminate) or at once (tcp), the client's HTTP/1.1 upgrade is read and answered here, and the
//! connection goes on as a [`WsStream`], the byte stream of its binary messages, which the MQTT
//! admission and the buffered relay take like any other client stream.
//!
//! `upgrade.rs` checks the request head and writes the responses, `frame.rs` is the frame codec
//! (no I/O, fuzzed), `stream.rs` the adapter; this file reads the head within its bounds.

pub mod frame;
pub mod stream;
pub mod upgrade;

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::metrics::close_cause::CloseCause;
use crate::proxy::linger;
pub use frame::FrameError;
pub use stream::{WsError, WsStream};
pub use upgrade::Refusal;

/// `websocket.path` default: what MQTT.js and paho-mqtt ask for.
pub const DEFAULT_PATH: &str = "/mqtt";
/// `websocket.subprotocols` default: MQTT 3.1.1 and 5 say `mqtt`, MQTT 3.1 clients `mqttv3.1`.
pub const DEFAULT_SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];
/// `websocket.max_message_bytes` default: 1 MiB, above any MQTT packet a device or dashboard
/// sends; a message is never buffered whole, so this bounds nothing held in memory.
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 1024 * 1024;
/// The most bytes an upgrade request head may have (a browser's is well under 2 KiB, cookies
/// included); a larger one is refused with 431.
pub const MAX_REQUEST_HEAD_BYTES: usize = 8192;
/// Most bytes one read of the request head asks for: the buffer grows with what arrives.
const READ_CHUNK_BYTES: usize = 1024;
/// The first byte of an MQTT CONNECT (packet type 1, no flags): with `also_plain_mqtt`, a client
/// starting with it speaks plain MQTT. An HTTP request starts with a letter.
const MQTT_CONNECT_FIRST_BYTE: u8 = 0x10;

/// A route's `websocket:` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSocketSettings {
    /// The request path the upgrade must ask for (the query string is ignored).
    pub path: String,
    /// Subprotocols accepted, in the server's order of preference; empty: none is negotiated.
    pub subprotocols: Vec<String>,
    /// When not empty, an `Origin` header must be one of these (a client without one is let in).
    pub allowed_origins: Vec<String>,
    /// The largest message, summed over its fragments.
    pub max_message_bytes: u64,
    /// A client whose first byte starts an MQTT CONNECT is served as plain MQTT on the same route.
    pub also_plain_mqtt: bool,
}

impl Default for WebSocketSettings {
    fn default() -> Self {
        WebSocketSettings {
            path: DEFAULT_PATH.to_string(),
            subprotocols: DEFAULT_SUBPROTOCOLS.iter().map(|p| p.to_string()).collect(),
            allowed_origins: Vec::new(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            also_plain_mqtt: false,
        }
    }
}

/// How the client goes on after its first bytes.
#[derive(Debug)]
pub enum Opened {
    /// Upgraded: what it sent past the request head, the start of its frames.
    WebSocket { rest: Vec<u8> },
    /// `also_plain_mqtt` and the client speaks plain MQTT: the bytes read so far.
    PlainMqtt { received: Vec<u8> },
}

/// Why no WebSocket session was opened.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeFailure {
    /// The client read its status and was closed.
    #[error("upgrade refused: {0}")]
    Refused(Refusal),
    #[error("no complete upgrade request within {0:?}")]
    Timeout(Duration),
    #[error("client closed before the upgrade request was complete")]
    ClientClosed,
    #[error("reading the upgrade request: {0}")]
    Io(io::Error),
}

impl UpgradeFailure {
    pub fn cause(&self) -> CloseCause {
        match self {
            UpgradeFailure::Refused(refusal) => refusal_cause(refusal),
            UpgradeFailure::Timeout(_) => CloseCause::WebSocketUpgradeTimeout,
            UpgradeFailure::ClientClosed => CloseCause::ClientClosed,
            UpgradeFailure::Io(_) => CloseCause::ClientIo,
        }
    }
}

fn refusal_cause(refusal: &Refusal) -> CloseCause {
    match refusal {
        Refusal::Malformed(_) | Refusal::NotUpgrade(_) => CloseCause::WebSocketBadRequest,
        Refusal::Subprotocol { .. } => CloseCause::WebSocketNoSubprotocol,
        Refusal::TooLarge => CloseCause::WebSocketRequestTooLarge,
        Refusal::MethodNotAllowed(_) => CloseCause::WebSocketMethodNotAllowed,
        Refusal::NotFound(_) => CloseCause::WebSocketNotFound,
        Refusal::Version(_) => CloseCause::WebSocketUpgradeRequired,
        Refusal::Origin(_) => CloseCause::WebSocketForbiddenOrigin,
    }
}

/// The close cause of a frame the client got a close code for.
pub fn frame_error_cause(error: FrameError) -> CloseCause {
    match error {
        FrameError::TextFrame => CloseCause::WebSocketTextFrame,
        FrameError::MessageTooBig { .. } => CloseCause::WebSocketMessageTooBig,
        _ => CloseCause::WebSocketProtocolError,
    }
}

/// Reads the upgrade request (after `received`) within `timeout` and [`MAX_REQUEST_HEAD_BYTES`]
/// and answers it: 101, or the refusal's status followed by a lingering close. With
/// `also_plain_mqtt`, a first byte of an MQTT CONNECT returns the bytes read instead.
pub async fn open<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    received: Vec<u8>,
    settings: &WebSocketSettings,
    timeout: Duration,
) -> Result<Opened, UpgradeFailure> {
    let read = tokio::time::timeout(timeout, read_request(stream, received, settings)).await;
    let failure = match read {
        Err(_) => UpgradeFailure::Timeout(timeout),
        Ok(Ok(Head::PlainMqtt(received))) => return Ok(Opened::PlainMqtt { received }),
        Ok(Ok(Head::Upgrade { response, rest })) => match write_flushed(stream, &response).await {
            Ok(()) => return Ok(Opened::WebSocket { rest }),
            Err(error) => UpgradeFailure::Io(error),
        },
        Ok(Err(failure)) => failure,
    };
    match &failure {
        UpgradeFailure::Refused(refusal) => {
            let _ = stream.write_all(refusal.response()).await;
            linger::close_after_refusal(stream).await;
        }
        _ => {
            let _ = stream.shutdown().await;
        }
    }
    Err(failure)
}

/// Writes the 101 and flushes it (TLS: out of rustls's buffer), before any frame is awaited.
async fn write_flushed<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// A request head read whole.
enum Head {
    Upgrade { response: Vec<u8>, rest: Vec<u8> },
    PlainMqtt(Vec<u8>),
}

async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    received: Vec<u8>,
    settings: &WebSocketSettings,
) -> Result<Head, UpgradeFailure> {
    let mut buf = received;
    loop {
        if settings.also_plain_mqtt && buf.first() == Some(&MQTT_CONNECT_FIRST_BYTE) {
            return Ok(Head::PlainMqtt(buf));
        }
        if !buf.is_empty() {
            match upgrade::check(&buf, settings).map_err(UpgradeFailure::Refused)? {
                upgrade::Progress::Complete { head_len, accepted } => {
                    let response = upgrade::switching_protocols(&accepted, settings);
                    return Ok(Head::Upgrade { response, rest: buf.split_off(head_len) });
                }
                upgrade::Progress::Incomplete if buf.len() >= MAX_REQUEST_HEAD_BYTES => {
                    return Err(UpgradeFailure::Refused(Refusal::TooLarge));
                }
                upgrade::Progress::Incomplete => {}
            }
        }
        let start = buf.len();
        buf.resize(start + READ_CHUNK_BYTES.min(MAX_REQUEST_HEAD_BYTES - start), 0);
        let read = stream.read(&mut buf[start..]).await.map_err(UpgradeFailure::Io)?;
        if read == 0 {
            return Err(UpgradeFailure::ClientClosed);
        }
        buf.truncate(start + read);
    }
}
