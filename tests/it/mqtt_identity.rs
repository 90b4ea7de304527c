//! `mqtt.client_id` and `mqtt.username` tie the CONNECT to the verified client certificate, and
//! `balance: client_id` keeps a client id on one backend server.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::mqtt_routes::{close_counted, connack, connect, count_reaches, KillOnDrop, MOSQUITTO};
use crate::support::tls::{client_config, tls_connect, ClientOpts};
use crate::support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The device certificate's CN, and so the identity the rules compare with.
pub(crate) const CN: &str = "device-7";

/// A CA, the server certificate for `mq.test` and a device certificate with CN [`CN`] (the
/// [`Pki`] holds their files).
pub(crate) fn device_pki() -> (Pki, Ca, Leaf, Leaf) {
    let pki = Pki::new();
    let ca = pki.ca("ca", "CA");
    let server = ca.server_cert("mq", &["mq.test"]);
    let device = ca.client_cert("device", &ClientSpec::cn(CN));
    (pki, ca, server, device)
}

/// A terminate route `name` for `mq.test` that requires a client certificate of `ca`, with the
/// `mqtt:` block `mqtt`.
pub(crate) fn device_route(name: &str, ca: &Ca, server: &Leaf, mqtt: &str) -> RouteYaml {
    RouteYaml::new(name, "terminate").sni(&["mq.test"]).cert(server).client_auth("required", ca).mqtt(mqtt)
}

pub(crate) fn device_client(ca: &Ca, device: &Leaf) -> std::sync::Arc<rustls::ClientConfig> {
    client_config(ClientOpts {
        roots: vec![ca.cert_der.clone()],
        identity: Some(device.identity()),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_id_other_than_the_cn_reads_identifier_rejected_and_no_backend_is_connected() {
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let (_pki, ca, server, device) = device_pki();
    let route = device_route("mq", &ca, &server, "{client_id: identity}").server(backend.addr);
    let proxy = start_proxy(&config_v4("mq", &[route])).await;

    let (mut tls, _) = tls_connect(proxy.addr(0), device_client(&ca, &device), "mq.test").await.unwrap();
    tls.write_all(&connect(4, "device-8", None)).await.unwrap();
    assert_eq!(read_until_closed(&mut tls).await.bytes(), [0x20, 0x02, 0x00, 0x02], "3.1.1: return code 2");
    let (mut tls, _) = tls_connect(proxy.addr(0), device_client(&ca, &device), "mq.test").await.unwrap();
    tls.write_all(&connect(5, "device-7-x", None)).await.unwrap();
    assert_eq!(read_until_closed(&mut tls).await.bytes(), [0x20, 0x03, 0x00, 0x85, 0x00], "5.0: reason 0x85");

    close_counted(&proxy, "mq", "mqtt_client_id_rejected").await;
    let refused = [("route", "mq"), ("reason", "client_id_rejected")];
    count_reaches(&proxy, "snigate_mqtt_refusals_total", &refused, 2.0, "two client id refusals").await;
    backend.assert_untouched(Duration::from_millis(100)).await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_prefix_accepts_cn_suffix_and_refuses_another_prefix() {
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::None)).await;
    let (_pki, ca, server, device) = device_pki();
    let route = device_route("mq", &ca, &server, "{client_id: identity_prefix}").proxy("none").server(backend.addr);
    let proxy = start_proxy(&config_v4("mq", &[route])).await;

    let (mut tls, _) = tls_connect(proxy.addr(0), device_client(&ca, &device), "mq.test").await.unwrap();
    let refused = connect(4, "device-8-suffix", None);
    tls.write_all(&refused).await.unwrap();
    assert_eq!(read_until_closed(&mut tls).await.bytes(), [0x20, 0x02, 0x00, 0x02]);

    let (mut tls, _) = tls_connect(proxy.addr(0), device_client(&ca, &device), "mq.test").await.unwrap();
    let accepted = connect(4, "device-7-suffix", Some("anyone"));
    tls.write_all(&accepted).await.unwrap();
    assert_eq!(read_n(&mut tls, accepted.len()).await, accepted, "forwarded unchanged and echoed");
    proxy.shutdown().await;
}

/// A Mosquitto whose ACL lets user `CN` read and write `devices/CN/#` and anonymous clients read
/// `devices/#`, logging everything to `mosquitto.log` in its folder.
pub(crate) async fn start_mosquitto_with_acl() -> Option<(KillOnDrop, std::net::SocketAddr, std::path::PathBuf)> {
    if !std::path::Path::new(MOSQUITTO).exists() {
        println!("skipped: mosquitto not installed");
        return None;
    }
    let addr = closed_port().await;
    let dir = tempfile::tempdir().unwrap();
    let (acl, log) = (dir.path().join("acl"), dir.path().join("mosquitto.log"));
    std::fs::write(&acl, format!("topic read devices/#\n\nuser {CN}\ntopic readwrite devices/{CN}/#\n")).unwrap();
    let config = dir.path().join("mosquitto.conf");
    let text = format!(
        // `user root`: run as root, Mosquitto would otherwise drop to a user that cannot write here.
        "user root\nlistener {} 127.0.0.1\nallow_anonymous true\nacl_file {}\nlog_dest file {}\nlog_type all\n",
        addr.port(),
        acl.display(),
        log.display()
    );
    std::fs::write(&config, text).unwrap();
    let child = Command::new(MOSQUITTO).arg("-c").arg(&config).stdout(Stdio::null()).stderr(Stdio::null()).spawn();
    let mosquitto = KillOnDrop { child: child.expect("start mosquitto"), _dir: dir };
    within("mosquitto to listen", async {
        while TcpStream::connect(addr).await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    Some((mosquitto, addr, log))
}

fn mqtt_string(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// SUBSCRIBE (packet id 1, QoS 0) to `filter`; the SUBACK must grant it. `v5`: with (empty)
/// properties.
async fn subscribe<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, filter: &str, v5: bool) {
    let mut body = vec![0, 1];
    body.extend(v5.then_some(0));
    mqtt_string(&mut body, filter);
    body.push(0);
    let mut packet = vec![0x82, body.len() as u8];
    packet.extend_from_slice(&body);
    stream.write_all(&packet).await.unwrap();
    let expected: &[u8] = if v5 { &[0x90, 0x04, 0, 1, 0, 0] } else { &[0x90, 0x03, 0, 1, 0] };
    assert_eq!(read_n(stream, expected.len()).await, expected, "SUBACK granting QoS 0 on {filter}");
}

fn publish(topic: &str, payload: &[u8], v5: bool) -> Vec<u8> {
    let mut body = Vec::new();
    mqtt_string(&mut body, topic);
    body.extend(v5.then_some(0));
    body.extend_from_slice(payload);
    let mut packet = vec![0x30, body.len() as u8];
    packet.extend_from_slice(&body);
    packet
}

/// The next PUBLISH (QoS 0, short): its topic and payload (`v5`: after empty properties).
async fn next_publish<S: AsyncRead + Unpin>(stream: &mut S, v5: bool) -> (String, Vec<u8>) {
    let mut header = [0u8; 2];
    within("a PUBLISH", stream.read_exact(&mut header)).await.unwrap();
    assert_eq!(header[0] & 0xf0, 0x30, "a PUBLISH: {header:?}");
    let body = read_n(stream, header[1] as usize).await;
    let topic_len = u16::from_be_bytes([body[0], body[1]]) as usize;
    let payload_at = 2 + topic_len + usize::from(v5);
    (String::from_utf8(body[2..2 + topic_len].to_vec()).unwrap(), body[payload_at..].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn username_identity_makes_mosquitto_2_apply_the_cn_acl() {
    let Some((mut mosquitto, broker, log)) = start_mosquitto_with_acl().await else { return };
    let (_pki, ca, server, device) = device_pki();
    let route = device_route("mq", &ca, &server, "{username: identity, client_id: identity_prefix}")
        .proxy("none")
        .server(broker);
    let proxy = start_proxy(&config_v4("mq", &[route])).await;

    // An anonymous observer straight on the broker sees what the ACL lets through.
    let mut observer = TcpStream::connect(broker).await.unwrap();
    assert_eq!(connack(&mut observer, &connect(4, "observer", None)).await, [0x20, 0x02, 0x00, 0x00]);
    subscribe(&mut observer, "devices/#", false).await;

    for (level, username) in [(4, Some("someone-else")), (5, None)] {
        let (mut tls, _) = tls_connect(proxy.addr(0), device_client(&ca, &device), "mq.test").await.unwrap();
        let v5 = level == 5;
        let ack = connack(&mut tls, &connect(level, &format!("{CN}-{level}"), username)).await;
        assert_eq!((ack[0], ack[3]), (0x20, 0), "accepted, level {level}: {ack:?}");
        // MQTT 5: the rest of the CONNACK is its properties.
        let _properties = read_n(&mut tls, usize::from(ack[1]) - 2).await;
        let own = format!("devices/{CN}/x");
        subscribe(&mut tls, &own, v5).await;
        // Another user's topic first: the ACL drops it, so the next delivery is the own one.
        tls.write_all(&publish("devices/device-8/x", b"not yours", v5)).await.unwrap();
        tls.write_all(&publish(&own, format!("hello {level}").as_bytes(), v5)).await.unwrap();
        let expected = (own.clone(), format!("hello {level}").into_bytes());
        assert_eq!(next_publish(&mut tls, v5).await, expected, "the device gets its own message back");
        assert_eq!(next_publish(&mut observer, false).await, expected, "the foreign publish was not delivered");
    }

    proxy.shutdown().await;

    // Mosquitto buffers its log file: stopped with SIGTERM, it writes it out.
    let pid = mosquitto.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let _ = within("mosquitto to exit", async {
        while mosquitto.child.try_wait().unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let logged = text.lines().filter(|line| line.contains(&format!("u'{CN}'"))).count();
    assert!(logged >= 2 && !text.contains("someone-else"), "the CN as username in both CONNECTs:\n{text}");
}

/// A backend server that answers each connection with its own number, then reads to the end.
async fn numbered_server(number: u8) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = stream.write_all(&[number]).await;
                let _ = tokio::io::copy(&mut stream, &mut tokio::io::sink()).await;
            });
        }
    });
    (addr, task)
}

/// The number of the server a CONNECT with `client_id` reaches.
async fn lands_on(proxy: std::net::SocketAddr, client_id: &str) -> u8 {
    let mut client = TcpStream::connect(proxy).await.unwrap();
    client.write_all(&connect(4, client_id, None)).await.unwrap();
    read_n(&mut client, 1).await[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_id_balance_keeps_each_client_id_on_one_server_and_only_a_stopped_servers_move() {
    let mut servers = Vec::new();
    for number in 0..3 {
        servers.push(numbered_server(number).await);
    }
    let mut route = RouteYaml::new("mq", "tcp").mqtt("{}").proxy("none").backend("balance: client_id");
    for (addr, _) in &servers {
        route = route.server(addr);
    }
    let proxy = start_proxy(&config_v4("mq", &[route])).await;
    let ids: Vec<String> = (0..100).map(|i| format!("device-{i}")).collect();

    let mut first = Vec::new();
    for id in &ids {
        first.push(lands_on(proxy.addr(0), id).await);
    }
    for _ in 0..9 {
        for (id, &server) in ids.iter().zip(&first) {
            assert_eq!(lands_on(proxy.addr(0), id).await, server, "{id} reconnects to the same server");
        }
    }
    let per_server: Vec<usize> = (0..3).map(|n| first.iter().filter(|&&s| s == n).count()).collect();
    assert!(per_server.iter().all(|&n| n >= 10), "client ids spread over the servers: {per_server:?}");
    // An empty client id has nothing to hash: round robin.
    let mut empty = Vec::new();
    for _ in 0..3 {
        empty.push(lands_on(proxy.addr(0), "").await);
    }
    empty.sort();
    assert_eq!(empty, [0, 1, 2], "three empty client ids in a row reach the three servers");

    let (_, stopped) = servers.remove(1);
    stopped.abort();
    let _ = stopped.await;
    for (id, &server) in ids.iter().zip(&first) {
        let now = lands_on(proxy.addr(0), id).await;
        if server == 1 {
            assert_ne!(now, 1, "{id} moves off the stopped server");
        } else {
            assert_eq!(now, server, "{id} was not on the stopped server and stays");
        }
    }
    proxy.shutdown().await;
}
