//! CONNECTs for the tests: captured from paho-mqtt 2.2 (`testdata/capture.py`) and built by hand.

use super::ProtocolVersion;

pub const PAHO_V311_USER_WILL: &[u8] = include_bytes!("testdata/paho-v311-user-will.bin");
pub const PAHO_V5_USER_WILL_PROPS: &[u8] = include_bytes!("testdata/paho-v5-user-will-props.bin");
pub const PAHO_V31: &[u8] = include_bytes!("testdata/paho-v31.bin");
pub const PAHO_V311_EMPTY_ID: &[u8] = include_bytes!("testdata/paho-v311-empty-id.bin");

/// A CONNECT written field by field (3.1.1 §3.1, 5.0 §3.1); fields are raw bytes so tests can
/// put invalid UTF-8 in them.
#[derive(Debug, Clone)]
pub struct Build {
    pub version: ProtocolVersion,
    pub clean_start: bool,
    pub keepalive_secs: u16,
    /// MQTT 5 CONNECT properties, without their length.
    pub properties: &'static [u8],
    pub client_id: &'static [u8],
    /// Will topic and payload (MQTT 5: empty will properties), QoS 1.
    pub will: Option<(&'static [u8], &'static [u8])>,
    pub username: Option<&'static [u8]>,
    pub password: Option<&'static [u8]>,
}

impl Default for Build {
    fn default() -> Self {
        Build {
            version: ProtocolVersion::V3_1_1,
            clean_start: true,
            keepalive_secs: 60,
            properties: b"",
            client_id: b"dev-1",
            will: None,
            username: None,
            password: None,
        }
    }
}

fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u16::try_from(bytes.len()).unwrap().to_be_bytes());
    out.extend_from_slice(bytes);
}

impl Build {
    pub fn bytes(&self) -> Vec<u8> {
        let mut body = Vec::new();
        string(&mut body, if self.version == ProtocolVersion::V3_1 { b"MQIsdp" } else { b"MQTT" });
        body.push(self.version.level());
        let flags = u8::from(self.clean_start) << 1
            | self.will.map_or(0, |_| 0x04 | 0x08)
            | self.password.map_or(0, |_| 0x40)
            | self.username.map_or(0, |_| 0x80);
        body.push(flags);
        body.extend_from_slice(&self.keepalive_secs.to_be_bytes());
        let v5 = self.version == ProtocolVersion::V5;
        if v5 {
            super::varint::encode(self.properties.len(), &mut body).unwrap();
            body.extend_from_slice(self.properties);
        }
        string(&mut body, self.client_id);
        if let Some((topic, payload)) = self.will {
            if v5 {
                body.push(0);
            }
            string(&mut body, topic);
            string(&mut body, payload);
        }
        for field in [self.username, self.password].into_iter().flatten() {
            string(&mut body, field);
        }
        let mut packet = vec![0x10];
        super::varint::encode(body.len(), &mut packet).unwrap();
        packet.extend_from_slice(&body);
        packet
    }
}

/// Every valid sample, named.
pub fn all() -> Vec<(String, Vec<u8>)> {
    let mut samples: Vec<(String, Vec<u8>)> = [
        ("paho-v311-user-will", PAHO_V311_USER_WILL),
        ("paho-v5-user-will-props", PAHO_V5_USER_WILL_PROPS),
        ("paho-v31", PAHO_V31),
        ("paho-v311-empty-id", PAHO_V311_EMPTY_ID),
    ]
    .into_iter()
    .map(|(name, bytes)| (name.to_owned(), bytes.to_vec()))
    .collect();
    for version in [ProtocolVersion::V3_1, ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        let built = [
            ("bare", Build { version, ..Build::default() }),
            (
                "full",
                Build {
                    version,
                    clean_start: false,
                    keepalive_secs: 0,
                    properties: b"\x11\x00\x00\x0e\x10",
                    client_id: "capteur-é".as_bytes(),
                    will: Some((b"w/t", b"\x00\xff bye")),
                    username: Some(b"user"),
                    password: Some(b"\x00\x01secret"),
                },
            ),
            ("long-id", Build { version, client_id: &[b'c'; 200], ..Build::default() }),
        ];
        for (name, build) in built {
            samples.push((format!("built-{version}-{name}"), build.bytes()));
        }
    }
    samples
}
