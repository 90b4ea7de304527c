//! SNI + ALPN routing (`routes[].alpn`): one hostname, several routes told apart by the protocols
//! the ClientHello offers, for terminate and passthrough; the matched protocol is what the
//! handshake negotiates, what the ALPN TLV carries and what the access log says.

use std::time::Duration;

use crate::support::tls::{server_config, tls_connect};
use crate::support::*;
use tokio::io::AsyncWriteExt;

const NAME: &str = "iot.test";

fn offering(ca: &Ca, alpn: &[&[u8]]) -> std::sync::Arc<rustls::ClientConfig> {
    client_config(ClientOpts {
        roots: vec![ca.cert_der.clone()],
        alpn: alpn.iter().map(|p| p.to_vec()).collect(),
        ..Default::default()
    })
}

/// Connects offering `alpn`, echoes one message, and returns the protocol the client negotiated.
async fn round_trip(proxy: std::net::SocketAddr, ca: &Ca, alpn: &[&[u8]]) -> Option<Vec<u8>> {
    let (mut tls, _) = tls_connect(proxy, offering(ca, alpn), NAME).await.expect("handshake");
    tls.write_all(b"ping").await.unwrap();
    assert_eq!(read_n(&mut tls, 4).await, b"ping");
    tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_routes_one_name_by_alpn_and_negotiates_the_matched_protocol() {
    let pki = Pki::new();
    let ca = pki.ca("ca", "ALPN CA");
    let leaf = ca.server_cert("iot", &[NAME]);
    let mut mqtt = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let mut web = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let mut rest = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let route = |name: &str, backend: &TestBackend| {
        RouteYaml::new(name, "terminate").sni(&[NAME]).cert(&leaf).server(backend.addr)
    };
    let routes = [
        route("mqtt", &mqtt).alpn(&["mqtt", "x-amzn-mqtt-ca"]),
        route("web", &web).alpn(&["h2"]),
        route("rest", &rest),
    ];
    let proxy = start_proxy(&config_v4("reject", &routes)).await;

    // The route lists mqtt first; the client prefers x-amzn-mqtt-ca: that is the one matched.
    let negotiated = round_trip(proxy.addr(0), &ca, &[b"x-other", b"x-amzn-mqtt-ca", b"mqtt"]).await;
    assert_eq!(negotiated.as_deref(), Some(&b"x-amzn-mqtt-ca"[..]));
    assert_eq!(mqtt.accepted().await.v2().alpn().as_deref(), Some(&b"x-amzn-mqtt-ca"[..]));

    assert_eq!(round_trip(proxy.addr(0), &ca, &[b"h2", b"http/1.1"]).await.as_deref(), Some(&b"h2"[..]));
    assert_eq!(web.accepted().await.v2().alpn().as_deref(), Some(&b"h2"[..]));

    assert_eq!(round_trip(proxy.addr(0), &ca, &[]).await, None);
    assert_eq!(rest.accepted().await.v2().alpn(), None);
    assert_eq!((mqtt.accept_count(), web.accept_count(), rest.accept_count()), (1, 1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_routes_one_name_by_offered_alpn() {
    let pki = Pki::new();
    let ca = pki.ca("backend-ca", "Backend CA");
    let leaf = ca.server_cert("iot", &[NAME]);
    let tls_backend = |alpn: &[&[u8]]| BackendOpts::tls(ProxyExpect::V2, server_config(&leaf, alpn));
    let mut mqtt = TestBackend::start(tls_backend(&[b"mqtt"])).await;
    let mut web = TestBackend::start(tls_backend(&[b"h2"])).await;
    let mut rest = TestBackend::start(tls_backend(&[])).await;
    let route =
        |name: &str, backend: &TestBackend| RouteYaml::new(name, "passthrough").sni(&[NAME]).server(backend.addr);
    let routes = [route("mqtt", &mqtt).alpn(&["mqtt"]), route("web", &web).alpn(&["h2"]), route("rest", &rest)];
    let proxy = start_proxy(&config_v4("reject", &routes)).await;

    // The backend negotiates; the TLV carries the protocol matched, not the first offered.
    assert_eq!(round_trip(proxy.addr(0), &ca, &[b"x-other", b"mqtt"]).await.as_deref(), Some(&b"mqtt"[..]));
    assert_eq!(mqtt.accepted().await.v2().alpn().as_deref(), Some(&b"mqtt"[..]));

    assert_eq!(round_trip(proxy.addr(0), &ca, &[b"h2"]).await.as_deref(), Some(&b"h2"[..]));
    assert_eq!(web.accepted().await.v2().alpn().as_deref(), Some(&b"h2"[..]));

    assert_eq!(round_trip(proxy.addr(0), &ca, &[]).await, None);
    assert_eq!(rest.accepted().await.v2().alpn(), None);
    assert_eq!((mqtt.accept_count(), web.accept_count(), rest.accept_count()), (1, 1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_with_only_alpn_routes_sends_other_hellos_to_default() {
    let pki = Pki::new();
    let ca = pki.ca("ca", "ALPN CA");
    let leaf = ca.server_cert("iot", &[NAME]);
    let mqtt = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let mut fallback = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let routes = [
        RouteYaml::new("mqtt", "terminate").sni(&[NAME]).alpn(&["mqtt"]).cert(&leaf).server(mqtt.addr),
        RouteYaml::new("fallback", "terminate").cert(&leaf).server(fallback.addr),
    ];
    let proxy = start_proxy(&config_v4("fallback", &routes)).await;
    assert_eq!(round_trip(proxy.addr(0), &ca, &[b"h2"]).await, None);
    assert_eq!(fallback.accepted().await.v2().authority().as_deref(), Some(NAME));
    mqtt.assert_untouched(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_alpn_is_the_matched_protocol_on_passthrough() {
    let pki = Pki::new();
    let ca = pki.ca("backend-ca", "Backend CA");
    let leaf = ca.server_cert("iot", &[NAME]);
    let backend = TestBackend::start(BackendOpts::tls(ProxyExpect::V2, server_config(&leaf, &[b"mqtt"]))).await;
    let port = closed_port().await.port();
    let route = RouteYaml::new("iot-mqtt", "passthrough").sni(&[NAME]).alpn(&["mqtt"]).server(backend.addr);
    let listen = format!("127.0.0.1:{port}");
    let config = pki.write("routes.yaml", &config_yaml(&[&listen], "reject", &[route]));
    let mut child = spawn_with_json_log(&config);
    let proxy = listen.parse().unwrap();
    let mut served = false;
    for _ in 0..100 {
        if let Ok((mut tls, _)) = tls_connect(proxy, offering(&ca, &[b"x-other", b"mqtt"]), NAME).await {
            tls.write_all(b"ping").await.unwrap();
            assert_eq!(read_n(&mut tls, 4).await, b"ping");
            tls.shutdown().await.unwrap();
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "snigate did not start");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stderr = terminate_and_read_log(&mut child).await;
    let line = stderr
        .lines()
        .find(|l| l.contains("\"message\":\"connection closed\"") && l.contains("\"route\":\"iot-mqtt\""))
        .unwrap_or_else(|| panic!("no access-log line for the route in:\n{stderr}"));
    assert!(line.contains("\"alpn\":\"mqtt\""), "matched protocol in the access log: {line}");
}

/// The README's "MQTT and HTTPS on one :443" example loads (its certificate paths made real).
#[test]
fn readme_mqtt_and_https_example_loads() {
    let readme = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme.split("**Example: MQTT and HTTPS on one :443.**").nth(1).expect("README example");
    let yaml = section.split("```yaml\n").nth(1).and_then(|rest| rest.split("```").next()).expect("yaml block");
    let pki = Pki::new();
    let ca = pki.ca("ca", "Example CA");
    let leaf = ca.server_cert("iot", &["iot.example.com"]);
    let yaml = yaml
        .replace("certs/iot.example.com.pem", leaf.cert_path.to_str().unwrap())
        .replace("certs/iot.example.com.key", leaf.key_path.to_str().unwrap());
    let config = snigate::config::parse(&yaml, std::path::Path::new("readme-example.yaml"))
        .unwrap_or_else(|errors| panic!("README example does not load:\n{errors}"));
    let offered = |alpn: &[&[u8]]| alpn.iter().map(|p| p.to_vec()).collect::<Vec<_>>();
    let resolve = |alpn: &[&[u8]]| {
        config.routes.resolve_with_alpn(Some("iot.example.com"), &offered(alpn)).map(|r| r.name.clone())
    };
    assert_eq!(resolve(&[b"h2", b"mqtt"]).as_deref(), Some("iot-mqtt"));
    assert_eq!(resolve(&[b"x-amzn-mqtt-ca"]).as_deref(), Some("iot-mqtt"));
    assert_eq!(resolve(&[b"h2"]).as_deref(), Some("iot-web"));
    assert_eq!(resolve(&[]).as_deref(), Some("iot-web"));
}
