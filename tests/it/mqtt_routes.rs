//! Routes with an `mqtt:` block: the CONNECT is read before the backend is connected, forwarded
//! byte-identical after the PROXY header, logged and counted; refusals speak MQTT (a CONNACK in
//! the client's version where it has one) and close with their own causes.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::hello::send_byte_by_byte;
use crate::support::ops::*;
use crate::support::tls::{simple_client, tls_connect};
use crate::support::*;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

pub(crate) const MOSQUITTO: &str = "/usr/sbin/mosquitto";
/// MQTT PINGREQ, pipelined after a CONNECT.
const PINGREQ: [u8; 2] = [0xc0, 0x00];
/// CONNECT flags: clean session / clean start.
const CLEAN: u8 = 0x02;
/// CONNECT flags: a username follows the client id.
const USERNAME: u8 = 0x80;

/// A CONNECT of protocol `level` (4: 3.1.1, 5: 5.0) with keepalive 30 s and clean start.
pub(crate) fn connect(level: u8, client_id: &str, username: Option<&str>) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', level, CLEAN | username.map_or(0, |_| USERNAME), 0, 30];
    if level == 5 {
        body.push(0); // no properties
    }
    for field in std::iter::once(client_id).chain(username) {
        body.extend_from_slice(&(field.len() as u16).to_be_bytes());
        body.extend_from_slice(field.as_bytes());
    }
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend_from_slice(&body);
    packet
}

/// The broker, killed when dropped, and its config's folder, removed then.
pub(crate) struct KillOnDrop {
    pub(crate) child: std::process::Child,
    pub(crate) _dir: tempfile::TempDir,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Mosquitto for anonymous clients on a free port, once it accepts connections.
pub(crate) async fn start_mosquitto() -> Option<(KillOnDrop, std::net::SocketAddr)> {
    if !std::path::Path::new(MOSQUITTO).exists() {
        println!("skipped: mosquitto not installed");
        return None;
    }
    let addr = closed_port().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mosquitto.conf");
    std::fs::write(&config, format!("listener {} 127.0.0.1\nallow_anonymous true\n", addr.port())).unwrap();
    let child = Command::new(MOSQUITTO).arg("-c").arg(&config).stdout(Stdio::null()).stderr(Stdio::null()).spawn();
    let mosquitto = KillOnDrop { child: child.expect("start mosquitto"), _dir: dir };
    within("mosquitto to listen", async {
        while TcpStream::connect(addr).await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    Some((mosquitto, addr))
}

/// `mqtt:` routes to `server`: `mq-tls` terminates TLS for `mq.test` with `leaf`, `mq-tcp` takes
/// plain TCP (make it the default).
fn mqtt_routes_to(leaf: &Leaf, server: std::net::SocketAddr) -> [RouteYaml; 2] {
    [
        RouteYaml::new("mq-tls", "terminate").sni(&["mq.test"]).cert(leaf).mqtt("{}").server(server),
        RouteYaml::new("mq-tcp", "tcp").mqtt("{}").server(server),
    ]
}

/// Sends `packet`, reads the CONNACK's first four bytes: type, length, flags, code.
pub(crate) async fn connack<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, packet: &[u8]) -> Vec<u8> {
    stream.write_all(packet).await.unwrap();
    read_n(stream, 4).await
}

pub(crate) fn counted(proxy: &RunningProxy, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(&parse_exposition(&proxy.metrics.encode()), name, labels).unwrap_or(0.0)
}

/// Waits until the counter `name` with `labels` reads exactly `want`.
pub(crate) async fn count_reaches(proxy: &RunningProxy, name: &str, labels: &[(&str, &str)], want: f64, what: &str) {
    eventually(WAIT, what, || async {
        match counted(proxy, name, labels) {
            n if n == want => Ok(()),
            n => Err(format!("{name} is {n}")),
        }
    })
    .await;
}

/// Waits until `route` has a close of `cause` counted.
pub(crate) async fn close_counted(proxy: &RunningProxy, route: &str, cause: &str) {
    eventually(WAIT, &format!("a {cause} close on {route}"), || async {
        match counted(proxy, "snigate_connection_closes_total", &[("route", route), ("reason", cause)]) {
            n if n >= 1.0 => Ok(()),
            _ => Err(proxy.metrics.encode()),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_311_and_5_connects_reach_mosquitto_through_terminate_and_tcp_routes() {
    let Some((_mosquitto, broker)) = start_mosquitto().await else { return };
    let pki = Pki::new();
    let ca = pki.ca("ca", "CA");
    let server = ca.server_cert("mq", &["mq.test"]);
    let tls_route = RouteYaml::new("mq-tls", "terminate").sni(&["mq.test"]).cert(&server).mqtt("{}").proxy("none");
    let tcp_route =
        RouteYaml::new("mq-tcp", "tcp").mqtt("{connect_timeout: 5s, max_connect_bytes: 1024}").proxy("none");
    let proxy = start_proxy(&config_v4("mq-tcp", &[tls_route.server(broker), tcp_route.server(broker)])).await;

    for (level, version) in [(4, "3.1.1"), (5, "5.0")] {
        let (mut tls, _) = tls_connect(proxy.addr(0), simple_client(&ca.cert_der, None), "mq.test").await.unwrap();
        let ack = connack(&mut tls, &connect(level, &format!("tls-{level}"), Some("user"))).await;
        assert_eq!((ack[0], ack[2], ack[3]), (0x20, 0, 0), "CONNACK accepted through terminate, {version}: {ack:?}");

        let mut tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
        let ack = connack(&mut tcp, &connect(level, &format!("tcp-{level}"), None)).await;
        assert_eq!((ack[0], ack[2], ack[3]), (0x20, 0, 0), "CONNACK accepted through tcp, {version}: {ack:?}");

        // One byte per segment: the CONNECT is reassembled.
        let mut split = TcpStream::connect(proxy.addr(0)).await.unwrap();
        send_byte_by_byte(&mut split, &connect(level, &format!("split-{level}"), None)).await;
        let ack = read_n(&mut split, 4).await;
        assert_eq!((ack[0], ack[2], ack[3]), (0x20, 0, 0), "CONNACK after a 1-byte-split CONNECT, {version}");

        for route in ["mq-tls", "mq-tcp"] {
            let expected = if route == "mq-tcp" { 2.0 } else { 1.0 };
            let labels = [("route", route), ("version", version)];
            assert_eq!(counted(&proxy, "snigate_mqtt_connects_total", &labels), expected, "{labels:?}");
        }
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_connect_and_pipelined_bytes_follow_the_proxy_header_unchanged() {
    let mut backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let proxy = start_proxy(&config_v4("mq", &[RouteYaml::new("mq", "tcp").mqtt("{}").server(backend.addr)])).await;
    let mut sent = connect(4, "pipelined", Some("user"));
    sent.extend_from_slice(&PINGREQ);
    let mut client = TcpStream::connect(proxy.addr(0)).await.unwrap();
    client.write_all(&sent).await.unwrap();
    assert_eq!(read_n(&mut client, sent.len()).await, sent, "echoed through the backend");
    assert!(backend.accepted().await.v2().src.is_some());
    client.shutdown().await.unwrap();
    assert_eq!(backend.finished().await.received, sent);
    proxy.shutdown().await;
}

#[tokio::test]
async fn all_backends_down_mqtt_clients_read_server_unavailable_before_eof() {
    let pki = Pki::new();
    let ca = pki.ca("ca", "CA");
    let server = ca.server_cert("mq", &["mq.test"]);
    let proxy = start_proxy(&config_v4("mq-tcp", &mqtt_routes_to(&server, closed_port().await))).await;

    let mut tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
    tcp.write_all(&connect(4, "down-311", None)).await.unwrap();
    assert_eq!(read_until_closed(&mut tcp).await.bytes(), [0x20, 0x02, 0x00, 0x03], "3.1.1: return code 3");
    let mut tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
    tcp.write_all(&connect(5, "down-5", None)).await.unwrap();
    assert_eq!(read_until_closed(&mut tcp).await.bytes(), [0x20, 0x03, 0x00, 0x88, 0x00], "5.0: reason 0x88");
    let (mut tls, _) = tls_connect(proxy.addr(0), simple_client(&ca.cert_der, None), "mq.test").await.unwrap();
    tls.write_all(&connect(5, "down-tls", None)).await.unwrap();
    assert_eq!(read_until_closed(&mut tls).await.bytes(), [0x20, 0x03, 0x00, 0x88, 0x00], "through TLS");

    close_counted(&proxy, "mq-tls", "backend_unavailable").await;
    let refused = [("route", "mq-tcp"), ("reason", "server_unavailable")];
    count_reaches(&proxy, "snigate_mqtt_refusals_total", &refused, 2.0, "two refusals on mq-tcp").await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_first_packet_that_is_not_a_valid_connect_is_refused_without_a_backend() {
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let proxy = start_proxy(&config_v4("mq", &[RouteYaml::new("mq", "tcp").mqtt("{}").server(backend.addr)])).await;

    // A PUBLISH first: the version cannot be told, a plain close.
    let mut client = TcpStream::connect(proxy.addr(0)).await.unwrap();
    client.write_all(&[0x30, 0x03, 0x00, 0x01, b't']).await.unwrap();
    assert_eq!(read_until_closed(&mut client).await.bytes(), b"");
    // An MQTT 5 CONNECT with the reserved flag set: CONNACK 0x81 malformed.
    let mut reserved = connect(5, "bad", None);
    reserved[9] |= 0x01;
    let mut client = TcpStream::connect(proxy.addr(0)).await.unwrap();
    client.write_all(&reserved).await.unwrap();
    assert_eq!(read_until_closed(&mut client).await.bytes(), [0x20, 0x03, 0x00, 0x81, 0x00]);

    close_counted(&proxy, "mq", "mqtt_connect_malformed").await;
    let refused = [("route", "mq"), ("reason", "connect_malformed")];
    count_reaches(&proxy, "snigate_mqtt_refusals_total", &refused, 2.0, "two malformed refusals").await;
    backend.assert_untouched(Duration::from_millis(100)).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_connect_that_never_completes_is_closed_at_connect_timeout() {
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let route = RouteYaml::new("mq", "tcp").mqtt("{connect_timeout: 500ms}").server(backend.addr);
    let proxy = start_proxy(&config_v4("mq", &[route])).await;
    let mut client = TcpStream::connect(proxy.addr(0)).await.unwrap();
    client.write_all(&connect(4, "slow", None)[..6]).await.unwrap();
    assert_eq!(read_until_closed(&mut client).await.bytes(), b"", "closed without a CONNACK");
    close_counted(&proxy, "mq", "mqtt_connect_timeout").await;
    backend.assert_untouched(Duration::from_millis(100)).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_connect_over_max_connect_bytes_is_closed_with_packet_too_large_for_mqtt_5() {
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let route = RouteYaml::new("mq", "tcp").mqtt("{max_connect_bytes: 32}").server(backend.addr);
    let proxy = start_proxy(&config_v4("mq", &[route])).await;
    let mut client = TcpStream::connect(proxy.addr(0)).await.unwrap();
    client.write_all(&connect(5, &"x".repeat(40), None)).await.unwrap();
    assert_eq!(read_until_closed(&mut client).await.bytes(), [0x20, 0x03, 0x00, 0x95, 0x00]);
    close_counted(&proxy, "mq", "mqtt_connect_too_large").await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_access_log_has_the_connect_fields_and_never_the_password() {
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let pki = Pki::new();
    let port = closed_port().await.port();
    let route = RouteYaml::new("mq", "tcp").mqtt("{}").server(backend.addr);
    let config = pki.write("routes.yaml", &config_yaml(&[&format!("127.0.0.1:{port}")], "mq", &[route]));
    let mut child = spawn_with_json_log(&config);
    let proxy: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut client = within("snigate to listen", async {
        loop {
            match TcpStream::connect(proxy).await {
                Ok(client) => return client,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await;
    // 3.1.1 with a username and a password "hunter2" (flag 0x40).
    let mut packet = connect(4, "device-9", Some("alice"));
    packet[9] |= 0x40;
    packet.extend_from_slice(&[0, 7]);
    packet.extend_from_slice(b"hunter2");
    packet[1] += 9;
    client.write_all(&packet).await.unwrap();
    assert_eq!(read_n(&mut client, packet.len()).await, packet);
    client.shutdown().await.unwrap();
    let _ = read_until_closed(&mut client).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let stderr = terminate_and_read_log(&mut child).await;
    let line = stderr
        .lines()
        .find(|l| l.contains("\"message\":\"connection closed\"") && l.contains("\"route\":\"mq\""))
        .unwrap_or_else(|| panic!("no access-log line in:\n{stderr}"));
    for field in [
        "\"mqtt_client_id\":\"device-9\"",
        "\"mqtt_username\":\"alice\"",
        "\"mqtt_version\":\"3.1.1\"",
        "\"mqtt_keepalive_s\":30",
        "\"mqtt_clean_start\":true",
        "\"cause\":\"closed\"",
    ] {
        assert!(line.contains(field), "{field} missing from {line}");
    }
    assert!(!stderr.contains("hunter2"), "the password must never be logged:\n{stderr}");
}

#[tokio::test]
async fn a_refused_client_that_pipelined_more_bytes_still_reads_its_connack() {
    // Closing a socket with unread bytes sends a reset, and a reset can destroy the CONNACK
    // before the client reads it; a refused client is half-closed and drained first.
    let pki = Pki::new();
    let ca = pki.ca("ca", "CA");
    let server = ca.server_cert("mq", &["mq.test"]);
    let proxy = start_proxy(&config_v4("mq-tcp", &mqtt_routes_to(&server, closed_port().await))).await;
    let mut pipelined = connect(4, "eager", None);
    for _ in 0..64 {
        pipelined.extend_from_slice(&[0x30, 0xff, 0x07]); // PUBLISH, 1,023 bytes (varint 0xff 0x07)
        pipelined.extend_from_slice(&[0, 1, b't']);
        pipelined.extend_from_slice(&[b'x'; 1020]);
    }

    let mut tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
    tcp.write_all(&pipelined).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = Closed::Eof(vec![0x20, 0x02, 0x00, 0x03]);
    assert_eq!(read_until_closed(&mut tcp).await, refused, "tcp route: the CONNACK, then an orderly close");
    let (mut tls, _) = tls_connect(proxy.addr(0), simple_client(&ca.cert_der, None), "mq.test").await.unwrap();
    tls.write_all(&pipelined).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(read_until_closed(&mut tls).await, refused, "terminate route");
    proxy.shutdown().await;
}
