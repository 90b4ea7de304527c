//! MQTT's variable byte integer (3.1.1 §2.2.3, 5.0 §1.5.5): seven bits per byte, least significant
//! group first, the top bit saying that another byte follows; at most four bytes.

/// At most four bytes (3.1.1 §2.2.3, 5.0 §1.5.5).
pub const MAX_BYTES: usize = 4;
/// The largest value four bytes hold: 268,435,455.
pub const MAX_VALUE: usize = (1 << (7 * MAX_BYTES)) - 1;
/// Top bit: another byte follows.
const CONTINUATION: u8 = 0x80;
/// The seven value bits of each byte.
const VALUE_BITS: u8 = 0x7f;
const BITS_PER_BYTE: usize = 7;

/// What the bytes at the start of a buffer say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Varint {
    /// The buffer ends with the continuation bit set: more bytes are needed.
    Incomplete,
    /// `value` took `len` bytes; `minimal` tells whether no shorter encoding exists (MQTT 5
    /// requires it, [MQTT-1.5.5-1]; 3.1.1 does not say).
    Complete { value: usize, len: usize, minimal: bool },
    /// The fourth byte has the continuation bit set.
    TooLong,
}

/// Decodes the variable byte integer at the start of `buf`.
pub fn decode(buf: &[u8]) -> Varint {
    let mut value = 0;
    for (index, &byte) in buf.iter().take(MAX_BYTES).enumerate() {
        value |= usize::from(byte & VALUE_BITS) << (BITS_PER_BYTE * index);
        if byte & CONTINUATION == 0 {
            let len = index + 1;
            return Varint::Complete { value, len, minimal: len == encoded_len(value) };
        }
    }
    if buf.len() >= MAX_BYTES {
        Varint::TooLong
    } else {
        Varint::Incomplete
    }
}

/// Bytes of the shortest encoding of `value` (at most `MAX_VALUE`).
pub fn encoded_len(value: usize) -> usize {
    let mut len = 1;
    while len < MAX_BYTES && value >> (BITS_PER_BYTE * len) != 0 {
        len += 1;
    }
    len
}

/// `value` does not fit in four bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} exceeds the MQTT variable byte integer maximum of {MAX_VALUE}")]
pub struct ValueTooLarge(pub usize);

/// Appends the shortest encoding of `value`.
pub fn encode(value: usize, out: &mut Vec<u8>) -> Result<(), ValueTooLarge> {
    if value > MAX_VALUE {
        return Err(ValueTooLarge(value));
    }
    let mut rest = value;
    loop {
        // Masked to seven bits, so the cast keeps every bit.
        let byte = (rest & usize::from(VALUE_BITS)) as u8;
        rest >>= BITS_PER_BYTE;
        if rest == 0 {
            out.push(byte);
            return Ok(());
        }
        out.push(byte | CONTINUATION);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(value: usize) -> Vec<u8> {
        let mut out = Vec::new();
        encode(value, &mut out).unwrap();
        out
    }

    #[test]
    fn spec_examples_encode_and_decode_at_each_length_boundary() {
        // 3.1.1 table 2.4 / 5.0 table 1-1: the first and last value of each length.
        let cases: [(usize, &[u8]); 8] = [
            (0, &[0x00]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xff, 0x7f]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xff, 0xff, 0x7f]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (268_435_455, &[0xff, 0xff, 0xff, 0x7f]),
        ];
        for (value, bytes) in cases {
            assert_eq!(encoded(value), bytes, "{value}");
            assert_eq!(encoded_len(value), bytes.len(), "{value}");
            assert_eq!(decode(bytes), Varint::Complete { value, len: bytes.len(), minimal: true }, "{value}");
        }
    }

    #[test]
    fn value_past_four_bytes_is_not_encoded() {
        assert_eq!(encode(MAX_VALUE + 1, &mut Vec::new()), Err(ValueTooLarge(MAX_VALUE + 1)));
    }

    #[test]
    fn fifth_byte_is_too_long_and_a_cut_varint_is_incomplete() {
        assert_eq!(decode(&[0x80, 0x80, 0x80, 0x80, 0x01]), Varint::TooLong);
        assert_eq!(decode(&[0xff, 0xff, 0xff, 0xff]), Varint::TooLong);
        assert_eq!(decode(&[]), Varint::Incomplete);
        assert_eq!(decode(&[0x80, 0x80, 0x80]), Varint::Incomplete);
    }

    #[test]
    fn padded_encoding_decodes_but_is_not_minimal() {
        assert_eq!(decode(&[0x80, 0x00]), Varint::Complete { value: 0, len: 2, minimal: false });
        assert_eq!(decode(&[0x85, 0x80, 0x00]), Varint::Complete { value: 5, len: 3, minimal: false });
    }
}
