//! Backend server pools: connect with a timeout, starting round-robin and failing over to the
//! next server on any error, so one dead server costs a client at most one `connect_timeout`.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use tokio::net::TcpStream;

use crate::config::Backend;

/// Why one server could not be used.
#[derive(Debug)]
pub struct Attempt {
    pub server: String,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub struct BackendError {
    pub attempts: Vec<Attempt>,
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no backend server reachable")?;
        for (i, attempt) in self.attempts.iter().enumerate() {
            let separator = if i == 0 { ": " } else { "; " };
            write!(f, "{separator}{} ({})", attempt.server, attempt.reason)?;
        }
        Ok(())
    }
}

/// A connected backend socket and the server it reached.
#[derive(Debug)]
pub struct Connected {
    pub stream: TcpStream,
    pub server: SocketAddr,
    /// Position of the server in the route's `servers`.
    pub index: usize,
}

/// Connects to the pool's servers in turn, starting where the previous connection left off and
/// skipping servers a health check marked down (all down fails at once).
pub async fn connect(backend: &Backend) -> Result<Connected, BackendError> {
    let count = backend.servers.len();
    let start = backend.next_server.fetch_add(1, Ordering::Relaxed);
    let mut attempts = Vec::new();
    for offset in 0..count {
        let index = (start + offset) % count;
        let server = &backend.servers[index];
        if !backend.server_up[index].load(Ordering::Relaxed) {
            attempts.push(Attempt { server: server.clone(), reason: "marked down by its health check".into() });
            continue;
        }
        match connect_one(server, backend.connect_timeout).await {
            Ok(mut connected) => {
                connected.index = index;
                if !attempts.is_empty() {
                    tracing::warn!(failed = %BackendError { attempts }, server = %connected.server, "backend failover");
                }
                return Ok(connected);
            }
            Err(reason) => attempts.push(Attempt { server: server.clone(), reason }),
        }
    }
    Err(BackendError { attempts })
}

/// One connect attempt to one `host:port` (every address it resolves to, in order).
pub async fn connect_one(server: &str, timeout: std::time::Duration) -> Result<Connected, String> {
    let attempt = async {
        let addresses: Vec<SocketAddr> = match server.parse::<SocketAddr>() {
            Ok(address) => vec![address],
            Err(_) => {
                tokio::net::lookup_host(server).await.map_err(|error| format!("cannot resolve: {error}"))?.collect()
            }
        };
        let mut last_error = String::from("name resolved to no address");
        for address in addresses {
            match TcpStream::connect(address).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(Connected { stream, server: address, index: 0 });
                }
                Err(error) => last_error = error.to_string(),
            }
        }
        Err(last_error)
    };
    tokio::time::timeout(timeout, attempt).await.unwrap_or_else(|_| Err(format!("connect timed out after {timeout:?}")))
}
