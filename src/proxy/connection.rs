//! One client connection from accept to close: read the hello, pick the route, terminate or pass
//! through, connect the backend, send the PROXY header, relay — then one access-log line.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{field, Instrument};

use crate::metrics::close_cause::{CloseCause, HandshakeFailure, MqttRefusal};
use crate::metrics::{ActiveConnection, Metrics, RouteMetrics};
use crate::proxy::acme_challenge::TlsAlpnChallenges;
use crate::proxy::backend::{self, ProxyProtocol};
use crate::proxy::handshake_gate::HandshakeGate;
use crate::proxy::hello::{self, Hello, Progress};
use crate::proxy::inbound;
use crate::proxy::ip_limit::{IpLimiter, IpPermit};
use crate::proxy::limits::Limits;
use crate::proxy::linger;
use crate::proxy::mqtt::connect::Connect;
use crate::proxy::mqtt_admission::{self, ConnectFailure};
use crate::proxy::prefixed::Prefixed;
use crate::proxy::proxy_header::{self, Meta, Ssl};
use crate::proxy::relay::{self, Transferred};
use crate::proxy::route::{Mode, Route};
use crate::proxy::route_limits::{LimitRefusal, RouteAdmission, RoutePermit};
use crate::proxy::routes::RouteTable;
use crate::proxy::sessions::{Registration, SessionInfo, Sessions};
use crate::proxy::tls;
use crate::proxy::tls::Session;
use crate::proxy::websocket::{self, Opened, WsError, WsStream};

/// The access log's target, documented and stable: operators filter on it
/// (`RUST_LOG=snigate::connection=info`) whatever module writes the line.
pub const ACCESS_LOG_TARGET: &str = "snigate::connection";

/// How long a terminate connection waits for a handshake slot when `max_handshakes` are running
/// (the proxy's, or its route's fair share).
const HANDSHAKE_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a connection over `handshakes_per_second` waits for a token before it is refused:
/// long enough to smooth a burst, short enough that a client at the limit is told soon.
const RATE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The handshake-gate queue of TLS-ALPN-01 validations: empty, a name no route has (`check`
/// refuses an empty route name).
const ACME_CHALLENGE_SLOTS: &str = "";
/// Fatal `unrecognized_name` alert (TLS record, alert level 2, description 112).
const ALERT_UNRECOGNIZED_NAME: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70];
/// Fatal `internal_error` alert (description 80), before any handshake: a limit refuses the client.
/// TLS has no "busy, try later" alert; this one says the refusal is the server's, not the peer's.
const ALERT_INTERNAL_ERROR: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x50];

/// What every connection task shares.
#[derive(Debug)]
pub struct Context {
    pub limits: Limits,
    /// Peers whose connections start with a PROXY header naming the real client.
    pub accept_proxy_from: Vec<ipnet::IpNet>,
    pub per_ip: Arc<IpLimiter>,
    pub sessions: Arc<Sessions>,
    pub metrics: Arc<Metrics>,
    /// Handshake slots, shared fairly between routes.
    pub handshakes: Arc<HandshakeGate>,
    /// What `routes[].limits` and the proxy's handshake rate count.
    pub admission: Arc<RouteAdmission>,
    /// Cancelled when the drain deadline passes: live relays close.
    pub hard_stop: CancellationToken,
    /// The TLS-ALPN-01 challenges `ops/acme.rs` has pending, answered before routing.
    pub acme_challenges: TlsAlpnChallenges,
}

/// What the access-log line says about a connection, filled in as it progresses.
#[derive(Debug, Default)]
struct Record {
    /// Set once the connection is routed.
    route: Option<Arc<RouteMetrics>>,
    backend: Option<SocketAddr>,
    /// Boxed: most of a connection's life is spent with this record in its task.
    session: Option<Box<Session>>,
    /// A passthrough or tcp route picked for an offered ALPN protocol: that protocol.
    routed_alpn: Option<Box<[u8]>>,
    /// An `mqtt:` route's CONNECT, once read. Boxed for the same reason as `session`.
    mqtt: Option<Box<Connect>>,
    /// The client upgraded to WebSocket (`routes[].websocket`).
    websocket: bool,
    transferred: Transferred,
}

/// Why a connection ended, for logs and metrics, and the details.
#[derive(Debug)]
struct Close {
    cause: CloseCause,
    detail: Option<String>,
}

impl Close {
    fn new(cause: CloseCause) -> Close {
        Close { cause, detail: None }
    }

    fn because(cause: CloseCause, detail: impl ToString) -> Close {
        Close { cause, detail: Some(detail.to_string()) }
    }
}

/// Serves one accepted connection to the end, logging one line when it closes. (A plain function
/// returning the future: an `async fn` would keep a second copy of its arguments in it.)
pub fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    routes: Arc<RouteTable>,
    context: Arc<Context>,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> impl Future<Output = ()> + Send {
    let span = tracing::info_span!(
        "conn",
        peer = %peer,
        via = field::Empty,
        listener = %local,
        sni = field::Empty,
        route = field::Empty,
        mode = field::Empty,
    );
    async move {
        let started = Instant::now();
        let mut record = Record::default();
        let close = tokio::select! {
            biased;
            close = serve(stream, peer, local, &routes, &context, &mut record) => close,
            () = context.hard_stop.cancelled() => Close::new(CloseCause::Shutdown),
        };
        count(&context.metrics, &record, &close);
        let session = record.session.as_deref();
        let mqtt = record.mqtt.as_deref();
        tracing::info!(
            target: ACCESS_LOG_TARGET,
            cause = close.cause.label(),
            detail = close.detail.as_deref(),
            backend = record.backend.map(field::display),
            client_cn = session.and_then(|s| s.client_identity.as_deref()),
            client_serial = session.and_then(|s| s.client_serial.as_deref()),
            tls_version = session.map(|s| s.version),
            tls_resumed = session.map(|s| s.resumed),
            alpn = session.and_then(|s| s.alpn.as_deref()).or(record.routed_alpn.as_deref()).map(String::from_utf8_lossy).as_deref(),
            mqtt_client_id = mqtt.map(|c| c.client_id.as_str()),
            mqtt_username = mqtt.and_then(|c| c.username.as_deref()),
            mqtt_version = mqtt.map(|c| c.version.as_str()),
            mqtt_keepalive_s = mqtt.map(|c| c.keepalive_secs),
            mqtt_clean_start = mqtt.map(|c| c.clean_start),
            transport = record.websocket.then_some("websocket"),
            bytes_in = record.transferred.client_to_backend,
            bytes_out = record.transferred.backend_to_client,
            duration_ms = started.elapsed().as_millis() as u64,
            "connection closed"
        );
        // The connection's `max_connections` slot, given back once it is logged.
        drop(slot);
    }
    .instrument(span)
}

/// A connection read and routed: what its mode needs, and the guards that last the session.
struct Admitted<'r> {
    stream: TcpStream,
    /// The bytes read so far (the hello, or a tcp route's first bytes), replayed to the backend.
    received: Vec<u8>,
    /// The client: the peer, or the address a trusted PROXY header named.
    client: SocketAddr,
    /// `None` on a tcp route reached with non-TLS bytes.
    hello: Option<Hello>,
    route: &'r Route,
    _ip_permit: IpPermit,
    _active: ActiveConnection,
}

/// Admits the connection, then runs its route's mode. Admission is boxed and over before the
/// session starts, so a long-lived session does not keep room for the reads in its task (memory
/// per idle connection); for the same reason the mode's future is boxed. (An `async` block for the
/// reason given at `forward`.)
#[allow(clippy::manual_async_fn)]
fn serve<'a>(
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    routes: &'a RouteTable,
    context: &'a Context,
    record: &'a mut Record,
) -> impl Future<Output = Close> + Send + 'a {
    async move {
        let admitted = match Box::pin(admit(stream, peer, routes, context, record)).await {
            Ok(admitted) => admitted,
            Err(close) => return close,
        };
        let Admitted { stream, received, client, hello, route, _ip_permit, _active } = admitted;
        let conn = Conn { stream, received, client, local, route, context, record };
        match (&route.tls, route.mode, hello) {
            (Some(route_tls), Mode::Terminate, Some(hello)) => Box::pin(terminate(conn, hello, route_tls)).await,
            (None, Mode::Terminate, _) => Box::pin(refuse_certificate_pending(conn.stream)).await,
            (_, _, hello) => Box::pin(forward(conn, hello)).await,
        }
    }
}

/// An admitted connection as its mode takes it: the client side, where it goes, and what it
/// reports to. (The admission guards stay with `serve`, which outlives the mode.)
struct Conn<'a> {
    stream: TcpStream,
    /// The bytes read so far, replayed to the backend (or fed to the TLS handshake).
    received: Vec<u8>,
    client: SocketAddr,
    /// The address the client connected to.
    local: SocketAddr,
    route: &'a Route,
    context: &'a Context,
    record: &'a mut Record,
}

/// Reads the inbound PROXY header (trusted peers) and the hello, and picks the route.
async fn admit<'r>(
    mut stream: TcpStream,
    peer: SocketAddr,
    routes: &'r RouteTable,
    context: &Context,
    record: &mut Record,
) -> Result<Admitted<'r>, Close> {
    let _ = stream.set_nodelay(true);
    let limits = &context.limits;
    let span = tracing::Span::current();
    let deadline = tokio::time::Instant::now() + limits.hello_timeout;
    let (client, already_read) = read_inbound(&mut stream, peer, context, deadline, &span).await?;
    let Some(ip_permit) = context.per_ip.try_acquire(client.ip()) else {
        return Err(Close::because(
            CloseCause::PerIpLimit,
            format!("{} open connections from this address", limits.max_connections_per_ip),
        ));
    };
    let received = match hello::read(&mut stream, already_read, limits.max_hello_bytes, deadline).await {
        Ok(received) => received,
        Err(error) => {
            context.metrics.hello_rejected(error.reason());
            return Err(Close::because(error.reason().cause(), error));
        }
    };
    let hello = match received.progress {
        Progress::Complete(hello) => hello,
        Progress::NotTls if inbound::looks_like_proxy_header(&received.bytes) => {
            return Err(Close::because(
                CloseCause::UntrustedProxyHeader,
                "PROXY header from a peer not in accept_proxy_from",
            ));
        }
        Progress::NotTls => {
            let Some(route) = routes.default_route().filter(|r| r.mode == Mode::Tcp) else {
                return Err(Close::new(CloseCause::NotTls));
            };
            let active = routed(&span, route, context, record);
            let received = received.bytes;
            return Ok(Admitted {
                stream,
                received,
                client,
                hello: None,
                route,
                _ip_permit: ip_permit,
                _active: active,
            });
        }
        Progress::Incomplete => return Err(Close::new(CloseCause::HelloIncomplete)),
    };
    if let Some(name) = &hello.server_name {
        span.record("sni", name.as_str());
    }
    if let Some(config) = context.acme_challenges.config_for(hello.server_name.as_deref(), &hello.alpn) {
        // Boxed: a validation is rare, and its handshake would otherwise grow every admission.
        return Err(Box::pin(answer_acme_challenge(stream, received.bytes, config, context)).await);
    }
    let Some(route) = routes.resolve_with_alpn(hello.server_name.as_deref(), &hello.alpn) else {
        let _ = stream.write_all(&ALERT_UNRECOGNIZED_NAME).await;
        let _ = stream.shutdown().await;
        let cause = match hello.server_name {
            Some(_) => CloseCause::UnknownSni,
            None => CloseCause::NoSni,
        };
        return Err(Close::because(cause, format!("sni {}", hello.sni_status.as_str())));
    };
    let active = routed(&span, route, context, record);
    let received = received.bytes;
    Ok(Admitted { stream, received, client, hello: Some(hello), route, _ip_permit: ip_permit, _active: active })
}

/// An `acme:` route with no certificate yet: the client gets an alert before any handshake.
async fn refuse_certificate_pending(mut stream: TcpStream) -> Close {
    let close = Close::because(CloseCause::CertificatePending, "the ACME certificate is not issued yet");
    refuse_before_handshake(&mut stream, close).await
}

/// Completes a TLS-ALPN-01 validation's handshake with its challenge certificate, then closes:
/// the CA only checks the certificate (RFC 8737 §3), nothing is relayed. The handshake takes a
/// `max_handshakes` slot like any other (under the route name no route has, so it gets a fair
/// share): anyone may offer `acme-tls/1` for a name being validated.
async fn answer_acme_challenge(
    mut stream: TcpStream,
    received: Vec<u8>,
    config: Arc<rustls::ServerConfig>,
    context: &Context,
) -> Close {
    let slot = context.handshakes.acquire(ACME_CHALLENGE_SLOTS, None);
    let Ok(_handshake_permit) = tokio::time::timeout(HANDSHAKE_QUEUE_WAIT, slot).await else {
        let close = Close::because(CloseCause::HandshakeLimit, "TLS-ALPN-01 challenge: no handshake slot");
        return refuse_before_handshake(&mut stream, close).await;
    };
    let answered = async {
        let mut tls_stream = TlsAcceptor::from(config).accept(Prefixed::new(received, stream)).await?;
        // The CA may close first, once it has seen the certificate: not a failure.
        let _ = tls_stream.shutdown().await;
        Ok::<(), std::io::Error>(())
    };
    match tokio::time::timeout(context.limits.handshake_timeout, answered).await {
        Ok(Ok(())) => Close::because(CloseCause::AcmeChallenge, "TLS-ALPN-01 challenge certificate served"),
        Ok(Err(error)) => Close::because(CloseCause::HandshakeFailed, format!("TLS-ALPN-01 challenge: {error}")),
        Err(_) => Close::because(CloseCause::HandshakeTimeout, "TLS-ALPN-01 challenge"),
    }
}

/// From a trusted peer, reads its PROXY header: the client it names (else the peer) and the bytes
/// read past the header.
async fn read_inbound(
    stream: &mut TcpStream,
    peer: SocketAddr,
    context: &Context,
    deadline: tokio::time::Instant,
    span: &tracing::Span,
) -> Result<(SocketAddr, Vec<u8>), Close> {
    if !inbound::is_trusted(&context.accept_proxy_from, peer.ip()) {
        return Ok((peer, Vec::new()));
    }
    let header = inbound::read(stream, deadline).await.map_err(|error| Close::because(error.reason(), error))?;
    let Some(client) = header.client else {
        return Ok((peer, header.rest));
    };
    span.record("peer", field::display(client)).record("via", field::display(peer));
    Ok((client, header.rest))
}

/// Marks the connection as routed: span fields, route metrics, the active-connections gauge.
fn routed(span: &tracing::Span, route: &Route, context: &Context, record: &mut Record) -> ActiveConnection {
    span.record("route", route.name.as_str()).record("mode", route.mode.as_str());
    let metrics = context.metrics.route(&route.name, route.mode.as_str());
    let active = metrics.opened();
    record.route = Some(metrics);
    active
}

/// Connection counters at close: routed connections by cause, the others as rejected.
fn count(metrics: &Metrics, record: &Record, close: &Close) {
    if let Some(route) = &record.route {
        metrics.closed(&route.route, close.cause);
        route.transferred(record.transferred.client_to_backend, record.transferred.backend_to_client);
    }
    match close.cause {
        // Answered as asked, not refused.
        CloseCause::AcmeChallenge => metrics.acme_challenge_answered(),
        cause if record.backend.is_none() => metrics.rejected(cause),
        _ => {}
    }
}

/// Connects the route's backend, counting each failed connect; a shortage of descriptors here is
/// the proxy's, not the backend's.
async fn connect_backend<'r>(
    route: &'r Route,
    client: SocketAddr,
    client_id: Option<&str>,
    context: &Context,
) -> Result<backend::Connected<'r>, Close> {
    let on_event = |event: backend::Event<'_>| match event {
        backend::Event::ConnectFailed(server) => context.metrics.backend_connect_failed(&route.name, server),
        backend::Event::Down(server) => context.metrics.backend_health(&route.name, server, false),
        backend::Event::Up(server) => context.metrics.backend_health(&route.name, server, true),
    };
    Box::pin(backend::connect(&route.backend, client.ip(), client_id, on_event)).await.map_err(|error| {
        if error.is_local_exhaustion() {
            return Close::because(CloseCause::LocalFdExhausted, error);
        }
        Close::because(CloseCause::BackendUnavailable, error)
    })
}

/// Connects the backend; on an `mqtt:` route that none could take, the client reads the
/// server-unavailable CONNACK first, and the connection is half-closed and drained (`linger`).
async fn connect_or_refuse<'r, S: tokio::io::AsyncRead + AsyncWrite + Unpin>(
    client_stream: &mut S,
    route: &'r Route,
    client: SocketAddr,
    context: &Context,
    record: &Record,
) -> Result<backend::Connected<'r>, Close> {
    let client_id = record.mqtt.as_deref().map(|connect| connect.client_id.as_str());
    let close = match connect_backend(route, client, client_id, context).await {
        Ok(connected) => return Ok(connected),
        Err(close) => close,
    };
    if let (Some(connect), CloseCause::BackendUnavailable) = (record.mqtt.as_deref(), close.cause) {
        context.metrics.mqtt_refused(&route.name, MqttRefusal::ServerUnavailable);
        let _ = client_stream.write_all(&mqtt_admission::server_unavailable(connect)).await;
        linger::close_after_refusal(client_stream).await;
    }
    Err(close)
}

/// On an `mqtt:` route, reads the CONNECT (after `received`) and returns the bytes to forward; on
/// other routes, `received` as it is. A refused client gets its CONNACK, if it has one, before a
/// lingering close.
async fn mqtt_connect<S: tokio::io::AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    received: Vec<u8>,
    route: &Route,
    context: &Context,
    record: &mut Record,
    identity: Option<&str>,
) -> Result<Vec<u8>, Close> {
    let Some(settings) = &route.mqtt else {
        return Ok(received);
    };
    let read = mqtt_admission::read_connect(stream, received, settings).await;
    match read.and_then(|read| mqtt_admission::admit(read, settings, identity)) {
        Ok(read) => {
            context.metrics.mqtt_connect(&route.name, read.connect.version.as_str());
            record.mqtt = Some(Box::new(read.connect));
            Ok(read.bytes)
        }
        Err(ConnectFailure::Refused { reason, error, connack }) => {
            context.metrics.mqtt_refused(&route.name, reason);
            if !connack.is_empty() {
                let _ = stream.write_all(&connack).await;
                linger::close_after_refusal(stream).await;
            }
            Err(Close::because(reason.cause(), error))
        }
        Err(error @ ConnectFailure::ClientClosed) => Err(Close::because(CloseCause::ClientClosed, error)),
        Err(ConnectFailure::Io(error)) => Err(client_io_close(error, CloseCause::ClientIo)),
        Err(error @ ConnectFailure::Identity(_)) => Err(Close::because(CloseCause::BadClientIdentity, error)),
    }
}

/// A resumed session's client certificate, verified again against the route's current CA, CRLs
/// and time (`resumption`): a certificate revoked since the session began is refused as a full
/// handshake would refuse it, counted and logged alike. rustls can send no alert once the
/// handshake is done, so the client reads close_notify.
async fn recheck_resumed(
    tls_stream: &mut tokio_rustls::server::TlsStream<Prefixed<TcpStream>>,
    route: &Route,
    route_tls: &tls::RouteTls,
    context: &Context,
    record: &mut Record,
) -> Result<(), Close> {
    let Err(error) = route_tls.recheck_resumed(tls_stream.get_ref().1) else {
        return Ok(());
    };
    context.metrics.handshake_failed(&route.name, tls::tls_failure_reason(&error));
    record.session = Session::from_connection(tls_stream.get_ref().1, route_tls.identity).ok().map(Box::new);
    let _ = tls_stream.shutdown().await;
    Err(Close::because(CloseCause::HandshakeFailed, format!("resumed session: {error}")))
}

/// After the handshake: the session's facts. A client refused here is closed with close_notify.
async fn session_of(
    tls_stream: &mut tokio_rustls::server::TlsStream<Prefixed<TcpStream>>,
    route_tls: &tls::RouteTls,
) -> Result<Session, Close> {
    match Session::from_connection(tls_stream.get_ref().1, route_tls.identity) {
        Ok(session) => Ok(session),
        Err(error) => {
            let _ = tls_stream.shutdown().await;
            Err(Close::because(CloseCause::BadClientIdentity, error))
        }
    }
}

/// Registers the session for targeted closing (backend down, revocation, drain) and returns the
/// token its relay stops on.
fn register(
    route: &Route,
    server_index: usize,
    session: Option<&Session>,
    context: &Context,
) -> (Registration, CancellationToken) {
    let stop = context.hard_stop.child_token();
    let info = SessionInfo {
        route: route.name.clone(),
        backend_server: route.backend.servers[server_index].clone(),
        client_cert: session.and_then(|s| s.client_cert_id.clone()),
    };
    (context.sessions.register(info, stop.clone()), stop)
}

/// Passthrough and tcp routes: the client's bytes go to the backend unchanged, after the header.
/// On a tcp route with `websocket:`, the upgrade is answered first and an upgraded client goes on
/// in [`forward_websocket`].
/// (A plain function returning an `async` block, the `Conn` taken apart before it: an `async fn`
/// keeps a second copy of its arguments in its future, for the session's whole life.)
#[allow(clippy::manual_async_fn)]
fn forward<'a>(conn: Conn<'a>, hello: Option<Hello>) -> impl Future<Output = Close> + Send + 'a {
    let Conn { stream, received, client, local, route, context, record } = conn;
    async move {
        let mut stream = stream;
        let received = match &route.websocket {
            None => received,
            // Boxed: the request head's reads take no room in the session's future.
            Some(settings) => {
                match Box::pin(websocket::open(&mut stream, received, settings, context.limits.hello_timeout)).await {
                    Ok(Opened::PlainMqtt { received }) => received,
                    Ok(Opened::WebSocket { rest }) => {
                        record.websocket = true;
                        let ws = WsStream::new(Prefixed::new(rest, stream), settings.max_message_bytes);
                        return Box::pin(forward_websocket(ws, client, local, route, context, record)).await;
                    }
                    Err(failure) => return Close::because(failure.cause(), failure),
                }
            }
        };
        // Boxed: the CONNECT's reads take no room in the session's future.
        let received = match route.mqtt {
            None => received,
            Some(_) => match Box::pin(mqtt_connect(&mut stream, received, route, context, record, None)).await {
                Ok(received) => received,
                Err(close) => return close,
            },
        };
        let _route_permit = match take_route_place(route, context).await {
            Ok(permit) => permit,
            Err(refusal) => {
                return Box::pin(refuse_forward(&mut stream, refusal, hello.is_some(), route, context, record)).await
            }
        };
        // Taken apart so that only the session count's guard stays for the session's life.
        let backend::Connected { stream: backend_stream, server, index, load: _load } =
            match connect_or_refuse(&mut stream, route, client, context, record).await {
                Ok(connected) => connected,
                Err(close) => return close,
            };
        record.backend = Some(server);
        let (registration, stop) = register(route, index, None, context);
        record.routed_alpn = hello.as_ref().and_then(|h| route.matched_alpn(&h.alpn)).map(Box::from);
        let mut backend_stream = backend_stream;
        let first_write = send_first_write(&mut backend_stream, route, client, local, hello.as_ref(), received);
        let replayed_bytes = match first_write.await {
            Ok(replayed_bytes) => replayed_bytes,
            Err(close) => return close,
        };
        // The hello's names are in the header now; the session does not keep them.
        drop(hello);
        #[cfg(target_os = "linux")]
        let (transferred, end) =
            crate::proxy::relay::splice::relay(stream, backend_stream, context.limits.idle_timeout, &stop).await;
        #[cfg(not(target_os = "linux"))]
        let (transferred, end) = relay::relay(stream, backend_stream, context.limits.idle_timeout, &stop).await;
        record.transferred = transferred;
        record.transferred.client_to_backend += replayed_bytes;
        end_to_close(end, &registration)
    }
}

/// A tcp route's WebSocket client: on an `mqtt:` route the CONNECT, then the backend, the header,
/// and the buffered relay over the frames (splice cannot unwrap them).
/// (An `async` block for the reason given at `forward`.)
#[allow(clippy::manual_async_fn)]
fn forward_websocket<'a>(
    ws: WsStream<Prefixed<TcpStream>>,
    client: SocketAddr,
    local: SocketAddr,
    route: &'a Route,
    context: &'a Context,
    record: &'a mut Record,
) -> impl Future<Output = Close> + Send + 'a {
    async move {
        let mut ws = ws;
        let received = match Box::pin(mqtt_connect(&mut ws, Vec::new(), route, context, record, None)).await {
            Ok(received) => received,
            Err(close) => return close,
        };
        let _route_permit = match take_route_place(route, context).await {
            Ok(permit) => permit,
            Err(refusal) => return Box::pin(refuse_forward(&mut ws, refusal, false, route, context, record)).await,
        };
        let backend::Connected { stream: mut backend_stream, server, index, load: _load } =
            match connect_or_refuse(&mut ws, route, client, context, record).await {
                Ok(connected) => connected,
                Err(close) => return close,
            };
        record.backend = Some(server);
        let (registration, stop) = register(route, index, None, context);
        let first_write = send_first_write(&mut backend_stream, route, client, local, None, received);
        let replayed_bytes = match first_write.await {
            Ok(replayed_bytes) => replayed_bytes,
            Err(close) => return close,
        };
        let (transferred, end) = relay::relay(ws, backend_stream, context.limits.idle_timeout, &stop).await;
        record.transferred = transferred;
        record.transferred.client_to_backend += replayed_bytes;
        end_to_close(end, &registration)
    }
}

/// Terminate routes: TLS handshake with the route's config (fed the buffered hello first), then
/// the backend, the header with the SSL TLV, and a plaintext relay ([`serve_terminated`]); on a
/// `websocket:` route the upgrade comes after the handshake, and the relay runs over [`WsStream`].
/// (An `async` block for the reason given at `forward`.)
#[allow(clippy::manual_async_fn)]
fn terminate<'a>(
    conn: Conn<'a>,
    hello: Hello,
    route_tls: &'a tls::RouteTls,
) -> impl Future<Output = Close> + Send + 'a {
    let Conn { mut stream, received, client, local, route, context, record } = conn;
    async move {
        let limits = &context.limits;
        let _route_permit = match take_route_place(route, context).await {
            Ok(permit) => permit,
            Err(refusal) => return refuse_before_handshake(&mut stream, limit_close(refusal, route, limits)).await,
        };
        let slot = context.handshakes.acquire(&route.name, route.limits.max_handshakes);
        let Ok(handshake_permit) = tokio::time::timeout(HANDSHAKE_QUEUE_WAIT, slot).await else {
            let (in_progress, of_route) = context.handshakes.in_progress(&route.name);
            let detail = format!("{in_progress} handshakes in progress, {of_route} of this route");
            return refuse_before_handshake(&mut stream, Close::because(CloseCause::HandshakeLimit, detail)).await;
        };
        let started = std::time::Instant::now();
        // Boxed, like the TLS stream below: the task then keeps only pointers for the session's life
        // instead of space for the whole handshake state (memory per idle connection).
        let handshake =
            Box::pin(TlsAcceptor::from(tls_config(route, route_tls, &hello)).accept(Prefixed::new(received, stream)));
        let mut tls_stream = match tokio::time::timeout(limits.handshake_timeout, handshake).await {
            Err(_) => {
                context.metrics.handshake_failed(&route.name, HandshakeFailure::Timeout);
                return Close::because(CloseCause::HandshakeTimeout, format!("after {:?}", limits.handshake_timeout));
            }
            Ok(Err(error)) => {
                context.metrics.handshake_failed(&route.name, tls::failure_reason(&error));
                return Close::because(CloseCause::HandshakeFailed, error);
            }
            Ok(Ok(tls_stream)) => Box::new(tls_stream),
        };
        // The slot bounds handshakes in progress, not sessions: give it back now.
        drop(handshake_permit);
        if let Err(close) = recheck_resumed(&mut tls_stream, route, route_tls, context, record).await {
            return close;
        }
        if let Some(route_metrics) = &record.route {
            let resumed = tls_stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            route_metrics.handshake(started.elapsed(), resumed);
        }
        let session = match session_of(&mut tls_stream, route_tls).await {
            Ok(session) => session,
            Err(close) => return close,
        };
        let terminated = Terminated { route, route_tls, client, local, context, record, hello, session };
        let Some(settings) = &route.websocket else {
            return Box::pin(serve_terminated(tls_stream, Vec::new(), terminated)).await;
        };
        // Boxed: the request head's reads take no room in the session's future.
        match Box::pin(websocket::open(&mut tls_stream, Vec::new(), settings, limits.hello_timeout)).await {
            Ok(Opened::PlainMqtt { received }) => Box::pin(serve_terminated(tls_stream, received, terminated)).await,
            Ok(Opened::WebSocket { rest }) => {
                terminated.record.websocket = true;
                let ws = WsStream::new(Prefixed::new(rest, tls_stream), settings.max_message_bytes);
                Box::pin(serve_terminated(ws, Vec::new(), terminated)).await
            }
            Err(failure) => {
                terminated.record.session = Some(Box::new(terminated.session));
                Close::because(failure.cause(), failure)
            }
        }
    }
}

/// A terminated connection past its handshake: what the rest of its session needs.
struct Terminated<'a> {
    route: &'a Route,
    route_tls: &'a tls::RouteTls,
    client: SocketAddr,
    local: SocketAddr,
    context: &'a Context,
    record: &'a mut Record,
    hello: Hello,
    session: Session,
}

/// A terminated client's stream (TLS, or WebSocket over TLS) from its first bytes on: on an
/// `mqtt:` route the CONNECT (after `received`), then the backend, the header with the SSL TLV
/// and a plaintext relay. (An `async` block for the reason given at `forward`.)
#[allow(clippy::manual_async_fn)]
fn serve_terminated<'a, S>(
    mut stream: S,
    received: Vec<u8>,
    terminated: Terminated<'a>,
) -> impl Future<Output = Close> + Send + 'a
where
    S: tokio::io::AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Terminated { route, route_tls, client, local, context, record, hello, session } = terminated;
    async move {
        let identity = session.client_identity.as_deref();
        let connect_bytes = match Box::pin(mqtt_connect(&mut stream, received, route, context, record, identity)).await
        {
            Ok(connect_bytes) => connect_bytes,
            Err(close) => {
                record.session = Some(Box::new(session));
                let _ = stream.shutdown().await;
                return close;
            }
        };
        let backend::Connected { stream: mut backend_stream, server, index, load: _load } =
            match connect_or_refuse(&mut stream, route, client, context, record).await {
                Ok(connected) => connected,
                Err(close) => {
                    record.session = Some(Box::new(session));
                    let _ = stream.shutdown().await;
                    return close;
                }
            };
        record.backend = Some(server);
        let (registration, stop) = register(route, index, Some(&session), context);
        let replayed_bytes = connect_bytes.len() as u64;
        let first_write = terminate_header(route, route_tls, client, local, &hello, &session, connect_bytes);
        drop(hello);
        record.session = Some(Box::new(session));
        match first_write {
            Ok(first_write) if first_write.is_empty() => {}
            Ok(first_write) => {
                if let Err(error) = backend_stream.write_all(&first_write).await {
                    let _ = stream.shutdown().await;
                    return Close::because(CloseCause::BackendError, error);
                }
            }
            Err(close) => {
                let _ = stream.shutdown().await;
                return close;
            }
        }
        let (transferred, end) = relay::relay(stream, backend_stream, context.limits.idle_timeout, &stop).await;
        record.transferred = transferred;
        record.transferred.client_to_backend += replayed_bytes;
        end_to_close(end, &registration)
    }
}

/// The route's limits before its costly step (the TLS handshake, or the backend's): a place
/// under its `max_connections`, then a token of its and the proxy's `handshakes_per_second`,
/// waited for (at most [`RATE_WAIT`]). Nothing here touches a route without limits.
async fn take_route_place(route: &Route, context: &Context) -> Result<RoutePermit, LimitRefusal> {
    let (permit, wait) =
        context.admission.admit(&route.name, &route.limits, context.limits.handshake_rate, RATE_WAIT)?;
    if !wait.is_zero() {
        // Boxed, and only when there is a wait: the timer takes no room in the session's future.
        Box::pin(tokio::time::sleep(wait)).await;
    }
    Ok(permit)
}

/// The close of a client a limit refused: its cause, and which limit at what value.
fn limit_close(refusal: LimitRefusal, route: &Route, limits: &Limits) -> Close {
    Close::because(refusal.cause(), refusal.detail(&route.limits, limits.handshake_rate))
}

/// A limit refused a TLS client before its handshake: a fatal `internal_error` alert, then close.
/// No handshake was started, so the refusal costs two syscalls.
async fn refuse_before_handshake<S: AsyncWrite + Unpin>(stream: &mut S, close: Close) -> Close {
    let _ = stream.write_all(&ALERT_INTERNAL_ERROR).await;
    let _ = stream.shutdown().await;
    close
}

/// A limit refused a passthrough or tcp client: the TLS alert if it sent a hello, the CONNACK
/// if an `mqtt:` route read its CONNECT (then a lingering close), else a plain close.
async fn refuse_forward<S: tokio::io::AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    refusal: LimitRefusal,
    sent_hello: bool,
    route: &Route,
    context: &Context,
    record: &Record,
) -> Close {
    let close = limit_close(refusal, route, &context.limits);
    if let Some(connect) = record.mqtt.as_deref() {
        context.metrics.mqtt_refused(&route.name, refusal.mqtt_refusal());
        let _ = stream.write_all(&crate::proxy::mqtt::connack::refusal(connect.version, refusal.connack())).await;
        linger::close_after_refusal(stream).await;
        return close;
    }
    if sent_hello {
        return refuse_before_handshake(stream, close).await;
    }
    let _ = stream.shutdown().await;
    close
}

// The headers are built in plain functions: in the async ones, `Meta` would take space in the
// connection's future for the session's whole life.

/// A passthrough or tcp connection's one first write to the backend: the route's PROXY header,
/// then the bytes read so far (the hello, a CONNECT); returns how many of those the client sent.
/// Nothing is written when both are empty.
async fn send_first_write(
    backend_stream: &mut TcpStream,
    route: &Route,
    client: SocketAddr,
    local: SocketAddr,
    hello: Option<&Hello>,
    received: Vec<u8>,
) -> Result<u64, Close> {
    let mut first_write = forward_header(route, client, local, hello)?;
    first_write.extend_from_slice(&received);
    if let Err(error) = backend_stream.write_all(&first_write).await {
        return Err(Close::because(CloseCause::BackendError, error));
    }
    Ok(received.len() as u64)
}

/// A passthrough or tcp connection's PROXY header.
fn forward_header(
    route: &Route,
    client: SocketAddr,
    local: SocketAddr,
    hello: Option<&Hello>,
) -> Result<Vec<u8>, Close> {
    let meta = Meta {
        source: Some(client),
        destination: Some(local),
        authority: hello.and_then(|h| h.server_name.as_deref()),
        // The protocol the route was picked for, else the client's first.
        alpn: hello.and_then(|h| route.matched_alpn(&h.alpn).or(h.alpn.first().map(Vec::as_slice))),
        ssl: None,
    };
    header(route.backend.proxy_protocol, &meta)
}

/// The route's TLS config for this hello: the one that negotiates the protocol it was picked for.
fn tls_config(route: &Route, route_tls: &tls::RouteTls, hello: &Hello) -> Arc<rustls::ServerConfig> {
    route_tls.server_config_for(route.matched_alpn(&hello.alpn)).clone()
}

/// A terminated connection's first write to the backend: the PROXY header, with the SSL TLV,
/// then `first_bytes` (an `mqtt:` route's CONNECT).
fn terminate_header(
    route: &Route,
    route_tls: &tls::RouteTls,
    client: SocketAddr,
    local: SocketAddr,
    hello: &Hello,
    session: &Session,
    first_bytes: Vec<u8>,
) -> Result<Vec<u8>, Close> {
    let served = route_tls.served_for(hello.server_name.as_deref());
    let meta = Meta {
        source: Some(client),
        destination: Some(local),
        authority: hello.server_name.as_deref(),
        alpn: session.alpn.as_deref(),
        ssl: Some(Ssl {
            cert_in_session: session.client_cert,
            cert_in_connection: session.client_cert_this_connection,
            version: session.version,
            common_name: session.client_identity.as_deref(),
            cipher: session.cipher,
            sig_alg: &served.leaf.sig_alg,
            key_alg: &served.leaf.key_alg,
        }),
    };
    let mut first_write = header(route.backend.proxy_protocol, &meta)?;
    first_write.extend_from_slice(&first_bytes);
    Ok(first_write)
}

/// The route's PROXY header for this connection (empty when the route sends none).
fn header(version: ProxyProtocol, meta: &Meta) -> Result<Vec<u8>, Close> {
    match version {
        ProxyProtocol::None => Ok(Vec::new()),
        ProxyProtocol::V1 => Ok(proxy_header::encode_v1(meta)),
        ProxyProtocol::V2 => {
            proxy_header::encode_v2(meta).map_err(|error| Close::because(CloseCause::ProxyHeader, error))
        }
    }
}

/// The close cause of a finished relay; a registry close says why (backend down, revoked, drain).
fn end_to_close(end: relay::End, registration: &Registration) -> Close {
    let cause = end.cause();
    match end {
        // A pipe or socket the relay could not open: the proxy's shortage, not either peer's fault.
        relay::End::ClientError(error) | relay::End::BackendError(error)
            if crate::proxy::fd_exhaustion::is_exhaustion(&error) =>
        {
            Close::because(CloseCause::LocalFdExhausted, error)
        }
        relay::End::ClientError(error) => client_io_close(error, cause),
        relay::End::BackendError(error) => Close::because(cause, error),
        relay::End::Shutdown => Close::new(registration.close_reason().unwrap_or(cause)),
        _ => Close::new(cause),
    }
}

/// A failed read or write on the client's stream: a WebSocket violation (the client read its
/// close code) is closed with its own cause, anything else with `cause`.
fn client_io_close(error: std::io::Error, cause: CloseCause) -> Close {
    match WsError::of(&error) {
        Some(violation) => Close::because(websocket::frame_error_cause(violation), violation),
        None => Close::because(cause, error),
    }
}
