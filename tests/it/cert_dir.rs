//! `tls.cert_dir`: a terminate route serves, from a directory of `NAME.pem` (chain and key) and
//! `NAME.crt` + `NAME.key` files, the certificate whose subjectAltName matches the SNI (exact
//! before wildcard), else the default (`cert`/`key`, or the file whose name sorts first). Files
//! added or removed are served after the watch reloads; a broken file is reported by `check` with
//! its name and the others keep serving. Every test reads the leaf a real handshake presents.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;

use crate::support;
use crate::support::ops::*;
use crate::support::*;

/// Accepts any server certificate, so a test can see which one is served even when it does not
/// name the SNI (the default for an unknown name). Signatures are still checked.
#[derive(Debug)]
struct AnyServerCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The leaf certificate the proxy at `addr` presents for `sni` (`None`: no server_name sent).
async fn served_leaf(addr: std::net::SocketAddr, sni: Option<&str>) -> Result<CertificateDer<'static>, String> {
    let provider = support::tls::provider(true);
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServerCertificate(provider)))
        .with_no_client_auth();
    config.enable_sni = sni.is_some();
    config.resumption = rustls::client::Resumption::disabled();
    let name = ServerName::try_from(sni.unwrap_or("no-sni.invalid").to_string()).map_err(|e| e.to_string())?;
    let tcp = within("TCP connect", TcpStream::connect(addr)).await.map_err(|e| e.to_string())?;
    let tls = within("the handshake", tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let leaf = tls.get_ref().1.peer_certificates().and_then(|chain| chain.first()).ok_or("no certificate")?;
    Ok(leaf.clone().into_owned())
}

/// A directory of certificates next to the test CA, and the leaves written into it.
struct CertDir {
    pki: Pki,
    ca: Ca,
    dir: PathBuf,
}

impl CertDir {
    fn new() -> CertDir {
        let pki = Pki::new();
        let ca = pki.ca("ca", "cert_dir test CA");
        let dir = pki.path().join("certs");
        std::fs::create_dir(&dir).unwrap();
        CertDir { pki, ca, dir }
    }

    /// `NAME.pem` holding the leaf, the CA certificate (a chain) and the key.
    fn combined(&self, name: &str, dns_names: &[&str]) -> Leaf {
        self.write_combined(name, self.ca.server_cert(name, dns_names))
    }

    fn write_combined(&self, name: &str, leaf: Leaf) -> Leaf {
        let ca_pem = std::fs::read_to_string(&self.ca.cert_path).unwrap();
        write_atomically(&self.dir.join(format!("{name}.pem")), &format!("{}{ca_pem}{}", leaf.cert_pem, leaf.key_pem));
        leaf
    }

    /// `NAME.crt` + `NAME.key`.
    fn pair(&self, name: &str, dns_names: &[&str]) -> Leaf {
        let leaf = self.ca.server_cert(name, dns_names);
        std::fs::write(self.dir.join(format!("{name}.key")), &leaf.key_pem).unwrap();
        std::fs::write(self.dir.join(format!("{name}.crt")), &leaf.cert_pem).unwrap();
        leaf
    }

    /// A route to a closed port: enough for handshakes.
    fn route(&self, names: &[&str]) -> RouteYaml {
        self.route_to(names, "127.0.0.1:1")
    }

    fn route_to(&self, names: &[&str], server: impl ToString) -> RouteYaml {
        RouteYaml::new("dir", "terminate")
            .sni(names)
            .tls(format!("cert_dir: {}", q(self.dir.to_str().unwrap())))
            .server(server)
    }
}

/// Writes `text` under a hidden name and renames it into place, as a deploy tool would.
fn write_atomically(path: &Path, text: &str) {
    let temp = path.with_file_name(format!(".{}.tmp", path.file_name().unwrap().to_string_lossy()));
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sni_gets_the_certificate_of_its_file() {
    let certs = CertDir::new();
    let a = certs.combined("a", &["a.test"]);
    let b = certs.pair("b", &["b.test", "www.b.test"]);
    let c = certs.combined("c", &["c.test"]);
    let proxy = start_proxy(&config_v4("reject", &[certs.route(&["a.test", "b.test", "www.b.test", "c.test"])])).await;

    for (sni, leaf) in [("a.test", &a), ("b.test", &b), ("WWW.B.TEST", &b), ("c.test", &c)] {
        assert_eq!(served_leaf(proxy.addr(0), Some(sni)).await.unwrap(), leaf.cert_der, "leaf served for {sni}");
    }
    // A verifying client gets the whole chain from the .pem and accepts it.
    let (tls, _) =
        support::tls::tls_connect(proxy.addr(0), support::tls::simple_client(&certs.ca.cert_der, None), "a.test")
            .await
            .expect("a verifying client accepts a.pem's chain");
    assert_eq!(tls.get_ref().1.peer_certificates().unwrap().len(), 2, "leaf and CA from a.pem");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exact_file_beats_a_wildcard_which_covers_one_label() {
    let certs = CertDir::new();
    let default = certs.combined("0-default", &["default.test"]);
    let wildcard = certs.combined("wild", &["*.x.test"]);
    let exact = certs.pair("exact", &["a.x.test"]);
    let proxy = start_proxy(&config_v4("dir", &[certs.route(&["*.x.test"])])).await;

    assert_eq!(served_leaf(proxy.addr(0), Some("a.x.test")).await.unwrap(), exact.cert_der, "exact beats wildcard");
    assert_eq!(served_leaf(proxy.addr(0), Some("b.x.test")).await.unwrap(), wildcard.cert_der);
    assert_eq!(served_leaf(proxy.addr(0), Some("c.b.x.test")).await.unwrap(), default.cert_der, "one label only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_missing_sni_get_the_first_file_by_name_or_cert_when_given() {
    let certs = CertDir::new();
    let first = certs.pair("a-first", &["a.test"]);
    certs.combined("b-second", &["b.test"]);
    let proxy = start_proxy(&config_v4("dir", &[certs.route(&["a.test", "b.test"])])).await;
    assert_eq!(served_leaf(proxy.addr(0), Some("unknown.test")).await.unwrap(), first.cert_der, "unknown SNI");
    assert_eq!(served_leaf(proxy.addr(0), None).await.unwrap(), first.cert_der, "no SNI");
    proxy.shutdown().await;

    let named = certs.ca.server_cert("named", &["named.test"]);
    let route = certs.route(&["a.test", "b.test"]).cert(&named);
    let proxy = start_proxy(&config_v4("dir", &[route])).await;
    assert_eq!(served_leaf(proxy.addr(0), Some("unknown.test")).await.unwrap(), named.cert_der, "unknown SNI");
    assert_eq!(served_leaf(proxy.addr(0), None).await.unwrap(), named.cert_der, "no SNI");
    assert_eq!(served_leaf(proxy.addr(0), Some("b.test")).await.unwrap(), certs_leaf(&certs, "b-second.pem"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_alg_sent_to_the_backend_is_that_of_the_certificate_served() {
    use tokio::io::AsyncWriteExt;
    let certs = CertDir::new();
    certs.combined("a", &["a.test"]);
    certs.write_combined("b", certs.ca.server_cert_p384("b", &["b.test"]));
    let mut backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let proxy = start_proxy(&config_v4("reject", &[certs.route_to(&["a.test", "b.test"], backend.addr)])).await;
    for (sni, key_alg) in [("a.test", "EC256"), ("b.test", "EC384")] {
        let client = support::tls::simple_client(&certs.ca.cert_der, None);
        let (mut tls, _) = support::tls::tls_connect(proxy.addr(0), client, sni).await.expect("handshake");
        tls.write_all(b"x").await.unwrap();
        let accepted = backend.accepted().await;
        let ssl = accepted.v2().ssl().expect("SSL TLV");
        assert_eq!(ssl.key_alg().as_deref(), Some(key_alg), "KEY_ALG for {sni}");
    }
}

/// The leaf of a file of the directory, read back.
fn certs_leaf(certs: &CertDir, file: &str) -> CertificateDer<'static> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_file_iter(certs.dir.join(file)).unwrap().next().unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_combined_chain_and_key_pem_works_as_cert_and_key() {
    let certs = CertDir::new();
    let leaf = certs.combined("both", &["both.test"]);
    let combined = q(certs.dir.join("both.pem").to_str().unwrap());
    let route = RouteYaml::new("one", "terminate")
        .sni(&["both.test"])
        .tls(format!("cert: {combined}"))
        .tls(format!("key: {combined}"))
        .server("127.0.0.1:1");
    let proxy = start_proxy(&config_v4("reject", &[route])).await;
    let client = support::tls::simple_client(&certs.ca.cert_der, None);
    let (tls, _) = support::tls::tls_connect(proxy.addr(0), client, "both.test").await.expect("handshake");
    assert_eq!(tls.get_ref().1.peer_certificates().unwrap()[0], leaf.cert_der);
}

/// Polls (up to 10 s) until `sni` is served `expected`.
async fn wait_until_served(proxy: std::net::SocketAddr, sni: &str, expected: &CertificateDer<'_>, what: &str) {
    eventually(Duration::from_secs(10), what, || async move {
        match served_leaf(proxy, Some(sni)).await {
            Ok(leaf) if leaf == *expected => Ok(()),
            Ok(_) => Err(format!("{sni} is served another certificate")),
            Err(error) => Err(error),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_added_and_removed_at_run_time_are_picked_up_by_the_watch() {
    let certs = CertDir::new();
    let a = certs.combined("a", &["a.test"]);
    let (listen, admin) = (closed_port().await, closed_port().await);
    let config = certs.pki.path().join("routes.yaml");
    let routes = config_yaml(&[&listen.to_string()], "reject", &[certs.route(&["a.test", "b.test"])]);
    std::fs::write(&config, format!("admin: {}\n{routes}", q(admin.to_string()))).unwrap();
    let mut child = ChildProxy::spawn(&config, certs.pki.path().join("snigate.log"));
    child.wait_ready(admin).await;
    assert_eq!(served_leaf(listen, Some("b.test")).await.unwrap(), a.cert_der, "b.test: the default at first");
    let started = successful_reloads(admin).await;

    let b = certs.combined("b", &["b.test"]);
    wait_until_served(listen, "b.test", &b.cert_der, "b.pem added").await;
    assert!(successful_reloads(admin).await > started, "served after a reload\n{}", child.log_text());
    assert_eq!(served_leaf(listen, Some("a.test")).await.unwrap(), a.cert_der, "a.test unchanged");

    std::fs::remove_file(certs.dir.join("b.pem")).unwrap();
    wait_until_served(listen, "b.test", &a.cert_der, "b.pem removed").await;

    // A broken file arriving is logged with its name at the reload; the rest keep serving.
    let before = successful_reloads(admin).await;
    write_atomically(&certs.dir.join("broken.pem"), "-----BEGIN CERTIFICATE-----\nnot base64\n");
    eventually(Duration::from_secs(10), "a reload after broken.pem arrived", || async move {
        match successful_reloads(admin).await {
            now if now > before => Ok(()),
            now => Err(format!("{now} successful loads")),
        }
    })
    .await;
    assert!(child.log_text().contains("broken.pem: bad PEM certificate"), "{}", child.log_text());
    assert_eq!(served_leaf(listen, Some("a.test")).await.unwrap(), a.cert_der, "a.pem still serves");
}

fn check(config: &Path, args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_snigate"))
        .arg("check")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    println!("--- stdout ---\n{}", String::from_utf8_lossy(&output.stdout));
    println!("--- stderr ---\n{}", String::from_utf8_lossy(&output.stderr));
    output
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_is_reported_by_check_with_its_name_and_the_others_keep_serving() {
    let certs = CertDir::new();
    let a = certs.combined("a", &["a.test"]);
    std::fs::write(certs.dir.join("broken.pem"), "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    let other = certs.ca.server_cert("other", &["m.test"]);
    std::fs::write(certs.dir.join("mismatch.crt"), &certs.ca.server_cert("m", &["m.test"]).cert_pem).unwrap();
    std::fs::write(certs.dir.join("mismatch.key"), &other.key_pem).unwrap();
    std::fs::write(certs.dir.join("nokey.pem"), &other.cert_pem).unwrap();
    let yaml = config_v4("reject", &[certs.route(&["a.test", "m.test"])]);
    let config = certs.pki.write("routes.yaml", &yaml);

    let output = check(&config, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "broken files fail `check`");
    let dir = certs.dir.display().to_string();
    for needle in [
        format!("{dir}/broken.pem: bad PEM certificate"),
        format!("{dir}/mismatch.key: does not match certificate"),
        format!("{dir}/nokey.pem: holds a certificate, not a private key"),
        format!("no certificate of cert_dir {dir} covers \"m.test\""),
        format!("{}:", config.display()),
    ] {
        assert!(stderr.contains(&needle), "stderr names {needle:?}");
    }
    assert!(!stderr.contains("PRIVATE KEY"), "no key material in messages");
    let output = check(&config, &["--warn-certificates"]);
    assert_eq!(output.status.code(), Some(0), "with --warn-certificates they are warnings");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains(&format!("route \"dir\": {dir}/a.pem (default): a.test")), "check lists the files");

    let proxy = start_proxy(&yaml).await;
    assert_eq!(served_leaf(proxy.addr(0), Some("a.test")).await.unwrap(), a.cert_der, "a.pem still serves");
}

#[test]
fn a_directory_without_a_usable_certificate_is_an_error() {
    let certs = CertDir::new();
    std::fs::write(certs.dir.join("broken.pem"), "nothing").unwrap();
    let config = certs.pki.write("routes.yaml", &config_v4("reject", &[certs.route(&["a.test"])]));
    let output = check(&config, &["--warn-certificates"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr.contains("holds no usable certificate"), "{stderr}");
    assert!(stderr.contains("broken.pem: holds no PEM certificate"), "{stderr}");
}

#[test]
fn a_cert_dir_shared_by_many_routes_is_listed_and_indexed_once_with_a_session_state_per_route() {
    const ROUTES: usize = 200;
    let certs = CertDir::new();
    for name in ["a", "b", "c"] {
        certs.combined(name, &[&format!("*.{name}.test")]);
    }
    let routes: Vec<RouteYaml> = (0..ROUTES)
        .map(|i| {
            RouteYaml::new(&format!("r{i}"), "terminate")
                .sni(&[&format!("h{i}.a.test")])
                .tls(format!("cert_dir: {}", q(certs.dir.to_str().unwrap())))
                .server("127.0.0.1:1")
        })
        .collect();
    let config = certs.pki.write("shared.yaml", &config_v4("reject", &routes));
    let loaded = snigate::config::load(&config).unwrap_or_else(|errors| panic!("{errors}"));
    let tls: Vec<_> = loaded.routes.routes().iter().map(|route| route.tls.as_ref().unwrap()).collect();
    assert_eq!(tls.len(), ROUTES);
    assert_eq!(tls[0].certificates.dir_certificates.len(), 3);
    for route_tls in &tls {
        assert!(Arc::ptr_eq(&route_tls.certificates, &tls[0].certificates), "one index for all routes");
    }
    assert!(!Arc::ptr_eq(&tls[0].server_config, &tls[1].server_config), "each route its own session state");
}
