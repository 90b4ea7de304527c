//! The CONNACKs the proxy refuses a CONNECT with, in the client's protocol version: a 3.x return
//! code (3.1.1 §3.2.2.3; 3.1 uses the same codes) or an MQTT 5 reason code (5.0 §3.2.2.2) with
//! an empty properties block. A refusal is always followed by closing the connection.

use super::ProtocolVersion;

/// CONNACK: packet type 2, fixed header flags 0 (3.1.1 §3.2.1, 5.0 §3.2.1).
const CONNACK_FIXED_HEADER: u8 = 0x20;
/// Connect acknowledge flags with session present 0, required with a refusal ([MQTT-3.2.2-4],
/// 5.0 [MQTT-3.2.2-6]).
const NO_SESSION_PRESENT: u8 = 0x00;
/// 3.x remaining length: the acknowledge flags and the return code.
const V3_REMAINING_LENGTH: u8 = 2;
/// MQTT 5 remaining length: the acknowledge flags, the reason code and a one-byte properties length.
const V5_REMAINING_LENGTH: u8 = 3;
/// MQTT 5 properties length 0: no properties (5.0 §3.2.2.3).
const V5_NO_PROPERTIES: u8 = 0x00;

/// 3.1.1 §3.2.2.3 table 3.1, return code 1: unacceptable protocol version.
pub const V3_UNACCEPTABLE_PROTOCOL_VERSION: u8 = 0x01;
/// 3.1.1 §3.2.2.3 table 3.1, return code 2: identifier rejected.
pub const V3_IDENTIFIER_REJECTED: u8 = 0x02;
/// 3.1.1 §3.2.2.3 table 3.1, return code 3: server unavailable.
pub const V3_SERVER_UNAVAILABLE: u8 = 0x03;
/// 5.0 §3.2.2.2 table 3-1: malformed packet.
pub const V5_MALFORMED_PACKET: u8 = 0x81;
/// 5.0 §3.2.2.2 table 3-1: unsupported protocol version.
pub const V5_UNSUPPORTED_PROTOCOL_VERSION: u8 = 0x84;
/// 5.0 §3.2.2.2 table 3-1: client identifier not valid.
pub const V5_CLIENT_IDENTIFIER_NOT_VALID: u8 = 0x85;
/// 5.0 §3.2.2.2 table 3-1: server unavailable.
pub const V5_SERVER_UNAVAILABLE: u8 = 0x88;
/// 5.0 §3.2.2.2 table 3-1: server busy.
pub const V5_SERVER_BUSY: u8 = 0x89;
/// 5.0 §3.2.2.2 table 3-1: packet too large.
pub const V5_PACKET_TOO_LARGE: u8 = 0x95;
/// 5.0 §3.2.2.2 table 3-1: quota exceeded.
pub const V5_QUOTA_EXCEEDED: u8 = 0x97;
/// 5.0 §3.2.2.2 table 3-1: connection rate exceeded.
pub const V5_CONNECTION_RATE_EXCEEDED: u8 = 0x9F;

/// Why a CONNECT is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// No backend server to take the session.
    ServerUnavailable,
    /// A limit on handshakes or connections.
    ServerBusy,
    /// A per-route or per-client quota.
    QuotaExceeded,
    /// A connection or handshake rate.
    ConnectionRateExceeded,
    /// The client id does not fit the verified identity.
    IdentifierRejected,
    /// A protocol name or level the proxy does not speak.
    UnsupportedVersion,
    /// A CONNECT against the spec.
    Malformed,
    /// A CONNECT over `max_connect_bytes`.
    PacketTooLarge,
}

impl Refusal {
    /// As logs and metrics name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::ServerUnavailable => "server_unavailable",
            Refusal::ServerBusy => "server_busy",
            Refusal::QuotaExceeded => "quota_exceeded",
            Refusal::ConnectionRateExceeded => "connection_rate_exceeded",
            Refusal::IdentifierRejected => "identifier_rejected",
            Refusal::UnsupportedVersion => "unsupported_version",
            Refusal::Malformed => "malformed",
            Refusal::PacketTooLarge => "packet_too_large",
        }
    }
}

/// The return code (3.x) or reason code (5.0) of `refusal`; `None` where 3.x has no code, as for
/// a malformed or too large CONNECT: the connection is closed without a CONNACK ([MQTT-4.8.0-1]).
pub fn code(version: ProtocolVersion, refusal: Refusal) -> Option<u8> {
    match version {
        ProtocolVersion::V3_1 | ProtocolVersion::V3_1_1 => match refusal {
            Refusal::ServerUnavailable
            | Refusal::ServerBusy
            | Refusal::QuotaExceeded
            | Refusal::ConnectionRateExceeded => Some(V3_SERVER_UNAVAILABLE),
            Refusal::IdentifierRejected => Some(V3_IDENTIFIER_REJECTED),
            Refusal::UnsupportedVersion => Some(V3_UNACCEPTABLE_PROTOCOL_VERSION),
            Refusal::Malformed | Refusal::PacketTooLarge => None,
        },
        ProtocolVersion::V5 => Some(match refusal {
            Refusal::ServerUnavailable => V5_SERVER_UNAVAILABLE,
            Refusal::ServerBusy => V5_SERVER_BUSY,
            Refusal::QuotaExceeded => V5_QUOTA_EXCEEDED,
            Refusal::ConnectionRateExceeded => V5_CONNECTION_RATE_EXCEEDED,
            Refusal::IdentifierRejected => V5_CLIENT_IDENTIFIER_NOT_VALID,
            Refusal::UnsupportedVersion => V5_UNSUPPORTED_PROTOCOL_VERSION,
            Refusal::Malformed => V5_MALFORMED_PACKET,
            Refusal::PacketTooLarge => V5_PACKET_TOO_LARGE,
        }),
    }
}

/// The CONNACK refusing a CONNECT of `version`; empty when the spec has the proxy close without
/// one (see `code`).
pub fn refusal(version: ProtocolVersion, refusal: Refusal) -> Vec<u8> {
    match (version, code(version, refusal)) {
        (_, None) => Vec::new(),
        (ProtocolVersion::V5, Some(reason)) => {
            vec![CONNACK_FIXED_HEADER, V5_REMAINING_LENGTH, NO_SESSION_PRESENT, reason, V5_NO_PROPERTIES]
        }
        (ProtocolVersion::V3_1 | ProtocolVersion::V3_1_1, Some(code)) => {
            vec![CONNACK_FIXED_HEADER, V3_REMAINING_LENGTH, NO_SESSION_PRESENT, code]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Refusal; 8] = [
        Refusal::ServerUnavailable,
        Refusal::ServerBusy,
        Refusal::QuotaExceeded,
        Refusal::ConnectionRateExceeded,
        Refusal::IdentifierRejected,
        Refusal::UnsupportedVersion,
        Refusal::Malformed,
        Refusal::PacketTooLarge,
    ];

    #[test]
    fn v3_refusals_use_the_four_byte_connack_and_busy_quota_or_rate_read_as_unavailable() {
        for version in [ProtocolVersion::V3_1, ProtocolVersion::V3_1_1] {
            assert_eq!(refusal(version, Refusal::ServerUnavailable), [0x20, 0x02, 0x00, 0x03]);
            assert_eq!(refusal(version, Refusal::ServerBusy), [0x20, 0x02, 0x00, 0x03]);
            assert_eq!(refusal(version, Refusal::QuotaExceeded), [0x20, 0x02, 0x00, 0x03]);
            assert_eq!(refusal(version, Refusal::ConnectionRateExceeded), [0x20, 0x02, 0x00, 0x03]);
            assert_eq!(refusal(version, Refusal::IdentifierRejected), [0x20, 0x02, 0x00, 0x02]);
            assert_eq!(refusal(version, Refusal::UnsupportedVersion), [0x20, 0x02, 0x00, 0x01]);
        }
    }

    #[test]
    fn v3_malformed_or_too_large_closes_without_connack() {
        for version in [ProtocolVersion::V3_1, ProtocolVersion::V3_1_1] {
            assert!(refusal(version, Refusal::Malformed).is_empty());
            assert!(refusal(version, Refusal::PacketTooLarge).is_empty());
        }
    }

    #[test]
    fn v5_refusals_carry_the_reason_code_and_empty_properties() {
        let expected = [0x88, 0x89, 0x97, 0x9F, 0x85, 0x84, 0x81, 0x95];
        for (refused, reason) in ALL.into_iter().zip(expected) {
            assert_eq!(refusal(ProtocolVersion::V5, refused), [0x20, 0x03, 0x00, reason, 0x00], "{refused:?}");
        }
    }

    #[test]
    fn every_refusal_has_a_distinct_label() {
        let labels: std::collections::HashSet<_> = ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), ALL.len());
    }
}
