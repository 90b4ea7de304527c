//! `mqtt.username: identity`: the CONNECT's username field set to the verified client identity.
//! Only the username field, its flag and the remaining length change; the properties, the will
//! and the password are copied byte for byte.

use super::connect::{Connect, FLAG_USERNAME, LENGTH_PREFIX_BYTES};
use super::varint;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    #[error("identity of {len} bytes exceeds the MQTT string maximum of {} bytes", u16::MAX)]
    UsernameTooLong { len: usize },
    #[error("identity holds U+0000, which an MQTT string cannot")]
    NulInUsername,
    #[error("the packet is shorter than the parsed CONNECT")]
    PacketMismatch,
    #[error("rewritten CONNECT too large: {0}")]
    TooLarge(#[from] varint::ValueTooLarge),
}

/// The CONNECT of `packet` (as `connect` parsed it) with its username set to `username`, inserted
/// or replaced. Bytes after `connect.len` are not included: the caller forwards them as they are.
pub fn with_username(packet: &[u8], connect: &Connect, username: &str) -> Result<Vec<u8>, RewriteError> {
    let username_len =
        u16::try_from(username.len()).map_err(|_| RewriteError::UsernameTooLong { len: username.len() })?;
    if username.contains('\0') {
        return Err(RewriteError::NulInUsername);
    }
    let span = &connect.username_span;
    let in_order = connect.header_len <= connect.flags_at && connect.flags_at < span.start && span.end <= connect.len;
    if !in_order || connect.len > packet.len() {
        return Err(RewriteError::PacketMismatch);
    }
    let field_len = LENGTH_PREFIX_BYTES + username.len();
    let remaining = connect.len - connect.header_len - span.len() + field_len;

    let mut out = Vec::with_capacity(connect.len + field_len);
    out.push(packet[0]);
    varint::encode(remaining, &mut out)?;
    out.extend_from_slice(&packet[connect.header_len..connect.flags_at]);
    out.push(packet[connect.flags_at] | FLAG_USERNAME);
    out.extend_from_slice(&packet[connect.flags_at + 1..span.start]);
    out.extend_from_slice(&username_len.to_be_bytes());
    out.extend_from_slice(username.as_bytes());
    out.extend_from_slice(&packet[span.end..connect.len]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::mqtt::connect::{parse, Progress};
    use crate::proxy::mqtt::sample::{self, Build};
    use crate::proxy::mqtt::ProtocolVersion;

    fn parsed(packet: &[u8]) -> Connect {
        match parse(packet, usize::MAX) {
            Ok(Progress::Complete(connect)) => connect,
            other => panic!("not a complete CONNECT: {other:?}"),
        }
    }

    /// Everything but the username (and the offsets that follow from it) is unchanged.
    fn assert_same_but_username(before: &Connect, after: &Connect, username: &str) {
        assert_eq!(after.username.as_deref(), Some(username));
        assert_eq!(after.version, before.version);
        assert_eq!(after.client_id, before.client_id);
        assert_eq!(after.has_password, before.has_password);
        assert_eq!(after.keepalive_secs, before.keepalive_secs);
        assert_eq!(after.clean_start, before.clean_start);
        assert_eq!(after.will, before.will);
    }

    #[test]
    fn rewrite_round_trips_on_every_sample_connect() {
        for (name, packet) in sample::all() {
            let before = parsed(&packet);
            for username in ["", "device-42.tenant-a", "é-ü", &"x".repeat(300)] {
                let rewritten = with_username(&packet, &before, username).unwrap();
                let after = parsed(&rewritten);
                assert_same_but_username(&before, &after, username);
                assert_eq!(after.len, rewritten.len(), "{name}");
                let props = |c: &Connect, p: &[u8]| c.properties_span.clone().map(|s| p[s].to_vec());
                assert_eq!(props(&after, &rewritten), props(&before, &packet), "{name}: properties");
                // The password, will and username-less tail are copied as they were.
                assert_eq!(
                    rewritten[after.username_span.end..],
                    packet[before.username_span.end..before.len],
                    "{name}"
                );
                assert_eq!(
                    rewritten[after.flags_at + 1..after.username_span.start],
                    packet[before.flags_at + 1..before.username_span.start],
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn username_is_inserted_before_the_password_with_its_flag() {
        let packet = Build { version: ProtocolVersion::V5, password: Some(b"pw"), ..Build::default() }.bytes();
        let before = parsed(&packet);
        assert_eq!(before.username, None);
        let rewritten = with_username(&packet, &before, "cn=dev").unwrap();
        let expected = Build {
            version: ProtocolVersion::V5,
            username: Some(b"cn=dev"),
            password: Some(b"pw"),
            ..Build::default()
        }
        .bytes();
        assert_eq!(rewritten, expected);
    }

    #[test]
    fn paho_username_is_replaced_and_password_kept() {
        let packet = sample::PAHO_V311_USER_WILL;
        let before = parsed(packet);
        assert_eq!(before.username.as_deref(), Some("alice"));
        let rewritten = with_username(packet, &before, "device-7").unwrap();
        assert!(rewritten.ends_with(b"\x00\x08device-7\x00\x0fs3cret-password"));
        assert_eq!(rewritten.len(), packet.len() + 3);
        assert_eq!(rewritten[1], packet[1] + 3, "remaining length");
    }

    #[test]
    fn growing_past_127_bytes_re_encodes_the_remaining_length_in_two_bytes() {
        let packet = sample::PAHO_V5_USER_WILL_PROPS;
        let before = parsed(packet);
        let rewritten = with_username(packet, &before, &"u".repeat(100)).unwrap();
        let after = parsed(&rewritten);
        assert_eq!(after.header_len, 3);
        assert_eq!(after.len, rewritten.len());
    }

    #[test]
    fn pipelined_bytes_after_the_connect_are_not_copied() {
        let mut buf = sample::PAHO_V31.to_vec();
        buf.extend_from_slice(b"\xc0\x00");
        let before = parsed(&buf);
        let rewritten = with_username(&buf, &before, "id").unwrap();
        assert_eq!(parsed(&rewritten).len, rewritten.len());
    }

    #[test]
    fn identity_that_no_mqtt_string_can_hold_is_refused() {
        let packet = sample::PAHO_V311_EMPTY_ID;
        let connect = parsed(packet);
        let long = "a".repeat(usize::from(u16::MAX) + 1);
        assert_eq!(with_username(packet, &connect, &long), Err(RewriteError::UsernameTooLong { len: long.len() }));
        assert_eq!(with_username(packet, &connect, "a\0b"), Err(RewriteError::NulInUsername));
        assert_eq!(with_username(&packet[..5], &connect, "a"), Err(RewriteError::PacketMismatch));
    }
}
