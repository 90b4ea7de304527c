//! Writes the seed corpus under `fuzz/corpus/<target>/`:
//!
//! - `hello_parse`: real ClientHellos captured from rustls clients (`ClientConnection::write_tls`)
//!   with the aws-lc-rs provider: default key shares (X25519MLKEM768, ~1.5 KB), SNI, ALPN,
//!   TLS 1.2 only, X25519 only, no SNI; then the same handshake message re-framed across several
//!   records, split inside the handshake header, one byte per record, and followed by more records;
//! - `inbound_parse`: PROXY v1 and v2 headers written from the HAProxy spec (TCP4/TCP6/UNKNOWN,
//!   LOCAL, UDP, UNIX, TLVs including PP2_TYPE_SSL), some followed by the start of a hello;
//! - `config_parse`: `routes.example.yaml` and variants (one with every `tls.acme` key);
//! - `nginx_import`: the nginx configs of the import tests (`tests/data/nginx/`);
//! - `haproxy_import`: the HAProxy configs of the import tests (`tests/data/haproxy/`) and a few
//!   written for the lexer (quotes, escapes, variables) and missing certificates;
//! - `mqtt_connect`: the paho-mqtt CONNECTs of `src/proxy/mqtt/testdata/` and CONNECTs written
//!   from the 3.1.1 and 5.0 specs, valid and not.
//!
//! Run: `cargo run --manifest-path fuzz/Cargo.toml --example make_corpus [TARGET…]` (rewrites the
//! files of the named targets, all by default; the hellos carry fresh random values each time, so
//! only run it to change the corpus).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::{aws_lc_rs, CryptoProvider};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};

/// Writes one target's seed files into the folder it is given.
type WriteCorpus = fn(&Path);

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let named: Vec<String> = std::env::args().skip(1).collect();
    let writers: [(&str, WriteCorpus); 6] = [
        ("hello_parse", hellos),
        ("inbound_parse", proxy_headers),
        ("config_parse", configs),
        ("nginx_import", nginx_configs),
        ("haproxy_import", haproxy_configs),
        ("mqtt_connect", mqtt_connects),
    ];
    for (target, write_corpus) in writers {
        if named.is_empty() || named.iter().any(|name| name == target) {
            write_corpus(&root.join(target));
        }
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).unwrap();
    let path: PathBuf = dir.join(name);
    fs::write(&path, bytes).unwrap();
    println!("{:>6} bytes  {}", bytes.len(), path.display());
}

// ---------------------------------------------------------------------------------------------
// ClientHellos.

fn config_with(provider: CryptoProvider, versions: &[&'static rustls::SupportedProtocolVersion]) -> ClientConfig {
    ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth()
}

fn default_config() -> ClientConfig {
    config_with(aws_lc_rs::default_provider(), rustls::DEFAULT_VERSIONS)
}

/// The bytes a fresh client sends first: its ClientHello, as rustls frames it.
fn capture(config: ClientConfig, name: &str) -> Vec<u8> {
    let name = ServerName::try_from(name.to_string()).unwrap();
    let mut connection = ClientConnection::new(Arc::new(config), name).unwrap();
    let mut out = Vec::new();
    while connection.wants_write() {
        connection.write_tls(&mut out).unwrap();
    }
    out
}

/// The handshake bytes carried by `records` (rustls sends the hello in one record).
fn handshake_bytes(records: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = records;
    while rest.len() >= 5 {
        assert_eq!(rest[0], 0x16, "not a handshake record");
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        out.extend_from_slice(&rest[5..5 + len]);
        rest = &rest[5 + len..];
    }
    assert!(rest.is_empty(), "trailing partial record");
    out
}

/// `message` in handshake records whose payloads have the given sizes (the last size repeats).
fn reframe(message: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = message;
    let mut index = 0;
    while !rest.is_empty() {
        let size = sizes[index.min(sizes.len() - 1)].min(rest.len());
        let (fragment, tail) = rest.split_at(size);
        out.extend_from_slice(&[0x16, 0x03, 0x01]);
        out.extend_from_slice(&u16::try_from(size).unwrap().to_be_bytes());
        out.extend_from_slice(fragment);
        rest = tail;
        index += 1;
    }
    out
}

fn hellos(dir: &Path) {
    let default = capture(default_config(), "b.snigate.test");
    // X25519MLKEM768 alone is a 1,216-byte key share: the hello no longer fits a 1,460-byte segment.
    assert!(default.len() > 1460, "expected a post-quantum hello over 1,460 bytes, got {}", default.len());
    write(dir, "rustls-default-sni", &default);

    let mut alpn = default_config();
    alpn.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    write(dir, "rustls-default-alpn-h2-http11", &capture(alpn, "a.snigate.test"));

    let mut mqtt = default_config();
    mqtt.alpn_protocols = vec![b"mqtt".to_vec()];
    write(dir, "rustls-default-alpn-mqtt-wildcard", &capture(mqtt, "device-17.a.snigate.test"));

    // Many ALPN offers: a 3.5 KB hello, still one record as rustls frames it.
    let mut many = default_config();
    many.alpn_protocols = (0..100).map(|i| format!("protocol-number-{i:03}").into_bytes()).collect();
    write(dir, "rustls-default-alpn-many", &capture(many, "b.snigate.test"));

    let mut no_sni = default_config();
    no_sni.enable_sni = false;
    write(dir, "rustls-default-no-sni", &capture(no_sni, "b.snigate.test"));

    // An IP address as the server name: rustls then sends no SNI at all.
    write(dir, "rustls-default-ip-name", &capture(default_config(), "127.0.0.1"));

    let long_name = format!("{}.{}.{}.test", "a".repeat(63), "b".repeat(63), "c".repeat(63));
    write(dir, "rustls-default-long-name", &capture(default_config(), &long_name));

    let tls12 = config_with(aws_lc_rs::default_provider(), &[&rustls::version::TLS12]);
    let tls12_hello = capture(tls12, "b.snigate.test");
    write(dir, "rustls-tls12-only", &tls12_hello);

    let x25519 = CryptoProvider { kx_groups: vec![aws_lc_rs::kx_group::X25519], ..aws_lc_rs::default_provider() };
    let mut small = config_with(x25519, rustls::DEFAULT_VERSIONS);
    small.alpn_protocols = vec![b"h2".to_vec()];
    let small_hello = capture(small, "c.snigate.test");
    write(dir, "rustls-x25519-only-alpn", &small_hello);

    // The same messages in other framings: reassembly across records.
    let message = handshake_bytes(&default);
    let half = message.len() / 2;
    write(dir, "reframed-default-2-records", &reframe(&message, &[half, message.len()]));
    write(dir, "reframed-default-512", &reframe(&message, &[512]));
    write(dir, "reframed-default-100", &reframe(&message, &[100]));
    // Handshake header split across records: 1 byte, then 2, then the rest.
    write(dir, "reframed-default-split-header-1-2", &reframe(&message, &[1, 2, 16_384]));
    write(dir, "reframed-default-split-header-3", &reframe(&message, &[3, 16_384]));
    write(dir, "reframed-tls12-1-byte-records", &reframe(&handshake_bytes(&tls12_hello), &[1]));
    write(dir, "reframed-x25519-7-byte-records", &reframe(&handshake_bytes(&small_hello), &[7]));

    // A hello followed by more bytes (a ChangeCipherSpec record, then application data): only the
    // hello's records count in records_len.
    let mut trailing = small_hello.clone();
    trailing.extend_from_slice(&[0x14, 0x03, 0x03, 0x00, 0x01, 0x01]);
    trailing.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x04, 1, 2, 3, 4]);
    write(dir, "rustls-x25519-then-ccs-and-data", &trailing);

    // Truncated: waiting for more.
    write(dir, "truncated-default", &default[..default.len() - 10]);
    // Not TLS at all.
    write(dir, "not-tls-http", b"GET / HTTP/1.1\r\nHost: b.snigate.test\r\n\r\n");
    write(dir, "not-tls-proxy-v1", b"PROXY TCP4 203.0.113.7 10.0.0.1 40000 8443\r\n");
}

// ---------------------------------------------------------------------------------------------
// PROXY headers (https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt).

const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

fn v2(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x20 | command);
    out.push(family);
    out.extend_from_slice(&u16::try_from(addresses.len() + tlvs.len()).unwrap().to_be_bytes());
    out.extend_from_slice(addresses);
    out.extend_from_slice(tlvs);
    out
}

fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&u16::try_from(value.len()).unwrap().to_be_bytes());
    out.extend_from_slice(value);
    out
}

fn ipv4_addresses() -> Vec<u8> {
    let mut out = vec![203, 0, 113, 7, 10, 0, 0, 1];
    out.extend_from_slice(&40000u16.to_be_bytes());
    out.extend_from_slice(&8443u16.to_be_bytes());
    out
}

fn ipv6_addresses() -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&"2001:db8::7".parse::<std::net::Ipv6Addr>().unwrap().octets());
    out.extend_from_slice(&"2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
    out.extend_from_slice(&40000u16.to_be_bytes());
    out.extend_from_slice(&8443u16.to_be_bytes());
    out
}

fn proxy_headers(dir: &Path) {
    const HELLO_START: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];

    write(dir, "v1-tcp4", b"PROXY TCP4 203.0.113.7 10.0.0.1 40000 8443\r\n");
    write(dir, "v1-tcp6", b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 8443\r\n");
    write(dir, "v1-unknown", b"PROXY UNKNOWN\r\n");
    // The longest line the spec allows: 107 bytes.
    let longest = b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    assert_eq!(longest.len(), 107);
    write(dir, "v1-unknown-longest", longest);
    let mut v1_then_hello = b"PROXY TCP4 198.51.100.22 192.0.2.1 65535 443\r\n".to_vec();
    v1_then_hello.extend_from_slice(HELLO_START);
    write(dir, "v1-tcp4-then-hello", &v1_then_hello);
    write(dir, "v1-partial", b"PROXY TCP4 203.0.113.7 10.0");
    write(dir, "v1-bad-port", b"PROXY TCP4 203.0.113.7 10.0.0.1 99999 8443\r\n");

    write(dir, "v2-proxy-tcp4", &v2(0x1, 0x11, &ipv4_addresses(), &[]));
    write(dir, "v2-proxy-udp4", &v2(0x1, 0x12, &ipv4_addresses(), &[]));
    write(dir, "v2-proxy-tcp6", &v2(0x1, 0x21, &ipv6_addresses(), &[]));
    write(dir, "v2-local", &v2(0x0, 0x00, &[], &[]));
    write(dir, "v2-local-tcp4", &v2(0x0, 0x11, &ipv4_addresses(), &[]));
    write(dir, "v2-unspec-with-noop", &v2(0x1, 0x00, &[], &tlv(0x04, &[0; 3])));
    let mut unix = vec![0u8; 216];
    unix[..12].copy_from_slice(b"/run/lb.sock");
    unix[108..120].copy_from_slice(b"/run/sn.sock");
    write(dir, "v2-proxy-unix-stream", &v2(0x1, 0x31, &unix, &[]));

    // TLVs: ALPN, AUTHORITY, UNIQUE_ID, and SSL with VERSION / CN / CIPHER sub-TLVs.
    let mut ssl = vec![0x07]; // PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS
    ssl.extend_from_slice(&0u32.to_be_bytes()); // verify: 0 = verified
    ssl.extend(tlv(0x21, b"TLSv1.3"));
    ssl.extend(tlv(0x22, b"device-17"));
    ssl.extend(tlv(0x23, b"TLS_AES_128_GCM_SHA256"));
    let mut tlvs = Vec::new();
    tlvs.extend(tlv(0x01, b"mqtt"));
    tlvs.extend(tlv(0x02, b"a.snigate.test"));
    tlvs.extend(tlv(0x05, b"0123456789abcdef"));
    tlvs.extend(tlv(0x20, &ssl));
    write(dir, "v2-proxy-tcp4-tlvs", &v2(0x1, 0x11, &ipv4_addresses(), &tlvs));
    // An AWS-style vendor TLV (type 0xEA, subtype 0x01 = VPC endpoint ID).
    let mut aws = vec![0x01];
    aws.extend_from_slice(b"vpce-0123456789abcdef0");
    write(dir, "v2-proxy-tcp6-vendor-tlv", &v2(0x1, 0x21, &ipv6_addresses(), &tlv(0xea, &aws)));

    let mut v2_then_hello = v2(0x1, 0x11, &ipv4_addresses(), &[]);
    v2_then_hello.extend_from_slice(HELLO_START);
    write(dir, "v2-proxy-tcp4-then-hello", &v2_then_hello);
    write(dir, "v2-truncated", &v2(0x1, 0x21, &ipv6_addresses(), &[])[..30]);
    write(dir, "v2-signature-only", &V2_SIGNATURE);
}

// ---------------------------------------------------------------------------------------------
// Routes files.

const EXAMPLE: &str = include_str!("../../routes.example.yaml");

const TCP_ONLY: &str = r#"# Valid with no certificate files: parses to Ok.
listen: ["127.0.0.1:8443", "[::1]:8443"]
admin: "127.0.0.1:9100"
accept_proxy_from: ["10.0.0.0/8", "fd00::/8"]
default: plain
limits:
  hello_timeout: 250ms
  max_hello_bytes: 4096
  max_connections: 10
  max_handshakes: 2
  max_connections_per_ip: 3
  idle_timeout: 1h
  handshake_timeout: 5s
  drain_timeout: 0s
routes:
  - name: pass
    sni: [c.snigate.test, "*.c.snigate.test"]
    mode: passthrough
    backend:
      servers: ["127.0.0.1:11443", "backend.internal:443", "[::1]:443"]
      proxy_protocol: v2
      connect_timeout: 3s
  - name: plain
    mode: tcp
    backend:
      servers: ["127.0.0.1:11080"]
      proxy_protocol: v1
"#;

const FLOW_STYLE: &str = r#"{listen: ["127.0.0.1:0"], default: reject, routes: [{name: a, sni: [a.test], mode: tcp, backend: {servers: ["127.0.0.1:1"], identity: san_dns}}, {name: b, sni: ["*.b.test"], mode: terminate, tls: {cert: b.pem, key: b.key, client_auth: required, client_ca: ca.pem, crl: [ca.crl], alpn: [h2, mqtt], min_version: "1.3", session_resumption: false}, backend: {servers: ["b:2"], proxy_protocol: v2, identity: san_uri}}]}
"#;

const ERRORS: &str = r#"listen: []
default: nowhere
limits:
  max_hello_bytes: 100
  max_connections: 0
  hello_timeout: 0s
  idle_timeout: 5
routes:
- name: a
  sni: [x.test, X.TEST, "*.bad*.test", 127.0.0.1]
  mode: tcp
  backend: {servers: [nope, "h:99999", "[::1:5"], connect_timeout: 0ms}
- name: a
  mode: terminate
  backend: {servers: []}
- name: t
  mode: passthrough
  tls: {cert: /nonexistent/x.pem, key: x.key}
  backend: {servers: ["127.0.0.1:2"], colour: red}
"#;

const ABSOLUTE_MISSING: &str = r#"listen: ["127.0.0.1:8443"]
routes:
  - name: t
    sni: [t.test]
    mode: terminate
    tls:
      cert: /nonexistent/t.pem
      key: /nonexistent/t.key
      client_auth: optional
      client_ca: /nonexistent/ca.pem
      alpn: [mqtt]
    backend:
      servers: ["127.0.0.1:1"]
      identity: san_email
"#;

/// `tls.acme` (issue 19): every key, and the problems `check` names (a wildcard, an http
/// directory, a contact without mailto:, acme beside cert, acme on a passthrough route). Paths
/// stay under /nonexistent so a run reads nothing.
const ACME: &str = r#"listen: ["127.0.0.1:8443"]
routes:
  - name: a
    sni: [a.test, b.test]
    mode: terminate
    tls:
      acme:
        directory: https://127.0.0.1:14000/dir
        contact: ["mailto:ops@example.com"]
        storage: /nonexistent/acme
        directory_ca: /nonexistent/ca.pem
        renew_before: 30d
        key_type: rsa2048
        eab: {key_id: kid-1, hmac_key_file: /nonexistent/eab.key}
    backend: {servers: ["127.0.0.1:1"]}
  - name: w
    sni: ["*.w.test"]
    mode: terminate
    tls: {cert: /nonexistent/w.pem, acme: {directory: "http://ca/dir", contact: [ops], storage: /nonexistent/s, renew_before: 0s}}
    backend: {servers: ["127.0.0.1:2"]}
  - name: p
    sni: [p.test]
    mode: passthrough
    tls: {acme: {directory: "https://ca/dir", storage: /nonexistent/s}}
    backend: {servers: ["127.0.0.1:3"]}
"#;

fn configs(dir: &Path) {
    write(dir, "routes-example.yaml", EXAMPLE.as_bytes());
    write(dir, "tcp-only-valid.yaml", TCP_ONLY.as_bytes());
    write(dir, "flow-style.yaml", FLOW_STYLE.as_bytes());
    write(dir, "many-errors.yaml", ERRORS.as_bytes());
    write(dir, "terminate-missing-files.yaml", ABSOLUTE_MISSING.as_bytes());
    write(dir, "acme.yaml", ACME.as_bytes());
    write(
        dir,
        "anchors.yaml",
        b"listen: &l [\"127.0.0.1:1\"]\nroutes:\n  - &r {name: a, mode: tcp, backend: {servers: *l}}\n  - *r\n",
    );
    write(dir, "empty.yaml", b"");
    write(dir, "not-a-map.yaml", b"- 1\n- [2, {3: 4}]\n");
}

// ---------------------------------------------------------------------------------------------
// nginx configs: the import tests' fixtures, flattened into one directory.

fn nginx_configs(dir: &Path) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/nginx");
    let mut stack = vec![fixtures.clone()];
    while let Some(next) = stack.pop() {
        for entry in fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path.strip_prefix(&fixtures).unwrap().to_string_lossy().replace('/', "-");
                write(dir, &name, &fs::read(&path).unwrap());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HAProxy configs: the import tests' fixtures, and inputs for the lexer and missing files.

fn haproxy_configs(dir: &Path) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/haproxy");
    for entry in fs::read_dir(&fixtures).unwrap() {
        let path = entry.unwrap().path();
        write(dir, &path.file_name().unwrap().to_string_lossy(), &fs::read(&path).unwrap());
    }
    write(
        dir,
        "terminate-missing-certs.cfg",
        b"frontend fe\n  bind :443 ssl crt /nonexistent/a.pem crt-list /nonexistent/list.txt verify required ca-file ca.pem\n  use_backend be if { ssl_fc_sni -i a.test } || { ssl_fc_sni -m end .b.test }\n  default_backend be\nbackend be\n  server s 127.0.0.1:1 check\n",
    );
    write(
        dir,
        "listen-quoted.cfg",
        b"listen mqtt\n  bind ipv4@127.0.0.1:1883,127.0.0.1:1884 accept-proxy\n  tcp-request connection expect-proxy layer4 if { src 10.0.0.0/8 }\n  server a \"127.0.0.1:11883\" send-proxy\n  server b [::1]:11883 backup send-proxy\n  timeout client 1m\n  timeout server 2m\n",
    );
    write(dir, "env-variable.cfg", b"global\n  crt-base \"${CERTS}\"\n");
    write(dir, "escapes.cfg", b"frontend \"a b\" #c\n  acl x req_ssl_sni \\x41 'q r' \\#\n  bind :1 \\\n");
}

// ---------------------------------------------------------------------------------------------
// MQTT CONNECTs.

/// A length-prefixed MQTT string or binary field.
fn mqtt_field(bytes: &[u8]) -> Vec<u8> {
    let mut out = u16::try_from(bytes.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// A CONNECT from its parts: protocol name and level, connect flags, keep alive 60, MQTT 5
/// properties (with their one-byte length) when given, then the payload fields in order.
fn mqtt_connect(name: &[u8], level: u8, flags: u8, properties: Option<&[u8]>, payload: &[&[u8]]) -> Vec<u8> {
    let mut body = mqtt_field(name);
    body.extend_from_slice(&[level, flags, 0, 60]);
    if let Some(properties) = properties {
        body.push(u8::try_from(properties.len()).unwrap());
        body.extend_from_slice(properties);
    }
    for field in payload {
        body.extend_from_slice(&mqtt_field(field));
    }
    let mut packet = vec![0x10];
    let mut rest = body.len();
    loop {
        let byte = u8::try_from(rest % 128).unwrap();
        rest /= 128;
        packet.push(if rest > 0 { byte | 0x80 } else { byte });
        if rest == 0 {
            break;
        }
    }
    packet.extend_from_slice(&body);
    packet
}

fn mqtt_connects(dir: &Path) {
    let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("../src/proxy/mqtt/testdata");
    for name in ["paho-v311-user-will", "paho-v5-user-will-props", "paho-v31", "paho-v311-empty-id"] {
        write(dir, name, &fs::read(testdata.join(format!("{name}.bin"))).unwrap());
    }
    let session_expiry: &[u8] = b"\x11\x00\x00\x0e\x10";
    write(dir, "v311-user-password", &mqtt_connect(b"MQTT", 4, 0xc2, None, &[b"dev-1", b"user", b"pw"]));
    write(dir, "v5-password-only", &mqtt_connect(b"MQTT", 5, 0x42, Some(session_expiry), &[b"dev-1", b"pw"]));
    let mut v5_will = mqtt_connect(b"MQTT", 5, 0xee, Some(b""), &[b"dev-2"]);
    // Will properties (empty) before the will topic, then payload, username and password.
    v5_will.push(0);
    for field in [&b"w/t"[..], b"bye", b"u", b"p"] {
        v5_will.extend_from_slice(&mqtt_field(field));
    }
    v5_will[1] += 1 + 5 + 5 + 3 + 3;
    write(dir, "v5-will-user-password", &v5_will);
    write(dir, "v31-long-id", &mqtt_connect(b"MQIsdp", 3, 0x02, None, &[&[b'c'; 300]]));
    let mut pipelined = mqtt_connect(b"MQTT", 4, 0x02, None, &[b"dev-3"]);
    pipelined.extend_from_slice(b"\x82\x08\x00\x01\x00\x03a/b\x01\xc0\x00");
    write(dir, "v311-then-subscribe-pingreq", &pipelined);
    let complete = mqtt_connect(b"MQTT", 4, 0x02, None, &[b"dev-4"]);
    write(dir, "v311-partial", &complete[..complete.len() - 3]);
    write(dir, "remaining-length-5-bytes", b"\x10\x80\x80\x80\x80\x01");
    let mut padded = vec![0x10, complete[1] | 0x80, 0x00];
    padded.extend_from_slice(&complete[2..]);
    write(dir, "v311-padded-length", &padded);
    let mut padded_v5 = mqtt_connect(b"MQTT", 5, 0x02, Some(b""), &[b"dev-5"]);
    padded_v5.splice(1..2, [padded_v5[1] | 0x80, 0x00]);
    write(dir, "v5-padded-length", &padded_v5);
    write(dir, "over-8k", &[&b"\x10\xff\x7f\x00\x04MQTT\x05"[..], &[0; 64]].concat());
    let mut long_id = complete.clone();
    long_id[12] = 0xff;
    write(dir, "client-id-past-end", &long_id);
    write(dir, "client-id-not-utf8", &mqtt_connect(b"MQTT", 4, 0x02, None, &[b"\xff\xfe"]));
    write(dir, "client-id-nul", &mqtt_connect(b"MQTT", 5, 0x02, Some(b""), &[b"dev\x00"]));
    write(dir, "level-6", &mqtt_connect(b"MQTT", 6, 0x02, None, &[b"dev"]));
    write(dir, "reserved-flag", &mqtt_connect(b"MQTT", 4, 0x03, None, &[b"dev"]));
    write(dir, "will-qos-3", &mqtt_connect(b"MQTT", 4, 0x1e, None, &[b"dev", b"t", b"m"]));
    write(dir, "http-get", b"GET /mqtt HTTP/1.1\r\nHost: a\r\n\r\n");
}
