//! Session resumption (issue 15): a route's tickets survive reloads that leave its TLS identity
//! alone; `session_tickets.key_file` lets replicas resume each other's tickets and rotates by
//! prepending; a ticket never crosses routes; a resumed session's client certificate is checked
//! again against the current CRLs. Real rustls clients that keep their tickets between
//! connections, as a device does; TLS 1.2 and 1.3.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::support::ops::*;
use crate::support::tls::{client_config, tls_connect, ClientOpts, Versions};
use crate::support::*;
use rustls::client::{ClientSessionMemoryCache, Resumption};
use rustls::{ClientConfig, HandshakeKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PING: &[u8] = b"ping";

/// How one connection went, as the client saw it.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Full,
    Resumed,
    /// The handshake failed, or the proxy closed before the echo.
    Refused,
}

/// One connection: handshake, a ping echoed through the backend (which also lets the client take
/// in the server's TLS 1.3 tickets), a clean close.
async fn connect_once(addr: std::net::SocketAddr, client: &Arc<ClientConfig>, sni: &str) -> Outcome {
    let Ok((mut tls, _)) = tls_connect(addr, client.clone(), sni).await else {
        return Outcome::Refused;
    };
    let kind = tls.get_ref().1.handshake_kind();
    if tls.write_all(PING).await.is_err() {
        return Outcome::Refused;
    }
    let mut echo = [0u8; PING.len()];
    let echoed = within("the echo", tls.read_exact(&mut echo)).await;
    let _ = tls.shutdown().await;
    match (echoed, kind) {
        (Ok(_), Some(HandshakeKind::Resumed)) => Outcome::Resumed,
        (Ok(_), _) => Outcome::Full,
        (Err(_), _) => Outcome::Refused,
    }
}

/// A device: its TLS client config, and so its ticket store, kept across connections.
fn device(ca: &Ca, identity: Option<&Leaf>, versions: Versions) -> Arc<ClientConfig> {
    client_config(ClientOpts {
        roots: vec![ca.cert_der.clone()],
        identity: identity.map(Leaf::identity),
        versions,
        ..Default::default()
    })
}

const BOTH_VERSIONS: [(Versions, &str); 2] = [(Versions::Tls13Only, "TLS 1.3"), (Versions::Tls12Only, "TLS 1.2")];

/// A terminate route `name` for `sni` with `leaf`, to an echo backend, without a PROXY header.
fn route(name: &str, sni: &str, leaf: &Leaf, backend: &TestBackend) -> RouteYaml {
    RouteYaml::new(name, "terminate").sni(&[sni]).cert(leaf).proxy("none").server(backend.addr)
}

fn with_key_file(key_file: &Path, yaml: &str) -> String {
    format!("session_tickets:\n  key_file: {}\n{yaml}", q(key_file.display().to_string()))
}

fn new_key() -> String {
    snigate::session_tickets::new_key_line().expect("random key")
}

async fn reload(proxy: &RunningProxy, yaml: &str) {
    std::fs::write(&proxy.config_path, yaml).unwrap();
    within("reload", proxy.reload.reload()).await.expect("reload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_survive_reloads_that_keep_the_certificate_and_not_a_new_certificate() {
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::None)).await;
    let pki = Pki::new();
    let ca = pki.ca("ca", "CA");
    let (leaf, renewed) = (ca.server_cert("a", &["a.test"]), ca.server_cert("a-renewed", &["a.test"]));
    let config = config_v4("a", &[route("a", "a.test", &leaf, &backend)]);
    let proxy = start_proxy(&config).await;
    let addr = proxy.addr(0);
    let devices: Vec<_> = BOTH_VERSIONS.iter().map(|&(versions, name)| (device(&ca, None, versions), name)).collect();
    for (client, version) in &devices {
        assert_eq!(connect_once(addr, client, "a.test").await, Outcome::Full, "{version}: first connection");
        assert_eq!(connect_once(addr, client, "a.test").await, Outcome::Resumed, "{version}: before any reload");
    }

    reload(&proxy, &config).await;
    let grown = config_v4("a", &[route("a", "a.test", &leaf, &backend), route("b", "b.test", &leaf, &backend)]);
    reload(&proxy, &grown).await;
    for (client, version) in &devices {
        assert_eq!(connect_once(addr, client, "a.test").await, Outcome::Resumed, "{version}: after two reloads");
    }

    reload(&proxy, &config_v4("a", &[route("a", "a.test", &renewed, &backend)])).await;
    for (client, version) in &devices {
        assert_eq!(connect_once(addr, client, "a.test").await, Outcome::Full, "{version}: a new certificate");
    }
    let resumed = [("route", "a"), ("resumed", "true")];
    let counted = metric(&parse_exposition(&proxy.metrics.encode()), "snigate_tls_handshakes_total", &resumed);
    assert!(counted.unwrap_or(0.0) >= 4.0, "resumed handshakes counted: {counted:?}");
    proxy.shutdown().await;
}

/// The real binary with an admin endpoint, on `listen`.
async fn spawn_binary(dir: &Path, name: &str, yaml: &str, admin: std::net::SocketAddr) -> (ChildProxy, PathBuf) {
    let config = dir.join(format!("{name}.yaml"));
    std::fs::write(&config, format!("admin: {}\n{yaml}", q(admin.to_string()))).unwrap();
    let mut child = ChildProxy::spawn(&config, dir.join(format!("{name}.log")));
    child.wait_ready(admin).await;
    (child, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_keeps_tickets_across_a_file_watch_reload_and_sighup() {
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::None)).await;
    let pki = Pki::new();
    let ca = pki.ca("ca", "CA");
    let leaf = ca.server_cert("a", &["a.test", "b.test"]);
    let (listen, admin) = (closed_port().await, closed_port().await);
    let routes = |extra: bool| {
        let mut routes = vec![route("a", "a.test", &leaf, &backend)];
        routes.extend(extra.then(|| route("b", "b.test", &leaf, &backend)));
        config_yaml(&[&listen.to_string()], "a", &routes)
    };
    let (child, config) = spawn_binary(pki.path(), "routes", &routes(false), admin).await;
    let devices: Vec<_> = BOTH_VERSIONS.iter().map(|&(versions, name)| (device(&ca, None, versions), name)).collect();
    for (client, version) in &devices {
        assert_eq!(connect_once(listen, client, "a.test").await, Outcome::Full, "{version}");
    }

    std::fs::write(&config, format!("admin: {}\n{}", q(admin.to_string()), routes(true))).unwrap();
    wait_for_reloads(admin, 2.0, "the file watch to reload the grown config").await;
    for (client, version) in &devices {
        assert_eq!(connect_once(listen, client, "a.test").await, Outcome::Resumed, "{version}: after the file watch");
    }
    child.signal("HUP");
    wait_for_reloads(admin, 3.0, "SIGHUP to reload").await;
    for (client, version) in &devices {
        assert_eq!(connect_once(listen, client, "a.test").await, Outcome::Resumed, "{version}: after SIGHUP");
    }
    let log = child.log_text();
    assert!(log.contains("routes_sessions_kept=1"), "the reload line counts the route that kept its sessions:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_with_one_key_file_resume_each_others_tickets_and_another_file_does_not() {
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::None)).await;
    let pki = Pki::new();
    let ca = pki.ca("ca", "CA");
    let leaf = ca.server_cert("a", &["a.test"]);
    let shared = pki.write("tickets.key", &format!("{}\n", new_key()));
    let other = pki.write("other.key", &format!("{}\n", new_key()));
    for file in [&shared, &other] {
        std::fs::set_permissions(file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    }
    let mut replicas = Vec::new();
    for (name, key_file) in [("one", &shared), ("two", &shared), ("three", &other)] {
        let (listen, admin) = (closed_port().await, closed_port().await);
        let yaml = config_yaml(&[&listen.to_string()], "a", &[route("a", "a.test", &leaf, &backend)]);
        let (child, _) = spawn_binary(pki.path(), name, &with_key_file(key_file, &yaml), admin).await;
        replicas.push((child, listen));
    }
    let (one, two, three) = (replicas[0].1, replicas[1].1, replicas[2].1);
    for (versions, version) in BOTH_VERSIONS {
        let client = device(&ca, None, versions);
        assert_eq!(connect_once(one, &client, "a.test").await, Outcome::Full, "{version}: first, on one");
        assert_eq!(connect_once(two, &client, "a.test").await, Outcome::Resumed, "{version}: one's ticket on two");
        assert_eq!(connect_once(one, &client, "a.test").await, Outcome::Resumed, "{version}: two's ticket on one");
        assert_eq!(connect_once(three, &client, "a.test").await, Outcome::Full, "{version}: another key file");
    }
    // Ticket keys never reach a log.
    for (child, _) in &replicas {
        let log = child.log_text();
        for key_file in [&shared, &other] {
            let key = std::fs::read_to_string(key_file).unwrap();
            assert!(!log.contains(key.trim()), "a ticket key in the log:\n{log}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_prepending_a_key_keeps_old_tickets_and_removing_it_ends_them() {
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::None)).await;
    let pki = Pki::new();
    let ca = pki.ca("ca", "CA");
    let leaf = ca.server_cert("a", &["a.test"]);
    let (old_key, new_key) = (new_key(), new_key());
    let key_file = pki.write("tickets.key", &format!("{old_key}\n"));
    let config = with_key_file(&key_file, &config_v4("a", &[route("a", "a.test", &leaf, &backend)]));
    let proxy = start_proxy(&config).await;
    let addr = proxy.addr(0);
    for (versions, version) in BOTH_VERSIONS {
        // `rotated` resumes across the rotation; `idle` holds only a ticket of the old key.
        let (rotated, idle) = (device(&ca, None, versions), device(&ca, None, versions));
        std::fs::write(&key_file, format!("{old_key}\n")).unwrap();
        reload(&proxy, &config).await;
        assert_eq!(connect_once(addr, &rotated, "a.test").await, Outcome::Full, "{version}");
        assert_eq!(connect_once(addr, &idle, "a.test").await, Outcome::Full, "{version}");

        std::fs::write(&key_file, format!("# rotated\n{new_key}\n{old_key}\n")).unwrap();
        reload(&proxy, &config).await;
        let after_prepend = connect_once(addr, &rotated, "a.test").await;
        assert_eq!(after_prepend, Outcome::Resumed, "{version}: an old ticket after a new key was prepended");

        std::fs::write(&key_file, format!("{new_key}\n")).unwrap();
        reload(&proxy, &config).await;
        let issued_under_new = connect_once(addr, &rotated, "a.test").await;
        assert_eq!(issued_under_new, Outcome::Resumed, "{version}: the ticket issued after the prepend");
        assert_eq!(connect_once(addr, &idle, "a.test").await, Outcome::Full, "{version}: the old key removed");
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_of_one_route_never_resumes_on_another_route_of_the_same_name() {
    // One hostname, two routes told apart by ALPN, both deriving their keys from one file: the
    // client offers route mqtt's ticket to route web (same SNI, same ticket store).
    let (mqtt, web) = (
        TestBackend::start(BackendOpts::plain(ProxyExpect::None)).await,
        TestBackend::start(BackendOpts::plain(ProxyExpect::None)).await,
    );
    let pki = Pki::new();
    let ca = pki.ca("ca", "CA");
    let leaf = ca.server_cert("x", &["x.test"]);
    let key_file = pki.write("tickets.key", &format!("{}\n", new_key()));
    let routes = [route("mqtt", "x.test", &leaf, &mqtt).alpn(&["mqtt"]), route("web", "x.test", &leaf, &web)];
    let proxy = start_proxy(&with_key_file(&key_file, &config_v4("web", &routes))).await;
    for (versions, version) in BOTH_VERSIONS {
        // Clones of one config: rustls offers a session only to the verifier that checked it.
        let base = device(&ca, None, versions);
        let store = Arc::new(ClientSessionMemoryCache::new(32));
        let client = |alpn: &[u8]| {
            let mut config = (*base).clone();
            config.alpn_protocols = vec![alpn.to_vec()];
            config.resumption = Resumption::store(store.clone());
            Arc::new(config)
        };
        let (as_mqtt, as_web) = (client(b"mqtt"), client(b"h2"));
        assert_eq!(connect_once(proxy.addr(0), &as_mqtt, "x.test").await, Outcome::Full, "{version}");
        assert_eq!(connect_once(proxy.addr(0), &as_mqtt, "x.test").await, Outcome::Resumed, "{version}: same route");
        let addr = proxy.addr(0);
        assert_eq!(connect_once(addr, &as_web, "x.test").await, Outcome::Full, "{version}: mqtt's ticket on web");
        assert_eq!(connect_once(addr, &as_web, "x.test").await, Outcome::Resumed, "{version}: web's own ticket");
        assert_eq!(connect_once(addr, &as_mqtt, "x.test").await, Outcome::Full, "{version}: web's ticket on mqtt");
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_session_of_a_certificate_revoked_since_is_refused() {
    let mut backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let pki = Pki::new();
    let ca = pki.ca("ca", "CA");
    let leaf = ca.server_cert("mq", &["mq.test"]);
    let (revoked, kept) =
        (ca.client_cert("revoked", &ClientSpec::cn("device-1")), ca.client_cert("kept", &ClientSpec::cn("device-2")));
    let crl = pki.path().join("current.crl");
    std::fs::copy(ca.crl("none", &[]), &crl).unwrap();
    let route = RouteYaml::new("mq", "terminate")
        .sni(&["mq.test"])
        .cert(&leaf)
        .client_auth("required", &ca)
        .tls(format!("crl: [{}]", q(crl.display().to_string())))
        .server(backend.addr);
    let config = config_v4("mq", &[route]);
    let proxy = start_proxy(&config).await;
    let addr = proxy.addr(0);

    for (versions, version) in BOTH_VERSIONS {
        std::fs::copy(ca.crl("none", &[]), &crl).unwrap();
        reload(&proxy, &config).await;
        let (to_revoke, to_keep) = (device(&ca, Some(&revoked), versions), device(&ca, Some(&kept), versions));
        for client in [&to_revoke, &to_keep] {
            assert_eq!(connect_once(addr, client, "mq.test").await, Outcome::Full, "{version}");
            let header = backend.accepted().await;
            assert_eq!(header.v2().ssl().map(|ssl| ssl.client), Some(0x07), "{version}: SSL, CERT_CONN, CERT_SESS");
        }
        assert_eq!(connect_once(addr, &to_keep, "mq.test").await, Outcome::Resumed, "{version}");
        let header = backend.accepted().await;
        let ssl = header.v2().ssl().expect("SSL TLV on a resumed session");
        assert_eq!((ssl.client, ssl.verify), (0x05, 0), "{version}: SSL and CERT_SESS, not CERT_CONN; verified");
        assert_eq!(header.v2().ssl_cn().as_deref(), Some("device-2"), "{version}: the CN of the resumed session");

        std::fs::copy(ca.crl(&format!("revoking-{version}"), &[&revoked]), &crl).unwrap();
        reload(&proxy, &config).await;
        assert_eq!(connect_once(addr, &to_keep, "mq.test").await, Outcome::Resumed, "{version}: tickets kept");
        backend.accepted().await;
        let before = handshake_failures(&proxy, "certificate_revoked");
        assert_eq!(connect_once(addr, &to_revoke, "mq.test").await, Outcome::Refused, "{version}: revoked since");
        assert_eq!(handshake_failures(&proxy, "certificate_revoked"), before + 1.0, "{version}: counted");
    }
    proxy.shutdown().await;
}

fn handshake_failures(proxy: &RunningProxy, reason: &str) -> f64 {
    let labels = [("route", "mq"), ("reason", reason)];
    metric(&parse_exposition(&proxy.metrics.encode()), "snigate_handshake_failures_total", &labels).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_key_file_fails_check_at_its_key_and_a_reload_keeps_the_old_keys() {
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::None)).await;
    let pki = Pki::new();
    let ca = pki.ca("ca", "CA");
    let leaf = ca.server_cert("a", &["a.test"]);
    let key_file = pki.write("tickets.key", &format!("{}\n", new_key()));
    std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o604)).unwrap();
    let config = with_key_file(&key_file, &config_v4("a", &[route("a", "a.test", &leaf, &backend)]));
    let config_path = pki.write("routes.yaml", &config);
    let check = |path: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_snigate"))
            .args(["check", "--config"])
            .arg(path)
            .output()
            .unwrap()
    };
    let readable = check(&config_path);
    let stderr = String::from_utf8_lossy(&readable.stderr);
    assert!(readable.status.success(), "a readable key file is a warning only: {stderr}");
    assert!(stderr.contains("can be read by others") && stderr.contains("604"), "the permission warning: {stderr}");

    let proxy = start_proxy(&config).await;
    let client = device(&ca, None, Versions::Tls13Only);
    assert_eq!(connect_once(proxy.addr(0), &client, "a.test").await, Outcome::Full);
    let good = std::fs::read_to_string(&key_file).unwrap();
    std::fs::write(&key_file, format!("{good}not base64!\n")).unwrap();
    let broken = check(&config_path);
    let stderr = String::from_utf8_lossy(&broken.stderr);
    assert_eq!(broken.status.code(), Some(1), "{stderr}");
    let line = config.lines().position(|l| l.contains("key_file")).unwrap() + 1;
    let at = format!("{}:{line}:", config_path.display());
    assert!(
        stderr.contains(&at) && stderr.contains("line 2: not base64"),
        "file:line:col and the key file's line: {stderr}"
    );
    assert!(!stderr.contains(good.trim()), "the key must not be printed: {stderr}");

    std::fs::write(&proxy.config_path, &config).unwrap();
    assert!(within("reload", proxy.reload.reload()).await.is_err(), "a broken key file fails the reload");
    assert_eq!(connect_once(proxy.addr(0), &client, "a.test").await, Outcome::Resumed, "the old keys still serve");
    proxy.shutdown().await;
}
