//! The MQTT step of an `mqtt:` route's admission: after the TLS handshake (terminate) or at once
//! (tcp), read the first packet until it is a whole CONNECT, within `connect_timeout` and
//! `max_connect_bytes`. The parsing is `mqtt::connect`'s; this file owns the reads, the deadline
//! and which refusal a failure gets. Its buffer lives only until the CONNECT is forwarded.

use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::metrics::close_cause::MqttRefusal;
use crate::proxy::mqtt::connack::{self, Refusal};
use crate::proxy::mqtt::connect::{self, Connect, ConnectError, Progress};
use crate::proxy::mqtt::rewrite;

/// `mqtt.connect_timeout` default: generous for a device on a slow link, short enough that a
/// silent connection does not hold its slot for long.
pub const DEFAULT_MQTT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// `mqtt.max_connect_bytes` default: a CONNECT with a will, user properties and credentials fits
/// in well under 8 KiB; the bound is the per-connection buffer's.
pub const DEFAULT_MQTT_MAX_CONNECT_BYTES: usize = 8192;

/// Most bytes one read asks for: the CONNECT buffer grows with what arrives, not to the cap at once.
const READ_CHUNK_BYTES: usize = 2048;

/// A route's `mqtt:` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttSettings {
    pub connect_timeout: Duration,
    pub max_connect_bytes: usize,
    pub client_id: ClientIdRule,
    pub username: UsernameRule,
}

/// `mqtt.client_id`: how the CONNECT's client id must relate to the verified client identity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientIdRule {
    /// Any client id.
    #[default]
    Any,
    /// Equal to the identity.
    Identity,
    /// Starting with the identity.
    IdentityPrefix,
}

/// `mqtt.username`: the username the broker gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsernameRule {
    /// The client's, as sent.
    #[default]
    Client,
    /// The verified client identity, in place of the client's.
    Identity,
}

impl MqttSettings {
    /// Whether the route's rules read the verified client identity.
    pub fn needs_identity(&self) -> bool {
        self.client_id != ClientIdRule::Any || self.username == UsernameRule::Identity
    }
}

/// A CONNECT read whole: what it says, and the bytes to forward (it, then any pipelined ones).
#[derive(Debug)]
pub struct ConnectRead {
    pub connect: Connect,
    pub bytes: Vec<u8>,
}

/// Why no CONNECT was read.
#[derive(Debug, thiserror::Error)]
pub enum ConnectFailure {
    /// Refused: counted as `reason`, answered with `connack` (empty: a plain close).
    #[error("{error}")]
    Refused { reason: MqttRefusal, error: String, connack: Vec<u8> },
    #[error("client closed before the CONNECT was complete")]
    ClientClosed,
    #[error("reading the CONNECT: {0}")]
    Io(std::io::Error),
    /// The identity the route's rules need is missing or cannot be a username.
    #[error("client identity for the CONNECT: {0}")]
    Identity(String),
}

/// Reads until `received` plus what follows holds a whole CONNECT.
pub async fn read_connect<S: AsyncRead + Unpin>(
    stream: &mut S,
    received: Vec<u8>,
    settings: &MqttSettings,
) -> Result<ConnectRead, ConnectFailure> {
    let deadline = tokio::time::Instant::now() + settings.connect_timeout;
    let mut buf = received;
    loop {
        match connect::parse(&buf, settings.max_connect_bytes) {
            Ok(Progress::Complete(connect)) => return Ok(ConnectRead { connect, bytes: buf }),
            Ok(Progress::Incomplete) => {}
            Err(error) => return Err(refused(&error)),
        }
        let start = buf.len();
        let room = settings.max_connect_bytes.saturating_sub(start).clamp(1, READ_CHUNK_BYTES);
        buf.resize(start + room, 0);
        let read = match tokio::time::timeout_at(deadline, stream.read(&mut buf[start..])).await {
            Err(_) => {
                return Err(ConnectFailure::Refused {
                    reason: MqttRefusal::ConnectTimeout,
                    error: format!("no complete CONNECT within {:?}", settings.connect_timeout),
                    connack: Vec::new(),
                })
            }
            Ok(Err(error)) => return Err(ConnectFailure::Io(error)),
            Ok(Ok(0)) => return Err(ConnectFailure::ClientClosed),
            Ok(Ok(read)) => read,
        };
        buf.truncate(start + read);
    }
}

/// The refusal of a first packet that is not an acceptable CONNECT, with the CONNACK its version
/// gets (none where the version is unknown or 3.x has no code for it).
fn refused(error: &ConnectError) -> ConnectFailure {
    let reason = match error {
        ConnectError::TooLarge { .. } | ConnectError::LengthTooLong => MqttRefusal::ConnectTooLarge,
        ConnectError::UnsupportedLevel { .. } => MqttRefusal::UnsupportedVersion,
        _ => MqttRefusal::ConnectMalformed,
    };
    let connack = error.refusal().map(|(version, refusal)| connack::refusal(version, refusal)).unwrap_or_default();
    ConnectFailure::Refused { reason, error: error.to_string(), connack }
}

/// Applies the route's `client_id` and `username` rules to a read CONNECT, with `identity` the
/// session's verified client identity: a client id that does not fit it is refused with
/// "identifier rejected"; `username: identity` rewrites the CONNECT (what follows it is kept).
pub fn admit(
    read: ConnectRead,
    settings: &MqttSettings,
    identity: Option<&str>,
) -> Result<ConnectRead, ConnectFailure> {
    if !settings.needs_identity() {
        return Ok(read);
    }
    let Some(identity) = identity else {
        return Err(ConnectFailure::Identity("the route's mqtt rules need a verified client certificate".into()));
    };
    let fits = match settings.client_id {
        ClientIdRule::Any => true,
        ClientIdRule::Identity => read.connect.client_id == identity,
        ClientIdRule::IdentityPrefix => read.connect.client_id.starts_with(identity),
    };
    if !fits {
        return Err(ConnectFailure::Refused {
            reason: MqttRefusal::ClientIdRejected,
            error: format!("client id {:?} does not fit the client identity {identity:?}", read.connect.client_id),
            connack: connack::refusal(read.connect.version, Refusal::IdentifierRejected),
        });
    }
    if settings.username != UsernameRule::Identity {
        return Ok(read);
    }
    let ConnectRead { mut connect, bytes } = read;
    let mut rewritten = rewrite::with_username(&bytes, &connect, identity)
        .map_err(|error| ConnectFailure::Identity(error.to_string()))?;
    rewritten.extend_from_slice(&bytes[connect.len..]);
    connect.username = Some(identity.to_owned());
    Ok(ConnectRead { connect, bytes: rewritten })
}

/// The CONNACK refusing a read CONNECT because no backend server could be connected.
pub fn server_unavailable(connect: &Connect) -> Vec<u8> {
    connack::refusal(connect.version, Refusal::ServerUnavailable)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: MqttSettings = MqttSettings {
        connect_timeout: Duration::from_secs(5),
        max_connect_bytes: 64,
        client_id: ClientIdRule::Any,
        username: UsernameRule::Client,
    };
    /// A 3.1.1 CONNECT, client id "a", keepalive 60, clean session, then a PINGREQ.
    const CONNECT_AND_PING: [u8; 17] = [0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, b'a', 0xc0, 0x00];

    #[tokio::test]
    async fn connect_fed_from_received_and_stream_keeps_pipelined_bytes() {
        let (mut client, mut server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, &CONNECT_AND_PING[3..]).await.unwrap();
        let read = read_connect(&mut server, CONNECT_AND_PING[..3].to_vec(), &SETTINGS).await.unwrap();
        assert_eq!(read.connect.client_id, "a");
        assert_eq!(read.bytes, CONNECT_AND_PING);
    }

    #[tokio::test]
    async fn a_connect_over_the_cap_is_refused_as_too_large() {
        let (_client, mut server) = tokio::io::duplex(64);
        let huge = [0x10, 0xff, 0x7f];
        let failure = read_connect(&mut server, huge.to_vec(), &SETTINGS).await.unwrap_err();
        assert!(matches!(failure, ConnectFailure::Refused { reason: MqttRefusal::ConnectTooLarge, .. }), "{failure:?}");
    }

    #[tokio::test]
    async fn a_publish_first_is_refused_as_malformed_without_connack() {
        let (_client, mut server) = tokio::io::duplex(64);
        let failure = read_connect(&mut server, vec![0x30, 0x00], &SETTINGS).await.unwrap_err();
        let ConnectFailure::Refused { reason, connack, .. } = failure else { panic!("{failure:?}") };
        assert_eq!((reason, connack.len()), (MqttRefusal::ConnectMalformed, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn an_incomplete_connect_is_refused_at_the_timeout() {
        let (_client, mut server) = tokio::io::duplex(64);
        let failure = read_connect(&mut server, CONNECT_AND_PING[..5].to_vec(), &SETTINGS).await.unwrap_err();
        assert!(matches!(failure, ConnectFailure::Refused { reason: MqttRefusal::ConnectTimeout, .. }), "{failure:?}");
    }

    fn read_of(bytes: &[u8]) -> ConnectRead {
        let Ok(Progress::Complete(connect)) = connect::parse(bytes, 64) else { panic!("not a CONNECT") };
        ConnectRead { connect, bytes: bytes.to_vec() }
    }

    #[test]
    fn client_id_rules_against_the_identity() {
        let rule = |client_id| MqttSettings { client_id, ..SETTINGS };
        assert!(admit(read_of(&CONNECT_AND_PING), &rule(ClientIdRule::Identity), Some("a")).is_ok());
        assert!(admit(read_of(&CONNECT_AND_PING), &rule(ClientIdRule::IdentityPrefix), Some("")).is_ok());
        let failure = admit(read_of(&CONNECT_AND_PING), &rule(ClientIdRule::Identity), Some("b")).unwrap_err();
        let ConnectFailure::Refused { reason, connack, .. } = failure else { panic!("{failure:?}") };
        assert_eq!((reason, connack), (MqttRefusal::ClientIdRejected, vec![0x20, 0x02, 0x00, 0x02]));
        let failure = admit(read_of(&CONNECT_AND_PING), &rule(ClientIdRule::Identity), None).unwrap_err();
        assert!(matches!(failure, ConnectFailure::Identity(_)), "{failure:?}");
    }

    #[test]
    fn username_identity_rewrites_the_connect_and_keeps_what_follows() {
        let settings = MqttSettings { username: UsernameRule::Identity, ..SETTINGS };
        let admitted = admit(read_of(&CONNECT_AND_PING), &settings, Some("dev")).unwrap();
        assert_eq!(admitted.connect.username.as_deref(), Some("dev"));
        let Ok(Progress::Complete(reparsed)) = connect::parse(&admitted.bytes, 64) else { panic!("not a CONNECT") };
        assert_eq!((reparsed.username.as_deref(), reparsed.client_id.as_str()), (Some("dev"), "a"));
        assert_eq!(admitted.bytes[reparsed.len..], [0xc0, 0x00]);
    }
}
