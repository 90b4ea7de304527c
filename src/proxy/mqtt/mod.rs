//! The MQTT layer of `mqtt:` routes, without I/O: the first packet (`connect`), the refusals a
//! proxy may answer it with (`connack`), and setting the CONNECT's username to the verified
//! client identity (`rewrite`). MQTT 3.1 (`MQIsdp`), 3.1.1 and 5.0; see ARCHITECTURE.md.

pub mod connack;
pub mod connect;
pub mod rewrite;
pub mod varint;

#[cfg(test)]
mod sample;

use std::fmt;

/// Protocol levels of the CONNECT's variable header (3.1 §3.1, 3.1.1 §3.1.2.2, 5.0 §3.1.2.2).
pub const LEVEL_V3_1: u8 = 3;
pub const LEVEL_V3_1_1: u8 = 4;
pub const LEVEL_V5: u8 = 5;

/// The protocol a CONNECT spoke, from its protocol name and level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolVersion {
    /// Protocol name `MQIsdp`, level 3.
    V3_1,
    /// Protocol name `MQTT`, level 4.
    V3_1_1,
    /// Protocol name `MQTT`, level 5.
    V5,
}

impl ProtocolVersion {
    /// As the access log writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ProtocolVersion::V3_1 => "3.1",
            ProtocolVersion::V3_1_1 => "3.1.1",
            ProtocolVersion::V5 => "5.0",
        }
    }

    /// The protocol level byte of the CONNECT's variable header.
    pub fn level(self) -> u8 {
        match self {
            ProtocolVersion::V3_1 => LEVEL_V3_1,
            ProtocolVersion::V3_1_1 => LEVEL_V3_1_1,
            ProtocolVersion::V5 => LEVEL_V5,
        }
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
