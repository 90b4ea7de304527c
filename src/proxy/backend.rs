//! Backend server pools: the validated `backend:` settings with their live state (round-robin
//! position, server health), and connecting with a timeout, starting round-robin and failing over
//! to the next server on any error, so one dead server costs a client at most one `connect_timeout`.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::net::TcpStream;

use crate::ops::fd_limit;
use crate::proxy::passive_health::{Change, PassiveHealth};

/// Per backend server connect attempt.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Health check defaults: a check every 5 s, 2 s to answer, 2 passes to come up, 3 failures to go down.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_HEALTH_RISE: u32 = 2;
pub const DEFAULT_HEALTH_FALL: u32 = 3;
/// Without a health check, one failed connect marks a server down (nginx's `max_fails` default).
pub const DEFAULT_MAX_FAILS: u32 = 1;
/// How long a passively marked-down server is skipped before it is tried again (nginx's default).
pub const DEFAULT_FAIL_TIMEOUT: Duration = Duration::from_secs(10);

/// Which PROXY header, if any, goes to the backend before the client's bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocol {
    #[default]
    None,
    V1,
    V2,
}

/// What goes into the PROXY v2 CN sub-TLV, read from the verified client certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Identity {
    #[default]
    Cn,
    SanDns,
    SanUri,
    SanEmail,
}

/// How a health check probes a server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheckKind {
    /// A TCP connect.
    #[default]
    Tcp,
    /// MQTT CONNECT answered by a CONNACK (after the route's PROXY header, if any).
    Mqtt,
}

/// What happens to a server's live sessions when its health check marks it down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnBackendDown {
    /// Leave them: they end when the backend closes them.
    #[default]
    Keep,
    /// Close them (spread over `limits.close_jitter`) so clients reconnect to a healthy server.
    CloseSessions,
}

/// An active health check, with its defaults filled in.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    pub kind: HealthCheckKind,
    /// Default [`DEFAULT_HEALTH_INTERVAL`].
    pub interval: Duration,
    /// Default [`DEFAULT_HEALTH_TIMEOUT`].
    pub timeout: Duration,
    /// Default [`DEFAULT_HEALTH_RISE`]: passes in a row that bring a server up.
    pub rise: u32,
    /// Default [`DEFAULT_HEALTH_FALL`]: failures in a row that take it down.
    pub fall: u32,
}

/// A route's backend pool.
#[derive(Debug)]
pub struct Backend {
    /// `host:port` as written; hostnames are resolved at connect time.
    pub servers: Vec<String>,
    pub proxy_protocol: ProxyProtocol,
    pub identity: Identity,
    /// Default [`DEFAULT_CONNECT_TIMEOUT`].
    pub connect_timeout: Duration,
    /// Where the next connection starts trying (round-robin over `servers`).
    pub next_server: AtomicUsize,
    pub health_check: Option<HealthCheck>,
    /// Per server, in `servers` order: false while its health check says it is down.
    pub server_up: Vec<AtomicBool>,
    pub on_backend_down: OnBackendDown,
    /// Passive health (routes without `health_check`): failures in a row that mark a server down.
    /// Default [`DEFAULT_MAX_FAILS`].
    pub max_fails: u32,
    /// Default [`DEFAULT_FAIL_TIMEOUT`].
    pub fail_timeout: Duration,
    /// Per server, in `servers` order: its passive health state.
    pub passive: Vec<PassiveHealth>,
}

/// Why one connect to one server failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot resolve: {0}")]
    Resolve(io::Error),
    #[error("name resolved to no address")]
    NoAddress,
    #[error("{0}")]
    Io(io::Error),
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
}

impl ConnectError {
    /// This process or the system is out of descriptors: the server is not at fault.
    pub fn is_local_exhaustion(&self) -> bool {
        match self {
            ConnectError::Resolve(error) | ConnectError::Io(error) => fd_limit::is_exhaustion(error),
            ConnectError::NoAddress | ConnectError::Timeout(_) => false,
        }
    }
}

/// Why one server could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("marked down by its health check")]
    MarkedDown,
    #[error("{0}")]
    Connect(ConnectError),
}

#[derive(Debug)]
pub struct Attempt {
    pub server: String,
    pub failure: Failure,
}

#[derive(Debug, thiserror::Error)]
pub struct BackendError {
    pub attempts: Vec<Attempt>,
}

impl BackendError {
    /// The last attempt failed because this process is out of descriptors.
    pub fn is_local_exhaustion(&self) -> bool {
        matches!(self.attempts.last(), Some(Attempt { failure: Failure::Connect(error), .. }) if error.is_local_exhaustion())
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no backend server reachable")?;
        for (i, attempt) in self.attempts.iter().enumerate() {
            let separator = if i == 0 { ": " } else { "; " };
            write!(f, "{separator}{} ({})", attempt.server, attempt.failure)?;
        }
        Ok(())
    }
}

/// What a connect attempt tells the caller's metrics, by server as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A connect to this server failed (its own failure, not a skip or the proxy's shortage).
    ConnectFailed(&'a str),
    /// Passive health: `max_fails` failures in a row took it down.
    Down(&'a str),
    /// Passive health: a connect to a down server succeeded.
    Up(&'a str),
}

/// A connected backend socket and the server it reached.
#[derive(Debug)]
pub struct Connected {
    pub stream: TcpStream,
    pub server: SocketAddr,
    /// Position of the server in the route's `servers`.
    pub index: usize,
}

/// Whether server `index` counts as up for the `snigate_backend_up` gauge: its health check says
/// so or, without one, passive health has not marked it down.
pub fn server_is_up(backend: &Backend, index: usize) -> bool {
    let checked_up = backend.server_up[index].load(Ordering::Relaxed);
    checked_up && (backend.health_check.is_some() || !backend.passive[index].is_down())
}

/// Connects to the pool's servers in turn, starting where the previous connection left off and
/// skipping servers a health check marked down (all down fails at once). Without a health check,
/// servers that failed `max_fails` connects in a row are skipped for `fail_timeout` unless every
/// server is. `on_event` hears of every failed connect and passive health change.
pub async fn connect(backend: &Backend, on_event: impl Fn(Event<'_>)) -> Result<Connected, BackendError> {
    let count = backend.servers.len();
    let start = backend.next_server.fetch_add(1, Ordering::Relaxed);
    let passive = backend.health_check.is_none();
    let now = Instant::now();
    let mut attempts = Vec::new();
    let mut resting = Vec::new();
    for offset in 0..count {
        let index = (start + offset) % count;
        if !backend.server_up[index].load(Ordering::Relaxed) {
            attempts.push(Attempt { server: backend.servers[index].clone(), failure: Failure::MarkedDown });
        } else if passive && backend.passive[index].is_resting(now) {
            resting.push(index);
        } else if let Some(found) = try_server(backend, index, &mut attempts, &on_event).await? {
            return Ok(found);
        }
    }
    // Every server is resting or failed: the resting ones are tried after all.
    for index in resting {
        if let Some(found) = try_server(backend, index, &mut attempts, &on_event).await? {
            return Ok(found);
        }
    }
    Err(BackendError { attempts })
}

/// One server of the pool: `Some` when connected; a descriptor shortage ends the whole attempt
/// (every other server would fail the same way).
async fn try_server(
    backend: &Backend,
    index: usize,
    attempts: &mut Vec<Attempt>,
    on_event: &impl Fn(Event<'_>),
) -> Result<Option<Connected>, BackendError> {
    let server = &backend.servers[index];
    let passive = backend.health_check.is_none().then(|| &backend.passive[index]);
    match connect_one(server, backend.connect_timeout).await {
        Ok(mut connected) => {
            connected.index = index;
            if passive.is_some_and(|health| health.record_success() == Change::CameBack) {
                tracing::info!(%server, "backend server up again: a connect succeeded");
                on_event(Event::Up(server));
            }
            if !attempts.is_empty() {
                let failed = BackendError { attempts: std::mem::take(attempts) };
                tracing::warn!(%failed, server = %connected.server, "backend failover");
            }
            Ok(Some(connected))
        }
        Err(error) if error.is_local_exhaustion() => {
            attempts.push(Attempt { server: server.clone(), failure: Failure::Connect(error) });
            Err(BackendError { attempts: std::mem::take(attempts) })
        }
        Err(error) => {
            on_event(Event::ConnectFailed(server));
            let change =
                passive.map(|health| health.record_failure(backend.max_fails, backend.fail_timeout, Instant::now()));
            if change == Some(Change::WentDown) {
                let fail_timeout = backend.fail_timeout;
                tracing::warn!(%server, %error, max_fails = backend.max_fails, ?fail_timeout, "backend server down: connects failed");
                on_event(Event::Down(server));
            }
            attempts.push(Attempt { server: server.clone(), failure: Failure::Connect(error) });
            Ok(None)
        }
    }
}

/// One connect attempt to one `host:port` (every address it resolves to, in order).
pub async fn connect_one(server: &str, timeout: Duration) -> Result<Connected, ConnectError> {
    let attempt = async {
        let addresses: Vec<SocketAddr> = match server.parse::<SocketAddr>() {
            Ok(address) => vec![address],
            Err(_) => tokio::net::lookup_host(server).await.map_err(ConnectError::Resolve)?.collect(),
        };
        let mut last_error = ConnectError::NoAddress;
        for address in addresses {
            match TcpStream::connect(address).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(Connected { stream, server: address, index: 0 });
                }
                Err(error) if fd_limit::is_exhaustion(&error) => return Err(ConnectError::Io(error)),
                Err(error) => last_error = ConnectError::Io(error),
            }
        }
        Err(last_error)
    };
    tokio::time::timeout(timeout, attempt).await.unwrap_or(Err(ConnectError::Timeout(timeout)))
}
