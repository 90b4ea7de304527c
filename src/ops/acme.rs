//! The certificates of `tls.acme` routes: one task per certificate keeps it issued and fresh.
//!
//! A task looks at the certificate in storage. While it is there and not due (`acme_schedule.rs`:
//! `renew_before` its expiry, not before half its lifetime, sooner in the CA's ARI window), the
//! task sleeps and asks the CA for nothing. When it is missing or due, the task places an order:
//! the account (stored, or created once per storage and directory), a new order for the names,
//! the TLS-ALPN-01 answer of each name published in the storage (`acme_mirror.rs` loads it into
//! the [`TlsAlpnChallenges`] the listeners answer from, in every process sharing the storage), the
//! challenges set ready, the order polled until ready, a CSR for a fresh key of `key_type` (P-256
//! by default), the chain polled until issued, both written to storage (`acme_storage.rs`), the
//! answers withdrawn, and a reload asked for, the same path as SIGHUP: the load serves the stored
//! files, live sessions keep the certificate they started with. A failure keeps the last good
//! certificate (a route with none refuses handshakes: `certificate_pending`) and is retried with
//! back-off; every step is logged and every attempt counted (`snigate_acme_orders_total`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use instant_acme::{
    Account, AccountBuilder, AuthorizationStatus, CertificateIdentifier, ChallengeType, ExternalAccountKey, Identifier,
    NewAccount, NewOrder, Order, OrderStatus, RetryPolicy,
};
use rcgen::{CertificateParams, DistinguishedName, KeyPair, RsaKeySize};
use tokio_util::sync::CancellationToken;

use crate::config::{AcmeCertificate, AcmeKeyType};
use crate::metrics::{AcmeResult, Metrics};
use crate::ops::acme_http::{AcmeHttp, ClientError, RetryAfter};
use crate::ops::acme_mirror;
use crate::ops::acme_schedule::{self, Failure};
use crate::ops::acme_storage::{self, StorageError, Stored};
use crate::ops::clock::{seconds, unix_now};
use crate::ops::server::ReloadHandle;
use crate::proxy::acme_challenge::TlsAlpnChallenges;

/// How long the CA may take to validate every name of an order.
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the CA may take to issue once the order is finalized.
const ISSUANCE_TIMEOUT: Duration = Duration::from_secs(90);
/// How often a task waiting on another process's order lock looks again.
const LOCK_RETRY: Duration = Duration::from_secs(2);
/// Asking the CA for the renewal window (directory and ARI): it is advice, skipped when slow.
const ARI_TIMEOUT: Duration = Duration::from_secs(30);
/// One whole attempt, account to stored chain: bounds what the request and poll timeouts miss
/// (a response body that never ends).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// The first wait between two polls of an order; instant-acme doubles it and honours Retry-After.
const FIRST_POLL: Duration = Duration::from_millis(250);

/// Why an attempt gave no certificate.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("the ACME server cannot be reached: {0}")]
    Unreachable(instant_acme::Error),
    #[error("the ACME server refused: {0}")]
    Refused(instant_acme::Error),
    #[error("validation failed: {0}")]
    Invalid(String),
    #[error("the ACME server offers no tls-alpn-01 challenge for {0}")]
    NoTlsAlpn(String),
    #[error("external account binding: {0}")]
    Eab(String),
    #[error("the ACME client: {0}")]
    Client(#[from] ClientError),
    #[error("generating the certificate's key: {0}")]
    Key(rcgen::Error),
    #[error("building the CSR: {0}")]
    Csr(rcgen::Error),
    #[error("a blocking step did not finish: {0}")]
    Blocking(String),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("no certificate within {ATTEMPT_TIMEOUT:?}")]
    Timeout,
}

impl AcmeError {
    /// From instant-acme: a problem document is the CA saying no; the rest did not get through.
    fn from_acme(error: instant_acme::Error) -> AcmeError {
        match error {
            instant_acme::Error::Api(_) => AcmeError::Refused(error),
            instant_acme::Error::Timeout(_) => AcmeError::Invalid("the ACME server did not finish in time".into()),
            _ => AcmeError::Unreachable(error),
        }
    }

    fn result(&self) -> AcmeResult {
        match self {
            AcmeError::Unreachable(_) | AcmeError::Timeout => AcmeResult::Unreachable,
            AcmeError::Refused(_) | AcmeError::NoTlsAlpn(_) => AcmeResult::Refused,
            AcmeError::Invalid(_) => AcmeResult::Invalid,
            AcmeError::Client(_)
            | AcmeError::Storage(_)
            | AcmeError::Eab(_)
            | AcmeError::Key(_)
            | AcmeError::Csr(_)
            | AcmeError::Blocking(_) => AcmeResult::LocalFailed,
        }
    }

    fn failure(&self) -> Failure {
        match self.result() {
            AcmeResult::Unreachable => Failure::Unreachable,
            _ => Failure::Refused,
        }
    }
}

/// An account and the `Retry-After` its client saw last.
#[derive(Clone)]
struct AccountHandle {
    account: Account,
    retry_after: Arc<RetryAfter>,
}

/// What the certificate tasks share with the server.
struct Shared {
    challenges: TlsAlpnChallenges,
    metrics: Arc<Metrics>,
    reload: ReloadHandle,
    /// By account file: certificates of one storage and directory use one account.
    accounts: tokio::sync::Mutex<HashMap<PathBuf, AccountHandle>>,
    /// By name: held by the order validating it.
    validating: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A followed certificate's task.
struct Following {
    certificate: AcmeCertificate,
    stop: CancellationToken,
}

/// The tasks of the running config's ACME certificates, and the challenge mirror of each storage.
pub struct AcmeManager {
    shared: Arc<Shared>,
    tasks: HashMap<String, Following>,
    mirrors: HashMap<PathBuf, CancellationToken>,
}

impl Drop for AcmeManager {
    fn drop(&mut self) {
        self.tasks.values().for_each(|task| task.stop.cancel());
        self.mirrors.values().for_each(CancellationToken::cancel);
    }
}

impl AcmeManager {
    pub fn new(challenges: TlsAlpnChallenges, metrics: Arc<Metrics>, reload: ReloadHandle) -> AcmeManager {
        let shared = Shared {
            challenges,
            metrics,
            reload,
            accounts: tokio::sync::Mutex::default(),
            validating: std::sync::Mutex::default(),
        };
        AcmeManager { shared: Arc::new(shared), tasks: HashMap::new(), mirrors: HashMap::new() }
    }

    /// Follows exactly `certificates` from now on: a task for each new or changed one, none for
    /// those gone. A certificate whose settings and routes are the same keeps its task.
    pub fn follow(&mut self, certificates: &[AcmeCertificate]) {
        let gone: Vec<String> =
            self.tasks.keys().filter(|id| !certificates.iter().any(|c| &c.id == *id)).cloned().collect();
        for id in gone {
            if let Some(task) = self.tasks.remove(&id) {
                task.stop.cancel();
            }
            self.shared.metrics.forget_acme(&id);
        }
        for certificate in certificates {
            if self.tasks.get(&certificate.id).is_some_and(|task| task.certificate.same_order(certificate)) {
                continue;
            }
            if let Some(previous) = self.tasks.remove(&certificate.id) {
                previous.stop.cancel();
            }
            let stop = CancellationToken::new();
            self.shared.metrics.acme_followed(&certificate.id);
            tokio::spawn(keep_certified(self.shared.clone(), certificate.clone(), stop.clone()));
            self.tasks.insert(certificate.id.clone(), Following { certificate: certificate.clone(), stop });
        }
        self.mirror(certificates);
    }

    /// A challenge mirror for each storage `certificates` use, none for the others.
    fn mirror(&mut self, certificates: &[AcmeCertificate]) {
        self.mirrors.retain(|storage, stop| {
            let used = certificates.iter().any(|certificate| &certificate.storage == storage);
            if !used {
                stop.cancel();
            }
            used
        });
        for certificate in certificates {
            if self.mirrors.contains_key(&certificate.storage) {
                continue;
            }
            let stop = CancellationToken::new();
            let (storage, challenges) = (certificate.storage.clone(), self.shared.challenges.clone());
            tokio::spawn(acme_mirror::mirror(storage, challenges, stop.clone()));
            self.mirrors.insert(certificate.storage.clone(), stop);
        }
    }
}

/// What a task does next.
enum Next {
    /// The stored certificate (its leaf) is renewed at this Unix time; look again then.
    RenewAt { due: i64, leaf: Vec<u8> },
    /// Order now; `replacing` is the certificate renewed, if any.
    Order { replacing: Option<Stored> },
}

/// Keeps `certificate` issued and fresh until `stop`.
async fn keep_certified(shared: Arc<Shared>, certificate: AcmeCertificate, stop: CancellationToken) {
    let known_leaf = certificate.loaded_leaf.clone();
    let mut task = CertificateTask { shared, certificate, failures: 0, issued_at: None, known_leaf, waiting: false };
    if let Some(wait) = task.resume_backoff() {
        if !sleep(wait, &stop).await {
            return;
        }
    }
    loop {
        let step = next_step(&task.shared, &task.certificate, task.failures == 0, task.issued_at);
        let step = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            step = step => step,
        };
        let wait = match step {
            Next::RenewAt { due, leaf } => {
                task.serve_if_new(leaf).await;
                task.shared.metrics.acme_next_attempt(&task.certificate.id, due);
                Duration::from_secs(u64::try_from(due.saturating_sub(unix_now())).unwrap_or(0))
            }
            Next::Order { replacing } => {
                let Some(_lock) = task.take_order_lock(replacing.as_ref()) else {
                    if !sleep(LOCK_RETRY, &stop).await {
                        return;
                    }
                    continue;
                };
                let attempt = obtain(&task.shared, &task.certificate, replacing.as_ref());
                let obtained = tokio::select! {
                    biased;
                    () = stop.cancelled() => return,
                    obtained = tokio::time::timeout(ATTEMPT_TIMEOUT, attempt) => obtained.unwrap_or(Err(AcmeError::Timeout)),
                };
                match obtained {
                    Ok(()) => {
                        task.issued().await;
                        continue;
                    }
                    Err(error) => task.failed(&error).await,
                }
            }
        };
        if !sleep(wait, &stop).await {
            return;
        }
    }
}

/// Sleeps `wait`, at most [`acme_schedule::MAX_SLEEP`]; false when stopped.
async fn sleep(wait: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        biased;
        () = stop.cancelled() => false,
        () = tokio::time::sleep(wait.min(acme_schedule::MAX_SLEEP)) => true,
    }
}

/// One certificate's task: its failures in a row, when this task last had it issued, and the
/// leaf the running table serves from its files.
struct CertificateTask {
    shared: Arc<Shared>,
    certificate: AcmeCertificate,
    failures: u32,
    /// Unix seconds.
    issued_at: Option<i64>,
    known_leaf: Option<Vec<u8>>,
    /// Another process holds the order lock (logged once per wait).
    waiting: bool,
}

impl CertificateTask {
    /// The order lock, unless another process sharing the storage holds it, or issued the
    /// certificate since `replacing` was looked at (then the next look serves theirs). A storage
    /// that cannot be locked is a failure like any other of storage.
    fn take_order_lock(&mut self, replacing: Option<&Stored>) -> Option<acme_storage::OrderLock> {
        let id = self.certificate.id.as_str();
        let lock = match acme_storage::try_lock_order(&self.certificate) {
            Ok(Some(lock)) => lock,
            Ok(None) => {
                if !std::mem::replace(&mut self.waiting, true) {
                    tracing::info!(
                        certificate = id,
                        "another process sharing the storage is ordering this certificate; waiting for it"
                    );
                }
                return None;
            }
            Err(error) => {
                tracing::warn!(certificate = id, %error, "the order lock cannot be taken; ordering without it");
                self.waiting = false;
                return Some(acme_storage::OrderLock::none());
            }
        };
        self.waiting = false;
        let now_stored = acme_storage::read_certificate(&self.certificate).ok().flatten();
        let issued_meanwhile = now_stored.is_some_and(|now| replacing.is_none_or(|before| before.leaf != now.leaf));
        (!issued_meanwhile).then_some(lock)
    }

    /// Has the proxy serve a stored certificate it does not serve yet: one another process
    /// sharing the storage issued.
    async fn serve_if_new(&mut self, leaf: Vec<u8>) {
        if self.known_leaf.as_ref() == Some(&leaf) {
            return;
        }
        self.known_leaf = Some(leaf);
        tracing::info!(certificate = %self.certificate.id, "the stored certificate is not the one served (another process issued it); reloading");
        self.shared.reload_for(&self.certificate).await;
    }

    /// The back-off a previous run of the proxy left: its failures count on (a proxy restarted in
    /// a loop slower than the back-off does not start it over), and while it has not run out, how
    /// long to wait.
    fn resume_backoff(&mut self) -> Option<Duration> {
        let backoff = acme_storage::read_backoff(&self.certificate)?;
        self.failures = backoff.attempts;
        let wait_s = backoff.retry_at.saturating_sub(unix_now());
        if wait_s <= 0 {
            return None;
        }
        tracing::info!(
            certificate = %self.certificate.id,
            attempts = backoff.attempts,
            retry_in_s = wait_s,
            "ACME back-off from before the restart; waiting"
        );
        self.shared.metrics.acme_next_attempt(&self.certificate.id, backoff.retry_at);
        Some(Duration::from_secs(u64::try_from(wait_s).unwrap_or(0)))
    }

    /// Counts the issued certificate and has the proxy serve it.
    async fn issued(&mut self) {
        self.failures = 0;
        self.issued_at = Some(unix_now());
        let stored = acme_storage::read_certificate(&self.certificate).ok().flatten();
        self.known_leaf = stored.map(|stored| stored.leaf.to_vec());
        acme_storage::clear_backoff(&self.certificate);
        self.shared.metrics.acme_attempt(&self.certificate.id, AcmeResult::Issued);
        self.shared.reload_for(&self.certificate).await;
    }

    /// Counts, logs and stores a failure; returns how long to wait before the next attempt.
    async fn failed(&mut self, error: &AcmeError) -> Duration {
        let id = self.certificate.id.as_str();
        self.failures = self.failures.saturating_add(1);
        self.shared.metrics.acme_attempt(id, error.result());
        let retry_after = self.shared.retry_after(&self.certificate).await;
        let wait = acme_schedule::retry_in(error.failure(), self.failures, retry_after, fastrand::f64());
        // Rounded up: the gauge and the stored back-off never say earlier than the wait.
        let retry_at = unix_now().saturating_add(seconds(wait.saturating_add(Duration::from_millis(999))));
        self.shared.metrics.acme_next_attempt(id, retry_at);
        let backoff = acme_storage::Backoff { attempts: self.failures, retry_at };
        if let Err(error) = acme_storage::write_backoff(&self.certificate, backoff) {
            tracing::warn!(certificate = id, %error, "the back-off cannot be stored; a restart starts it over");
        }
        tracing::warn!(
            certificate = id,
            %error,
            result = error.result().label(),
            attempts = self.failures,
            retry_in_s = (wait.as_secs_f64() * 10.0).round() / 10.0,
            "ACME attempt failed; retrying"
        );
        wait
    }
}

/// Looks at the stored certificate: order when it is missing, unreadable or due; else wait.
/// (`first_try`: a retry does not log the missing certificate again. `issued_at`: a certificate
/// this task just had issued is not renewed before a tenth of its lifetime has passed, whatever
/// the clock, `renew_before` or the ARI window say: never an order loop.)
async fn next_step(shared: &Shared, certificate: &AcmeCertificate, first_try: bool, issued_at: Option<i64>) -> Next {
    let id = certificate.id.as_str();
    let stored = match acme_storage::read_certificate(certificate) {
        Ok(Some(stored)) => stored,
        Ok(None) => {
            if first_try {
                tracing::info!(certificate = id, names = ?certificate.names, "no stored certificate; ordering one");
            }
            return Next::Order { replacing: None };
        }
        Err(error) => {
            tracing::warn!(certificate = id, %error, "the stored certificate cannot be read; ordering a new one");
            return Next::Order { replacing: None };
        }
    };
    let mut due = acme_schedule::renew_at(stored.not_before, stored.not_after, certificate.renew_before);
    let ari = tokio::time::timeout(ARI_TIMEOUT, shared.ari_moment(certificate, &stored));
    if let Ok(Some(window_moment)) = ari.await {
        due = due.min(window_moment);
    }
    if let Some(issued_at) = issued_at {
        due = due.max(acme_schedule::earliest_renewal(issued_at, stored.not_before, stored.not_after));
    }
    let now = unix_now();
    if due <= now {
        tracing::info!(certificate = id, not_after = stored.not_after, "the stored certificate is due for renewal");
        return Next::Order { replacing: Some(stored) };
    }
    tracing::info!(
        certificate = id,
        not_after = stored.not_after,
        renew_at = due,
        "stored certificate is valid; renewal scheduled"
    );
    Next::RenewAt { due, leaf: stored.leaf.to_vec() }
}

/// One attempt: order, validate, finalize, store. The challenges are removed however it ends;
/// no other certificate validates one of these names meanwhile (each answer would replace the
/// other's, and the CA would check the wrong one).
async fn obtain(shared: &Shared, certificate: &AcmeCertificate, replacing: Option<&Stored>) -> Result<(), AcmeError> {
    let id = certificate.id.as_str();
    let _names = shared.lock_names(&certificate.names).await;
    let account = shared.account(certificate).await?.account;
    let mut order = place_order(&account, certificate, replacing).await?;
    tracing::info!(certificate = id, order = order.url(), "ACME order placed");
    let answering = Answering { storage: &certificate.storage, published: Vec::new() };
    let answering = answer_challenges(&mut order, answering, id).await?;
    let retries = RetryPolicy::new().initial_delay(FIRST_POLL).timeout(VALIDATION_TIMEOUT);
    let status = order.poll_ready(&retries).await.map_err(AcmeError::from_acme)?;
    drop(answering);
    if status != OrderStatus::Ready {
        return Err(AcmeError::Invalid(validation_errors(&mut order).await));
    }
    tracing::info!(certificate = id, "ACME order ready; finalizing");
    let (key_type, names) = (certificate.key_type, certificate.names.clone());
    // RSA-4096 generation takes up to seconds: not on the threads that serve connections.
    let (key, csr) = tokio::task::spawn_blocking(move || signing_request(key_type, names))
        .await
        .map_err(|error| AcmeError::Blocking(error.to_string()))??;
    order.finalize_csr(&csr).await.map_err(AcmeError::from_acme)?;
    let retries = RetryPolicy::new().initial_delay(FIRST_POLL).timeout(ISSUANCE_TIMEOUT);
    let chain = order.poll_certificate(&retries).await.map_err(AcmeError::from_acme)?;
    let stored = certificate.clone();
    tokio::task::spawn_blocking(move || acme_storage::write_certificate(&stored, &chain, &key))
        .await
        .map_err(|error| AcmeError::Blocking(error.to_string()))??;
    tracing::info!(certificate = id, names = ?certificate.names, "ACME certificate issued");
    Ok(())
}

/// A new order for the certificate's names. A renewal names the certificate it replaces where the
/// CA offers ARI (RFC 9773 §5; instant-acme refuses `replaces` without asking when the directory
/// offers none); a CA refusing that (`alreadyReplaced` after a crash between finalize and store)
/// gets the order without it.
async fn place_order(
    account: &Account,
    certificate: &AcmeCertificate,
    replacing: Option<&Stored>,
) -> Result<Order, AcmeError> {
    let identifiers: Vec<Identifier> = certificate.names.iter().cloned().map(Identifier::Dns).collect();
    let replaces = replacing.and_then(|stored| CertificateIdentifier::try_from(&stored.leaf).ok());
    if let Some(replaces) = replaces {
        match account.new_order(&NewOrder::new(&identifiers).replaces(replaces)).await {
            Ok(order) => return Ok(order),
            Err(instant_acme::Error::Unsupported(_)) => {}
            Err(error @ instant_acme::Error::Api(_)) => {
                tracing::info!(certificate = %certificate.id, %error, "the CA refused the renewal's `replaces`; ordering without it");
            }
            Err(error) => return Err(AcmeError::from_acme(error)),
        }
    }
    account.new_order(&NewOrder::new(&identifiers)).await.map_err(AcmeError::from_acme)
}

/// A fresh key of `key_type` (PEM) and the CSR (DER) for `names` signed by it.
fn signing_request(key_type: AcmeKeyType, names: Vec<String>) -> Result<(String, Vec<u8>), AcmeError> {
    let key = certificate_key(key_type).map_err(AcmeError::Key)?;
    let mut params = CertificateParams::new(names).map_err(AcmeError::Csr)?;
    params.distinguished_name = DistinguishedName::new();
    let csr = params.serialize_request(&key).map_err(AcmeError::Csr)?;
    Ok((key.serialize_pem(), csr.der().to_vec()))
}

/// A fresh key of `key_type` for the certificate.
fn certificate_key(key_type: AcmeKeyType) -> Result<KeyPair, rcgen::Error> {
    match key_type {
        AcmeKeyType::P256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        AcmeKeyType::P384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
        AcmeKeyType::Rsa2048 => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048),
        AcmeKeyType::Rsa4096 => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_4096),
    }
}

/// The challenge answers of an order, published in its storage: every process following the
/// storage, this one included, serves them (`acme_mirror.rs`). Withdrawn when dropped.
struct Answering<'a> {
    storage: &'a std::path::Path,
    published: Vec<String>,
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        self.published.iter().for_each(|name| acme_storage::remove_challenge(self.storage, name));
    }
}

/// Publishes the TLS-ALPN-01 challenge of each pending authorization, waits until the processes
/// sharing the storage (this one too) have loaded them, then tells the CA each is ready.
async fn answer_challenges<'a>(
    order: &mut Order,
    mut answering: Answering<'a>,
    id: &str,
) -> Result<Answering<'a>, AcmeError> {
    let mut pending = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization.map_err(AcmeError::from_acme)?;
        let name = authorization.identifier().to_string();
        match authorization.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            status => return Err(AcmeError::Invalid(format!("authorization for {name} is {status:?}"))),
        }
        let challenge =
            authorization.challenge(ChallengeType::TlsAlpn01).ok_or_else(|| AcmeError::NoTlsAlpn(name.clone()))?;
        let key_authorization = challenge.key_authorization().as_str().to_string();
        let (storage, file_name) = (answering.storage.to_path_buf(), name.clone());
        let written = tokio::task::spawn_blocking(move || {
            acme_storage::write_challenge(&storage, &file_name, &key_authorization)
        });
        written.await.map_err(|error| AcmeError::Blocking(error.to_string()))??;
        answering.published.push(name.clone());
        pending.push(name);
    }
    if pending.is_empty() {
        return Ok(answering);
    }
    tokio::time::sleep(acme_mirror::PUBLISH_WAIT).await;
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization.map_err(AcmeError::from_acme)?;
        let name = authorization.identifier().to_string();
        if !pending.contains(&name) {
            continue;
        }
        let Some(mut challenge) = authorization.challenge(ChallengeType::TlsAlpn01) else { continue };
        challenge.set_ready().await.map_err(AcmeError::from_acme)?;
        tracing::info!(certificate = id, name, "ACME challenge ready");
    }
    Ok(answering)
}

/// What the CA said about the names it could not validate.
async fn validation_errors(order: &mut Order) -> String {
    let mut errors = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authorization)) = authorizations.next().await {
        let name = authorization.identifier().to_string();
        let Ok(state) = authorization.refresh().await else { continue };
        let problems = state.challenges.iter().filter_map(|challenge| challenge.error.as_ref());
        errors.extend(problems.map(|problem| format!("{name}: {problem}")));
    }
    if errors.is_empty() {
        return "the order became invalid".into();
    }
    errors.join("; ")
}

impl Shared {
    /// Waits until no other order validates one of `names` (sorted: locks are taken in one order,
    /// so two orders never wait on each other), then holds them.
    async fn lock_names(&self, names: &[String]) -> Vec<tokio::sync::OwnedMutexGuard<()>> {
        let locks: Vec<Arc<tokio::sync::Mutex<()>>> = {
            let mut validating = self.validating.lock().unwrap_or_else(PoisonError::into_inner);
            names.iter().map(|name| validating.entry(name.clone()).or_default().clone()).collect()
        };
        let mut held = Vec::with_capacity(locks.len());
        for lock in locks {
            held.push(lock.lock_owned().await);
        }
        held
    }

    /// The account of `certificate`'s storage and directory: cached, else read from storage,
    /// else created and stored, once.
    async fn account(&self, certificate: &AcmeCertificate) -> Result<AccountHandle, AcmeError> {
        let mut accounts = self.accounts.lock().await;
        if let Some(handle) = cached_or_stored(&mut accounts, certificate).await? {
            return Ok(handle);
        }
        let (builder, retry_after) = account_builder(certificate)?;
        let contact: Vec<&str> = certificate.contact.iter().map(String::as_str).collect();
        let new_account = NewAccount { contact: &contact, terms_of_service_agreed: true, only_return_existing: false };
        let eab = match &certificate.eab {
            Some(eab) => Some(ExternalAccountKey::new(eab.key_id.clone(), &eab.hmac_key().map_err(AcmeError::Eab)?)),
            None => None,
        };
        let (account, credentials) = builder
            .create(&new_account, certificate.directory.clone(), eab.as_ref())
            .await
            .map_err(AcmeError::from_acme)?;
        let file = certificate.account_file();
        acme_storage::write_account(&file, &credentials)?;
        tracing::info!(certificate = %certificate.id, account = account.id(), file = %file.display(), "ACME account created");
        let handle = AccountHandle { account, retry_after };
        accounts.insert(file, handle.clone());
        Ok(handle)
    }

    /// The account, only if one is cached or stored (never creates one).
    async fn stored_account(&self, certificate: &AcmeCertificate) -> Result<Option<AccountHandle>, AcmeError> {
        cached_or_stored(&mut *self.accounts.lock().await, certificate).await
    }

    /// The `Retry-After` of the CA's last refusal on `certificate`'s account, once.
    async fn retry_after(&self, certificate: &AcmeCertificate) -> Option<Duration> {
        let accounts = self.accounts.lock().await;
        accounts.get(&certificate.account_file())?.retry_after.take()
    }

    /// When to renew by the CA's ARI window (RFC 9773), if it offers one for this certificate:
    /// an unauthenticated GET, asked only with an account stored before (never creates one).
    async fn ari_moment(&self, certificate: &AcmeCertificate, stored: &Stored) -> Option<i64> {
        let account = self.stored_account(certificate).await.ok()??.account;
        let identifier = CertificateIdentifier::try_from(&stored.leaf).ok()?;
        let (info, _) = account.renewal_info(&identifier).await.ok()?;
        let window = info.suggested_window;
        let moment =
            acme_schedule::in_window(window.start.unix_timestamp(), window.end.unix_timestamp(), fastrand::f64());
        tracing::info!(certificate = %certificate.id, window_start = window.start.unix_timestamp(), window_end = window.end.unix_timestamp(), "the CA's renewal window");
        Some(moment)
    }

    async fn reload_for(&self, certificate: &AcmeCertificate) {
        let id = certificate.id.as_str();
        match self.reload.reload().await {
            Ok(_) => tracing::info!(certificate = id, routes = ?certificate.routes, "serving the new ACME certificate"),
            Err(error) => {
                tracing::error!(certificate = id, %error, "reload for a new ACME certificate failed; the running config stays")
            }
        }
    }
}

/// An account builder on `certificate`'s HTTPS client, and the `Retry-After` that client keeps.
fn account_builder(certificate: &AcmeCertificate) -> Result<(AccountBuilder, Arc<RetryAfter>), AcmeError> {
    let retry_after = Arc::new(RetryAfter::default());
    let http = AcmeHttp::new(certificate.directory_ca.as_deref(), retry_after.clone())?;
    Ok((Account::builder_with_http(Box::new(http)), retry_after))
}

/// The cached account of `certificate`, else the one in storage (then cached).
async fn cached_or_stored(
    accounts: &mut HashMap<PathBuf, AccountHandle>,
    certificate: &AcmeCertificate,
) -> Result<Option<AccountHandle>, AcmeError> {
    let file = certificate.account_file();
    if let Some(handle) = accounts.get(&file) {
        return Ok(Some(handle.clone()));
    }
    let Some(credentials) = acme_storage::read_account(&file)? else { return Ok(None) };
    let (builder, retry_after) = account_builder(certificate)?;
    let account = builder.from_credentials(credentials).await.map_err(AcmeError::from_acme)?;
    let handle = AccountHandle { account, retry_after };
    accounts.insert(file, handle.clone());
    Ok(Some(handle))
}
