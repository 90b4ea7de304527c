//! ACME (issue 19) against a real private ACME server, Debian's pebble (`support::pebble`).
//! Skipped, with the reason printed, where pebble is not installed.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, Order, OrderStatus, RetryPolicy,
};
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::support::hello::raw_client_hello;
use crate::support::ops::*;
use crate::support::pebble::{acme_config, acme_route, AcmeBlock, AcmeSite, Pebble, PebbleOptions};
use crate::support::tls::{expect_refused, provider, simple_client, tls_connect};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_test_server_serves_its_directory_and_root_on_loopback() {
    let Some(pebble) = Pebble::start(closed_port().await.port()).await else { return };

    let directory = within("GET /dir", pebble.get_acme("/dir")).await.expect("directory");
    assert_eq!(directory.status, 200);
    for resource in ["newNonce", "newAccount", "newOrder"] {
        assert!(directory.body.contains(&format!("\"{resource}\"")), "{resource} missing: {}", directory.body);
    }
    let dir_path = pebble.directory.strip_prefix("https://").and_then(|rest| rest.split_once('/')).map(|(_, p)| p);
    assert_eq!(dir_path, Some("dir"), "directory URL {}", pebble.directory);

    let root = pebble.root_pem().await;
    assert!(CertificateDer::from_pem_slice(root.as_bytes()).is_ok(), "not a PEM certificate: {root}");
    let listener_ca = std::fs::read(&pebble.directory_ca).expect("directory_ca file");
    assert!(CertificateDer::from_pem_slice(&listener_ca).is_ok());

    let log = pebble.log();
    assert!(log.contains("Using custom DNS resolver"), "challtestsrv not used as resolver:\n{log}");
    assert!(log.contains("Disabling random VA sleeps"), "{log}");
}

/// The harness itself, end to end: pebble resolves the identifier through challtestsrv to
/// loopback and validates TLS-ALPN-01 on the port it was given. The challenge is answered here by
/// a minimal responder (not snigate's), so a failure of snigate's ACME tests is not the harness.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_test_server_validates_tls_alpn_01_on_the_given_port() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let Some(pebble) = Pebble::start(listener.local_addr().unwrap().port()).await else { return };
    let responder = alpn_responder::Responder::start(listener);
    let _order = harness_order_ready(&pebble, &responder, "harness.test").await;
    assert!(responder.answered() >= 1, "pebble never connected to the challenge port");
    // What `Pebble::requests` lists: directory, nonce, account, order, authorization, challenge,
    // order polls.
    let requests = pebble.requests();
    assert!(requests.len() >= 7, "requests logged: {requests:?}\n{}", pebble.log());
    assert!(
        requests.iter().any(|r| r == "GET /dir") && requests.iter().any(|r| r == "POST /order-plz"),
        "{requests:?}"
    );
}

/// The harness's short validity (what the renewal test relies on): a certificate from
/// `start_with_validity(30 s)` lives 30 s (29 s to its inclusive notAfter) from its issuance, and the chain pebble hands out is the
/// leaf and an intermediate that verify to `root_pem()`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_test_server_issues_certificates_of_the_configured_validity() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let Some(pebble) = Pebble::start_with_validity(port, Some(Duration::from_secs(30))).await else { return };
    let responder = alpn_responder::Responder::start(listener);
    let mut order = harness_order_ready(&pebble, &responder, "short.test").await;

    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(vec!["short.test".to_string()]).unwrap().serialize_request(&key).unwrap();
    within("finalize", order.finalize_csr(csr.der())).await.expect("finalize");
    let issued_at = unix_now();
    let chain_pem = within("certificate", order.poll_certificate(&RetryPolicy::default())).await.expect("certificate");
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(chain_pem.as_bytes()).collect::<Result<_, _>>().expect("PEM chain");
    assert_eq!(chain.len(), 2, "leaf and intermediate: {chain_pem}");
    let (not_before, not_after) = validity(&chain[0]);
    // pebble 2.4.0 ends it a second early (notAfter is inclusive): 29 s between the two.
    assert!((29..=30).contains(&(not_after - not_before)), "lifetime of the leaf: {not_before} → {not_after}");
    assert!((not_before - issued_at).abs() <= 5, "not backdated: notBefore {not_before}, finalized at {issued_at}");
    verify_chain(&pebble.root_pem().await, &chain, "short.test");
}

/// Account, order for `name`, TLS-ALPN-01 answered by `responder`: the order once pebble has
/// validated it (`Ready`).
async fn harness_order_ready(pebble: &Pebble, responder: &alpn_responder::Responder, name: &str) -> Order {
    let new_account = NewAccount { contact: &[], terms_of_service_agreed: true, only_return_existing: false };
    let builder = Account::builder_with_root(&pebble.directory_ca).expect("directory_ca");
    let (account, _) = within("account", builder.create(&new_account, pebble.directory.clone(), None)).await.unwrap();
    let identifiers = [Identifier::Dns(name.into())];
    let mut order = within("new order", account.new_order(&NewOrder::new(&identifiers))).await.unwrap();
    let mut authorizations = order.authorizations();
    while let Some(authorization) = within("authorization", authorizations.next()).await {
        let mut authorization = authorization.unwrap();
        assert_eq!(authorization.status, AuthorizationStatus::Pending);
        let mut challenge = authorization.challenge(ChallengeType::TlsAlpn01).expect("tls-alpn-01 offered");
        responder.answer(&challenge.identifier().to_string(), challenge.key_authorization().digest().as_ref());
        within("challenge ready", challenge.set_ready()).await.unwrap();
    }
    let status = within("order ready", order.poll_ready(&RetryPolicy::default())).await;
    assert_eq!(status.unwrap(), OrderStatus::Ready, "pebble log:\n{}", pebble.log());
    order
}

// ---------------------------------------------------------------------------------------------
// snigate's ACME: the real binary, its listener the port pebble validates on.

/// The name the certificates are ordered for (challtestsrv resolves it to 127.0.0.1).
const NAME: &str = "a.test";
/// `storage:` as written in the config: relative, so under the config's directory.
const STORAGE: &str = "acme";
/// The bound on a first issuance (account, order, validation, finalize, reload).
const ISSUANCE_WAIT: Duration = Duration::from_secs(60);
/// Every `result` of `snigate_acme_orders_total`.
const ORDER_RESULTS: [&str; 5] = ["issued", "unreachable", "refused", "invalid", "local_failed"];

/// A directory holding a snigate config (acme routes to an echo backend), its ACME storage and the
/// logs of the runs of the binary on it.
struct Deployment {
    dir: tempfile::TempDir,
    config: PathBuf,
    listen: SocketAddr,
    admin: SocketAddr,
    backend: TestBackend,
    runs: usize,
}

impl Deployment {
    /// The routes `routes(backend)` (given the echo backend's address) on `listen`.
    async fn new(listen: SocketAddr, routes: impl FnOnce(SocketAddr) -> Vec<RouteYaml>) -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::None)).await;
        let admin = closed_port().await;
        let config = dir.path().join("routes.yaml");
        std::fs::write(&config, acme_config(listen, admin, &routes(backend.addr))).unwrap();
        Deployment { dir, config, listen, admin, backend, runs: 0 }
    }

    /// One route `web` for [`NAME`] with `acme`, on `listen`.
    async fn single(listen: SocketAddr, acme: &AcmeBlock) -> Deployment {
        Deployment::new(listen, |backend| vec![acme_route("web", &[NAME], acme, backend)]).await
    }

    /// One route `web` for [`NAME`] ordering from `site`'s pebble.
    async fn on(site: &AcmeSite, acme: AcmeBlock) -> Deployment {
        Deployment::single(site.listen, &acme).await
    }

    /// The storage directory ([`STORAGE`], relative to the config).
    fn storage(&self) -> PathBuf {
        self.dir.path().join(STORAGE)
    }

    /// Runs `snigate --log-format json run` on the config (its log in `snigate-<run>.log`) and
    /// waits until `/healthz` answers: not `/readyz`, which says nothing about certificates.
    async fn start(&mut self) -> ChildProxy {
        let (config, admin) = (self.config.clone(), self.admin);
        self.start_with(&config, admin).await
    }

    /// [`Deployment::start`] with another config file (in the same directory, so the same
    /// relative storage) whose admin endpoint is `admin`.
    async fn start_with(&mut self, config: &Path, admin: SocketAddr) -> ChildProxy {
        self.runs += 1;
        let log = self.dir.path().join(format!("snigate-{}.log", self.runs));
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_snigate"))
            .args(["--log-format", "json", "run", "--config"])
            .arg(config)
            .env("RUST_LOG", "snigate=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the snigate binary");
        let mut child = ChildProxy { child, log };
        wait_healthy(&mut child, admin).await;
        child
    }
}

/// Polls `/healthz` until it answers 200 (bounded; panics with the log if the process exits).
async fn wait_healthy(child: &mut ChildProxy, admin: SocketAddr) {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.child.try_wait().unwrap() {
            panic!("snigate exited with {status}:\n{}", child.log_text());
        }
        if matches!(http_get(admin, "/healthz").await, Ok(response) if response.status == 200) {
            return;
        }
        assert!(Instant::now() < deadline, "/healthz not answering after {WAIT:?}:\n{}", child.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TLS session through snigate and the chain it was served.
struct Served {
    stream: TlsStream<TcpStream>,
    chain: Vec<CertificateDer<'static>>,
}

impl Served {
    fn leaf(&self) -> &CertificateDer<'static> {
        self.chain.first().expect("a served chain has a leaf")
    }
}

/// A client trusting only pebble's root (fetched now: it changes at every pebble start), without
/// resumption, so that every handshake is shown the certificate being served.
async fn client_of(pebble: &Pebble) -> Arc<rustls::ClientConfig> {
    let root = CertificateDer::from_pem_slice(pebble.root_pem().await.as_bytes()).expect("pebble root PEM");
    client_config(ClientOpts { roots: vec![root], no_resumption: true, ..Default::default() })
}

/// One verified handshake for [`NAME`].
async fn handshake(listen: SocketAddr, client: &Arc<rustls::ClientConfig>) -> Result<Served, String> {
    let (stream, _) = tls_connect(listen, client.clone(), NAME).await?;
    let chain = stream.get_ref().1.peer_certificates().map(<[_]>::to_vec).unwrap_or_default();
    Ok(Served { stream, chain })
}

/// Handshakes until one is served a certificate verifying to pebble's root, within `limit`.
/// Every handshake before that one must be refused by the proxy (or find it not listening yet),
/// never shown a certificate pebble did not issue. Returns the session and how many handshakes
/// the proxy refused first.
async fn first_certificate(
    deployment: &Deployment,
    client: &Arc<rustls::ClientConfig>,
    child: &ChildProxy,
    limit: Duration,
) -> (Served, usize) {
    let deadline = Instant::now() + limit;
    let mut refused = 0;
    loop {
        let error = match handshake(deployment.listen, client).await {
            Ok(served) => return (served, refused),
            Err(error) => error,
        };
        assert!(
            !error.contains("invalid peer certificate"),
            "a certificate that does not verify to pebble's root was served: {error}\n--- snigate log ---\n{}",
            child.log_text()
        );
        if error.starts_with("TLS handshake") {
            refused += 1;
        }
        assert!(
            Instant::now() < deadline,
            "no certificate from pebble served within {limit:?}; last: {error}\n--- snigate log ---\n{}",
            child.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `snigate_acme_orders_total{result=...}` (0 when absent).
async fn orders(admin: SocketAddr, result: &str) -> f64 {
    metric(&scrape(admin).await, "snigate_acme_orders_total", &[("result", result)]).unwrap_or(0.0)
}

/// Waits until `snigate_acme_orders_total{result=...}` is at least `count`.
async fn wait_for_orders(admin: SocketAddr, result: &'static str, count: f64, limit: Duration) {
    eventually(limit, &format!("{count} ACME orders {result}"), || async move {
        match orders(admin, result).await {
            counted if counted >= count => Ok(()),
            counted => Err(format!("{counted} counted")),
        }
    })
    .await;
}

/// The binary started on `deployment`, the first certificate served (checked as in
/// [`first_certificate`]): its chain verifies to pebble's root through the intermediate, the
/// session relays to the backend, and the issuance is counted.
async fn issue(site: &AcmeSite, deployment: &mut Deployment) -> (ChildProxy, Served, Arc<rustls::ClientConfig>) {
    let client = client_of(&site.pebble).await;
    let child = deployment.start().await;
    let (mut served, refused) = first_certificate(deployment, &client, &child, ISSUANCE_WAIT).await;
    println!("first certificate served; {refused} handshakes refused before");
    assert!(served.chain.len() >= 2, "leaf and pebble's intermediate (the client has only the root)");
    echo(&mut served.stream, b"over the issued certificate").await.expect("relayed to the backend");
    wait_for_orders(deployment.admin, "issued", 1.0, WAIT).await;
    if refused > 0 {
        let samples = scrape(deployment.admin).await;
        let pending = metric(&samples, "snigate_connections_rejected_total", &[("reason", "certificate_pending")]);
        assert!(pending.unwrap_or(0.0) >= 1.0, "{refused} refused before issuance, counted: {pending:?}");
    }
    (child, served, client)
}

/// The entries of `dir` whose names start with `prefix`, sorted.
fn entries(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix)))
        .collect();
    found.sort();
    found
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display())).permissions().mode() & 0o777
}

/// The one certificate directory `<storage>/a.test-<8 hex>`.
fn certificate_dir(storage: &Path) -> PathBuf {
    let dirs = entries(storage, &format!("{NAME}-"));
    assert_eq!(dirs.len(), 1, "one certificate directory in {}: {dirs:?}", storage.display());
    let name = dirs[0].file_name().unwrap().to_str().unwrap().to_string();
    let hex = &name[NAME.len() + 1..];
    assert!(hex.len() == 8 && hex.chars().all(|c| c.is_ascii_hexdigit()), "<first name>-<8 hex>: {name}");
    dirs[0].clone()
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// notBefore and notAfter of a certificate (Unix seconds).
fn validity(der: &CertificateDer<'_>) -> (i64, i64) {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("X.509 certificate");
    (cert.validity().not_before.timestamp(), cert.validity().not_after.timestamp())
}

fn serial(der: &CertificateDer<'_>) -> String {
    x509_parser::parse_x509_certificate(der).expect("X.509 certificate").1.raw_serial_as_string()
}

/// Asserts that `chain` (leaf first) verifies for `name` to `root_pem` alone.
fn verify_chain(root_pem: &str, chain: &[CertificateDer<'static>], name: &str) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(root_pem.as_bytes()).unwrap()).unwrap();
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider(false)).build().unwrap();
    let name = rustls_pki_types::ServerName::try_from(name.to_string()).unwrap();
    verifier
        .verify_server_cert(&chain[0], &chain[1..], &name, &[], rustls_pki_types::UnixTime::now())
        .expect("the chain verifies to pebble's root");
}

/// An acme route gets its first certificate from the CA by TLS-ALPN-01 answered on its own
/// listener, and serves it: the chain (leaf + pebble's intermediate) verifies to the CA's root
/// alone and the session relays to the backend. Until then handshakes are refused, never served
/// another certificate. The challenge connection is logged as `acme_challenge` and never reaches
/// the backend; the key and the account are stored 0600 in 0700 directories; one order is counted
/// as issued, labelled with the certificate's storage name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acme_route_gets_a_certificate_chaining_to_the_ca_root_and_serves_it() {
    let Some(site) = AcmeSite::start(None).await else { return };
    let mut deployment = Deployment::on(&site, site.acme(STORAGE)).await;
    let (child, served, _) = issue(&site, &mut deployment).await;
    verify_chain(&site.pebble.root_pem().await, &served.chain, NAME);

    child.wait_for_log("\"cause\":\"acme_challenge\"").await;
    let log = child.log_text();
    let challenge = log.lines().find(|l| l.contains("\"cause\":\"acme_challenge\"")).unwrap();
    assert!(challenge.contains(&format!("\"sni\":\"{NAME}\"")), "{challenge}");
    for step in ["ACME order placed", "ACME challenge ready", "ACME order ready; finalizing", "ACME certificate issued"]
    {
        assert!(log.contains(step), "no {step:?} line in:\n{log}");
    }
    assert_eq!(deployment.backend.accept_count(), 1, "only the test's session reaches the backend");

    let storage = deployment.storage();
    assert_eq!(mode(&storage), 0o700, "storage directory, created by snigate");
    let accounts = entries(&storage, "account-");
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    assert_eq!(mode(&accounts[0]), 0o600, "{}", accounts[0].display());
    let certificate = certificate_dir(&storage);
    assert_eq!(mode(&certificate), 0o700, "{}", certificate.display());
    assert_eq!(mode(&certificate.join("key.pem")), 0o600, "key.pem");
    let stored = std::fs::read(certificate.join("cert.pem")).expect("cert.pem");
    let stored_leaf = CertificateDer::pem_slice_iter(&stored).next().expect("a certificate in cert.pem").unwrap();
    assert_eq!(stored_leaf, *served.leaf(), "cert.pem holds the served leaf");

    let label = certificate.file_name().unwrap().to_str().unwrap();
    let samples = scrape(deployment.admin).await;
    let issued = metric(&samples, "snigate_acme_orders_total", &[("certificate", label), ("result", "issued")]);
    assert_eq!(issued, Some(1.0), "one order issued for {label}");
    let expiry = metric(&samples, "snigate_certificate_expiry_timestamp_seconds", &[("route", "web")]);
    assert_eq!(expiry, Some(validity(served.leaf()).1 as f64), "the expiry gauge of the served certificate");
}

/// A restart with the certificate stored and not due: the same leaf, byte for byte, is served
/// again, nothing is ordered (pebble logs no authenticated request; no order result of any kind
/// is counted) and the next attempt is the renewal, 30 days (the default) before the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_reuses_the_stored_certificate_without_a_new_order() {
    let Some(site) = AcmeSite::start(None).await else { return };
    let mut deployment = Deployment::on(&site, site.acme(STORAGE)).await;
    let (mut child, before, client) = issue(&site, &mut deployment).await;
    let before = before.leaf().clone();
    child.signal("TERM");
    let status = child.wait_exit(WAIT).await;
    assert!(status.success(), "exit after SIGTERM: {status}\n{}", child.log_text());
    let asked_before = site.pebble.requests().len();

    let child = deployment.start().await;
    let (mut after, _) = first_certificate(&deployment, &client, &child, WAIT).await;
    assert_eq!(*after.leaf(), before, "the leaf served before the restart, byte for byte");
    echo(&mut after.stream, b"after the restart").await.expect("relayed");
    child.wait_for_log("stored certificate is valid").await;

    tokio::time::sleep(Duration::from_secs(3)).await;
    // No POST: no account, order, challenge or finalize (every authenticated ACME request is one).
    // The README allows the unauthenticated GET of the directory (for ARI) at a restart.
    let asked = site.pebble.requests().split_off(asked_before);
    assert!(!asked.iter().any(|r| r.starts_with("POST ")), "asked of the CA after the restart: {asked:?}");
    let samples = scrape(deployment.admin).await;
    for result in ORDER_RESULTS {
        let counted = metric(&samples, "snigate_acme_orders_total", &[("result", result)]);
        assert!(counted.unwrap_or(0.0) == 0.0, "{result} counted after the restart: {counted:?}\n{}", child.log_text());
    }
    // Pebble's 5 years, renewed 30 days (the default renew_before) before they end.
    let (_, not_after) = validity(after.leaf());
    let next = metric(&samples, "snigate_acme_next_attempt_timestamp_seconds", &[]).expect("next attempt gauge");
    let due = (not_after - 30 * 86_400) as f64;
    assert!((next - due).abs() <= 60.0, "next attempt at {next}, renewal due at {due}");
}

/// With certificates of 30 s and `renew_before: 25s` (more than half the lifetime), renewal comes
/// at half the lifetime, not 5 s in: a handshake after it gets a new leaf (another serial) and the
/// renewal is counted, while a session opened on the first certificate keeps relaying both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_renewal_window_renews_while_a_live_session_keeps_relaying() {
    let Some(site) = AcmeSite::start(Some(Duration::from_secs(30))).await else { return };
    let mut deployment = Deployment::on(&site, site.acme(STORAGE).renew_before("25s")).await;
    let (child, mut live, client) = issue(&site, &mut deployment).await;
    let (not_before, not_after) = validity(live.leaf());
    assert!((29..=30).contains(&(not_after - not_before)), "pebble's short validity: {not_before} → {not_after}");

    let deadline = Instant::now() + ISSUANCE_WAIT;
    let mut renewed = loop {
        match handshake(deployment.listen, &client).await {
            Ok(served) if served.leaf() != live.leaf() => break served,
            outcome => {
                let last = outcome.map(|_| "the first certificate".to_string()).unwrap_or_else(|e| e);
                assert!(
                    Instant::now() < deadline,
                    "no renewed certificate within {ISSUANCE_WAIT:?}; last: {last}\n--- snigate log ---\n{}",
                    child.log_text()
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_ne!(serial(renewed.leaf()), serial(live.leaf()), "a new serial");
    let (renewed_from, _) = validity(renewed.leaf());
    assert!(
        renewed_from >= not_before + 14,
        "renewed at half the 30 s lifetime, not before: {not_before} → {renewed_from}"
    );
    assert!(renewed_from < not_after, "renewed before the first certificate ended ({not_after}): {renewed_from}");
    wait_for_orders(deployment.admin, "issued", 2.0, WAIT).await;

    echo(&mut live.stream, b"still relaying on the first certificate")
        .await
        .expect("the live session survives the renewal");
    echo(&mut renewed.stream, b"on the renewed certificate").await.expect("relayed");
}

/// Two routes for the same name (told apart by ALPN) with the same directory share one
/// certificate: one order is issued, one certificate is stored, and both routes serve its leaf.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_routes_with_the_same_names_and_directory_share_one_order() {
    let Some(site) = AcmeSite::start(None).await else { return };
    let acme = site.acme(STORAGE);
    let mut deployment = Deployment::new(site.listen, |backend| {
        vec![acme_route("mqtt", &[NAME], &acme, backend).alpn(&["mqtt"]), acme_route("web", &[NAME], &acme, backend)]
    })
    .await;
    let (child, web, _) = issue(&site, &mut deployment).await;
    let root = CertificateDer::from_pem_slice(site.pebble.root_pem().await.as_bytes()).unwrap();
    let mqtt_client = client_config(ClientOpts {
        roots: vec![root],
        alpn: vec![b"mqtt".to_vec()],
        no_resumption: true,
        ..Default::default()
    });
    let (mut mqtt, _) = first_certificate(&deployment, &mqtt_client, &child, WAIT).await;
    assert_eq!(mqtt.leaf(), web.leaf(), "one certificate for both routes");
    echo(&mut mqtt.stream, b"on the mqtt route").await.expect("relayed");

    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(orders(deployment.admin, "issued").await, 1.0, "one order (one certificate label)");
    certificate_dir(&deployment.storage());
}

/// A CA that cannot be reached at start: the process stays up and healthy, the failures are
/// counted as `unreachable` with a doubling back-off (2 s, then 4 s) and the next attempt is in
/// the future; meanwhile a handshake for the name is refused with an alert and counted as
/// `certificate_pending`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_down_at_start_is_retried_with_back_off_and_counted() {
    let pki = Pki::new();
    let ca = pki.ca("directory-ca", "unused directory CA");
    let directory = format!("https://{}/dir", closed_port().await);
    let acme = AcmeBlock::new(&directory, &ca.cert_path, STORAGE);
    let mut deployment = Deployment::single(closed_port().await, &acme).await;
    let mut child = deployment.start().await;
    let admin = deployment.admin;

    // The first three failures: at start, ~2 s later, then ~4 s later (the README allows ±10 %
    // jitter). Counted as they come; the gaps are read off the log's timestamps, which a slow
    // scrape of a loaded machine does not shift.
    failure_times(admin, 3, Duration::from_secs(15), &child).await;
    let failures =
        || child.log_text().lines().filter(|l| l.contains("ACME attempt failed")).collect::<Vec<_>>().join("\n");
    let logged = failure_log_seconds(&child.log_text());
    assert!(logged.len() >= 3, "three failures logged:\n{}", failures());
    let (first_retry, second_retry) = (logged[1] - logged[0], logged[2] - logged[1]);
    assert!(
        (1.7..=2.6).contains(&first_retry) && (3.5..=4.9).contains(&second_retry),
        "retries {first_retry:.3} s then {second_retry:.3} s, not 2 s then 4 s:\n{}",
        failures()
    );
    // The third retry, ~8 s away (the gauge has whole seconds).
    let next = eventually_value(WAIT, "a next attempt in the future", || async move {
        let next = metric(&scrape(admin).await, "snigate_acme_next_attempt_timestamp_seconds", &[]);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
        match next {
            Some(next) if next > now => Ok(next - now),
            other => Err(format!("next attempt {other:?}, now {now}")),
        }
    })
    .await;
    assert!(next <= 10.0, "after the third failure the retry is ~8 s away: {next} s\n{}", failures());
    child.wait_for_log("ACME attempt failed; retrying").await;

    let client = simple_client(&ca.cert_der, None);
    let refusal = expect_refused(deployment.listen, client, NAME).await;
    assert!(!refusal.contains("invalid peer certificate"), "a certificate was served: {refusal}");
    eventually(WAIT, "the refusal counted as certificate_pending", || async move {
        let samples = scrape(admin).await;
        match metric(&samples, "snigate_connections_rejected_total", &[("reason", "certificate_pending")]) {
            Some(counted) if counted >= 1.0 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    child.wait_for_log("\"cause\":\"certificate_pending\"").await;

    assert!(child.child.try_wait().unwrap().is_none(), "snigate exited:\n{}", child.log_text());
    let health = http_get(admin, "/healthz").await.expect("/healthz");
    assert_eq!(health.status, 200);
    for result in ["issued", "refused", "invalid", "local_failed"] {
        assert_eq!(orders(admin, result).await, 0.0, "{result}");
    }

    // A restart does not start the back-off over: it waits out the one stored, counting on.
    child.signal("TERM");
    assert!(child.wait_exit(WAIT).await.success(), "exit after SIGTERM");
    let child = deployment.start().await;
    child.wait_for_log("ACME back-off from before the restart; waiting").await;
    assert_eq!(orders(admin, "unreachable").await, 0.0, "no attempt at once after the restart");
}

/// The times of the `ACME attempt failed` lines of a JSON log, seconds since the first one's
/// midnight (from their `"timestamp":"…THH:MM:SS.ffffffZ"`).
fn failure_log_seconds(log: &str) -> Vec<f64> {
    let of_day = |line: &str| -> Option<f64> {
        let at = line.find("\"timestamp\":\"")? + "\"timestamp\":\"".len();
        let time = line[at..].split_once('T')?.1.split_once('Z')?.0;
        let mut parts = time.split(':');
        let (h, m, sec): (f64, f64, f64) =
            (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
        Some(h * 3600.0 + m * 60.0 + sec)
    };
    let mut seconds: Vec<f64> =
        log.lines().filter(|line| line.contains("ACME attempt failed")).filter_map(of_day).collect();
    // A run across midnight: later lines are on the next day.
    for i in 1..seconds.len() {
        if seconds[i] < seconds[i - 1] {
            seconds[i] += 86_400.0;
        }
    }
    seconds
}

/// When `snigate_acme_orders_total{result="unreachable"}` was first seen at 1, 2, … `count`
/// (polled every 50 ms, bounded by `limit`).
async fn failure_times(admin: SocketAddr, count: usize, limit: Duration, child: &ChildProxy) -> Vec<Instant> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    while seen.len() < count {
        let counted = orders(admin, "unreachable").await as usize;
        assert!(counted <= count, "{counted} failures counted at once, after {seen:?}");
        seen.resize(counted.max(seen.len()), Instant::now());
        assert!(
            Instant::now() < deadline,
            "{} of {count} unreachable failures counted after {limit:?}:\n{}",
            seen.len(),
            child.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seen
}

/// Polls `check` (bounded by `limit`) until it gives a value.
async fn eventually_value<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(complaint) if Instant::now() >= deadline => {
                panic!("timed out after {limit:?} waiting for {what}; last: {complaint}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// `snigate check` on acme routes.

/// A config with one acme route for `names`, `storage` as given, written as `acme.yaml` in `pki`.
fn check_config(pki: &Pki, ca: &Ca, names: &[&str], storage: &str) -> (PathBuf, String) {
    let acme = AcmeBlock::new("https://127.0.0.1:14000/dir", &ca.cert_path, storage);
    let route = acme_route("web", names, &acme, "127.0.0.1:1883".parse().unwrap());
    let text = acme_config("127.0.0.1:8443".parse().unwrap(), "127.0.0.1:9100".parse().unwrap(), &[route]);
    (pki.write("acme.yaml", &text), text)
}

/// `snigate check --config FILE`: exit code and stderr.
fn run_check(config: &Path) -> (Option<i32>, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_snigate"))
        .args(["check", "--config"])
        .arg(config)
        .output()
        .expect("run snigate check");
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// Exit 1, and the stderr line with `needle` placed as `FILE:LINE:COLUMN: ` at one of `lines`.
fn assert_refused_at(config: &Path, lines: &[usize], needle: &str) -> String {
    let (code, err) = run_check(config);
    println!("--- stderr ---\n{err}");
    assert_eq!(code, Some(1), "check must refuse the file; stderr:\n{err}");
    let line = err.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no {needle:?} in:\n{err}"));
    let place =
        line.strip_prefix(&format!("{}:", config.display())).unwrap_or_else(|| panic!("not at the file: {line}"));
    let mut parts = place.splitn(3, ':');
    let at_line: usize = parts.next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no line in {line}"));
    let column: usize = parts.next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no column in {line}"));
    assert!(
        lines.contains(&at_line) && column >= 1,
        "placed at {at_line}:{column}, expected a line of {lines:?}: {line}"
    );
    line.to_string()
}

/// 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1).unwrap_or_else(|| panic!("{needle:?} not in text"))
}

/// The control for the refusals below: the same config with exact names and a storage that does
/// not exist yet passes `check`.
#[test]
fn check_accepts_an_acme_route_with_exact_names() {
    let pki = Pki::new();
    let ca = pki.ca("directory-ca", "directory CA");
    let (config, _) = check_config(&pki, &ca, &[NAME, "b.test"], "acme");
    let (code, err) = run_check(&config);
    assert_eq!(code, Some(0), "stderr:\n{err}");
}

/// A wildcard name on an acme route is refused (TLS-ALPN-01 cannot prove it; it would need
/// DNS-01), placed at the name (or the acme block).
#[test]
fn check_refuses_a_wildcard_name_on_an_acme_route() {
    let pki = Pki::new();
    let ca = pki.ca("directory-ca", "directory CA");
    let (config, text) = check_config(&pki, &ca, &[NAME, "*.a.test"], "acme");
    let lines = [line_of(&text, "*.a.test"), line_of(&text, "acme:")];
    let line = assert_refused_at(&config, &lines, "DNS-01");
    assert!(line.contains("wildcard"), "{line}");
}

/// An existing storage directory readable by group or others (0755) is refused, the message
/// saying its mode and the chmod that fixes it, placed at `storage:`.
#[test]
fn check_refuses_a_storage_directory_open_to_others() {
    let pki = Pki::new();
    let ca = pki.ca("directory-ca", "directory CA");
    let storage = pki.path().join("open-storage");
    std::fs::create_dir(&storage).unwrap();
    std::fs::set_permissions(&storage, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (config, text) = check_config(&pki, &ca, &[NAME], storage.to_str().unwrap());
    let line = assert_refused_at(&config, &[line_of(&text, "storage:")], "0755");
    assert!(line.contains("chmod") && line.contains("700"), "{line}");
    assert_eq!(mode(&storage), 0o755, "check changes nothing");
}

/// A TLS-ALPN-01 responder for the harness test: RFC 8737 certificates by SNI.
mod alpn_responder {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use rcgen::{CertificateParams, CustomExtension, KeyPair, SanType};
    use rustls::server::{ClientHello, ResolvesServerCert};
    use rustls::sign::CertifiedKey;
    use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    use crate::support::tls::provider;

    #[derive(Debug, Default)]
    struct Certificates(Mutex<HashMap<String, Arc<CertifiedKey>>>);

    impl ResolvesServerCert for Certificates {
        fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
            self.0.lock().unwrap().get(hello.server_name()?).cloned()
        }
    }

    pub struct Responder {
        certificates: Arc<Certificates>,
        handshakes: Arc<AtomicUsize>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Responder {
        pub fn start(listener: tokio::net::TcpListener) -> Responder {
            let certificates = Arc::new(Certificates::default());
            let mut config = rustls::ServerConfig::builder_with_provider(provider(false))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_cert_resolver(certificates.clone());
            config.alpn_protocols = vec![b"acme-tls/1".to_vec()];
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
            let handshakes = Arc::new(AtomicUsize::new(0));
            let counted = handshakes.clone();
            let task = tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let (acceptor, counted) = (acceptor.clone(), counted.clone());
                    tokio::spawn(async move {
                        if acceptor.accept(tcp).await.is_ok() {
                            counted.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                }
            });
            Responder { certificates, handshakes, task }
        }

        /// Answers `name` with the certificate for this key authorization digest.
        pub fn answer(&self, name: &str, digest: &[u8]) {
            let mut params = CertificateParams::default();
            params.subject_alt_names = vec![SanType::DnsName(name.try_into().unwrap())];
            params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest)];
            let key = KeyPair::generate().unwrap();
            let certificate = params.self_signed(&key).unwrap();
            let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
            let signing_key = provider(false).key_provider.load_private_key(key_der).unwrap();
            let certified = CertifiedKey::new(vec![certificate.der().clone()], signing_key);
            self.certificates.0.lock().unwrap().insert(name.to_string(), Arc::new(certified));
        }

        /// TLS-ALPN-01 handshakes completed so far.
        pub fn answered(&self) -> usize {
            self.handshakes.load(Ordering::Relaxed)
        }
    }

    impl Drop for Responder {
        fn drop(&mut self) {
            self.task.abort();
        }
    }
}

/// Only a validation is answered with a challenge certificate; every other connection is
/// routed as before. Once the certificate is issued (no challenge pending), a hello offering
/// exactly `acme-tls/1` for the acme name goes to its terminate route and gets the issued
/// certificate; the same hello for a passthrough route's name on the same listener reaches that
/// route's backend byte for byte; and no connection but pebble's was answered as a challenge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_pending_validation_is_answered_and_every_other_connection_is_routed() {
    let Some(site) = AcmeSite::start(None).await else { return };
    let mut passthrough = TestBackend::start(BackendOpts::plain(ProxyExpect::None).capture_hello()).await;
    let pass_addr = passthrough.addr;
    let acme = site.acme(STORAGE);
    let mut deployment = Deployment::new(site.listen, |backend| {
        let pass = RouteYaml::new("pass", "passthrough").sni(&["p.test"]).proxy("none").server(pass_addr);
        vec![acme_route("web", &[NAME], &acme, backend), pass]
    })
    .await;
    let (child, issued, _) = issue(&site, &mut deployment).await;
    child.wait_for_log("\"cause\":\"acme_challenge\"").await;
    let answered = metric(&scrape(deployment.admin).await, "snigate_acme_challenge_handshakes_total", &[]);
    assert!(answered.unwrap_or(0.0) >= 1.0, "pebble's validations are counted: {answered:?}");

    let root = CertificateDer::from_pem_slice(site.pebble.root_pem().await.as_bytes()).unwrap();
    let acme_alpn =
        ClientOpts { roots: vec![root], alpn: vec![b"acme-tls/1".to_vec()], no_resumption: true, ..Default::default() };
    let (mut routed, _) = tls_connect(deployment.listen, client_config(acme_alpn), NAME).await.expect("routed to web");
    let leaf = routed.get_ref().1.peer_certificates().and_then(|chain| chain.first().cloned());
    assert_eq!(leaf.as_ref(), Some(issued.leaf()), "the issued certificate, not a challenge certificate");
    echo(&mut routed, b"an acme-tls/1 hello after the validation").await.expect("relayed by the terminate route");

    let hello = raw_client_hello(Some(b"p.test"), &[b"acme-tls/1"]);
    let mut tcp = TcpStream::connect(deployment.listen).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tcp, &hello).await.unwrap();
    let accepted = passthrough.accepted().await;
    assert_eq!(accepted.hello(), hello.as_slice(), "passed through to the passthrough route's backend");

    let answered_after = metric(&scrape(deployment.admin).await, "snigate_acme_challenge_handshakes_total", &[]);
    assert_eq!(answered_after, answered, "no connection of this test was answered as a challenge");
}

/// A CA that requires External Account Binding (pebble with `externalAccountBindingRequired`):
/// a route whose `acme.eab` names the key id and the HMAC key file gets its certificate; one
/// without `eab` is refused by the CA when its account is created, counted as `refused`, and keeps
/// refusing handshakes (`certificate_pending`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_requiring_external_account_binding_issues_with_eab_and_refuses_without() {
    // Test-only HMAC key (base64url, 48 bytes), generated for this test.
    let hmac_key = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    let options = PebbleOptions { eab: Some(("kid-1".into(), hmac_key.into())), ..PebbleOptions::default() };
    let Some(site) = AcmeSite::start_with(options).await else { return };

    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("eab.key");
    std::fs::write(&key_file, format!("{hmac_key}\n")).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut bound = Deployment::on(&site, site.acme(STORAGE).eab("kid-1", &key_file)).await;
    let (child, _served, _) = issue(&site, &mut bound).await;
    assert!(!child.log_text().contains(hmac_key), "the HMAC key is never logged");

    let listen = closed_port().await;
    let mut unbound = Deployment::single(listen, &site.acme(STORAGE)).await;
    let child = unbound.start().await;
    wait_for_orders(unbound.admin, "refused", 1.0, WAIT).await;
    child.wait_for_log("externalAccountRequired").await;
    let client = client_of(&site.pebble).await;
    let refused = tls_connect(listen, client, NAME).await.err();
    assert!(refused.is_some_and(|error| error.starts_with("TLS handshake")), "refused without a certificate");
    let samples = scrape(unbound.admin).await;
    assert_eq!(metric(&samples, "snigate_acme_orders_total", &[("result", "issued")]), Some(0.0));
}

/// `key_type: rsa2048` (for clients without ECDSA): the issued certificate's key is RSA, and the
/// stored key is the one it certifies (the handshake proves it). The default is ECDSA P-256.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_type_picks_the_certificate_key() {
    let Some(site) = AcmeSite::start(None).await else { return };
    let mut rsa = Deployment::on(&site, site.acme(STORAGE).key_type("rsa2048")).await;
    let (_child, served, _) = issue(&site, &mut rsa).await;
    assert_eq!(public_key_algorithm(served.leaf()), x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION);

    let Some(default_site) = AcmeSite::start(None).await else { return };
    let mut default = Deployment::on(&default_site, default_site.acme(STORAGE)).await;
    let (_child, served, _) = issue(&default_site, &mut default).await;
    assert_eq!(public_key_algorithm(served.leaf()), x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY);
}

fn public_key_algorithm(der: &CertificateDer<'_>) -> x509_parser::der_parser::oid::Oid<'static> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("X.509 certificate");
    cert.public_key().algorithm.algorithm.to_owned()
}

/// `acme` on a passthrough route (its backend holds the certificate) is refused at `acme:`.
#[test]
fn check_refuses_acme_on_a_route_that_does_not_terminate() {
    let pki = Pki::new();
    let ca = pki.ca("directory-ca", "directory CA");
    let (config, text) = check_config(&pki, &ca, &[NAME], "acme");
    let text = text.replace("mode: terminate", "mode: passthrough");
    assert!(text.contains("mode: passthrough"), "{text}");
    std::fs::write(&config, &text).unwrap();
    assert_refused_at(&config, &[line_of(&text, "acme:")], "`mode: passthrough`");
}

/// A reload that adds a name to an acme route orders the new set of names, while the names it
/// had keep being served the certificate they had: no handshake for them is refused meanwhile.
/// The new certificate then covers both names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_added_by_a_reload_is_ordered_while_the_others_keep_their_certificate() {
    let Some(site) = AcmeSite::start(None).await else { return };
    let acme = site.acme(STORAGE);
    let mut deployment = Deployment::single(site.listen, &acme).await;
    let (child, first, client) = issue(&site, &mut deployment).await;
    let text = std::fs::read_to_string(&deployment.config).unwrap();
    let added = text.replacen(&format!("[{}]", q(NAME)), &format!("[{}, {}]", q(NAME), q("b.test")), 1);
    assert_ne!(added, text, "the sni list was rewritten:\n{text}");
    std::fs::write(&deployment.config, added).unwrap();
    child.signal("HUP");
    child.wait_for_log("SIGHUP: reloaded").await;

    let deadline = Instant::now() + ISSUANCE_WAIT;
    let renewed = loop {
        let served = handshake(deployment.listen, &client).await.unwrap_or_else(|error| {
            panic!("a handshake for {NAME} failed while b.test was ordered: {error}\n{}", child.log_text())
        });
        if served.leaf() != first.leaf() {
            break served;
        }
        assert!(Instant::now() < deadline, "no certificate for both names:\n{}", child.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (_, parsed) = x509_parser::parse_x509_certificate(renewed.leaf()).unwrap();
    let names = parsed.subject_alternative_name().unwrap().expect("SAN").value.general_names.len();
    assert_eq!(names, 2, "the new certificate covers {NAME} and b.test");
    let (mut b, _) = tls_connect(deployment.listen, client.clone(), "b.test").await.expect("b.test served");
    echo(&mut b, b"the added name").await.expect("relayed");
    // Another set of names is another certificate: its own folder, its own label (the first one's
    // series went with the reload that dropped it).
    assert_eq!(entries(&deployment.storage(), &format!("{NAME}-")).len(), 2, "a folder per set of names");
    wait_for_orders(deployment.admin, "issued", 1.0, WAIT).await;
}

/// A stored certificate whose key is gone cannot be served: the restart logs it and orders anew
/// (a new leaf), instead of waiting for the renewal with the route refusing clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_certificate_without_its_key_is_ordered_anew_at_restart() {
    let Some(site) = AcmeSite::start(None).await else { return };
    let mut deployment = Deployment::on(&site, site.acme(STORAGE)).await;
    let (mut child, before, client) = issue(&site, &mut deployment).await;
    child.signal("TERM");
    assert!(child.wait_exit(WAIT).await.success(), "exit after SIGTERM");
    std::fs::remove_file(certificate_dir(&deployment.storage()).join("key.pem")).unwrap();

    let child = deployment.start().await;
    let (after, _) = first_certificate(&deployment, &client, &child, ISSUANCE_WAIT).await;
    assert_ne!(after.leaf(), before.leaf(), "a new certificate, not the one without its key");
    child.wait_for_log("the stored certificate cannot be read; ordering a new one").await;
    wait_for_orders(deployment.admin, "issued", 1.0, WAIT).await;
}

/// An acme route with no certificate yet still has the rest of its `tls:` checked: a missing
/// `client_ca` is refused at its line (not hidden behind the certificate still to come).
#[test]
fn check_refuses_a_broken_client_ca_on_an_acme_route_without_a_certificate_yet() {
    let pki = Pki::new();
    let ca = pki.ca("directory-ca", "directory CA");
    let (config, text) = check_config(&pki, &ca, &[NAME], "acme");
    let text = text.replacen("acme:", "client_auth: required\n      client_ca: missing-ca.pem\n      acme:", 1);
    std::fs::write(&config, &text).unwrap();
    assert_refused_at(&config, &[line_of(&text, "missing-ca.pem")], "missing-ca.pem");
}

/// Two processes sharing one listener (`reuse_port`) and one storage, as siblings on a host or
/// replicas on a shared volume: the certificate is ordered once (one holds the order lock, the
/// other waits for it), pebble's validations are answered whichever process the kernel hands
/// them to (the answers are published in the storage; pebble makes three connections per name,
/// so without that most runs would fail), and both then serve the issued certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_sharing_a_storage_and_a_listener_order_once_and_both_serve_it() {
    let Some(site) = AcmeSite::start(None).await else { return };
    let mut deployment = Deployment::on(&site, site.acme(STORAGE)).await;
    let text = format!("reuse_port: true\n{}", std::fs::read_to_string(&deployment.config).unwrap());
    std::fs::write(&deployment.config, &text).unwrap();
    let other_admin = closed_port().await;
    let other_config = deployment.dir.path().join("routes-other.yaml");
    std::fs::write(&other_config, text.replace(&deployment.admin.to_string(), &other_admin.to_string())).unwrap();

    let client = client_of(&site.pebble).await;
    let first = deployment.start().await;
    let second = deployment.start_with(&other_config, other_admin).await;
    let (served, _) = first_certificate(&deployment, &client, &first, ISSUANCE_WAIT).await;

    // Both processes serve it: every handshake verifies and gets the one leaf, and each
    // process's access log has a session of the route.
    let admins = [deployment.admin, other_admin];
    eventually(ISSUANCE_WAIT, "both processes serving the issued certificate", || {
        let (client, listen, leaf) = (client.clone(), deployment.listen, served.leaf().clone());
        async move {
            for _ in 0..20 {
                let mut session = handshake(listen, &client).await?;
                if *session.leaf() != leaf {
                    return Err("another leaf served".to_string());
                }
                echo(&mut session.stream, b"shared").await?;
            }
            for admin in admins {
                let samples = scrape(admin).await;
                let closed =
                    metric(&samples, "snigate_connection_closes_total", &[("route", "web"), ("reason", "closed")]);
                if closed.unwrap_or(0.0) < 1.0 {
                    return Err(format!("no session through the process of {admin}"));
                }
            }
            Ok(())
        }
    })
    .await;
    let issued = orders(deployment.admin, "issued").await + orders(other_admin, "issued").await;
    assert_eq!(issued, 1.0, "ordered once:\n{}\n---\n{}", first.log_text(), second.log_text());
    assert_eq!(entries(&deployment.storage(), "account-").len(), 1, "one account");
    let answered = metric(&scrape(deployment.admin).await, "snigate_acme_challenge_handshakes_total", &[])
        .unwrap_or(0.0)
        + metric(&scrape(other_admin).await, "snigate_acme_challenge_handshakes_total", &[]).unwrap_or(0.0);
    assert!(answered >= 1.0, "the validations were answered");
}
