//! The routes file's YAML schema as typed serde structs. Each field's doc comment states its
//! default; the defaults themselves are constants next to the runtime fields they set
//! (`proxy::limits`, `proxy::backend`), and validation fills them in.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::duration::parse_duration;
use crate::proxy::backend::{Balance, HealthCheckKind, Identity, OnBackendDown, ProxyProtocol};
use crate::proxy::mqtt_admission::{ClientIdRule, UsernameRule};
use crate::proxy::route::Mode;
use crate::proxy::tls_settings::{ClientAuth, TlsVersion};

pub use super::acme::AcmeKeyType;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Sockets to listen on; all are routed by the same table. Required, at least one.
    pub listen: Vec<SocketAddr>,
    /// Optional admin endpoint (`/metrics`, `/healthz`, `/readyz`). Default none.
    #[serde(default)]
    pub admin: Option<SocketAddr>,
    /// Peers allowed to send an inbound PROXY header. Default none.
    #[serde(default)]
    pub accept_proxy_from: Vec<ipnet::IpNet>,
    /// Bind the `listen` sockets with SO_REUSEPORT, so that several snigate processes share the
    /// ports and the kernel spreads new connections over them. Default false: a second instance on
    /// the same port is then an error, not a silent split.
    #[serde(default)]
    pub reuse_port: bool,
    /// `reject` (default) or the name of a route for unknown / missing SNI and non-TLS bytes.
    #[serde(default)]
    pub default: Option<String>,
    /// Proxy-wide limits; every one has a default.
    #[serde(default)]
    pub limits: RawLimits,
    /// Ticket keys shared by a fleet of snigates. Default none: each route has a random ticket
    /// key of this process (kept across reloads that leave the route's TLS identity alone).
    #[serde(default)]
    pub session_tickets: Option<RawSessionTickets>,
    /// Required, at least one.
    pub routes: Vec<RawRoute>,
}

/// `session_tickets:` (see `proxy/session_tickets.rs`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSessionTickets {
    /// One key per line, base64 of 32 random bytes (`snigate ticket-key`); the first encrypts,
    /// every one decrypts. Required. Watched like certificates.
    pub key_file: PathBuf,
    /// How long a ticket is announced to be valid, and so how long an old key must stay in the
    /// file after a new one was prepended. Default 12h.
    #[serde(default, deserialize_with = "opt_duration")]
    pub lifetime: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Default 5s.
    #[serde(default, deserialize_with = "opt_duration")]
    pub hello_timeout: Option<Duration>,
    /// Default 16384.
    #[serde(default)]
    pub max_hello_bytes: Option<usize>,
    /// Default 50000.
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Default 1024.
    #[serde(default)]
    pub max_handshakes: Option<usize>,
    /// Default 0 (no cap).
    #[serde(default)]
    pub max_connections_per_ip: Option<usize>,
    /// Default 15m.
    #[serde(default, deserialize_with = "opt_duration")]
    pub idle_timeout: Option<Duration>,
    /// Default 10s.
    #[serde(default, deserialize_with = "opt_duration")]
    pub handshake_timeout: Option<Duration>,
    /// Default 30s.
    #[serde(default, deserialize_with = "opt_duration")]
    pub drain_timeout: Option<Duration>,
    /// Default 5s.
    #[serde(default, deserialize_with = "opt_duration")]
    pub close_jitter: Option<Duration>,
    /// Default none (no rate): new TLS handshakes per second across every route (on passthrough
    /// and tcp routes, new backend sessions), a token bucket.
    #[serde(default)]
    pub handshakes_per_second: Option<u32>,
    /// Default `handshakes_per_second` (one second's worth): how many pass at once.
    #[serde(default)]
    pub handshake_burst: Option<u32>,
}

/// `routes[].limits`: each one at most the proxy-wide value of the same name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteLimits {
    /// Default none (only `limits.max_connections`): open connections of this route.
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Default none (only `limits.max_handshakes`, shared fairly): terminate routes only.
    #[serde(default)]
    pub max_handshakes: Option<usize>,
    /// Default none: this route's new handshakes (passthrough and tcp: backend sessions) per second.
    #[serde(default)]
    pub handshakes_per_second: Option<u32>,
    /// Default `handshakes_per_second`.
    #[serde(default)]
    pub handshake_burst: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Required, unique, not empty.
    pub name: String,
    /// Hostnames and `*.suffix` wildcards this route serves. Default none (reached as `default`).
    #[serde(default)]
    pub sni: Vec<String>,
    /// Default none: the route takes only hellos offering one of these ALPN protocols (the
    /// client's first such choice among its names' routes). A route without takes the rest.
    #[serde(default)]
    pub alpn: Vec<String>,
    /// Required: `terminate`, `passthrough` or `tcp`.
    pub mode: Mode,
    /// Required on terminate routes, ignored (with a warning) on the others.
    #[serde(default)]
    pub tls: Option<RawTls>,
    /// Default none: terminate and tcp routes only; the first packet must then be an MQTT CONNECT.
    #[serde(default)]
    pub mqtt: Option<RawMqtt>,
    /// Default none: terminate and tcp routes only; clients then speak MQTT over WebSocket.
    #[serde(default)]
    pub websocket: Option<RawWebSocket>,
    /// Default none: only the proxy-wide limits apply.
    #[serde(default)]
    pub limits: Option<RawRouteLimits>,
    /// Required.
    pub backend: RawBackend,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMqtt {
    /// Default 10s: the CONNECT must be complete this long after the handshake (tcp: the accept).
    #[serde(default, deserialize_with = "opt_duration")]
    pub connect_timeout: Option<Duration>,
    /// Default 8192: the most bytes a CONNECT may have, fixed header included.
    #[serde(default)]
    pub max_connect_bytes: Option<usize>,
    /// Default `any`; `identity` / `identity_prefix` need `client_auth: required`.
    #[serde(default)]
    pub client_id: ClientIdRule,
    /// Default `client`; `identity` needs `client_auth: required`.
    #[serde(default)]
    pub username: UsernameRule,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebSocket {
    /// Default `/mqtt`: the path the upgrade request must ask for.
    #[serde(default)]
    pub path: Option<String>,
    /// Default `[mqtt, mqttv3.1]`: accepted subprotocols, the server's preference first; `[]`:
    /// none negotiated.
    #[serde(default)]
    pub subprotocols: Option<Vec<String>>,
    /// Default none (any origin): the `Origin` values a browser page may connect from.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Default 1048576 (1 MiB): the largest client message, over all its fragments.
    #[serde(default)]
    pub max_message_bytes: Option<u64>,
    /// Default false: a client whose first byte starts an MQTT CONNECT is relayed as plain MQTT.
    #[serde(default)]
    pub also_plain_mqtt: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// Required without `cert_dir`: the certificate chain, PEM, leaf first, relative to the config
    /// file's directory. With `cert_dir`, the certificate served when no file there matches.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// Required with `cert`: its private key, PEM (the same file as `cert` for a combined PEM).
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Default none: a directory of `NAME.pem` (chain and key) or `NAME.crt` + `NAME.key` files;
    /// the one whose subjectAltName matches the SNI is served, exact names before wildcards.
    /// Without `cert`/`key`, the file whose name sorts first is the default.
    #[serde(default)]
    pub cert_dir: Option<PathBuf>,
    /// Default `none`.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Required unless `client_auth` is `none`: the CA client certificates are verified against.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Default none: CRL files checked on every client certificate.
    #[serde(default)]
    pub crl: Vec<PathBuf>,
    /// Default none: `http://` URLs of CRLs fetched at start and kept fresh. Until every one has
    /// been fetched once, the route refuses every client certificate (fail closed).
    #[serde(default)]
    pub crl_urls: Vec<String>,
    /// Default 15m: the longest time between two fetches of a `crl_urls` CRL (sooner when its
    /// nextUpdate comes first). At least 1s.
    #[serde(default, deserialize_with = "opt_duration")]
    pub crl_refresh: Option<Duration>,
    /// Default none: ALPN protocols offered, in order of preference.
    #[serde(default)]
    pub alpn: Vec<String>,
    /// Default "1.2".
    #[serde(default)]
    pub min_version: TlsVersion,
    /// Default true: stateful cache and tickets, each per route so sessions never cross tenants.
    #[serde(default = "yes")]
    pub session_resumption: bool,
    /// Default false: at reload, also close live sessions whose client certificate the new CRLs revoke.
    #[serde(default)]
    pub revoke_live: bool,
    /// Default none: obtain and renew the route's certificate from an ACME CA (TLS-ALPN-01),
    /// instead of `cert`/`key`/`cert_dir`.
    #[serde(default)]
    pub acme: Option<RawAcme>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAcme {
    /// Required: the CA's ACME directory URL, `https://`.
    pub directory: String,
    /// Default none: `mailto:` addresses the CA may write to about the account.
    #[serde(default)]
    pub contact: Vec<String>,
    /// Required: the directory holding the account key, certificates and keys (relative to the
    /// config file's directory); created with mode 0700 when missing.
    pub storage: PathBuf,
    /// Default the system's roots: a PEM file of the CA certificates the directory's TLS
    /// certificate is verified against (a private CA: step-ca, pebble).
    #[serde(default)]
    pub directory_ca: Option<PathBuf>,
    /// Default 30d: renew this long before expiry (at the latest at half the certificate's
    /// lifetime), or in the CA's ARI window when it offers one.
    #[serde(default, deserialize_with = "opt_duration")]
    pub renew_before: Option<Duration>,
    /// Default `p256`: the certificate's key, `p256`, `p384` (ECDSA) or `rsa2048`, `rsa4096` (for
    /// clients whose TLS stack has no ECDSA). Changing it orders a new certificate.
    #[serde(default)]
    pub key_type: AcmeKeyType,
    /// Default none: the External Account Binding a CA requires (ZeroSSL, Google Trust Services),
    /// used once, when the account is created.
    #[serde(default)]
    pub eab: Option<RawEab>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEab {
    /// Required: the key identifier the CA gave.
    pub key_id: String,
    /// Required: a file holding the HMAC key the CA gave, base64url as CAs hand it out (relative to
    /// the config file's directory; keep it 0600).
    pub hmac_key_file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    /// Required, at least one `host:port`.
    pub servers: Vec<String>,
    /// Default none: `host:port`s tried in order only when no server in `servers` could be connected.
    #[serde(default)]
    pub backup_servers: Vec<String>,
    /// Default `round_robin`; also `least_connections`, `client_ip`, `client_id` (needs `mqtt:`).
    #[serde(default)]
    pub balance: Balance,
    /// Default `none`.
    #[serde(default)]
    pub proxy_protocol: ProxyProtocol,
    /// Default `cn`.
    #[serde(default)]
    pub identity: Identity,
    /// Default 3s.
    #[serde(default, deserialize_with = "opt_duration")]
    pub connect_timeout: Option<Duration>,
    /// Off when absent.
    #[serde(default)]
    pub health_check: Option<RawHealthCheck>,
    /// Default `keep`.
    #[serde(default)]
    pub on_backend_down: OnBackendDown,
    /// Default 1: connect failures in a row that mark a server down without a health check; 0 never.
    #[serde(default)]
    pub max_fails: Option<u32>,
    /// Default 10s: how long such a server is skipped before it is tried again.
    #[serde(default, deserialize_with = "opt_duration")]
    pub fail_timeout: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    /// Default `tcp`.
    #[serde(default, rename = "type")]
    pub kind: HealthCheckKind,
    /// Default 5s.
    #[serde(default, deserialize_with = "opt_duration")]
    pub interval: Option<Duration>,
    /// Default 2s.
    #[serde(default, deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// Default 2.
    #[serde(default)]
    pub rise: Option<u32>,
    /// Default 3.
    #[serde(default)]
    pub fall: Option<u32>,
}

fn yes() -> bool {
    true
}

fn opt_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_duration(&text).map(Some).map_err(serde::de::Error::custom)
}
