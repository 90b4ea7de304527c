//! The access log: `snigate run --log-format json` writes one JSON object per connection when it
//! closes, with the field set the README documents (checked here as substrings, without a JSON
//! crate: the names and values are what operators' log pipelines key on).

use std::time::Duration;

use crate::support::tls::{simple_client, tls_connect};
use crate::support::*;
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_access_log_line_has_the_documented_fields() {
    let pki = Pki::new();
    let ca = pki.ca("ca", "CA");
    let server = ca.server_cert("a", &["a.test"]);
    let device = ca.client_cert("device", &ClientSpec::cn("device-7"));
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let port = closed_port().await.port();
    let route = RouteYaml::new("tenant-a", "terminate")
        .sni(&["a.test"])
        .cert(&server)
        .client_auth("required", &ca)
        .tls("alpn: [mqtt]")
        .server(backend.addr);
    let config =
        pki.write("routes.yaml", &config_with_limits(&[&format!("127.0.0.1:{port}")], "reject", TEST_LIMITS, &[route]));

    let mut child = spawn_with_json_log(&config);
    let proxy = format!("127.0.0.1:{port}").parse().unwrap();
    let mut connected = None;
    for _ in 0..100 {
        let client = client_config(ClientOpts {
            roots: vec![ca.cert_der.clone()],
            identity: Some(device.identity()),
            alpn: vec![b"mqtt".to_vec()],
            ..Default::default()
        });
        if let Ok(session) = tls_connect(proxy, client, "a.test").await {
            connected = Some(session);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut tls, local) = connected.expect("snigate did not start");
    tls.write_all(b"12345").await.unwrap();
    assert_eq!(read_n(&mut tls, 5).await, b"12345");
    tls.shutdown().await.unwrap();
    drop(tls);
    // And one rejected connection, for its cause.
    assert!(tls_connect(proxy, simple_client(&ca.cert_der, None), "other.test").await.is_err());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let stderr = terminate_and_read_log(&mut child).await;

    let closes: Vec<&str> = stderr.lines().filter(|l| l.contains("\"message\":\"connection closed\"")).collect();
    let served = closes
        .iter()
        .find(|l| l.contains("\"route\":\"tenant-a\""))
        .unwrap_or_else(|| panic!("no access-log line for the served connection in:\n{stderr}"));
    assert!(served.starts_with('{') && served.ends_with('}'), "one JSON object per line: {served}");
    for field in [
        "\"timestamp\":".to_string(),
        "\"target\":\"snigate::connection\"".to_string(),
        format!("\"peer\":\"{local}\""),
        format!("\"listener\":\"127.0.0.1:{port}\""),
        "\"sni\":\"a.test\"".to_string(),
        "\"mode\":\"terminate\"".to_string(),
        "\"cause\":\"closed\"".to_string(),
        format!("\"backend\":\"{}\"", backend.addr),
        "\"client_cn\":\"device-7\"".to_string(),
        "\"client_serial\":\"".to_string(),
        "\"tls_version\":\"TLSv1.3\"".to_string(),
        "\"alpn\":\"mqtt\"".to_string(),
        "\"bytes_in\":5".to_string(),
        "\"bytes_out\":5".to_string(),
        "\"duration_ms\":".to_string(),
    ] {
        assert!(served.contains(&field), "missing {field} in {served}");
    }
    assert!(
        closes.iter().any(|l| l.contains("\"cause\":\"unknown_sni\"") && l.contains("\"sni\":\"other.test\"")),
        "no access-log line for the rejected connection in:\n{stderr}"
    );
    assert!(!stderr.contains("PRIVATE KEY"), "key material in the log");
}
