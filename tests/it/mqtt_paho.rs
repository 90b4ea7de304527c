//! A real MQTT client library, paho-mqtt (Python, `tests/it/clients/paho_connect.py`), through
//! `mqtt:` routes: snigate's refusals are CONNACK codes paho hands to the application, and an
//! accepted session works end to end with a real Mosquitto and is logged with its CONNECT fields.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::mqtt_identity::{device_pki, device_route, CN};
use crate::mqtt_routes::{count_reaches, start_mosquitto};
use crate::support::*;
use tokio::net::TcpStream;

/// How long one paho run may take (the script bounds itself with `--timeout`, 10 s, so it ends
/// before this; the limit only turns a hang into a failure).
const PAHO_LIMIT: Duration = Duration::from_secs(20);

/// What paho reported for one session.
#[derive(Debug)]
struct PahoRun {
    /// The 3.x return code or the MQTT 5 reason code; `None` when no CONNACK came.
    connack: Option<i64>,
    /// Subscribed, published and got the message back through the broker.
    round_trip: bool,
    /// paho saw the connection end.
    closed: bool,
}

/// One paho client's arguments.
#[derive(Default)]
struct Paho {
    version: &'static str,
    client_id: String,
    username: Option<&'static str>,
    password: Option<&'static str>,
    keepalive_s: Option<u16>,
    /// TLS with this SNI, trusting `ca`, presenting `identity` if given.
    sni: Option<&'static str>,
    ca: Option<PathBuf>,
    identity: Option<(PathBuf, PathBuf)>,
}

impl Paho {
    fn new(version: &'static str, client_id: &str) -> Paho {
        Paho { version, client_id: client_id.to_string(), ..Default::default() }
    }

    fn tls(mut self, sni: &'static str, ca: &Ca, identity: Option<&Leaf>) -> Paho {
        self.sni = Some(sni);
        self.ca = Some(ca.cert_path.clone());
        self.identity = identity.map(|leaf| (leaf.cert_path.clone(), leaf.key_path.clone()));
        self
    }

    fn args(&self, port: u16) -> Vec<String> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/clients/paho_connect.py");
        let mut args = vec![script.display().to_string(), "--port".into(), port.to_string()];
        args.extend(["--version".into(), self.version.into(), "--client-id".into(), self.client_id.clone()]);
        let mut option = |name: &str, value: Option<String>| {
            if let Some(value) = value {
                args.extend([name.to_string(), value]);
            }
        };
        option("--username", self.username.map(String::from));
        option("--password", self.password.map(String::from));
        option("--keepalive", self.keepalive_s.map(|s| s.to_string()));
        option("--sni", self.sni.map(String::from));
        option("--ca", self.ca.as_ref().map(|p| p.display().to_string()));
        option("--cert", self.identity.as_ref().map(|(cert, _)| cert.display().to_string()));
        option("--key", self.identity.as_ref().map(|(_, key)| key.display().to_string()));
        args
    }

    /// Runs the client against `port` on 127.0.0.1 and reads its one-line JSON report.
    async fn run(&self, port: u16) -> PahoRun {
        let mut command = std::process::Command::new("python3");
        command.args(self.args(port));
        let run = tokio::task::spawn_blocking(move || command.output());
        let output = within_for(PAHO_LIMIT, "paho to finish", run).await.unwrap().expect("run python3");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "paho_connect.py failed (paho-mqtt missing? `.ci/run` installs it with pip): {stderr}"
        );
        let report: yaml_serde::Value = yaml_serde::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("paho's report is not JSON ({e}): {stdout}\n{stderr}"));
        PahoRun {
            connack: report["connack"].as_i64(),
            round_trip: report["round_trip"].as_bool().unwrap_or(false),
            closed: report["closed"].as_bool().unwrap_or(false),
        }
    }
}

/// Expects paho to have read the CONNACK `code` and then seen the connection closed.
fn assert_refused(run: &PahoRun, code: i64, what: &str) {
    assert_eq!(run.connack, Some(code), "{what}: {run:?}");
    assert!(run.closed && !run.round_trip, "{what}: closed after the CONNACK: {run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_reads_server_unavailable_when_no_server_or_backup_connects() {
    let pki = Pki::new();
    let ca = pki.ca("ca", "CA");
    let server = ca.server_cert("mq", &["mq.test"]);
    let (down, backup_down) = (closed_port().await, closed_port().await);
    let tls_route = RouteYaml::new("mq-tls", "terminate")
        .sni(&["mq.test"])
        .cert(&server)
        .mqtt("{}")
        .server(down)
        .backend(format!("backup_servers: [{}]", q(backup_down.to_string())));
    let tcp_route = RouteYaml::new("mq-tcp", "tcp").mqtt("{}").server(down);
    let proxy = start_proxy(&config_v4("mq-tcp", &[tls_route, tcp_route])).await;
    let port = proxy.addr(0).port();

    let run = Paho::new("3.1.1", "down-311").tls("mq.test", &ca, None).run(port).await;
    assert_refused(&run, 3, "3.1.1 over TLS: return code 3, server unavailable");
    let run = Paho::new("5", "down-5").tls("mq.test", &ca, None).run(port).await;
    assert_refused(&run, 0x88, "5.0 over TLS: reason 0x88, server unavailable");
    let run = Paho::new("3.1.1", "down-tcp").run(port).await;
    assert_refused(&run, 3, "3.1.1 on a tcp route");

    for (route, want) in [("mq-tls", 2.0), ("mq-tcp", 1.0)] {
        let refused = [("route", route), ("reason", "server_unavailable")];
        count_reaches(&proxy, "snigate_mqtt_refusals_total", &refused, want, "refusals counted").await;
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_reads_identifier_rejected_for_a_client_id_that_is_not_the_cn_and_the_cn_gets_through() {
    let Some((_mosquitto, broker)) = start_mosquitto().await else { return };
    let (_pki, ca, server, device) = device_pki();
    let route = device_route("mq", &ca, &server, "{client_id: identity}").proxy("none").server(broker);
    let proxy = start_proxy(&config_v4("mq", &[route])).await;
    let port = proxy.addr(0).port();

    let run = Paho::new("3.1.1", "device-8").tls("mq.test", &ca, Some(&device)).run(port).await;
    assert_refused(&run, 2, "3.1.1: return code 2, identifier rejected");
    let run = Paho::new("5", "device-7-other").tls("mq.test", &ca, Some(&device)).run(port).await;
    assert_refused(&run, 0x85, "5.0: reason 0x85, client identifier not valid");
    for version in ["3.1.1", "5"] {
        let run = Paho::new(version, CN).tls("mq.test", &ca, Some(&device)).run(port).await;
        assert_eq!(run.connack, Some(0), "{version}: the CN as client id is accepted: {run:?}");
        assert!(run.round_trip, "{version}: publish and subscribe work through snigate: {run:?}");
    }
    let refused = [("route", "mq"), ("reason", "client_id_rejected")];
    count_reaches(&proxy, "snigate_mqtt_refusals_total", &refused, 2.0, "two client id refusals").await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_sessions_are_logged_with_their_connect_fields_and_the_rewritten_username() {
    let Some((_mosquitto, broker)) = start_mosquitto().await else { return };
    let (pki, ca, server, device) = device_pki();
    let tcp_route = RouteYaml::new("mq", "tcp").mqtt("{}").proxy("none").server(broker);
    let identity_route = device_route("mq-identity", &ca, &server, "{username: identity}").proxy("none").server(broker);
    let listen = closed_port().await;
    let config = pki.write("routes.yaml", &config_yaml(&[&listen.to_string()], "mq", &[tcp_route, identity_route]));
    let mut child = spawn_with_json_log(&config);
    within("snigate to listen", async {
        while TcpStream::connect(listen).await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;

    let with_password = |version, client_id, keepalive_s| Paho {
        username: Some("alice"),
        password: Some("hunter2"),
        keepalive_s: Some(keepalive_s),
        ..Paho::new(version, client_id)
    };
    for paho in [
        with_password("3.1.1", "paho-311", 42),
        with_password("5", "paho-5", 17),
        Paho { username: Some("bob"), ..Paho::new("5", CN).tls("mq.test", &ca, Some(&device)) },
    ] {
        let run = paho.run(listen.port()).await;
        assert!(run.connack == Some(0) && run.round_trip, "{} accepted, round trip: {run:?}", paho.client_id);
    }

    let log = terminate_and_read_log(&mut child).await;
    let line_of = |client_id: &str| {
        let field = format!("\"mqtt_client_id\":\"{client_id}\"");
        log.lines()
            .find(|l| l.contains("\"message\":\"connection closed\"") && l.contains(&field))
            .unwrap_or_else(|| panic!("no access-log line for {client_id} in:\n{log}"))
            .to_string()
    };
    let expected: [(&str, &[&str]); 3] = [
        ("paho-311", &["\"mqtt_version\":\"3.1.1\"", "\"mqtt_username\":\"alice\"", "\"mqtt_keepalive_s\":42"]),
        ("paho-5", &["\"mqtt_version\":\"5.0\"", "\"mqtt_username\":\"alice\"", "\"mqtt_keepalive_s\":17"]),
        (CN, &["\"mqtt_version\":\"5.0\"", "\"mqtt_username\":\"device-7\"", "\"route\":\"mq-identity\""]),
    ];
    for (client_id, fields) in expected {
        let line = line_of(client_id);
        for field in fields.iter().chain(&["\"mqtt_clean_start\":true", "\"cause\":\"closed\""]) {
            assert!(line.contains(field), "{field} missing from {line}");
        }
    }
    assert!(!log.contains("hunter2"), "the password must never be logged:\n{log}");
    assert!(!log.contains("\"mqtt_username\":\"bob\""), "the broker got the CN, so the log says the CN:\n{log}");
}
