//! Listeners, the accept loop, connection limits, the per-connection tasks, reloads, and shutdown
//! with a bounded drain.
//!
//! A connection permit is taken *before* `accept`, so a full proxy stops accepting (the kernel
//! backlog holds new clients) instead of accepting and dropping. A reload swaps the route table
//! and opens/closes only the listeners whose address came or went. On shutdown `/readyz` fails
//! first, the accept loops stop, live connections get `drain_timeout` to finish, and the rest are
//! closed spread over `close_jitter`.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{self, Config, ConfigErrors};
use crate::metrics::close_cause::CloseCause;
use crate::metrics::Metrics;
use crate::ops::acme::AcmeManager;
use crate::ops::admin::{self, Readiness};
use crate::ops::crl_fetch::CrlFetcher;
use crate::ops::fd_limit::ConnectionCap;
use crate::ops::health::Checker;
use crate::proxy::acme_challenge::TlsAlpnChallenges;
use crate::proxy::connection::{self, Context};
use crate::proxy::handshake_gate::HandshakeGate;
use crate::proxy::ip_limit::IpLimiter;
use crate::proxy::route_limits::RouteAdmission;
use crate::proxy::routes::RouteTable;
use crate::proxy::sessions::Sessions;

/// Pending connections the kernel queues per listener while we are at `max_connections`.
const LISTEN_BACKLOG: i32 = 1024;
/// Pause after an accept error (EMFILE, ENFILE, ENOBUFS) so a full fd table does not spin a core.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// After the close window, how long the last connections may take to go away.
const FORCED_CLOSE_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {address}: {source}")]
    Bind { address: SocketAddr, source: io::Error },
}

/// What a reload changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    pub routes: usize,
    pub listeners_opened: Vec<SocketAddr>,
    pub listeners_closed: Vec<SocketAddr>,
    /// Live sessions closed because a reloaded CRL revokes their client certificate.
    pub revoked_sessions: usize,
    /// What the new config names (for the file watch).
    pub files: Vec<std::path::PathBuf>,
    /// Route names that are new, and names that are gone.
    pub routes_added: usize,
    pub routes_removed: usize,
    /// Terminate routes that kept their session cache and ticket key (clients resume).
    pub routes_sessions_kept: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("{0}")]
    Listen(#[from] ServerError),
    #[error("the server is not running")]
    Stopped,
    #[error("loading the config failed unexpectedly: {0}")]
    Load(tokio::task::JoinError),
}

type ReloadRequest = oneshot::Sender<Result<Reloaded, ReloadError>>;

/// Asks a running server to reload its config file.
#[derive(Debug, Clone)]
pub struct ReloadHandle(mpsc::Sender<ReloadRequest>);

impl ReloadHandle {
    pub async fn reload(&self) -> Result<Reloaded, ReloadError> {
        let (reply, answer) = oneshot::channel();
        self.0.send(reply).await.map_err(|_| ReloadError::Stopped)?;
        answer.await.map_err(|_| ReloadError::Stopped)?
    }
}

/// What the accept loops and connection tasks share.
struct Shared {
    routes: ArcSwap<RouteTable>,
    /// Limits and trusted PROXY peers as of the last load; each connection keeps the one it met.
    context: ArcSwap<Context>,
    permits: Arc<Semaphore>,
    connections: TaskTracker,
}

struct RunningListener {
    stop: CancellationToken,
    local: SocketAddr,
}

/// A bound, not yet running proxy.
pub struct Server {
    config_path: std::path::PathBuf,
    listen: Vec<SocketAddr>,
    bound: Vec<TcpListener>,
    admin: Option<TcpListener>,
    shared: Arc<Shared>,
    readiness: Arc<Readiness>,
    reload_tx: mpsc::Sender<ReloadRequest>,
    reload_rx: mpsc::Receiver<ReloadRequest>,
    watched_files: Vec<std::path::PathBuf>,
    crls: CrlFetcher,
    /// The tasks of the `acme:` certificates, started once the listeners run (the CA validates
    /// through them).
    acme: AcmeManager,
    acme_certificates: Vec<config::AcmeCertificate>,
}

impl Server {
    /// Binds every `listen` address (and `admin`, if set) of the config, after the first fetch of
    /// its `crl_urls` (bounded, see `crl_fetch.rs`).
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        let metrics = Metrics::new();
        let (reload_tx, reload_rx) = mpsc::channel(4);
        let mut crls = CrlFetcher::new(metrics.clone(), ReloadHandle(reload_tx.clone()));
        let config = crls.start(config).await;
        let mut bound = Vec::with_capacity(config.listen.len());
        for &address in &config.listen {
            bound.push(
                bind_listener(address, config.reuse_port).map_err(|source| ServerError::Bind { address, source })?,
            );
        }
        let admin = match config.admin {
            Some(address) => Some(admin::bind(address).await.map_err(|source| ServerError::Bind { address, source })?),
            None => None,
        };
        metrics.config_loaded(true);
        export_certificate_expiry(&metrics, &config.routes);
        let cap = ConnectionCap::for_max_connections(config.limits.max_connections);
        cap.warn_if_lowered();
        metrics.connection_slots(cap.effective);
        let acme_challenges = TlsAlpnChallenges::new();
        let acme = AcmeManager::new(acme_challenges.clone(), metrics.clone(), ReloadHandle(reload_tx.clone()));
        let context = Context {
            handshakes: HandshakeGate::new(config.limits.max_handshakes),
            admission: RouteAdmission::new(),
            hard_stop: CancellationToken::new(),
            acme_challenges,
            accept_proxy_from: config.accept_proxy_from.clone(),
            per_ip: IpLimiter::new(config.limits.max_connections_per_ip),
            sessions: Sessions::new(),
            metrics,
            limits: config.limits.clone(),
        };
        Ok(Server {
            config_path: config.source.clone(),
            listen: config.listen.clone(),
            bound,
            admin,
            shared: Arc::new(Shared {
                routes: ArcSwap::new(config.routes),
                permits: Arc::new(Semaphore::new(cap.effective)),
                connections: TaskTracker::new(),
                context: ArcSwap::from_pointee(context),
            }),
            readiness: Arc::new(Readiness::default()),
            reload_tx,
            reload_rx,
            watched_files: config.files,
            crls,
            acme,
            acme_certificates: config.acme_certificates,
        })
    }

    /// The bound addresses, in `listen` order (useful with port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.bound.iter().filter_map(|l| l.local_addr().ok()).collect()
    }

    /// The admin endpoint's bound address, if one is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.context.load().metrics.clone()
    }

    /// Asks the running server to reload its config file (SIGHUP and the file watch use this).
    pub fn reload_handle(&self) -> ReloadHandle {
        ReloadHandle(self.reload_tx.clone())
    }

    /// The config file and every file it names, as loaded at start (what reload watches).
    pub fn watched_files(&self) -> &[std::path::PathBuf] {
        &self.watched_files
    }

    /// Serves until `shutdown` is cancelled, then drains and returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServerError> {
        self.run_until(shutdown, CancellationToken::new()).await
    }

    /// As [`Server::run`]; cancelling `end_drain` (a second SIGTERM) during the drain closes
    /// every remaining connection at once instead of waiting for `drain_timeout`.
    pub async fn run_until(self, shutdown: CancellationToken, end_drain: CancellationToken) -> Result<(), ServerError> {
        let Server {
            config_path,
            listen,
            bound,
            admin,
            shared,
            readiness,
            reload_rx,
            mut crls,
            mut acme,
            acme_certificates,
            ..
        } = self;
        let context = shared.context.load_full();
        let admin_stop = CancellationToken::new();
        if let Some(listener) = admin {
            if let Ok(local) = listener.local_addr() {
                tracing::info!(admin = %local, "admin endpoint listening");
            }
            tokio::spawn(admin::serve(listener, context.metrics.clone(), readiness.clone(), admin_stop.clone()));
        }
        let mut health = Health {
            checker: Checker {
                sessions: context.sessions.clone(),
                metrics: context.metrics.clone(),
                close_jitter: context.limits.close_jitter,
            },
            stop: CancellationToken::new(),
        };
        health.restart(&shared);

        let mut listeners = HashMap::new();
        for (address, listener) in listen.into_iter().zip(bound) {
            listeners.insert(address, start_listener(listener, &shared));
        }
        readiness.set_listening();
        acme.follow(&acme_certificates);

        let mut reload_rx = reload_rx;
        loop {
            let reply = tokio::select! {
                () = shutdown.cancelled() => break,
                Some(reply) = reload_rx.recv() => reply,
            };
            // The load (parse, read every file, build every TLS config) can take seconds: it runs
            // on a blocking thread so that a SIGTERM meanwhile starts the drain at once.
            let (path, fetched) = (config_path.clone(), crls.snapshot());
            let load = tokio::task::spawn_blocking(move || config::load_with_crls(&path, fetched));
            let loaded = tokio::select! {
                () = shutdown.cancelled() => {
                    tracing::info!("shutting down: the reload in progress is abandoned");
                    let _ = reply.send(Err(ReloadError::Stopped));
                    break;
                }
                loaded = load => loaded,
            };
            let config = loaded.as_ref().ok().and_then(|l| l.as_ref().ok());
            let crl_sources = config.map(|c| c.crl_sources.clone()).unwrap_or_default();
            let acme_certificates = config.map(|c| c.acme_certificates.clone()).unwrap_or_default();
            let result = apply_loaded(loaded, &shared, &mut listeners);
            match &result {
                Ok(reloaded) => {
                    crls.follow(&crl_sources);
                    acme.follow(&acme_certificates);
                    health.checker.close_jitter = shared.context.load().limits.close_jitter;
                    health.restart(&shared);
                    log_reloaded(reloaded);
                }
                Err(error) => tracing::error!(%error, "reload failed; the running config stays"),
            }
            let _ = reply.send(result);
        }

        readiness.set_draining();
        for listener in listeners.values() {
            listener.stop.cancel();
        }
        health.stop.cancel();
        drain(&shared, &end_drain).await;
        admin_stop.cancel();
        tracing::info!("stopped");
        Ok(())
    }
}

/// The health checks of the current route table and the token that stops them.
struct Health {
    checker: Checker,
    stop: CancellationToken,
}

impl Health {
    /// Stops the checks of the previous table and starts those of the current one.
    fn restart(&mut self, shared: &Shared) {
        self.stop.cancel();
        self.stop = CancellationToken::new();
        self.checker.spawn(&shared.routes.load_full(), &self.stop);
    }
}

/// One short line per reload: counts, not the lists (a table of 10,000 routes is one number).
fn log_reloaded(reloaded: &Reloaded) {
    tracing::info!(
        routes = reloaded.routes,
        routes_added = reloaded.routes_added,
        routes_removed = reloaded.routes_removed,
        listeners_opened = reloaded.listeners_opened.len(),
        listeners_closed = reloaded.listeners_closed.len(),
        revoked_sessions = reloaded.revoked_sessions,
        routes_sessions_kept = reloaded.routes_sessions_kept,
        files = reloaded.files.len(),
        "config reloaded"
    );
}

/// Waits `drain_timeout` for live connections, then closes the rest spread over `close_jitter`;
/// `end_drain` cuts this short and closes them all at once.
async fn drain(shared: &Shared, end_drain: &CancellationToken) {
    let context = shared.context.load_full();
    shared.connections.close();
    tracing::info!(live = shared.connections.len(), drain_timeout = ?context.limits.drain_timeout, "draining");
    tokio::select! {
        () = drain_gracefully(shared, &context) => {}
        () = end_drain.cancelled() => {
            tracing::warn!(live = shared.connections.len(), "drain ended early: closing the remaining connections now");
            context.hard_stop.cancel();
            let _ = tokio::time::timeout(FORCED_CLOSE_GRACE, shared.connections.wait()).await;
        }
    }
}

async fn drain_gracefully(shared: &Shared, context: &Context) {
    let (drain_timeout, close_jitter) = (context.limits.drain_timeout, context.limits.close_jitter);
    if tokio::time::timeout(drain_timeout, shared.connections.wait()).await.is_ok() {
        return;
    }
    let relaying = context.sessions.close_where(close_jitter, CloseCause::DrainTimeout, |_| true);
    tracing::warn!(
        live = shared.connections.len(),
        relaying,
        ?close_jitter,
        "drain timeout passed; closing the remaining connections over the jitter window"
    );
    if tokio::time::timeout(close_jitter, shared.connections.wait()).await.is_err() {
        context.hard_stop.cancel();
        let _ = tokio::time::timeout(FORCED_CLOSE_GRACE, shared.connections.wait()).await;
    }
}

/// Applies a config loaded again: routes, listeners, revocations. A failed load changes nothing.
fn apply_loaded(
    loaded: Result<Result<Config, ConfigErrors>, tokio::task::JoinError>,
    shared: &Arc<Shared>,
    listeners: &mut HashMap<SocketAddr, RunningListener>,
) -> Result<Reloaded, ReloadError> {
    let context = shared.context.load_full();
    let metrics = &context.metrics;
    let config = match loaded {
        Ok(Ok(config)) => {
            config.warn_certificate_problems();
            config
        }
        Ok(Err(errors)) => {
            metrics.config_loaded(false);
            return Err(errors.into());
        }
        Err(error) => {
            metrics.config_loaded(false);
            return Err(ReloadError::Load(error));
        }
    };
    // Open new listeners first: a bind failure leaves everything as it was.
    let mut opened = Vec::new();
    for &address in config.listen.iter().filter(|a| !listeners.contains_key(a)) {
        match bind_listener(address, config.reuse_port) {
            Ok(listener) => opened.push((address, listener)),
            Err(source) => {
                metrics.config_loaded(false);
                return Err(ServerError::Bind { address, source }.into());
            }
        }
    }
    let closed: Vec<SocketAddr> = listeners.keys().filter(|a| !config.listen.contains(a)).copied().collect();
    for address in &closed {
        if let Some(listener) = listeners.remove(address) {
            listener.stop.cancel();
            tracing::info!(listen = %listener.local, "listener closed by reload");
        }
    }
    let listeners_opened = opened.iter().filter_map(|(_, l)| l.local_addr().ok()).collect();
    for (address, listener) in opened {
        listeners.insert(address, start_listener(listener, shared));
    }
    let routes = config.routes;
    let (routes_added, routes_removed) = count_added_and_removed(&shared.routes.load(), &routes);
    carry_over_health(&shared.routes.load(), &routes);
    let routes_sessions_kept = carry_over_sessions(&shared.routes.load(), &routes);
    forget_removed_series(metrics, &shared.routes.load(), &routes);
    shared.routes.store(routes.clone());
    forget_unlimited_routes(&context.admission, &routes);
    shared.context.store(Arc::new(apply_settings(&context, &config.limits, config.accept_proxy_from, &shared.permits)));
    metrics.config_loaded(true);
    export_certificate_expiry(metrics, &routes);
    Ok(Reloaded {
        routes: routes.routes().len(),
        listeners_opened,
        listeners_closed: closed,
        revoked_sessions: close_revoked_sessions(&context.sessions, &routes),
        files: config.files,
        routes_added,
        routes_removed,
        routes_sessions_kept,
    })
}

/// How many route names the new table has that the old one had not, and the other way round.
fn count_added_and_removed(old: &RouteTable, new: &RouteTable) -> (usize, usize) {
    let names = |table: &RouteTable| table.routes().iter().map(|r| r.name.clone()).collect::<HashSet<String>>();
    let (old, new) = (names(old), names(new));
    (new.difference(&old).count(), old.difference(&new).count())
}

/// With `revoke_live`, closes live sessions whose client certificate the route's CRLs now revoke.
fn close_revoked_sessions(sessions: &Sessions, routes: &RouteTable) -> usize {
    sessions.close_where(Duration::ZERO, CloseCause::CertificateRevoked, |session| {
        let Some(client) = &session.client_cert else { return false };
        routes
            .routes()
            .iter()
            .filter(|route| route.name == session.route)
            .filter_map(|route| route.tls.as_ref())
            .any(|tls| tls.revoke_live && tls.revokes(client))
    })
}

/// A server that stays in a reloaded route keeps its health state: a down server is not
/// offered to clients again until its checks pass, or (without checks) its passive failures and
/// rest carry over. A route that drops its health check starts its servers up (nothing active
/// could bring them back); one that adds a check starts from the check's view. Backup servers
/// carry over the same way (matched by address, whichever list they were in); the counts of open
/// sessions do not: the new table counts only the sessions it opens.
fn carry_over_health(old: &RouteTable, new: &RouteTable) {
    for route in new.routes() {
        let Some(previous) = old.routes().iter().find(|r| r.name == route.name) else {
            continue;
        };
        let checked = route.backend.health_check.is_some();
        if checked != previous.backend.health_check.is_some() {
            continue;
        }
        for (index, server) in route.backend.servers.iter().enumerate() {
            let Some(before) = previous.backend.servers.iter().position(|s| s == server) else {
                continue;
            };
            if checked {
                let up = previous.backend.server_up[before].load(Ordering::Relaxed);
                route.backend.server_up[index].store(up, Ordering::Relaxed);
            } else {
                route.backend.passive[index].carry_from(&previous.backend.passive[before]);
            }
        }
    }
}

/// A terminate route whose certificates, client CA and client-auth policy are unchanged keeps
/// its session cache and ticket key, so its clients resume after the reload (see
/// `proxy::resumption`). Returns how many routes kept theirs.
fn carry_over_sessions(old: &RouteTable, new: &RouteTable) -> usize {
    new.routes()
        .iter()
        .filter_map(|route| {
            let previous = old.routes().iter().find(|r| r.name == route.name)?;
            Some(route.tls.as_ref()?.carry_sessions_from(previous.tls.as_ref()?))
        })
        .filter(|&kept| kept)
        .count()
}

/// Drops the gauges of routes and servers a reload removed, so alerts on them stop.
fn forget_removed_series(metrics: &Metrics, old: &RouteTable, new: &RouteTable) {
    for route in old.routes() {
        let kept = new.routes().iter().find(|r| r.name == route.name);
        if route.tls.is_some() && kept.is_none_or(|r| r.tls.is_none()) {
            metrics.forget_certificate(&route.name);
        }
        for server in &route.backend.servers {
            if kept.is_none_or(|r| !r.backend.servers.contains(server)) {
                metrics.forget_backend(&route.name, server);
            }
        }
    }
}

/// The connection context for the reloaded limits and trusted PROXY peers; the shared pieces
/// (semaphores, registry, metrics, stop token) carry over, resized where the limits changed.
fn apply_settings(
    old: &Context,
    limits: &crate::proxy::limits::Limits,
    accept_proxy_from: Vec<ipnet::IpNet>,
    connection_slots: &Semaphore,
) -> Context {
    let (old_cap, new_cap) = (
        ConnectionCap::for_max_connections(old.limits.max_connections),
        ConnectionCap::for_max_connections(limits.max_connections),
    );
    if new_cap.configured > old_cap.configured {
        new_cap.warn_if_lowered();
    }
    resize(connection_slots, old_cap.effective, new_cap.effective, "max_connections");
    old.metrics.connection_slots(new_cap.effective);
    old.handshakes.set_capacity(limits.max_handshakes);
    old.per_ip.set_max(limits.max_connections_per_ip);
    Context {
        limits: limits.clone(),
        accept_proxy_from,
        per_ip: old.per_ip.clone(),
        sessions: old.sessions.clone(),
        metrics: old.metrics.clone(),
        handshakes: old.handshakes.clone(),
        admission: old.admission.clone(),
        hard_stop: old.hard_stop.clone(),
        acme_challenges: old.acme_challenges.clone(),
    }
}

/// Grows or shrinks a semaphore from `old` to `new` permits. Permits in use cannot be taken back
/// at once: what could not be forgotten now stays until a later reload lowers it again.
fn resize(semaphore: &Semaphore, old: usize, new: usize, what: &str) {
    if new > old {
        semaphore.add_permits(new - old);
    } else if new < old {
        let forgotten = semaphore.forget_permits(old - new);
        if forgotten < old - new {
            tracing::warn!(limit = what, old, new, forgotten, "lowered limit only partly applied: slots are in use");
        }
    }
}

/// The counts and buckets of routes that no longer have those limits (or no longer exist) go;
/// a route that keeps its limits keeps its open count and its bucket across the reload.
fn forget_unlimited_routes(admission: &RouteAdmission, routes: &RouteTable) {
    let limited: HashMap<&str, (bool, bool)> = routes
        .routes()
        .iter()
        .map(|route| (route.name.as_str(), (route.limits.max_connections.is_some(), route.limits.rate.is_some())))
        .collect();
    admission.retain(|name| limited.get(name).copied().unwrap_or_default());
}

fn export_certificate_expiry(metrics: &Metrics, routes: &RouteTable) {
    for route in routes.routes() {
        if let Some(tls) = &route.tls {
            metrics.certificate_expiry(&route.name, tls.cert_not_after);
        }
    }
}

fn start_listener(listener: TcpListener, shared: &Arc<Shared>) -> RunningListener {
    let stop = CancellationToken::new();
    let local = listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    tracing::info!(listen = %local, "listening");
    tokio::spawn(accept_loop(listener, shared.clone(), stop.clone()));
    RunningListener { stop, local }
}

fn bind_listener(address: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(address), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if address.is_ipv6() {
        // `[::]` and `0.0.0.0` on the same port are two listeners, as in the example config.
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    TcpListener::from_std(socket.into())
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    // A listener on one address tells each connection's local address without a getsockname call.
    let fixed_local = listener.local_addr().ok().filter(|local| !local.ip().is_unspecified());
    loop {
        let permit = tokio::select! {
            () = stop.cancelled() => return,
            permit = shared.permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
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
        let local = match fixed_local.map_or_else(|| stream.local_addr(), Ok) {
            Ok(local) => local,
            Err(error) => {
                tracing::debug!(%error, %peer, "connection gone before it was served");
                continue;
            }
        };
        let context = shared.context.load_full();
        context.metrics.accepted();
        let routes = shared.routes.load_full();
        shared.connections.spawn(connection::handle(stream, peer, local, routes, context, permit));
    }
}
