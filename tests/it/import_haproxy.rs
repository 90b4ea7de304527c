//! `snigate import-haproxy FILE`: the Mosquitto HAProxy recipes (plain pass-through, TLS, mutual
//! TLS, PROXY v1, v2, v2-ssl, v2-ssl-cn) and two SNI-routing configs (tests/data/haproxy/) become
//! routes files that `snigate check` accepts and that mean the same thing, field by field; every
//! accepted fixture is also checked with `haproxy -c`, so they are configs HAProxy really runs.
//! A differential test runs HAProxy and snigate on the mutual-TLS + `send-proxy-v2-ssl-cn` recipe
//! with the same client certificate and compares the PROXY v2 headers a backend receives.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::proxy::{PP2_CLIENT_CERT_CONN, PP2_CLIENT_CERT_SESS, PP2_CLIENT_SSL};
use crate::support::tls::{simple_client, tls_connect};
use crate::support::*;
use snigate::config::{self, ClientAuth, Mode, OnBackendDown, ProxyProtocol, RawConfig, TlsVersion};

const HAPROXY: &str = "/usr/sbin/haproxy";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/haproxy")
}

/// A temp dir holding fixture `name` (and the pattern list) plus the test PKI in `certs/`.
struct Fixture {
    dir: tempfile::TempDir,
    file: PathBuf,
    device: Leaf,
    server_ca: Ca,
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        for file in [name, "sni-web.lst"] {
            std::fs::copy(fixtures().join(file), dir.path().join(file)).unwrap();
        }
        let certs = dir.path().join("certs");
        std::fs::create_dir_all(&certs).unwrap();
        let server_ca = Ca::new(&certs, "server-ca", "Server CA");
        // HAProxy's PEMs: certificate and key in one file, or the key in FILE.key beside it.
        let mqtt = server_ca.server_cert("mqtt", &["mqtt.example.com"]);
        std::fs::write(&mqtt.cert_path, format!("{}{}", mqtt.cert_pem, mqtt.key_pem)).unwrap();
        let tenant_a = server_ca.server_cert("tenant-a", &["mqtt.tenant-a.example.com", "old.tenant-a.example.com"]);
        std::fs::write(&tenant_a.cert_path, format!("{}{}", tenant_a.cert_pem, tenant_a.key_pem)).unwrap();
        let tenant_b = server_ca.server_cert("tenant-b", &["mqtt.tenant-b.example.com"]);
        std::fs::copy(&tenant_b.key_path, certs.join("tenant-b.pem.key")).unwrap();
        let clients_ca = Ca::new(&certs, "clients-ca", "Clients CA");
        let revoked = clients_ca.client_cert("revoked", &ClientSpec::cn("revoked"));
        clients_ca.crl("clients-ca", &[&revoked]);
        let device = clients_ca.client_cert("device-1", &ClientSpec::cn("device-1"));
        // A directory of certificates only, for `crt DIRECTORY`.
        let by_name = dir.path().join("sni-certs");
        std::fs::create_dir_all(&by_name).unwrap();
        for file in ["tenant-a.pem", "tenant-b.pem", "tenant-b.pem.key"] {
            std::fs::copy(certs.join(file), by_name.join(file)).unwrap();
        }
        let file = dir.path().join(name);
        Fixture { dir, file, device, server_ca }
    }

    /// An absolute path in the fixture dir, as the importer writes it.
    fn path(&self, relative: &str) -> PathBuf {
        std::fs::canonicalize(self.dir.path()).unwrap().join(relative)
    }
}

fn import(file: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_snigate")).arg("import-haproxy").arg(file).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Imports, asserts exit 0, runs `snigate check` on the output, loads it; and `haproxy -c`.
fn import_and_check(fixture: &Fixture) -> (config::Config, RawConfig, String) {
    let output = import(&fixture.file);
    let (out, err) = (text(&output.stdout), text(&output.stderr));
    println!("--- stdout ---\n{out}--- stderr ---\n{err}");
    assert_eq!(output.status.code(), Some(0), "import must succeed; stderr:\n{err}");
    let routes_file = fixture.dir.path().join("routes.yaml");
    std::fs::write(&routes_file, &out).unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_snigate")).args(["check", "--config"]).arg(&routes_file).output();
    let check = check.unwrap();
    assert!(check.status.success(), "snigate check refuses the output:\n{}", text(&check.stderr));
    let loaded = config::load(&routes_file).unwrap_or_else(|errors| panic!("snigate rejects the output: {errors}"));
    assert_haproxy_accepts(&fixture.file);
    (loaded, yaml_serde::from_str(&out).unwrap(), err)
}

/// `haproxy -c` on `config`, from its directory (HAProxy resolves relative paths against its
/// working directory); skipped with a note when HAProxy is not installed.
fn assert_haproxy_accepts(config: &Path) {
    if !Path::new(HAPROXY).exists() {
        println!("note: {HAPROXY} is not installed; `haproxy -c` of {} skipped", config.display());
        return;
    }
    let output = Command::new(HAPROXY).arg("-c").arg("-f").arg(config).current_dir(config.parent().unwrap()).output();
    let output = output.expect("run haproxy -c");
    assert!(
        output.status.success(),
        "haproxy -c refuses {}:\n{}{}",
        config.display(),
        text(&output.stdout),
        text(&output.stderr)
    );
}

fn route<'a>(raw: &'a RawConfig, name: &str) -> &'a config::RawRoute {
    raw.routes.iter().find(|route| route.name == name).unwrap_or_else(|| panic!("no route {name}"))
}

fn listen(loaded: &config::Config) -> Vec<String> {
    loaded.listen.iter().map(ToString::to_string).collect()
}

/// The one route of a recipe: the default, terminating with `mqtt.pem` unless plain.
fn recipe(name: &str) -> (Fixture, config::Config, config::RawRoute) {
    let fixture = Fixture::new(name);
    let (loaded, mut raw, _) = import_and_check(&fixture);
    assert_eq!(raw.routes.len(), 1, "one frontend, one backend");
    assert_eq!(raw.default.as_deref(), Some("mosquitto"), "default_backend is the default route");
    assert_eq!(loaded.limits.idle_timeout, Duration::from_secs(3600), "timeout client/server 1h");
    assert_eq!(loaded.limits.max_connections, 4096, "global maxconn");
    let route = raw.routes.remove(0);
    assert_eq!(route.backend.servers, ["127.0.0.1:11883"]);
    assert_eq!(route.backend.connect_timeout, Some(Duration::from_secs(5)));
    if route.mode == Mode::Terminate {
        assert_eq!(listen(&loaded), ["127.0.0.1:8883"]);
        let tls = route.tls.as_ref().unwrap();
        assert_eq!(tls.cert, Some(fixture.path("certs/mqtt.pem")));
        assert_eq!(tls.key, Some(fixture.path("certs/mqtt.pem")), "the key is in the same PEM");
    }
    (fixture, loaded, route)
}

#[test]
fn mosquitto_plain_pass_through_becomes_a_tcp_route_with_a_health_check() {
    let (_fixture, loaded, route) = recipe("mosquitto_plain.cfg");
    assert_eq!(route.mode, Mode::Tcp, "no ssl and no server-name rules: bytes are relayed");
    assert!(route.tls.is_none());
    assert_eq!(listen(&loaded), ["127.0.0.1:1883"]);
    let check = route.backend.health_check.as_ref().expect("`check` → health_check");
    assert_eq!((check.interval, check.rise, check.fall), (Some(Duration::from_secs(5)), Some(2), Some(3)));
    assert_eq!(route.backend.proxy_protocol, ProxyProtocol::None);
}

#[test]
fn mosquitto_tls_recipe_terminates_with_the_pem_holding_certificate_and_key() {
    let (_fixture, _, route) = recipe("mosquitto_tls.cfg");
    assert_eq!(route.mode, Mode::Terminate);
    let tls = route.tls.as_ref().unwrap();
    assert_eq!(tls.client_auth, ClientAuth::None);
    assert_eq!(tls.min_version, TlsVersion::Tls12);
    assert!(tls.session_resumption);
    assert_eq!(route.backend.proxy_protocol, ProxyProtocol::None);
    assert!(route.backend.health_check.is_none(), "no `check`");
}

#[test]
fn mosquitto_mutual_tls_recipe_requires_client_certificates() {
    let (fixture, _, route) = recipe("mosquitto_mtls.cfg");
    let tls = route.tls.as_ref().unwrap();
    assert_eq!(tls.client_auth, ClientAuth::Required, "verify required");
    assert_eq!(tls.client_ca.as_deref(), Some(fixture.path("certs/clients-ca.pem").as_path()));
    assert!(tls.crl.is_empty());
}

#[test]
fn mosquitto_proxy_recipes_send_the_same_proxy_version() {
    for (name, version) in [
        ("mosquitto_proxy_v1.cfg", ProxyProtocol::V1),
        ("mosquitto_proxy_v2.cfg", ProxyProtocol::V2),
        ("mosquitto_proxy_v2_ssl.cfg", ProxyProtocol::V2),
    ] {
        let (_fixture, _, route) = recipe(name);
        assert_eq!(route.mode, Mode::Terminate, "{name}");
        assert_eq!(route.backend.proxy_protocol, version, "{name}");
        assert_eq!(route.tls.as_ref().unwrap().client_auth, ClientAuth::None, "{name}");
    }
}

#[test]
fn mosquitto_mutual_tls_proxy_v2_ssl_cn_recipe_resolves_crt_base_and_ca_base() {
    let fixture = Fixture::new("mosquitto_proxy_v2_ssl_cn.cfg");
    let (loaded, raw, err) = import_and_check(&fixture);
    assert!(!err.contains("warning"), "nothing lost in this recipe: {err}");
    let route = route(&raw, "mosquitto");
    assert_eq!(raw.default.as_deref(), Some("mosquitto"));
    let tls = route.tls.as_ref().unwrap();
    assert_eq!(tls.cert, Some(fixture.path("certs/mqtt.pem")), "crt-base certs");
    assert_eq!(tls.client_auth, ClientAuth::Required);
    assert_eq!(tls.client_ca.as_deref(), Some(fixture.path("certs/clients-ca.pem").as_path()), "ca-base certs");
    assert_eq!(tls.crl, [fixture.path("certs/clients-ca.crl")]);
    assert_eq!(tls.min_version, TlsVersion::Tls12, "ssl-min-ver TLSv1.2");
    assert_eq!(route.backend.proxy_protocol, ProxyProtocol::V2);
    assert_eq!(route.backend.identity, config::Identity::Cn, "the CN sub-TLV carries the certificate's CN");
    assert!(loaded.routes.default_route().unwrap().tls.is_some());
}

#[test]
fn sni_passthrough_config_becomes_passthrough_routes_with_backup_and_least_connections() {
    let fixture = Fixture::new("sni_passthrough.cfg");
    let (loaded, raw, err) = import_and_check(&fixture);
    assert!(!err.contains("warning"), "{err}");
    let names: Vec<&str> = raw.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["mqtt_pool", "tenants", "web", "fallback"]);
    assert!(raw.routes.iter().all(|r| r.mode == Mode::Passthrough && r.tls.is_none()));
    assert_eq!(raw.default.as_deref(), Some("fallback"));
    assert_eq!(listen(&loaded), ["127.0.0.1:8443"]);

    let resolve = |sni: &str| loaded.routes.resolve(Some(sni)).map(|r| r.name.clone());
    assert_eq!(resolve("mqtt.example.com").as_deref(), Some("mqtt_pool"));
    assert_eq!(resolve("a.tenants.example.com").as_deref(), Some("tenants"), "-m end .tenants.example.com");
    assert_eq!(resolve("x.y.tenants.example.com").as_deref(), Some("tenants"));
    assert_eq!(resolve("tenants.example.com").as_deref(), Some("fallback"), "`-m end .x` needs the dot");
    assert_eq!(resolve("api.example.com").as_deref(), Some("web"), "-f sni-web.lst");
    assert_eq!(resolve("www.example.com").as_deref(), Some("web"));
    assert_eq!(resolve("other.example.com").as_deref(), Some("fallback"));

    let mqtt = route(&raw, "mqtt_pool");
    assert_eq!(mqtt.backend.servers, ["127.0.0.1:18883", "127.0.0.1:18884"]);
    assert_eq!(mqtt.backend.backup_servers, ["127.0.0.1:18885"], "`backup`");
    assert_eq!(format!("{:?}", mqtt.backend.balance), "LeastConnections", "balance leastconn");
    assert_eq!(mqtt.backend.proxy_protocol, ProxyProtocol::V2);
    assert_eq!(mqtt.backend.on_backend_down, OnBackendDown::CloseSessions, "on-marked-down shutdown-sessions");
    let check = mqtt.backend.health_check.as_ref().expect("check");
    assert_eq!(
        (check.interval, check.rise, check.fall),
        (Some(Duration::from_secs(3)), Some(2), Some(4)),
        "default-server inter 3s rise 2 fall 4"
    );
    assert_eq!(format!("{:?}", route(&raw, "tenants").backend.balance), "ClientIp", "balance source");
    assert_eq!(route(&raw, "web").backend.servers, ["127.0.0.1:20443", "127.0.0.1:20444"]);
    assert_eq!(format!("{:?}", route(&raw, "web").backend.balance), "RoundRobin");
    assert_eq!(loaded.limits.idle_timeout, Duration::from_secs(600));
    assert_eq!(loaded.limits.hello_timeout, Duration::from_secs(5), "tcp-request inspect-delay 5s");
    assert_eq!(loaded.limits.max_connections, 10000, "the frontend's maxconn, below global's");
}

#[test]
fn sni_terminate_config_gives_each_hostname_the_certificate_haproxy_would_serve() {
    let fixture = Fixture::new("sni_terminate.cfg");
    let (loaded, raw, err) = import_and_check(&fixture);
    assert!(!err.contains("warning"), "{err}");
    let routes: Vec<(&str, Vec<&str>)> =
        raw.routes.iter().map(|r| (r.name.as_str(), r.sni.iter().map(String::as_str).collect())).collect();
    assert_eq!(
        routes,
        [
            ("brokers", vec!["mqtt.tenant-a.example.com"]),
            ("brokers-mqtt.tenant-b.example.com", vec!["mqtt.tenant-b.example.com"]),
            ("legacy", vec!["old.tenant-a.example.com"]),
        ],
        "one route per certificate, by the certificates' SANs"
    );
    assert_eq!(raw.default.as_deref(), Some("brokers"));
    let certs = fixture.path("certs");
    for (name, cert, key) in [
        ("brokers", "tenant-a.pem", "tenant-a.pem"),
        ("brokers-mqtt.tenant-b.example.com", "tenant-b.pem", "tenant-b.pem.key"),
        ("legacy", "tenant-a.pem", "tenant-a.pem"),
    ] {
        let route = route(&raw, name);
        assert_eq!(route.mode, Mode::Terminate);
        let tls = route.tls.as_ref().unwrap();
        assert_eq!((tls.cert.clone(), tls.key.clone()), (Some(certs.join(cert)), Some(certs.join(key))), "{name}");
        assert_eq!(tls.client_auth, ClientAuth::Optional, "verify optional");
        assert_eq!(tls.client_ca.as_deref(), Some(certs.join("clients-ca.pem").as_path()));
        assert_eq!(tls.crl, [certs.join("clients-ca.crl")], "crl-file");
        assert_eq!(tls.alpn, ["mqtt"]);
        assert!(!tls.session_resumption, "no-tls-tickets");
    }
    assert_eq!(route(&raw, "brokers").backend.servers, ["127.0.0.1:1884", "127.0.0.1:1885"]);
    assert_eq!(route(&raw, "brokers").backend.proxy_protocol, ProxyProtocol::V2);
    assert_eq!(route(&raw, "legacy").backend.proxy_protocol, ProxyProtocol::V1);
    assert_eq!(loaded.limits.idle_timeout, Duration::from_secs(7200), "timeout tunnel 2h");
    let resolve = |sni: &str| loaded.routes.resolve(Some(sni)).map(|r| r.name.clone());
    assert_eq!(resolve("unknown.example.com").as_deref(), Some("brokers"));
}

#[test]
fn crt_directory_becomes_cert_dir() {
    let fixture = Fixture::new("cert_dir.cfg");
    let (_, raw, _) = import_and_check(&fixture);
    let out = text(&import(&fixture.file).stdout);
    assert!(out.contains(&format!("cert_dir: \"{}/\"", fixture.path("sni-certs").display())), "{out}");
    assert!(!out.contains("cert: "), "the directory alone, no default file: {out}");
    assert_eq!(raw.routes.len(), 1);
}

#[test]
fn untranslatable_parts_are_each_named_with_file_and_line_and_nothing_is_written() {
    let fixture = Fixture::new("untranslatable.cfg");
    let output = import(&fixture.file);
    let err = text(&output.stderr);
    println!("{err}");
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(text(&output.stdout), "", "no partial routes file");
    for (line, words) in [
        (3, "`lua-load`: Lua scripts"),
        (15, "`stick-table`: stick tables"),
        (16, "`tcp-request connection reject"),
        (17, "maps, `%[…]`"),
        (18, "`-m reg` has no equivalent"),
        (23, "`mode http` (backend web)"),
        (24, "`http-request`: HTTP rules"),
    ] {
        let prefix = format!("{}:{line}: error:", fixture.file.display());
        assert!(
            err.lines().any(|l| l.starts_with(&prefix) && l.contains(words)),
            "expected {prefix} … {words}:\n{err}"
        );
    }
    assert!(err.contains("cannot translate"), "{err}");
}

#[test]
fn garbage_and_missing_files_exit_1_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8]); 5] = [
        ("binary.cfg", &[0xff, 0xfe, 0x00, 0x80]),
        ("quote.cfg", b"global\n  log \"stdout\n"),
        ("empty.cfg", b""),
        ("outside.cfg", b"bind :443\n"),
        ("backslash.cfg", b"frontend a\n  bind :443 \\\n"),
    ];
    for (name, bytes) in cases {
        let file = dir.path().join(name);
        std::fs::write(&file, bytes).unwrap();
        let output = import(&file);
        let err = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains(&file.display().to_string()), "{name} names the file: {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
        assert_eq!(text(&output.stdout), "");
    }
    assert!(text(&import(&dir.path().join("binary.cfg")).stderr).contains("not UTF-8"));
    let quote = text(&import(&dir.path().join("quote.cfg")).stderr);
    assert!(quote.contains("quote.cfg:2: unterminated \" quote"), "{quote}");
    let output = import(&dir.path().join("nope.cfg"));
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("cannot read"));
}

/// A process killed when the test ends, however it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn free_port() -> u16 {
    tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port()
}

/// Waits (bounded) until something accepts on `addr`.
async fn wait_listening(addr: SocketAddr, child: &mut Child) {
    within("the proxy to listen", async {
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the proxy exited before listening: {status}");
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// The PROXY v2 facts a backend relies on, from one connection through a proxy.
#[derive(Debug, PartialEq, Eq)]
struct ProxyFacts {
    family: u8,
    /// The header's source equals the client's own address and port.
    source_is_client: bool,
    destination: Option<SocketAddr>,
    ssl_client: Option<u8>,
    verify: Option<u32>,
    cn: Option<String>,
    version: Option<String>,
}

/// One mutual-TLS connection through the proxy on `addr`; what the backend's header said.
async fn facts_through(addr: SocketAddr, fixture: &Fixture, backend: &mut TestBackend) -> ProxyFacts {
    let client = simple_client(&fixture.server_ca.cert_der, Some(&fixture.device));
    let (mut tls, local) = tls_connect(addr, client, "mqtt.example.com").await.expect("mutual TLS through the proxy");
    tls.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    within("the echo through the proxy", tls.read_exact(&mut echo)).await.unwrap();
    assert_eq!(&echo, b"ping");
    let accepted = within("the backend's accept", backend.accepted()).await;
    let header = accepted.v2();
    let ssl = header.ssl();
    ProxyFacts {
        family: header.family,
        source_is_client: header.src == Some(local),
        destination: header.dst,
        ssl_client: ssl.as_ref().map(|ssl| ssl.client),
        verify: header.ssl_verify(),
        cn: header.ssl_cn(),
        version: header.ssl_version(),
    }
}

#[tokio::test]
async fn haproxy_and_snigate_send_the_same_proxy_v2_facts_for_the_mutual_tls_recipe() {
    if !Path::new(HAPROXY).exists() {
        println!("note: {HAPROXY} is not installed; differential test skipped");
        return;
    }
    let fixture = Fixture::new("mosquitto_proxy_v2_ssl_cn.cfg");
    let mut backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let port = free_port().await;
    let recipe = std::fs::read_to_string(&fixture.file).unwrap();
    let recipe = recipe
        .replace("127.0.0.1:8883", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:11883", &backend.addr.to_string());
    std::fs::write(&fixture.file, recipe).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    let mut haproxy = Command::new(HAPROXY);
    haproxy.arg("-db").arg("-f").arg(&fixture.file).current_dir(fixture.dir.path());
    let mut haproxy = KillOnDrop(haproxy.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start haproxy"));
    wait_listening(addr, &mut haproxy.0).await;
    let through_haproxy = facts_through(addr, &fixture, &mut backend).await;
    drop(haproxy);

    let output = import(&fixture.file);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let routes_file = fixture.dir.path().join("routes.yaml");
    std::fs::write(&routes_file, &output.stdout).unwrap();
    let mut snigate = Command::new(env!("CARGO_BIN_EXE_snigate"));
    snigate.args(["run", "--config"]).arg(&routes_file);
    let mut snigate = KillOnDrop(snigate.stderr(Stdio::null()).spawn().expect("start snigate"));
    wait_listening(addr, &mut snigate.0).await;
    let through_snigate = facts_through(addr, &fixture, &mut backend).await;

    println!("HAProxy: {through_haproxy:?}\nsnigate: {through_snigate:?}");
    assert_eq!(through_haproxy.family, crate::support::proxy::FAM_TCP4);
    assert!(through_haproxy.source_is_client);
    assert_eq!(through_haproxy.ssl_client, Some(PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS));
    assert_eq!(through_haproxy.verify, Some(0));
    assert_eq!(through_haproxy.cn.as_deref(), Some("device-1"));
    assert_eq!(through_snigate, through_haproxy, "the translation sends the backend the same facts");
}
