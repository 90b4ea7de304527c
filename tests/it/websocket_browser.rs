//! A real browser: headless Chromium runs MQTT.js (the npm package `mqtt`) over `wss://` through
//! snigate to Mosquitto's plain TCP listener, subscribes and publishes, and reports to a topic the
//! test reads from the broker directly. Skipped, with a note, only when Chromium is not installed
//! (`.ci/run` installs it and MQTT.js).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::mqtt_identity::device_pki;
use crate::mqtt_routes::{connack, connect, start_mosquitto, KillOnDrop};
use crate::support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where `.ci/run` installs MQTT.js (`npm install --prefix`), unless `MQTT_JS_DIR` says otherwise.
const DEFAULT_MQTT_JS_DIR: &str = "/tmp/snigate-mqttjs";
/// How long the page may take to connect, round-trip and report.
const BROWSER_LIMIT: Duration = Duration::from_secs(30);

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"].iter().map(PathBuf::from).find(|path| path.exists())
}

/// SUBSCRIBE (packet id 1, QoS 0) to `filter`, then the SUBACK.
async fn subscribe(stream: &mut TcpStream, filter: &str) {
    let mut packet = vec![0x82, (2 + 2 + filter.len() + 1) as u8, 0, 1, 0, filter.len() as u8];
    packet.extend_from_slice(filter.as_bytes());
    packet.push(0);
    stream.write_all(&packet).await.unwrap();
    assert_eq!(read_n(stream, 5).await, [0x90, 0x03, 0, 1, 0], "SUBACK");
}

/// The payload of the next short QoS 0 PUBLISH.
async fn next_payload(stream: &mut TcpStream) -> String {
    let mut header = [0u8; 2];
    stream.read_exact(&mut header).await.unwrap();
    assert_eq!(header[0] & 0xf0, 0x30, "a PUBLISH: {header:?}");
    let body = read_n(stream, header[1] as usize).await;
    let topic_len = u16::from_be_bytes([body[0], body[1]]) as usize;
    String::from_utf8_lossy(&body[2 + topic_len..]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_with_mqtt_js_round_trips_through_snigate_to_mosquitto() {
    let Some(chromium) = chromium() else {
        println!("skipped: chromium is not installed (`apt-get install chromium`; .ci/run does)");
        return;
    };
    let mqtt_js_dir = std::env::var("MQTT_JS_DIR").unwrap_or_else(|_| DEFAULT_MQTT_JS_DIR.to_string());
    let mqtt_js = Path::new(&mqtt_js_dir).join("node_modules/mqtt/dist/mqtt.min.js");
    assert!(
        mqtt_js.exists(),
        "MQTT.js missing at {}: `npm install --prefix {mqtt_js_dir} mqtt` (.ci/run does)",
        mqtt_js.display()
    );
    let Some((_mosquitto, broker)) = start_mosquitto().await else { return };
    let (_pki, _ca, server, _device) = device_pki();
    let route = RouteYaml::new("dash", "terminate")
        .sni(&["mq.test"])
        .cert(&server)
        .mqtt("{}")
        .websocket("{}")
        .proxy("none")
        .server(broker);
    let proxy = start_proxy(&config_v4("dash", &[route])).await;

    let mut observer = TcpStream::connect(broker).await.unwrap();
    assert_eq!(connack(&mut observer, &connect(4, "observer", None)).await, [0x20, 0x02, 0x00, 0x00]);
    subscribe(&mut observer, "browser/result").await;

    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/clients/mqtt_browser.html");
    let port = proxy.addr(0).port();
    let url = format!("file://{}?mqttjs=file://{}&url=wss://mq.test:{port}/mqtt", page.display(), mqtt_js.display());
    let profile = tempfile::tempdir().unwrap();
    let child = Command::new(chromium)
        .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--ignore-certificate-errors"])
        .arg("--host-resolver-rules=MAP mq.test 127.0.0.1")
        .arg("--remote-debugging-port=0")
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let _browser = KillOnDrop { child, _dir: profile };
    let result = within_for(BROWSER_LIMIT, "the page's result on browser/result", next_payload(&mut observer)).await;
    assert_eq!(result, "ok", "MQTT.js subscribed, published and got its message back");
    proxy.shutdown().await;
}
