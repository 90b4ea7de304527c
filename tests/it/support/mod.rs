//! Shared support for the integration tests: a test PKI (rcgen), rustls client configs, an
//! independent PROXY v1/v2 decoder, raw ClientHello tools, a scriptable test backend and a
//! helper that runs the real `snigate` server on loopback.
//!
//! Nothing here uses `snigate` code except `config::load` and `server::Server` (the API under
//! test), and nothing uses the `ppp` crate: the decoder is written from HAProxy's
//! proxy-protocol.txt so it can catch encoder bugs instead of sharing them.

pub mod backend;
pub mod hello;
pub mod ops;
pub mod pebble;
pub mod pki;
pub mod proxy;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;

pub use backend::{Accepted, BackendOpts, Behaviour, ProxyExpect, TestBackend};
pub use pki::{Ca, ClientSpec, Leaf, Pki};
pub use tls::{client_config, ClientOpts, Versions};

/// Upper bound for any single network wait in a test: nothing legitimate takes this long.
pub const WAIT: Duration = Duration::from_secs(10);

/// The fatal `unrecognized_name` alert record the proxy sends for an unknown / missing SNI.
pub const UNRECOGNIZED_NAME_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70];

/// Runs `future`, panicking with `what` if it takes longer than [`WAIT`].
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    within_for(WAIT, what, future).await
}

/// Runs `future`, panicking with `what` if it takes longer than `limit`.
pub async fn within_for<F: Future>(limit: Duration, what: &str, future: F) -> F::Output {
    match tokio::time::timeout(limit, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {limit:?} waiting for: {what}"),
    }
}

/// Installs a tracing subscriber once (honours RUST_LOG; output is captured per test).
pub fn init_tracing() {
    use std::sync::Once;
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("snigate=debug"));
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    });
}

/// How a read that should end the connection actually ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// Orderly EOF after these bytes.
    Eof(Vec<u8>),
    /// Connection reset / other error after these bytes.
    Error(Vec<u8>, String),
}

impl Closed {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Closed::Eof(bytes) | Closed::Error(bytes, _) => bytes,
        }
    }
}

/// Reads until EOF or an error (bounded by [`WAIT`]), returning everything read.
pub async fn read_until_closed<R: AsyncRead + Unpin>(reader: &mut R) -> Closed {
    within("the peer to close the connection", async {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) => return Closed::Eof(all),
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(error) => return Closed::Error(all, error.to_string()),
            }
        }
    })
    .await
}

/// Reads exactly `n` bytes (bounded by [`WAIT`]).
pub async fn read_n<R: AsyncRead + Unpin>(reader: &mut R, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    within("reading echoed bytes", reader.read_exact(&mut buf))
        .await
        .unwrap_or_else(|error| panic!("reading {n} bytes failed: {error}"));
    buf
}

/// A local port that nothing listens on (bound, then released).
pub async fn closed_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

/// Whether IPv6 loopback can be bound here.
pub async fn ipv6_available() -> bool {
    tokio::net::TcpListener::bind("[::1]:0").await.is_ok()
}

/// The real server, started from a YAML text; cancelled when dropped.
///
/// The server runs on its own Tokio runtime in its own thread, exactly as `main` would run it.
/// That keeps a bug inside the server (a task that never yields, a deadlocked lock) from
/// blocking the test's runtime at shutdown: the test then fails on its timeouts instead of
/// hanging `cargo test`.
pub struct RunningProxy {
    addrs: Vec<SocketAddr>,
    /// The admin endpoint, when the config has `admin:`.
    pub admin: Option<SocketAddr>,
    /// Reloads the config file at `config_path` (rewrite it first), as SIGHUP does.
    pub reload: snigate::server::ReloadHandle,
    pub metrics: std::sync::Arc<snigate::metrics::Metrics>,
    token: CancellationToken,
    done: Option<tokio::sync::oneshot::Receiver<Result<(), String>>>,
    pub config_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl RunningProxy {
    /// The `i`-th listener's address, in `listen` order.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.addrs[i]
    }

    /// Cancels the server and waits for `run` to return (panics if it returned an error).
    pub async fn shutdown(mut self) {
        self.token.cancel();
        if let Some(done) = self.done.take() {
            let result = within("the server to drain and stop", done).await;
            result.expect("server thread died (panicked?)").expect("Server::run returned an error");
        }
    }
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// Writes `yaml` to a temporary file, loads it with `snigate::config::load`, binds and runs it.
pub async fn start_proxy(yaml: &str) -> RunningProxy {
    match try_start_proxy(yaml).await {
        Ok(proxy) => proxy,
        Err(error) => panic!("could not start the proxy: {error}\n--- config ---\n{yaml}"),
    }
}

pub async fn try_start_proxy(yaml: &str) -> Result<RunningProxy, String> {
    init_tracing();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let config_path = dir.path().join("routes.yaml");
    std::fs::write(&config_path, yaml).map_err(|e| e.to_string())?;
    let token = CancellationToken::new();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<Started, String>>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
    let path = config_path.clone();
    let run_token = token.clone();
    std::thread::Builder::new()
        .name("snigate-under-test".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("server runtime");
            runtime.block_on(async move {
                let config = match snigate::config::load(&path) {
                    Ok(config) => config,
                    Err(errors) => return drop(ready_tx.send(Err(format!("config: {errors}")))),
                };
                let server = match snigate::server::Server::bind(config).await {
                    Ok(server) => server,
                    Err(error) => return drop(ready_tx.send(Err(format!("bind: {error:?}")))),
                };
                let _ = ready_tx.send(Ok(Started {
                    addrs: server.local_addrs(),
                    admin: server.admin_addr(),
                    reload: server.reload_handle(),
                    metrics: server.metrics(),
                }));
                let result = server.run(run_token).await.map_err(|e| format!("{e:?}"));
                let _ = done_tx.send(result);
            });
            // Do not wait for leftover tasks: a stuck one must not keep this thread alive.
            runtime.shutdown_background();
        })
        .map_err(|e| format!("spawn server thread: {e}"))?;
    let started = within("the proxy to load its config and bind", ready_rx)
        .await
        .map_err(|_| "the server thread died before binding (panicked?)".to_string())??;
    Ok(RunningProxy {
        addrs: started.addrs,
        admin: started.admin,
        reload: started.reload,
        metrics: started.metrics,
        token,
        done: Some(done_rx),
        config_path,
        _dir: dir,
    })
}

/// What the server thread reports once it is bound.
struct Started {
    addrs: Vec<SocketAddr>,
    admin: Option<SocketAddr>,
    reload: snigate::server::ReloadHandle,
    metrics: std::sync::Arc<snigate::metrics::Metrics>,
}

/// A YAML double-quoted string (paths, names) with `\` and `"` escaped.
pub fn q(text: impl AsRef<str>) -> String {
    format!("\"{}\"", text.as_ref().replace('\\', "\\\\").replace('"', "\\\""))
}

/// The `limits:` line most tests use: short timeouts so failures are quick.
pub const TEST_LIMITS: &str =
    "limits: { hello_timeout: 3s, max_hello_bytes: 16384, max_connections: 1000, max_handshakes: 64, idle_timeout: 1m, handshake_timeout: 3s, drain_timeout: 1s }";

/// Builds one `routes:` entry in block-style YAML.
#[derive(Debug, Clone)]
pub struct RouteYaml {
    name: String,
    mode: String,
    sni: Vec<String>,
    alpn: Vec<String>,
    tls: Vec<String>,
    mqtt: Option<String>,
    websocket: Option<String>,
    limits: Option<String>,
    servers: Vec<String>,
    backend: Vec<String>,
}

impl RouteYaml {
    /// A route with `proxy_protocol: v2` unless [`RouteYaml::proxy`] says otherwise.
    pub fn new(name: &str, mode: &str) -> RouteYaml {
        RouteYaml {
            name: name.into(),
            mode: mode.into(),
            sni: Vec::new(),
            alpn: Vec::new(),
            tls: Vec::new(),
            mqtt: None,
            websocket: None,
            limits: None,
            servers: Vec::new(),
            backend: vec!["proxy_protocol: v2".into(), "connect_timeout: 2s".into()],
        }
    }

    pub fn sni(mut self, names: &[&str]) -> RouteYaml {
        self.sni.extend(names.iter().map(|n| n.to_string()));
        self
    }

    /// The route's own `alpn:` (what it is routed on, not `tls.alpn`).
    pub fn alpn(mut self, protocols: &[&str]) -> RouteYaml {
        self.alpn.extend(protocols.iter().map(|p| p.to_string()));
        self
    }

    /// `cert:` / `key:` from a generated leaf.
    pub fn cert(mut self, leaf: &Leaf) -> RouteYaml {
        self.tls.push(format!("cert: {}", q(leaf.cert_path.to_str().unwrap())));
        self.tls.push(format!("key: {}", q(leaf.key_path.to_str().unwrap())));
        self
    }

    /// Any other line under `tls:` (e.g. `client_auth: required`).
    pub fn tls(mut self, line: impl Into<String>) -> RouteYaml {
        self.tls.push(line.into());
        self
    }

    /// `client_auth: <mode>` plus `client_ca:` pointing at `ca`.
    pub fn client_auth(self, mode: &str, ca: &Ca) -> RouteYaml {
        self.tls(format!("client_auth: {mode}")).tls(format!("client_ca: {}", q(ca.cert_path.to_str().unwrap())))
    }

    pub fn server(mut self, addr: impl ToString) -> RouteYaml {
        self.servers.push(addr.to_string());
        self
    }

    /// `proxy_protocol: none | v1 | v2`.
    pub fn proxy(mut self, version: &str) -> RouteYaml {
        self.backend.retain(|line| !line.starts_with("proxy_protocol:"));
        self.backend.push(format!("proxy_protocol: {version}"));
        self
    }

    /// The route's `mqtt:` block, as a flow map (`{connect_timeout: 500ms}`).
    pub fn mqtt(mut self, block: impl Into<String>) -> RouteYaml {
        self.mqtt = Some(block.into());
        self
    }

    /// The route's `websocket:` block, as a flow map (`{path: /mqtt}`).
    pub fn websocket(mut self, block: impl Into<String>) -> RouteYaml {
        self.websocket = Some(block.into());
        self
    }

    /// The route's `limits:` block, as a flow map (`{max_connections: 2}`).
    pub fn limits(mut self, block: impl Into<String>) -> RouteYaml {
        self.limits = Some(block.into());
        self
    }

    /// Any other line under `backend:` (e.g. `identity: san_dns`).
    pub fn backend(mut self, line: impl Into<String>) -> RouteYaml {
        self.backend.push(line.into());
        self
    }

    pub fn render(&self) -> String {
        let mut out = format!("  - name: {}\n", q(&self.name));
        if !self.sni.is_empty() {
            let names: Vec<String> = self.sni.iter().map(q).collect();
            out += &format!("    sni: [{}]\n", names.join(", "));
        }
        if !self.alpn.is_empty() {
            let protocols: Vec<String> = self.alpn.iter().map(q).collect();
            out += &format!("    alpn: [{}]\n", protocols.join(", "));
        }
        out += &format!("    mode: {}\n", self.mode);
        if !self.tls.is_empty() {
            out += "    tls:\n";
            for line in &self.tls {
                out += &format!("      {line}\n");
            }
        }
        if let Some(block) = &self.mqtt {
            out += &format!("    mqtt: {block}\n");
        }
        if let Some(block) = &self.websocket {
            out += &format!("    websocket: {block}\n");
        }
        if let Some(block) = &self.limits {
            out += &format!("    limits: {block}\n");
        }
        out += "    backend:\n";
        let servers: Vec<String> = self.servers.iter().map(q).collect();
        out += &format!("      servers: [{}]\n", servers.join(", "));
        for line in &self.backend {
            out += &format!("      {line}\n");
        }
        out
    }
}

/// A whole config: `listen`, `default`, [`TEST_LIMITS`] and the routes.
pub fn config_yaml(listen: &[&str], default: &str, routes: &[RouteYaml]) -> String {
    config_with_limits(listen, default, TEST_LIMITS, routes)
}

/// A whole config with a custom `limits:` line.
pub fn config_with_limits(listen: &[&str], default: &str, limits: &str, routes: &[RouteYaml]) -> String {
    let listen: Vec<String> = listen.iter().map(q).collect();
    let mut out = format!("listen: [{}]\ndefault: {}\n{limits}\nroutes:\n", listen.join(", "), q(default));
    for route in routes {
        out += &route.render();
    }
    out
}

/// A config on one IPv4 loopback listener.
pub fn config_v4(default: &str, routes: &[RouteYaml]) -> String {
    config_yaml(&["127.0.0.1:0"], default, routes)
}

/// Starts the real `snigate run --config CONFIG --log-format json` at `info`, its log piped.
pub fn spawn_with_json_log(config: &std::path::Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_snigate"))
        .args(["--log-format", "json", "run", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start snigate")
}

/// Sends SIGTERM to a `snigate run` child, waits (bounded) for it to exit, asserts it exited 0,
/// and returns everything it wrote to stderr (its log).
pub async fn terminate_and_read_log(child: &mut std::process::Child) -> String {
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = within("snigate to exit after SIGTERM", async {
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(status.success(), "exit status {status:?}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr piped"), &mut stderr).unwrap();
    stderr
}
