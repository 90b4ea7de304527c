//! Listeners, the accept loop, connection limits, the per-connection tasks, and shutdown with a
//! bounded drain.
//!
//! A connection permit is taken *before* `accept`, so a full proxy stops accepting (the kernel
//! backlog holds new clients) instead of accepting and dropping. On shutdown the accept loops
//! stop, live connections get `drain_timeout` to finish, and whatever is left is closed.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::connection::{self, Context};
use crate::ip_limit::IpLimiter;
use crate::routes::RouteTable;

/// Pending connections the kernel queues per listener while we are at `max_connections`.
const LISTEN_BACKLOG: i32 = 1024;
/// Pause after an accept error (EMFILE, ENFILE, ENOBUFS) so a full fd table does not spin a core.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// After the drain deadline, how long closing the remaining connections may take.
const FORCED_CLOSE_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {address}: {source}")]
    Bind { address: SocketAddr, source: io::Error },
}

/// A bound, not yet running proxy.
pub struct Server {
    listeners: Vec<TcpListener>,
    routes: Arc<ArcSwap<RouteTable>>,
    context: Arc<Context>,
    max_connections: usize,
}

impl Server {
    /// Binds every `listen` address of the config.
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        let mut listeners = Vec::with_capacity(config.listen.len());
        for &address in &config.listen {
            listeners.push(bind_listener(address).map_err(|source| ServerError::Bind { address, source })?);
        }
        let context = Context {
            handshakes: Arc::new(Semaphore::new(config.limits.max_handshakes)),
            hard_stop: CancellationToken::new(),
            limits: config.limits.clone(),
            accept_proxy_from: config.accept_proxy_from.clone(),
            per_ip: IpLimiter::new(config.limits.max_connections_per_ip),
        };
        Ok(Server {
            listeners,
            routes: Arc::new(ArcSwap::new(config.routes)),
            max_connections: config.limits.max_connections,
            context: Arc::new(context),
        })
    }

    /// The bound addresses, in `listen` order (useful with port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().filter_map(|l| l.local_addr().ok()).collect()
    }

    /// The live route table; storing a new one routes new connections with it.
    pub fn route_table(&self) -> Arc<ArcSwap<RouteTable>> {
        self.routes.clone()
    }

    /// Serves until `shutdown` is cancelled, then drains and returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServerError> {
        let connections = TaskTracker::new();
        let permits = Arc::new(Semaphore::new(self.max_connections));
        let mut accept_loops = Vec::new();
        for listener in self.listeners {
            if let Ok(address) = listener.local_addr() {
                tracing::info!(listen = %address, "listening");
            }
            accept_loops.push(tokio::spawn(accept_loop(
                listener,
                self.routes.clone(),
                self.context.clone(),
                permits.clone(),
                connections.clone(),
                shutdown.clone(),
            )));
        }
        shutdown.cancelled().await;
        for accept_loop in accept_loops {
            let _ = accept_loop.await;
        }
        connections.close();
        let drain_timeout = self.context.limits.drain_timeout;
        tracing::info!(live = connections.len(), ?drain_timeout, "draining");
        if tokio::time::timeout(drain_timeout, connections.wait()).await.is_err() {
            tracing::warn!(live = connections.len(), "drain timeout passed; closing the remaining connections");
            self.context.hard_stop.cancel();
            let _ = tokio::time::timeout(FORCED_CLOSE_GRACE, connections.wait()).await;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

fn bind_listener(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(address), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if address.is_ipv6() {
        // `[::]` and `0.0.0.0` on the same port are two listeners, as in the example config.
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    TcpListener::from_std(socket.into())
}

async fn accept_loop(
    listener: TcpListener,
    routes: Arc<ArcSwap<RouteTable>>,
    context: Arc<Context>,
    permits: Arc<Semaphore>,
    connections: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => return,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed; backing off");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        let local = match stream.local_addr() {
            Ok(local) => local,
            Err(error) => {
                tracing::debug!(%error, %peer, "connection gone before it was served");
                continue;
            }
        };
        let context = context.clone();
        let routes = routes.load_full();
        connections.spawn(async move {
            connection::handle(stream, peer, local, routes, context).await;
            drop(permit);
        });
    }
}
