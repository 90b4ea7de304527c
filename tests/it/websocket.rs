//! `routes[].websocket`: snigate answers the WebSocket upgrade itself (or refuses it with the
//! status RFC 6455 asks for), unwraps the client's frames into the byte stream the backend reads
//! with the PROXY v2 header of any terminated client, and speaks the control frames. Real
//! clients: raw frames over tokio-rustls, paho-mqtt over `wss://`, a real Mosquitto.

use std::path::Path;
use std::time::Duration;

use crate::mqtt_identity::{device_client, device_pki, start_mosquitto_with_acl, CN};
use crate::mqtt_routes::{close_counted, connect, start_mosquitto};
use crate::support::tls::{client_config, tls_connect, ClientOpts};
use crate::support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// RFC 6455's example key and the accept value it must get.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
const MASK: [u8; 4] = [0x11, 0x22, 0x33, 0x44];
/// How long one paho run may take (the script bounds itself with `--timeout`, 10 s).
const PAHO_LIMIT: Duration = Duration::from_secs(20);

/// An upgrade request for `path` with the headers a browser sends, plus `extra` lines.
fn request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: mq.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n{extra}\r\n"
    )
}

/// Reads a response head, byte by byte up to its blank line (the frames after it stay unread).
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> String {
    let mut head = Vec::new();
    within("the upgrade response", async {
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            if stream.read(&mut byte).await.unwrap() == 0 {
                break;
            }
            head.push(byte[0]);
        }
    })
    .await;
    String::from_utf8_lossy(&head).into_owned()
}

/// Sends the upgrade and expects the 101 with the RFC's accept value and subprotocol `mqtt`.
async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    stream.write_all(request("/mqtt", "").as_bytes()).await.unwrap();
    let head = read_head(stream).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(head.contains(&format!("Sec-WebSocket-Accept: {ACCEPT}\r\n")), "{head}");
    assert!(head.contains("Sec-WebSocket-Protocol: mqtt\r\n"), "{head}");
}

/// A masked client frame (`first`: FIN bit and opcode).
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    match payload.len() {
        len @ 0..=125 => out.push(0x80 | len as u8),
        len @ 126..=65_535 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

fn binary(payload: &[u8]) -> Vec<u8> {
    frame(0x82, payload)
}

/// Reads one server frame: its first byte and its payload. Server frames are never masked.
async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S) -> (u8, Vec<u8>) {
    let header = read_n(stream, 2).await;
    assert_eq!(header[1] & 0x80, 0, "server frames are unmasked");
    let len = match header[1] & 0x7f {
        126 => u16::from_be_bytes(read_n(stream, 2).await.try_into().unwrap()) as usize,
        127 => u64::from_be_bytes(read_n(stream, 8).await.try_into().unwrap()) as usize,
        len => len as usize,
    };
    (header[0], read_n(stream, len).await)
}

/// Reads binary frames until `n` payload bytes came.
async fn read_binary<S: AsyncRead + Unpin>(stream: &mut S, n: usize) -> Vec<u8> {
    let mut data = Vec::new();
    while data.len() < n {
        let (first, payload) = read_frame(stream).await;
        assert_eq!(first, 0x82, "a final binary frame");
        data.extend(payload);
    }
    data
}

fn close_code(payload: &[u8]) -> u16 {
    u16::from_be_bytes([payload[0], payload[1]])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_refusals_get_their_status_then_a_close() {
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let (_pki, ca, server, _device) = device_pki();
    let route = RouteYaml::new("ws", "terminate")
        .sni(&["mq.test"])
        .cert(&server)
        .websocket("{path: /mqtt, allowed_origins: [\"https://dash.test\"]}")
        .server(backend.addr);
    let proxy = start_proxy(&config_v4("ws", &[route])).await;
    let client = client_config(ClientOpts { roots: vec![ca.cert_der.clone()], ..Default::default() });

    let base = request("/mqtt", "");
    let cases = [
        (request("/other", ""), "404", "websocket_not_found"),
        (base.replace("GET", "POST"), "405", "websocket_method_not_allowed"),
        (base.replace("Upgrade: websocket\r\n", ""), "400", "websocket_bad_request"),
        (base.replace(KEY, "c2hvcnQ="), "400", "websocket_bad_request"),
        (base.replace("Version: 13", "Version: 8"), "426", "websocket_upgrade_required"),
        (base.replace("Protocol: mqtt", "Protocol: chat"), "400", "websocket_no_subprotocol"),
        (request("/mqtt", "Origin: https://evil.test\r\n"), "403", "websocket_forbidden_origin"),
        (format!("GET /mqtt HTTP/1.1\r\nX: {}\r\n", "y".repeat(9000)), "431", "websocket_request_too_large"),
    ];
    for (text, status, cause) in cases {
        let (mut tls, _) = tls_connect(proxy.addr(0), client.clone(), "mq.test").await.unwrap();
        tls.write_all(text.as_bytes()).await.unwrap();
        let response = String::from_utf8_lossy(read_until_closed(&mut tls).await.bytes()).into_owned();
        assert!(response.starts_with(&format!("HTTP/1.1 {status} ")), "{cause}: {response}");
        match status {
            "405" => assert!(response.contains("Allow: GET\r\n"), "{response}"),
            "426" => assert!(response.contains("Sec-WebSocket-Version: 13\r\n"), "{response}"),
            _ => {}
        }
        drop(tls);
        close_counted(&proxy, "ws", cause).await;
    }
    backend.assert_untouched(Duration::from_millis(100)).await;
    let (mut tls, _) = tls_connect(proxy.addr(0), client.clone(), "mq.test").await.unwrap();
    upgrade(&mut tls).await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_reach_the_backend_unwrapped_after_the_proxy_v2_header_with_address_and_cn() {
    let mut backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let (_pki, ca, server, device) = device_pki();
    let route = RouteYaml::new("ws", "terminate")
        .sni(&["mq.test"])
        .cert(&server)
        .client_auth("required", &ca)
        .websocket("{}")
        .server(backend.addr);
    let proxy = start_proxy(&config_v4("ws", &[route])).await;

    let (mut tls, local) = tls_connect(proxy.addr(0), device_client(&ca, &device), "mq.test").await.unwrap();
    upgrade(&mut tls).await;
    // One message in two fragments, a ping between them, in one write (one TLS record).
    let mut frames = frame(0x02, b"hello ");
    frames.extend(frame(0x89, b"still there?"));
    frames.extend(frame(0x80, b"broker"));
    tls.write_all(&frames).await.unwrap();
    assert_eq!(read_frame(&mut tls).await, (0x8A, b"still there?".to_vec()), "the pong carries the ping's payload");
    assert_eq!(read_binary(&mut tls, 12).await, b"hello broker", "echoed by the backend as binary frames");

    let accepted = backend.accepted().await;
    let header = accepted.v2();
    assert_eq!(header.src, Some(local), "the client's real address");
    assert_eq!(header.ssl_cn().as_deref(), Some(CN), "the certificate's CN");

    tls.write_all(&frame(0x88, &1000u16.to_be_bytes())).await.unwrap();
    let (first, payload) = read_frame(&mut tls).await;
    assert_eq!((first, close_code(&payload)), (0x88, 1000), "the close is echoed");
    let finished = within("the backend to see the close", backend.finished()).await;
    assert_eq!(finished.received, b"hello broker", "only the data reached the backend, then EOF");
    assert!(read_until_closed(&mut tls).await.bytes().is_empty(), "then the connection closes");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn violations_close_with_1002_1003_and_1009() {
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::None)).await;
    let (_pki, ca, server, _device) = device_pki();
    let route = RouteYaml::new("ws", "terminate")
        .sni(&["mq.test"])
        .cert(&server)
        .websocket("{max_message_bytes: 16}")
        .proxy("none")
        .server(backend.addr);
    let proxy = start_proxy(&config_v4("ws", &[route])).await;
    let client = client_config(ClientOpts { roots: vec![ca.cert_der.clone()], ..Default::default() });

    let unmasked = vec![0x82, 0x01, 0x10];
    let cases = [
        (unmasked, 1002, "websocket_protocol_error"),
        (frame(0x81, b"{}"), 1003, "websocket_text_frame"),
        (binary(&[0u8; 17]), 1009, "websocket_message_too_big"),
    ];
    for (bytes, code, cause) in cases {
        let (mut tls, _) = tls_connect(proxy.addr(0), client.clone(), "mq.test").await.unwrap();
        upgrade(&mut tls).await;
        tls.write_all(&bytes).await.unwrap();
        let (first, payload) = read_frame(&mut tls).await;
        assert_eq!((first, close_code(&payload)), (0x88, code), "{cause}");
        close_counted(&proxy, "ws", cause).await;
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_refusal_is_a_connack_inside_a_binary_frame() {
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let (_pki, ca, server, device) = device_pki();
    let route = RouteYaml::new("ws", "terminate")
        .sni(&["mq.test"])
        .cert(&server)
        .client_auth("required", &ca)
        .mqtt("{client_id: identity}")
        .websocket("{}")
        .server(backend.addr);
    let proxy = start_proxy(&config_v4("ws", &[route])).await;

    let (mut tls, _) = tls_connect(proxy.addr(0), device_client(&ca, &device), "mq.test").await.unwrap();
    upgrade(&mut tls).await;
    tls.write_all(&binary(&connect(4, "device-8", None))).await.unwrap();
    assert_eq!(read_frame(&mut tls).await, (0x82, vec![0x20, 0x02, 0x00, 0x02]), "identifier rejected");
    let (first, payload) = read_frame(&mut tls).await;
    assert_eq!((first, close_code(&payload)), (0x88, 1000), "then a close");
    close_counted(&proxy, "ws", "mqtt_client_id_rejected").await;
    backend.assert_untouched(Duration::from_millis(100)).await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_port_serves_plain_mqtt_and_mqtt_over_websocket_to_mosquitto() {
    let Some((_mosquitto, broker)) = start_mosquitto().await else { return };
    let route =
        RouteYaml::new("mq", "tcp").mqtt("{}").websocket("{also_plain_mqtt: true}").proxy("none").server(broker);
    let proxy = start_proxy(&config_v4("mq", &[route])).await;

    let mut plain = TcpStream::connect(proxy.addr(0)).await.unwrap();
    plain.write_all(&connect(4, "plain", None)).await.unwrap();
    assert_eq!(read_n(&mut plain, 4).await, [0x20, 0x02, 0x00, 0x00], "plain MQTT: CONNACK accepted");

    let mut ws = TcpStream::connect(proxy.addr(0)).await.unwrap();
    upgrade(&mut ws).await;
    ws.write_all(&binary(&connect(4, "over-ws", None))).await.unwrap();
    assert_eq!(read_binary(&mut ws, 4).await, [0x20, 0x02, 0x00, 0x00], "WebSocket: CONNACK in a binary frame");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_over_wss_reaches_mosquitto_with_the_cn_as_username() {
    let Some((_mosquitto, broker, _log)) = start_mosquitto_with_acl().await else { return };
    let (_pki, ca, server, device) = device_pki();
    let route = RouteYaml::new("mq", "terminate")
        .sni(&["mq.test"])
        .cert(&server)
        .client_auth("required", &ca)
        .mqtt("{username: identity}")
        .websocket("{path: /mqtt, subprotocols: [mqtt]}")
        .proxy("none")
        .server(broker);
    let proxy = start_proxy(&config_v4("mq", &[route])).await;

    // The ACL lets only user CN write devices/CN/#: the round trip works only if the broker got
    // the CN as the username; another user's topic does not come back.
    for (topic, round_trip) in [(format!("devices/{CN}/ws"), true), ("devices/device-8/ws".to_string(), false)] {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/clients/paho_connect.py");
        let mut command = std::process::Command::new("python3");
        command.arg(script).args(["--port", &proxy.addr(0).port().to_string(), "--sni", "mq.test"]);
        command.args(["--version", "3.1.1", "--transport", "websockets", "--path", "/mqtt"]);
        command.arg("--ca").arg(&ca.cert_path).arg("--cert").arg(&device.cert_path).arg("--key").arg(&device.key_path);
        command.args(["--client-id", &format!("{CN}-ws"), "--topic", &topic, "--timeout", "4"]);
        let run = tokio::task::spawn_blocking(move || command.output());
        let output = within_for(PAHO_LIMIT, "paho to finish", run).await.unwrap().expect("run python3");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "paho_connect.py failed (paho-mqtt missing?): {stderr}");
        let report: yaml_serde::Value = yaml_serde::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
        assert_eq!(report["connack"].as_i64(), Some(0), "{topic}: {stdout} {stderr}");
        assert_eq!(report["round_trip"].as_bool(), Some(round_trip), "{topic}: {stdout} {stderr}");
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_request_not_complete_within_hello_timeout_is_closed() {
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::None)).await;
    let route = RouteYaml::new("ws", "tcp").websocket("{}").proxy("none").server(backend.addr);
    let limits = "limits: { hello_timeout: 500ms }";
    let proxy = start_proxy(&config_with_limits(&["127.0.0.1:0"], "ws", limits, &[route])).await;

    let mut stream = TcpStream::connect(proxy.addr(0)).await.unwrap();
    stream.write_all(b"GET /mqtt HTTP/1.1\r\nHost: mq.test\r\n").await.unwrap();
    assert!(read_until_closed(&mut stream).await.bytes().is_empty(), "closed without a response");
    close_counted(&proxy, "ws", "websocket_upgrade_timeout").await;
    backend.assert_untouched(Duration::from_millis(100)).await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_says_transport_websocket_only_for_websocket_sessions() {
    let pki = Pki::new();
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::None)).await;
    let port = closed_port().await.port();
    let route =
        RouteYaml::new("mq", "tcp").mqtt("{}").websocket("{also_plain_mqtt: true}").proxy("none").server(backend.addr);
    let config = pki.write("routes.yaml", &config_yaml(&[&format!("127.0.0.1:{port}")], "mq", &[route]));
    let mut child = spawn_with_json_log(&config);
    let proxy: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut ws = within("snigate to listen", async {
        loop {
            if let Ok(stream) = TcpStream::connect(proxy).await {
                return stream;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    upgrade(&mut ws).await;
    let over_ws = connect(4, "over-ws", None);
    ws.write_all(&binary(&over_ws)).await.unwrap();
    assert_eq!(read_binary(&mut ws, over_ws.len()).await, over_ws, "echoed by the backend");
    ws.write_all(&frame(0x88, &1000u16.to_be_bytes())).await.unwrap();
    read_until_closed(&mut ws).await;
    let mut plain = TcpStream::connect(proxy).await.unwrap();
    let plain_connect = connect(4, "plain", None);
    plain.write_all(&plain_connect).await.unwrap();
    assert_eq!(read_n(&mut plain, plain_connect.len()).await, plain_connect);
    plain.shutdown().await.unwrap();
    read_until_closed(&mut plain).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let log = terminate_and_read_log(&mut child).await;
    let line_of = |client_id: &str| {
        let needle = format!("\"mqtt_client_id\":\"{client_id}\"");
        log.lines()
            .find(|l| l.contains(&needle))
            .unwrap_or_else(|| panic!("no line for {client_id}:\n{log}"))
            .to_string()
    };
    assert!(line_of("over-ws").contains("\"transport\":\"websocket\""), "{log}");
    assert!(!line_of("plain").contains("\"transport\""), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_larger_than_a_tls_record_arrives_whole_and_comes_back_in_binary_frames() {
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::None)).await;
    let (_pki, ca, server, _device) = device_pki();
    let route = RouteYaml::new("ws", "terminate")
        .sni(&["mq.test"])
        .cert(&server)
        .websocket("{}")
        .proxy("none")
        .server(backend.addr);
    let proxy = start_proxy(&config_v4("ws", &[route])).await;
    let client = client_config(ClientOpts { roots: vec![ca.cert_der.clone()], ..Default::default() });

    let (mut tls, _) = tls_connect(proxy.addr(0), client, "mq.test").await.unwrap();
    upgrade(&mut tls).await;
    let message: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let sent = binary(&message);
    assert_eq!(sent[1] & 0x7f, 127, "a 64-bit length");
    let (mut reader, mut writer) = tokio::io::split(tls);
    let writing = tokio::spawn(async move {
        writer.write_all(&sent).await.unwrap();
        writer
    });
    let echoed = within("the echo", read_binary(&mut reader, message.len())).await;
    assert!(echoed == message, "{} bytes back, in order", echoed.len());
    drop(reader.unsplit(writing.await.unwrap()));
    proxy.shutdown().await;
}
