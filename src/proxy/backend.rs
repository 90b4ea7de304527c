//! Backend server pools: the validated `backend:` settings with their live state (round-robin
//! position, open sessions per server, server health), and connecting with a timeout: the first
//! server by the route's `balance`, failing over to the next server on any error (so one dead
//! server costs a client at most one `connect_timeout`), and to the backup servers only when no
//! primary could be connected.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::net::TcpStream;

use crate::proxy::fd_exhaustion;
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

/// How a connection picks the first primary server it tries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// The next server after the previous connection's.
    #[default]
    RoundRobin,
    /// The up server with the fewest open sessions through this proxy; ties by round robin.
    LeastConnections,
    /// Rendezvous hashing of the MQTT CONNECT client id (`mqtt:` routes only); an empty one goes
    /// round robin.
    ClientId,
    /// Rendezvous hashing of the client address over the up servers.
    ClientIp,
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
    /// `host:port` as written, `servers` then `backup_servers`; hostnames are resolved at connect time.
    pub servers: Vec<String>,
    /// How many of `servers` are primaries; the rest are backups, tried in order only when no
    /// primary could be connected.
    pub primaries: usize,
    pub balance: Balance,
    pub proxy_protocol: ProxyProtocol,
    pub identity: Identity,
    /// Default [`DEFAULT_CONNECT_TIMEOUT`].
    pub connect_timeout: Duration,
    /// Where the next connection starts trying (round-robin over the primaries).
    pub next_server: AtomicUsize,
    /// Per server, in `servers` order: sessions open to it now (see [`ServerLoad`]).
    pub load: Vec<AtomicUsize>,
    /// The last connection was served by a backup server (logged when it changes).
    pub on_backup: AtomicBool,
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
            ConnectError::Resolve(error) | ConnectError::Io(error) => fd_exhaustion::is_exhaustion(error),
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

/// A connected socket and the address it reached.
#[derive(Debug)]
pub struct Reached {
    pub stream: TcpStream,
    pub server: SocketAddr,
}

/// A connected backend socket, the server it reached, and that server's count of open sessions
/// held for the session's life.
#[derive(Debug)]
pub struct Connected<'b> {
    pub stream: TcpStream,
    pub server: SocketAddr,
    /// Position of the server in the route's `servers`.
    pub index: usize,
    pub load: ServerLoad<'b>,
}

/// One open session to a server: counted while it lives (`least_connections` reads the count).
#[derive(Debug)]
pub struct ServerLoad<'b>(&'b AtomicUsize);

impl<'b> ServerLoad<'b> {
    fn start(count: &'b AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        ServerLoad(count)
    }
}

impl Drop for ServerLoad<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether server `index` counts as up for the `snigate_backend_up` gauge: its health check says
/// so or, without one, passive health has not marked it down.
pub fn server_is_up(backend: &Backend, index: usize) -> bool {
    let checked_up = backend.server_up[index].load(Ordering::Relaxed);
    checked_up && (backend.health_check.is_some() || !backend.passive[index].is_down())
}

/// Connects to the pool's primaries in turn, starting with the one `balance` picks for `client`
/// and skipping servers a health check marked down; only when no primary could be connected, to
/// the backup servers in order. Without a health check, servers that failed `max_fails` connects
/// in a row are skipped for `fail_timeout` unless every server is. `on_event` hears of every
/// failed connect and passive health change.
pub async fn connect<'b>(
    backend: &'b Backend,
    client: IpAddr,
    client_id: Option<&str>,
    on_event: impl Fn(Event<'_>),
) -> Result<Connected<'b>, BackendError> {
    let primaries = backend.primaries;
    let passive = backend.health_check.is_none();
    let now = Instant::now();
    let start = first_choice(backend, client, client_id, now);
    let order = (0..primaries).map(|offset| (start + offset) % primaries).chain(primaries..backend.servers.len());
    let mut attempts = Vec::new();
    let mut resting = Vec::new();
    for index in order {
        if !backend.server_up[index].load(Ordering::Relaxed) {
            attempts.push(Attempt { server: backend.servers[index].clone(), failure: Failure::MarkedDown });
        } else if passive && backend.passive[index].is_resting(now) {
            resting.push(index);
        } else if let Some(found) = try_server(backend, index, &mut attempts, &on_event).await? {
            return Ok(note_tier(backend, found));
        }
    }
    // Every server is resting or failed: the resting ones are tried after all.
    for index in resting {
        if let Some(found) = try_server(backend, index, &mut attempts, &on_event).await? {
            return Ok(note_tier(backend, found));
        }
    }
    Err(BackendError { attempts })
}

/// Whether server `index` may be picked first: up by its health check and not resting.
fn is_available(backend: &Backend, index: usize, now: Instant) -> bool {
    backend.server_up[index].load(Ordering::Relaxed)
        && (backend.health_check.is_some() || !backend.passive[index].is_resting(now))
}

/// The primary a connection tries first, by the route's `balance`.
fn first_choice(backend: &Backend, client: IpAddr, client_id: Option<&str>, now: Instant) -> usize {
    let count = backend.primaries;
    let candidates = || (0..count).filter(move |&index| is_available(backend, index, now));
    let servers = move |index: usize| (index, backend.servers[index].as_str());
    match backend.balance {
        Balance::ClientId => match client_id.filter(|id| !id.is_empty()) {
            Some(id) => rendezvous_key(id.as_bytes(), candidates().map(servers)).unwrap_or(0),
            None => backend.next_server.fetch_add(1, Ordering::Relaxed) % count,
        },
        Balance::RoundRobin => backend.next_server.fetch_add(1, Ordering::Relaxed) % count,
        Balance::LeastConnections => {
            let start = backend.next_server.fetch_add(1, Ordering::Relaxed);
            (0..count)
                .map(|offset| (start + offset) % count)
                .filter(|&index| is_available(backend, index, now))
                .min_by_key(|&index| backend.load[index].load(Ordering::Relaxed))
                .unwrap_or(start % count)
        }
        Balance::ClientIp => rendezvous(client, candidates().map(servers)).unwrap_or(0),
    }
}

/// Highest-random-weight choice: the candidate whose weight for `client` is highest. A client
/// keeps its server while that server stays a candidate; when one drops out only its clients move.
pub fn rendezvous<'s>(client: IpAddr, candidates: impl Iterator<Item = (usize, &'s str)>) -> Option<usize> {
    let octets = match client {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    };
    rendezvous_key(&octets, candidates)
}

/// The same choice for any key: the client address's octets, or an MQTT client id's bytes.
pub fn rendezvous_key<'s>(key: &[u8], candidates: impl Iterator<Item = (usize, &'s str)>) -> Option<usize> {
    candidates.max_by_key(|&(index, server)| (weight(key, server), index)).map(|(index, _)| index)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

/// A stable 64-bit weight of (server, client): FNV-1a, then the splitmix64 finalizer to spread it.
fn weight(key: &[u8], server: &str) -> u64 {
    let mut hash = FNV_OFFSET;
    for &byte in server.as_bytes().iter().chain(key) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// Logs when traffic moves to the backup tier and back (once per change, not per connection).
fn note_tier<'b>(backend: &'b Backend, found: Connected<'b>) -> Connected<'b> {
    let on_backup = found.index >= backend.primaries;
    if backend.on_backup.load(Ordering::Relaxed) != on_backup
        && backend.on_backup.swap(on_backup, Ordering::Relaxed) != on_backup
    {
        let server = &backend.servers[found.index];
        if on_backup {
            tracing::warn!(%server, "no primary backend server reachable: failing over to the backup servers");
        } else {
            tracing::info!(%server, "a primary backend server serves again: leaving the backup servers");
        }
    }
    found
}

/// One server of the pool: `Some` when connected; a descriptor shortage ends the whole attempt
/// (every other server would fail the same way).
async fn try_server<'b>(
    backend: &'b Backend,
    index: usize,
    attempts: &mut Vec<Attempt>,
    on_event: &impl Fn(Event<'_>),
) -> Result<Option<Connected<'b>>, BackendError> {
    let server = &backend.servers[index];
    let passive = backend.health_check.is_none().then(|| &backend.passive[index]);
    match connect_one(server, backend.connect_timeout).await {
        Ok(Reached { stream, server: address }) => {
            let connected = Connected { stream, server: address, index, load: ServerLoad::start(&backend.load[index]) };
            if passive.is_some_and(|health| health.record_success() == Change::CameBack) {
                tracing::info!(%server, "backend server up again: a connect succeeded");
                on_event(Event::Up(server));
            }
            // Failing over to a backup is logged once, by `note_tier`.
            if !attempts.is_empty() && index < backend.primaries {
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
pub async fn connect_one(server: &str, timeout: Duration) -> Result<Reached, ConnectError> {
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
                    return Ok(Reached { stream, server: address });
                }
                Err(error) if fd_exhaustion::is_exhaustion(&error) => return Err(ConnectError::Io(error)),
                Err(error) => last_error = ConnectError::Io(error),
            }
        }
        Err(last_error)
    };
    tokio::time::timeout(timeout, attempt).await.unwrap_or(Err(ConnectError::Timeout(timeout)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVERS: [&str; 3] = ["10.0.0.1:1883", "10.0.0.2:1883", "10.0.0.3:1883"];
    const CLIENTS: u32 = 1000;

    fn choose(client: IpAddr, up: &[usize]) -> usize {
        rendezvous(client, up.iter().map(|&index| (index, SERVERS[index]))).expect("a candidate")
    }

    #[test]
    fn client_ip_keeps_clients_and_moves_only_those_of_a_down_server() {
        let clients: Vec<IpAddr> =
            (0..CLIENTS).map(|n| IpAddr::from(std::net::Ipv4Addr::from(0xc0a8_0000 + n))).collect();
        let all_up: Vec<usize> = clients.iter().map(|&client| choose(client, &[0, 1, 2])).collect();
        for (client, chosen) in clients.iter().zip(&all_up) {
            assert_eq!(choose(*client, &[0, 1, 2]), *chosen, "the same address lands on the same server");
        }
        for server in 0..SERVERS.len() {
            let share = all_up.iter().filter(|&&chosen| chosen == server).count();
            assert!(share > 250 && share < 420, "server {server} got {share} of {CLIENTS}");
        }
        let without_second: Vec<usize> = clients.iter().map(|&client| choose(client, &[0, 2])).collect();
        for (before, after) in all_up.iter().zip(&without_second) {
            if *before == 1 {
                assert_ne!(*after, 1);
            } else {
                assert_eq!(before, after, "only the down server's clients move");
            }
        }
        let moved_to: Vec<usize> =
            all_up.iter().zip(&without_second).filter(|(b, _)| **b == 1).map(|(_, a)| *a).collect();
        assert!(moved_to.contains(&0) && moved_to.contains(&2), "its clients spread over the others");
    }

    #[test]
    fn server_load_counts_open_sessions() {
        let count = AtomicUsize::new(0);
        let first = ServerLoad::start(&count);
        let second = ServerLoad::start(&count);
        assert_eq!(count.load(Ordering::Relaxed), 2);
        drop(first);
        drop(second);
        assert_eq!(count.load(Ordering::Relaxed), 0);
    }
}
