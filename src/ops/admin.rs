//! The admin HTTP endpoint (`admin:` in the config): `/metrics` (Prometheus text format),
//! `/healthz` (the process answers) and `/readyz` (listening, config loaded, not draining).
//! It serves operators and probes only, so it is plain HTTP/1.1 and keeps nothing per request.
//!
//! It is bounded so that it can never take what the proxy needs: at most
//! [`ADMIN_MAX_CONNECTIONS`] connections (a slot is taken *before* `accept`, as for the proxy's
//! listeners), each of which must send its request head within [`ADMIN_HEADER_TIMEOUT`] (this
//! also closes keep-alive connections idle that long) and is closed after
//! [`ADMIN_CONNECTION_LIFETIME`] whatever it does.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Concurrent admin connections: a scraper, a probe or two and an operator's curl need a handful;
/// the cap keeps idle or hostile admin clients from taking descriptors the proxy's clients need.
pub const ADMIN_MAX_CONNECTIONS: usize = 16;
/// A request head (and, on keep-alive, the next one) must arrive within this: a probe or scraper
/// sends it at once, a slow-loris does not.
pub const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// No admin connection lives longer than this, even one that keeps sending requests or reads
/// its answer slowly; Prometheus and probes simply reconnect.
pub const ADMIN_CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Pause after an accept error (EMFILE, ENFILE) so a full descriptor table does not spin a core.
const ADMIN_ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Whether the proxy should get new connections: the `/readyz` answer.
#[derive(Debug, Default)]
pub struct Readiness {
    listening: AtomicBool,
    draining: AtomicBool,
}

impl Readiness {
    pub fn set_listening(&self) {
        self.listening.store(true, Ordering::Relaxed);
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.listening.load(Ordering::Relaxed) && !self.draining.load(Ordering::Relaxed)
    }
}

/// Binds the admin address; serving starts with [`serve`].
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}

/// Serves admin requests until `stop` is cancelled. A failing admin connection is logged and
/// affects nothing else.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, readiness: Arc<Readiness>, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(ADMIN_MAX_CONNECTIONS));
    loop {
        // At the cap, new admin clients wait in the kernel backlog until a slot frees.
        let slot = tokio::select! {
            () = stop.cancelled() => return,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
        };
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    tokio::time::sleep(ADMIN_ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        tokio::spawn(serve_connection(stream, peer, metrics.clone(), readiness.clone(), slot));
    }
}

/// One admin connection, bounded by the header timeout and the connection lifetime.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    _slot: tokio::sync::OwnedSemaphorePermit,
) {
    let service = hyper::service::service_fn(move |request| {
        let response = respond(&request, &metrics, &readiness);
        async move { Ok::<_, Infallible>(response) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(ADMIN_HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(ADMIN_CONNECTION_LIFETIME, connection).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, %peer, "admin connection ended with an error"),
        Err(_) => tracing::debug!(%peer, "admin connection closed: lifetime reached"),
    }
}

fn respond(request: &Request<Incoming>, metrics: &Metrics, readiness: &Readiness) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match request.uri().path() {
        "/metrics" => {
            let mut response = Response::new(Full::new(Bytes::from(metrics.encode())));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            response
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if readiness.is_ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        _ => text(StatusCode::NOT_FOUND, "not found: try /metrics, /healthz or /readyz\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}
