//! The CRLs of `tls.crl_urls`: one task per distinct URL fetches it (HTTP GET, bounded in time
//! and size), checks that it is a CRL, and keeps the last good one in memory. A load reads them
//! as [`FetchedCrls`], so `config` and `proxy` see CRLs, never URLs.
//!
//! At start the server waits up to [`START_WAIT`] for every URL's first fetch and builds its
//! routes with what came; a route still missing one refuses client certificates until it comes
//! (`proxy/fetched_crls.rs`). Afterwards a fetch that changes a CRL asks for a reload, the same
//! path as SIGHUP: the verifiers are rebuilt and `revoke_live` closes the sessions it now revokes.
//! A failed fetch keeps the last good CRL and retries with back-off (`crl_schedule.rs`); a CRL
//! past its nextUpdate with no fresh one is logged at every attempt and shows in
//! `snigate_crl_next_update_timestamp_seconds`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{HOST, USER_AGENT};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

use crate::config::{self, Config, CrlSource, FetchedCrls};
use crate::metrics::Metrics;
use crate::ops::clock::unix_now;
use crate::ops::crl_schedule::{next_fetch_in, Outcome};
use crate::ops::server::ReloadHandle;
use crate::proxy::fetched_crls::Crls;
use crate::proxy::pem_files;

/// How long the server waits at start for every URL's first fetch before it serves: long enough
/// for a distribution point on the network, short enough that a dead one does not stall a restart.
pub const START_WAIT: Duration = Duration::from_secs(5);
/// One fetch, connect to last byte: a CRL is small, a slow server is retried later.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest CRL accepted: large CAs publish a few MiB; more is not a CRL we want in memory.
const MAX_CRL_BYTES: usize = 16 * 1024 * 1024;
/// The port of an `http://` URL without one.
const HTTP_PORT: u16 = 80;
const USER_AGENT_VALUE: &str = concat!("snigate/", env!("CARGO_PKG_VERSION"));

/// Why a fetch gave no usable CRL.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no complete answer within {FETCH_TIMEOUT:?}")]
    Timeout,
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("cannot build the request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("answered HTTP {0}")]
    Status(StatusCode),
    #[error("the answer is over {MAX_CRL_BYTES} bytes")]
    TooLarge,
    #[error("reading the answer: {0}")]
    Body(String),
    #[error("not a CRL: {0}")]
    NotCrl(String),
    #[error("older than the CRL in use (thisUpdate {fetched} before {held}): kept the one in use")]
    Older { fetched: i64, held: i64 },
}

/// A URL's last good CRL.
#[derive(Debug, Clone)]
struct HeldCrl {
    bytes: Vec<u8>,
    crls: Crls,
    /// Unix seconds; with several CRLs in one answer, the oldest thisUpdate and first nextUpdate.
    this_update: i64,
    next_update: Option<i64>,
}

/// What the fetch tasks share with the server.
struct Shared {
    held: Mutex<HashMap<String, HeldCrl>>,
    metrics: Arc<Metrics>,
    reload: ReloadHandle,
    /// Set once the start has taken its snapshot: a change after that needs a reload.
    live: AtomicBool,
}

/// A followed URL's task.
struct Following {
    refresh: Duration,
    stop: CancellationToken,
}

/// The fetch tasks of the running config's `crl_urls` and their last good CRLs.
pub struct CrlFetcher {
    shared: Arc<Shared>,
    tasks: HashMap<String, Following>,
}

impl Drop for CrlFetcher {
    fn drop(&mut self) {
        self.tasks.values().for_each(|task| task.stop.cancel());
    }
}

impl CrlFetcher {
    pub fn new(metrics: Arc<Metrics>, reload: ReloadHandle) -> CrlFetcher {
        let shared = Shared { held: Mutex::default(), metrics, reload, live: AtomicBool::new(false) };
        CrlFetcher { shared: Arc::new(shared), tasks: HashMap::new() }
    }

    /// Starts following `config`'s URLs, waits up to [`START_WAIT`] for their first fetches and
    /// returns the config loaded again with what came (or `config` when nothing did).
    pub async fn start(&mut self, config: Config) -> Config {
        let first = self.follow(&config.crl_sources);
        let all_tried = async {
            for tried in first {
                let _ = tried.await;
            }
        };
        if tokio::time::timeout(START_WAIT, all_tried).await.is_err() {
            tracing::warn!(wait = ?START_WAIT, "not every CRL URL answered in time; serving without those CRLs");
        }
        // Before the snapshot: a CRL arriving after it then asks for a reload.
        self.shared.live.store(true, Ordering::SeqCst);
        let fetched = self.snapshot();
        if fetched.is_empty() {
            return config;
        }
        let path = config.source.clone();
        match tokio::task::spawn_blocking(move || config::load_with_crls(&path, fetched)).await {
            Ok(Ok(loaded)) => loaded,
            Ok(Err(errors)) => {
                tracing::error!(%errors, "the config changed during the first CRL fetch and no longer loads; serving the first load");
                config
            }
            Err(error) => {
                tracing::error!(%error, "loading with the fetched CRLs failed; serving the first load");
                config
            }
        }
    }

    /// Follows exactly `sources` from now on: tasks for new URLs (or a changed `crl_refresh`),
    /// none for URLs gone (their CRL and metrics are dropped). Each new task signals its first
    /// fetch on the returned receivers.
    pub fn follow(&mut self, sources: &[CrlSource]) -> Vec<oneshot::Receiver<()>> {
        let gone: Vec<String> =
            self.tasks.keys().filter(|url| !sources.iter().any(|source| &source.url == *url)).cloned().collect();
        for url in gone {
            self.unfollow(&url);
        }
        let mut first_fetches = Vec::new();
        for source in sources {
            if self.tasks.get(&source.url).is_some_and(|task| task.refresh == source.refresh) {
                continue;
            }
            if let Some(previous) = self.tasks.remove(&source.url) {
                previous.stop.cancel();
            }
            let (tried, first_fetch) = oneshot::channel();
            let stop = CancellationToken::new();
            self.shared.metrics.crl_followed(&source.url);
            tokio::spawn(follow_url(self.shared.clone(), source.clone(), tried, stop.clone()));
            self.tasks.insert(source.url.clone(), Following { refresh: source.refresh, stop });
            first_fetches.push(first_fetch);
        }
        first_fetches
    }

    fn unfollow(&mut self, url: &str) {
        if let Some(task) = self.tasks.remove(url) {
            task.stop.cancel();
        }
        self.shared.held.lock().unwrap_or_else(|p| p.into_inner()).remove(url);
        self.shared.metrics.forget_crl(url);
    }

    /// The last good CRL of every URL, for a load.
    pub fn snapshot(&self) -> FetchedCrls {
        let held = self.shared.held.lock().unwrap_or_else(|p| p.into_inner());
        let mut fetched = FetchedCrls::default();
        for (url, crl) in held.iter() {
            fetched.insert(url.clone(), crl.crls.clone());
        }
        fetched
    }
}

/// Fetches `source` until `stop`: once at once (signalled on `tried`), then on the schedule.
async fn follow_url(shared: Arc<Shared>, source: CrlSource, tried: oneshot::Sender<()>, stop: CancellationToken) {
    let mut tried = Some(tried);
    let mut attempts_without_fresh = 0u32;
    loop {
        let fetched = tokio::select! {
            () = stop.cancelled() => return,
            fetched = fetch(&source.uri) => fetched,
        };
        let next_update = shared.take(&source.url, fetched).await;
        if let Some(tried) = tried.take() {
            let _ = tried.send(());
        }
        let now = unix_now();
        let outcome = match next_update {
            Some(next_update) if next_update.is_none_or(|at| at > now) => {
                attempts_without_fresh = 0;
                Outcome::Fresh { next_update }
            }
            _ => {
                attempts_without_fresh = attempts_without_fresh.saturating_add(1);
                Outcome::Retry { attempts: attempts_without_fresh }
            }
        };
        let delay = next_fetch_in(outcome, now, source.refresh, fastrand::f64());
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

impl Shared {
    /// Takes a fetch's result: keeps a good new CRL (asking for a reload when it changed what is
    /// loaded), counts and logs a failure. Returns the new CRL's nextUpdate (`Some(None)`: it has
    /// none), or `None` when the fetch gave no usable CRL.
    async fn take(&self, url: &str, fetched: Result<Vec<u8>, FetchError>) -> Option<Option<i64>> {
        let held_this_update = self.held(url).map(|held| held.this_update);
        let taken = match fetched.and_then(|bytes| accept(bytes, held_this_update)) {
            Ok(crl) => {
                self.metrics.crl_in_use(url, crl.this_update, crl.next_update);
                let next_update = crl.next_update;
                if self.keep(url, crl) && self.live.load(Ordering::SeqCst) {
                    self.reload_for(url).await;
                }
                Some(next_update)
            }
            Err(error) => {
                self.metrics.crl_fetch_failed(url);
                tracing::warn!(url, %error, "CRL fetch failed; keeping the last good CRL, retrying");
                None
            }
        };
        report_unusable(url, self.held(url).as_ref());
        taken
    }

    fn held(&self, url: &str) -> Option<HeldCrl> {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).get(url).cloned()
    }

    /// Keeps `crl` for `url`; true when its bytes differ from the CRL held.
    fn keep(&self, url: &str, crl: HeldCrl) -> bool {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let changed = held.get(url).is_none_or(|old| old.bytes != crl.bytes);
        held.insert(url.to_string(), crl);
        changed
    }

    async fn reload_for(&self, url: &str) {
        tracing::info!(url, "CRL changed; reloading");
        match self.reload.reload().await {
            Ok(reloaded) => tracing::info!(url, revoked_sessions = reloaded.revoked_sessions, "reloaded for a new CRL"),
            Err(error) => tracing::error!(url, %error, "reload for a new CRL failed; the running config stays"),
        }
    }
}

/// Logs a URL whose routes have no CRL at all (they refuse client certificates) or only one past
/// its nextUpdate (still used: an old CRL revokes more than none).
fn report_unusable(url: &str, held: Option<&HeldCrl>) {
    match held {
        None => tracing::warn!(url, "no CRL from this URL yet: routes naming it refuse client certificates"),
        Some(HeldCrl { next_update: Some(next_update), .. }) if *next_update <= unix_now() => {
            tracing::warn!(
                url,
                next_update,
                "the CRL in use is past its nextUpdate and no fresh one came; still using it"
            );
        }
        Some(_) => {}
    }
}

/// Checks fetched bytes: PEM or DER CRLs that parse, not older than the one held.
fn accept(bytes: Vec<u8>, held_this_update: Option<i64>) -> Result<HeldCrl, FetchError> {
    let crls = pem_files::parse_crls(bytes.clone()).map_err(FetchError::NotCrl)?;
    let (this_update, next_update) = crl_dates(&crls)?;
    if let Some(held) = held_this_update.filter(|&held| this_update < held) {
        return Err(FetchError::Older { fetched: this_update, held });
    }
    Ok(HeldCrl { bytes, crls: Arc::new(crls), this_update, next_update })
}

/// The oldest thisUpdate and the first nextUpdate of the CRLs, Unix seconds.
fn crl_dates(crls: &[rustls_pki_types::CertificateRevocationListDer<'_>]) -> Result<(i64, Option<i64>), FetchError> {
    let mut this_update = i64::MAX;
    let mut next_update: Option<i64> = None;
    for der in crls {
        let (_, crl) =
            CertificateRevocationList::from_der(der).map_err(|error| FetchError::NotCrl(error.to_string()))?;
        this_update = this_update.min(crl.last_update().timestamp());
        if let Some(at) = crl.next_update() {
            next_update = Some(next_update.map_or(at.timestamp(), |first| first.min(at.timestamp())));
        }
    }
    Ok((this_update, next_update))
}

/// One GET of `uri`, bounded by [`FETCH_TIMEOUT`] and [`MAX_CRL_BYTES`].
async fn fetch(uri: &Uri) -> Result<Vec<u8>, FetchError> {
    tokio::time::timeout(FETCH_TIMEOUT, get(uri)).await.map_err(|_| FetchError::Timeout)?
}

async fn get(uri: &Uri) -> Result<Vec<u8>, FetchError> {
    let host = uri.host().unwrap_or_default();
    let address = (host.trim_start_matches('[').trim_end_matches(']'), uri.port_u16().unwrap_or(HTTP_PORT));
    let stream = TcpStream::connect(address).await.map_err(FetchError::Connect)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let _driver = AbortOnDrop(tokio::spawn(connection));
    let request = Request::get(uri.path_and_query().map_or("/", |path| path.as_str()))
        .header(HOST, uri.authority().map_or(host, |authority| authority.as_str()))
        .header(USER_AGENT, USER_AGENT_VALUE)
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    if response.status() != StatusCode::OK {
        return Err(FetchError::Status(response.status()));
    }
    let body = Limited::new(response.into_body(), MAX_CRL_BYTES).collect().await.map_err(|error| {
        if error.is::<http_body_util::LengthLimitError>() {
            FetchError::TooLarge
        } else {
            FetchError::Body(error.to_string())
        }
    })?;
    Ok(body.to_bytes().to_vec())
}

/// Ends the HTTP connection's task when the fetch ends or is dropped (timeout, stop).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{
        date_time_ymd, BasicConstraints, CertificateParams, CertificateRevocationListParams, IsCa, Issuer, KeyIdMethod,
        KeyPair, KeyUsagePurpose, SerialNumber,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A CRL of a throwaway CA, issued on `this_update` (a year, 1 January), as DER and PEM.
    fn crl(this_update: i32) -> (Vec<u8>, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = Issuer::new(params, key);
        let crl = CertificateRevocationListParams {
            this_update: date_time_ymd(this_update, 1, 1),
            next_update: date_time_ymd(this_update + 1, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: Vec::new(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&issuer)
        .unwrap();
        (crl.der().to_vec(), crl.pem().unwrap().into_bytes())
    }

    #[test]
    fn der_and_pem_crls_are_accepted_with_their_dates_and_anything_else_is_not() {
        let (der, pem) = crl(2030);
        let held = accept(der, None).unwrap();
        assert_eq!((held.this_update, held.next_update), (1_893_456_000, Some(1_924_992_000)));
        assert_eq!(accept(pem, None).unwrap().this_update, 1_893_456_000);
        assert!(matches!(accept(b"<html>not found</html>".to_vec(), None), Err(FetchError::NotCrl(_))));
        assert!(matches!(accept(Vec::new(), None), Err(FetchError::NotCrl(_))));
    }

    #[test]
    fn a_crl_older_than_the_one_held_is_refused() {
        let (older, _) = crl(2029);
        let error = accept(older, Some(1_893_456_000)).unwrap_err();
        assert!(matches!(error, FetchError::Older { .. }), "{error}");
        let (same_day, _) = crl(2030);
        assert!(accept(same_day, Some(1_893_456_000)).is_ok(), "a reissue of the same date is taken");
    }

    /// Serves one answer: `head`, then `body_bytes` zero bytes.
    async fn one_answer(head: String, body_bytes: usize) -> Uri {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri = format!("http://{}/ca.crl", listener.local_addr().unwrap()).parse().unwrap();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = tcp.read(&mut request).await;
            let _ = tcp.write_all(head.as_bytes()).await;
            let chunk = vec![0u8; 64 * 1024];
            let mut left = body_bytes;
            while left > 0 {
                let n = left.min(chunk.len());
                if tcp.write_all(&chunk[..n]).await.is_err() {
                    return;
                }
                left -= n;
            }
        });
        uri
    }

    #[tokio::test]
    async fn an_answer_over_the_size_cap_or_not_200_is_a_failure() {
        let too_large = MAX_CRL_BYTES + 1;
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {too_large}\r\n\r\n");
        let error = fetch(&one_answer(head, too_large).await).await.unwrap_err();
        assert!(matches!(error, FetchError::TooLarge), "{error}");
        let head = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n".to_string();
        let error = fetch(&one_answer(head, 0).await).await.unwrap_err();
        assert!(matches!(error, FetchError::Status(StatusCode::SERVICE_UNAVAILABLE)), "{error}");
        let head = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n".to_string();
        assert_eq!(fetch(&one_answer(head, 3).await).await.unwrap(), vec![0, 0, 0]);
    }
}
