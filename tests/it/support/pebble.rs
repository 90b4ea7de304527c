//! A private ACME server for the ACME tests: Debian's `pebble` and `pebble-challtestsrv` (both in
//! the `pebble` package, 2.4.0 on Debian 12; `apt-get install -y --no-install-recommends pebble`),
//! run on free loopback ports and stopped on drop.
//!
//! What this relies on, as found with pebble 2.4.0:
//!
//! - `pebble -config FILE -dnsserver 127.0.0.1:DNS`. The config is JSON under a `"pebble"` key:
//!   `listenAddress` (the ACME API; its directory is `https://ADDR/dir`), `managementListenAddress`
//!   (the CA's roots: `GET /roots/0` is the PEM root that signs issued certificates, and
//!   `/intermediates/0`; both are regenerated at every start), `certificate` / `privateKey` (the
//!   TLS certificate of both listeners: the package ships none, so one is made here from a test
//!   CA, which is what `directory_ca` trusts), `tlsPort` (the port the validation authority
//!   connects to for TLS-ALPN-01, on the address the identifier resolves to: snigate's listener),
//!   `httpPort` (HTTP-01; unused), `ocspResponderURL: ""`, `externalAccountBindingRequired: false`.
//! - `-dnsserver` makes the validation authority resolve identifiers through challtestsrv instead
//!   of the system resolver, so any name (`a.test`) resolves to loopback.
//! - `pebble-challtestsrv -dns01 127.0.0.1:DNS -defaultIPv4 127.0.0.1 -defaultIPv6 ""
//!   -http01 "" -https01 "" -tlsalpn01 "" -management 127.0.0.1:MGMT`: its DNS server (UDP and
//!   TCP) answers every A query with 127.0.0.1 and no AAAA (so validation never tries `::1`); its
//!   own challenge responders are off, because snigate answers TLS-ALPN-01 itself.
//! - Environment: `PEBBLE_VA_NOSLEEP=1` (no random 0–15 s sleep before each validation),
//!   `PEBBLE_WFE_NONCEREJECT=0` (by default 5 % of good nonces are refused as `badNonce`, which
//!   makes a test flaky rather than wrong). `PEBBLE_VA_ALWAYS_VALID` is removed from the
//!   environment: challenges are really validated. `PEBBLE_AUTHZREUSE` (default 50 %) is left
//!   alone.
//! - Issued certificates are valid 5 years unless the config's `certificateValidityPeriod`
//!   (seconds, under `"pebble"`) says otherwise ([`Pebble::start_with_validity`]); pebble signs
//!   them with an intermediate (`/intermediates/0`) under the root, and serves leaf + intermediate.
//! - The flag `-strict` is left at its default (false in 2.4.0).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::ops::{parse_http, HttpResponse};
use super::tls::simple_client;
use super::{config_with_limits, q, Ca, Pki, RouteYaml, WAIT};

const PEBBLE: &str = "pebble";
const CHALLTESTSRV: &str = "pebble-challtestsrv";
/// Set (by `.ci/run`): the ACME tests fail without pebble rather than skip.
const REQUIRE_PEBBLE: &str = "SNIGATE_REQUIRE_PEBBLE";

/// How often readiness is polled while pebble starts.
const POLL: Duration = Duration::from_millis(100);

/// A running pebble + challtestsrv pair; both are killed (and reaped) on drop.
pub struct Pebble {
    /// The ACME directory URL (`https://127.0.0.1:PORT/dir`).
    pub directory: String,
    /// The PEM file of the CA that signed pebble's own TLS certificate (`directory_ca`).
    pub directory_ca: PathBuf,
    /// pebble's management API (`/roots/0`), over TLS with the same certificate.
    pub management: SocketAddr,
    acme: SocketAddr,
    ca: Ca,
    pebble: Child,
    challtestsrv: Child,
    pki: Pki,
}

impl Pebble {
    /// Starts challtestsrv and pebble, pebble validating TLS-ALPN-01 on `127.0.0.1:tls_port`, and
    /// waits (bounded by [`WAIT`]) until the directory answers. `None`, with the reason printed,
    /// when pebble is not installed.
    pub async fn start(tls_port: u16) -> Option<Pebble> {
        Pebble::start_with_validity(tls_port, None).await
    }

    /// [`Pebble::start`], the certificates it issues valid for `validity` (whole seconds, at
    /// least 1) instead of pebble's default of 5 years.
    pub async fn start_with_validity(tls_port: u16, validity: Option<Duration>) -> Option<Pebble> {
        Pebble::start_with(tls_port, PebbleOptions { validity, ..PebbleOptions::default() }).await
    }

    /// [`Pebble::start`] with `options`.
    pub async fn start_with(tls_port: u16, options: PebbleOptions) -> Option<Pebble> {
        if !installed(PEBBLE) || !installed(CHALLTESTSRV) {
            // CI installs pebble and sets this: there a missing pebble fails instead of skipping.
            assert!(
                std::env::var_os(REQUIRE_PEBBLE).is_none(),
                "{REQUIRE_PEBBLE} is set but {PEBBLE} / {CHALLTESTSRV} are not installed"
            );
            eprintln!("{PEBBLE} / {CHALLTESTSRV} not installed (apt-get install pebble): skipping");
            return None;
        }
        let pki = Pki::new();
        let ca = pki.ca("pebble-ca", "pebble listener CA");
        let listener_cert = ca.server_cert("pebble-listener", &["127.0.0.1", "localhost"]);
        let acme = free_tcp_port();
        let management = free_tcp_port();
        let dns = free_dns_port();
        let challtestsrv_management = free_tcp_port();
        let ports = Ports { acme, management, http: free_tcp_port().port(), tls: tls_port };
        let config = config_json(&ports, &listener_cert.cert_path, &listener_cert.key_path, &options);
        let config_path = pki.write("pebble-config.json", &config);
        let challtestsrv = Command::new(CHALLTESTSRV)
            .args(["-dns01", &dns.to_string(), "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &challtestsrv_management.to_string()])
            .stdout(log_file(pki.path(), "challtestsrv.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("start pebble-challtestsrv");
        let pebble = Command::new(PEBBLE)
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &dns.to_string()])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env_remove("PEBBLE_VA_ALWAYS_VALID")
            .stdout(log_file(pki.path(), "pebble.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("start pebble");
        let mut running = Pebble {
            directory: format!("https://{acme}/dir"),
            directory_ca: ca.cert_path.clone(),
            management,
            acme,
            ca,
            pebble,
            challtestsrv,
            pki,
        };
        running.wait_ready().await;
        Some(running)
    }

    /// The root that signs the certificates pebble issues (PEM), from the management API.
    pub async fn root_pem(&self) -> String {
        let response = self.get(self.management, "/roots/0").await.unwrap_or_else(|e| panic!("pebble roots: {e}"));
        assert_eq!(response.status, 200, "GET /roots/0: {}", response.body);
        response.body
    }

    /// GET `path` from the ACME API (e.g. `/dir`).
    pub async fn get_acme(&self, path: &str) -> Result<HttpResponse, String> {
        self.get(self.acme, path).await
    }

    /// pebble's log so far (for a failing test's message).
    pub fn log(&self) -> String {
        read_log(&self.pki)
    }

    /// The requests the ACME API has logged so far, `METHOD PATH` each: pebble writes one
    /// `METHOD PATH -> calling handler()` line for every request (directory, nonce, account,
    /// order, authorization, challenge, finalize, certificate).
    pub fn requests(&self) -> Vec<String> {
        let log = self.log();
        log.lines()
            .filter_map(|line| line.split_once(" -> calling handler()"))
            .map(|(head, _)| {
                // `Pebble 2026/12/01 18:17:01 POST /order-plz`: the last two words.
                let words: Vec<&str> = head.split_whitespace().collect();
                words[words.len().saturating_sub(2)..].join(" ")
            })
            .collect()
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(response) = self.get_acme("/dir").await {
                if response.status == 200 {
                    return;
                }
            }
            for (name, child) in [(PEBBLE, &mut self.pebble), (CHALLTESTSRV, &mut self.challtestsrv)] {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("{name} exited at start ({status}); pebble log:\n{}", read_log(&self.pki));
                }
            }
            assert!(Instant::now() < deadline, "pebble did not answer /dir within {WAIT:?}; log:\n{}", self.log());
            tokio::time::sleep(POLL).await;
        }
    }

    /// A hand-written HTTPS GET (`Connection: close`) trusting only the listener CA.
    async fn get(&self, addr: SocketAddr, path: &str) -> Result<HttpResponse, String> {
        let connector = tokio_rustls::TlsConnector::from(simple_client(&self.ca.cert_der, None));
        let exchange = async {
            let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
            let name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
            let mut tls = connector.connect(name, tcp).await.map_err(|e| format!("TLS {addr}: {e}"))?;
            let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            tls.write_all(request.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
            let mut raw = Vec::new();
            // Go's server closes without close_notify: keep what was read before that error.
            if let Err(error) = tls.read_to_end(&mut raw).await {
                if raw.is_empty() {
                    return Err(format!("receive: {error}"));
                }
            }
            parse_http(&raw)
        };
        tokio::time::timeout(WAIT, exchange).await.unwrap_or_else(|_| Err(format!("GET {path}: no answer")))
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in [&mut self.pebble, &mut self.challtestsrv] {
            let _ = child.kill();
            let deadline = Instant::now() + WAIT;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// snigate's listener address and a pebble whose validation authority connects to it.
///
/// TLS-ALPN-01 is validated on the port pebble is configured with (`tlsPort`), on the address the
/// identifier resolves to (127.0.0.1, through challtestsrv), so the order matters: the listener's
/// port is picked first (free on loopback), pebble is started with it, and snigate's config must
/// then `listen` on exactly [`AcmeSite::listen`] ([`acme_config`] does).
pub struct AcmeSite {
    pub pebble: Pebble,
    /// Where snigate listens (free when chosen; snigate binds it).
    pub listen: SocketAddr,
}

impl AcmeSite {
    /// `None` (with the reason printed) when pebble is not installed: the caller skips.
    pub async fn start(validity: Option<Duration>) -> Option<AcmeSite> {
        AcmeSite::start_with(PebbleOptions { validity, ..PebbleOptions::default() }).await
    }

    /// [`AcmeSite::start`] with pebble set up by `options`.
    pub async fn start_with(options: PebbleOptions) -> Option<AcmeSite> {
        let listen = free_tcp_port();
        let pebble = Pebble::start_with(listen.port(), options).await?;
        Some(AcmeSite { pebble, listen })
    }

    /// The `acme:` block of a route ordering from this pebble, storing under `storage`.
    pub fn acme(&self, storage: &str) -> AcmeBlock {
        AcmeBlock::new(&self.pebble.directory, &self.pebble.directory_ca, storage)
    }
}

/// A route's `tls.acme:` block (written in block style, one key a line, so that a `check` error
/// can be placed on its line).
#[derive(Debug, Clone)]
pub struct AcmeBlock {
    directory: String,
    directory_ca: PathBuf,
    storage: String,
    renew_before: Option<String>,
    /// `eab:` key id and HMAC key file.
    eab: Option<(String, PathBuf)>,
    key_type: Option<String>,
}

impl AcmeBlock {
    /// `storage` as written in the config (a relative one is relative to the config's directory).
    pub fn new(directory: &str, directory_ca: &Path, storage: &str) -> AcmeBlock {
        AcmeBlock {
            directory: directory.to_string(),
            directory_ca: directory_ca.to_path_buf(),
            storage: storage.to_string(),
            renew_before: None,
            eab: None,
            key_type: None,
        }
    }

    /// `renew_before:` (a duration as the config writes it, e.g. `25s`).
    pub fn renew_before(mut self, duration: &str) -> AcmeBlock {
        self.renew_before = Some(duration.to_string());
        self
    }

    /// `key_type:` (`p256`, `p384`, `rsa2048`, `rsa4096`).
    pub fn key_type(mut self, key_type: &str) -> AcmeBlock {
        self.key_type = Some(key_type.to_string());
        self
    }

    /// `eab:` with `key_id` and the HMAC key in `hmac_key_file`.
    pub fn eab(mut self, key_id: &str, hmac_key_file: &Path) -> AcmeBlock {
        self.eab = Some((key_id.to_string(), hmac_key_file.to_path_buf()));
        self
    }

    /// `route` with this block under its `tls:`.
    pub fn on(&self, route: RouteYaml) -> RouteYaml {
        let directory_ca = self.directory_ca.to_str().expect("UTF-8 temp path");
        let mut route = route
            .tls("acme:")
            .tls(format!("  directory: {}", q(&self.directory)))
            .tls(format!("  directory_ca: {}", q(directory_ca)))
            .tls(format!("  storage: {}", q(&self.storage)));
        if let Some(duration) = &self.renew_before {
            route = route.tls(format!("  renew_before: {duration}"));
        }
        if let Some(key_type) = &self.key_type {
            route = route.tls(format!("  key_type: {key_type}"));
        }
        if let Some((key_id, file)) = &self.eab {
            let file = file.to_str().expect("UTF-8 temp path");
            route = route
                .tls("  eab:")
                .tls(format!("    key_id: {}", q(key_id)))
                .tls(format!("    hmac_key_file: {}", q(file)));
        }
        route
    }
}

/// The `limits:` of the ACME configs: [`super::TEST_LIMITS`] with an idle timeout longer than any
/// wait for an issuance or a renewal, so a session kept open across one is not closed for idling.
pub const ACME_LIMITS: &str =
    "limits: { hello_timeout: 3s, max_hello_bytes: 16384, max_connections: 1000, max_handshakes: 64, idle_timeout: 5m, handshake_timeout: 3s, drain_timeout: 1s }";

/// A terminate route `name` for `names` with the `acme` block, relaying to `backend` without a
/// PROXY header.
pub fn acme_route(name: &str, names: &[&str], acme: &AcmeBlock, backend: SocketAddr) -> RouteYaml {
    acme.on(RouteYaml::new(name, "terminate").sni(names)).proxy("none").server(backend)
}

/// A whole snigate config: `listen` on `listen`, `admin:` on `admin`, `default: reject`,
/// [`ACME_LIMITS`] and `routes`.
pub fn acme_config(listen: SocketAddr, admin: SocketAddr, routes: &[RouteYaml]) -> String {
    let routes = config_with_limits(&[&listen.to_string()], "reject", ACME_LIMITS, routes);
    format!("admin: {}\n{routes}", q(admin.to_string()))
}

fn read_log(pki: &Pki) -> String {
    std::fs::read_to_string(pki.path().join("pebble.log")).unwrap_or_default()
}

fn installed(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

fn log_file(dir: &Path, name: &str) -> Stdio {
    Stdio::from(std::fs::File::create(dir.join(name)).expect("log file"))
}

/// Where pebble listens and where its validation authority connects.
struct Ports {
    acme: SocketAddr,
    management: SocketAddr,
    http: u16,
    tls: u16,
}

/// How pebble is set up beyond its defaults.
#[derive(Debug, Default, Clone)]
pub struct PebbleOptions {
    /// The validity of the certificates it issues (default 5 years).
    pub validity: Option<Duration>,
    /// External Account Binding required, with this key id and base64url HMAC key.
    pub eab: Option<(String, String)>,
}

/// The config JSON (written by hand: the tests have no JSON crate, and every value is plain).
fn config_json(ports: &Ports, cert: &Path, key: &Path, options: &PebbleOptions) -> String {
    let path = |p: &Path| p.to_str().expect("UTF-8 temp path").replace('\\', "\\\\").replace('"', "\\\"");
    let eab = match &options.eab {
        Some((key_id, hmac_key)) => format!(r#"true, "externalAccountMACKeys": {{"{key_id}": "{hmac_key}"}}"#),
        None => "false".to_string(),
    };
    let validity = match options.validity {
        Some(validity) => {
            assert!(validity.as_secs() >= 1, "a validity of whole seconds: {validity:?}");
            format!(", \"certificateValidityPeriod\": {}", validity.as_secs())
        }
        None => String::new(),
    };
    format!(
        r#"{{"pebble": {{"listenAddress": "{}", "managementListenAddress": "{}",
 "certificate": "{}", "privateKey": "{}", "httpPort": {}, "tlsPort": {},
 "ocspResponderURL": "", "externalAccountBindingRequired": {}{}}}}}"#,
        ports.acme,
        ports.management,
        path(cert),
        path(key),
        ports.http,
        ports.tls,
        eab,
        validity,
    )
}

/// A loopback TCP port nothing listens on (bound, then released).
fn free_tcp_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local addr")
}

/// A loopback port free for both UDP and TCP (challtestsrv's DNS server binds both).
fn free_dns_port() -> SocketAddr {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        let addr = udp.local_addr().expect("local addr");
        if std::net::TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
}
