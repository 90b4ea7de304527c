//! The HTTPS client the ACME account talks through: hyper-rustls with the platform's roots, or
//! only the CA certificates of `directory_ca` (every one in the file); each request bounded in
//! time; and the `Retry-After` of a refusal kept, so the back-off waits at least that long
//! (instant-acme honours it while polling an order, not after a refused request).

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hyper::header::RETRY_AFTER;
use hyper::Request;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use rustls_platform_verifier::BuilderVerifierExt;

use crate::proxy::tls::provider;

/// One request to the CA, connect to response head: a CA slower than this is retried later.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest `Retry-After` honoured: a CA asking for more is retried at the back-off's cap.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("directory_ca {path}: {message}")]
    DirectoryCa { path: String, message: String },
    #[error("TLS settings: {0}")]
    Tls(rustls::Error),
}

/// The `Retry-After` the CA sent with its last refusal, until taken.
#[derive(Debug, Default)]
pub struct RetryAfter(Mutex<Option<SystemTime>>);

impl RetryAfter {
    /// How long from now the CA asked to wait, once (the value is cleared).
    pub fn take(&self) -> Option<Duration> {
        let until = self.0.lock().unwrap_or_else(PoisonError::into_inner).take()?;
        Some(until.duration_since(SystemTime::now()).unwrap_or_default().min(MAX_RETRY_AFTER))
    }

    fn set(&self, until: SystemTime) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(until);
    }
}

/// The account's HTTP client.
pub struct AcmeHttp {
    client: Client<HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>,
    retry_after: Arc<RetryAfter>,
}

impl AcmeHttp {
    /// A client trusting `directory_ca`'s certificates, or the platform's roots without one.
    pub fn new(directory_ca: Option<&Path>, retry_after: Arc<RetryAfter>) -> Result<AcmeHttp, ClientError> {
        let tls = match directory_ca {
            Some(file) => client_config(roots(file)?)?,
            None => ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .and_then(|builder| builder.with_platform_verifier())
                .map_err(ClientError::Tls)?
                .with_no_client_auth(),
        };
        let connector = HttpsConnectorBuilder::new().with_tls_config(tls).https_only().enable_http1().build();
        Ok(AcmeHttp { client: Client::builder(TokioExecutor::new()).build(connector), retry_after })
    }
}

fn roots(file: &Path) -> Result<RootCertStore, ClientError> {
    let problem = |message: String| ClientError::DirectoryCa { path: file.display().to_string(), message };
    let pem = std::fs::read(file).map_err(|error| problem(error.to_string()))?;
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        let certificate = certificate.map_err(|error| problem(error.to_string()))?;
        roots.add(certificate).map_err(|error| problem(error.to_string()))?;
    }
    if roots.is_empty() {
        return Err(problem("no PEM certificate".into()));
    }
    Ok(roots)
}

fn client_config(roots: RootCertStore) -> Result<ClientConfig, ClientError> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(ClientError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        request: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let response = self.client.request(request);
        let retry_after = self.retry_after.clone();
        Box::pin(async move {
            let response = match tokio::time::timeout(REQUEST_TIMEOUT, response).await {
                Ok(Ok(response)) => response,
                Ok(Err(error)) => return Err(instant_acme::Error::Other(with_causes(&error).into())),
                Err(_) => return Err(instant_acme::Error::Str("no answer from the ACME server in time")),
            };
            if !response.status().is_success() {
                let header = response.headers().get(RETRY_AFTER).and_then(|value| value.to_str().ok());
                if let Some(until) = header.and_then(parse_retry_after) {
                    retry_after.set(until);
                }
            }
            Ok(BytesResponse::from(response))
        })
    }
}

/// The error and its causes, one line: hyper's own message ("client error (Connect)") leaves out
/// what an operator needs ("Connection refused").
fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(source) = cause {
        line.push_str(": ");
        line.push_str(&source.to_string());
        cause = source.source();
    }
    line
}

/// `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP-date.
fn parse_retry_after(value: &str) -> Option<SystemTime> {
    let value = value.trim();
    match value.parse::<u64>() {
        Ok(seconds) => SystemTime::now().checked_add(Duration::from_secs(seconds)),
        Err(_) => httpdate::parse_http_date(value).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_as_seconds_or_an_http_date_and_taken_once() {
        let retry_after = RetryAfter::default();
        retry_after.set(parse_retry_after("120").unwrap());
        let waited = retry_after.take().unwrap();
        assert!(waited > Duration::from_secs(110) && waited <= Duration::from_secs(120), "{waited:?}");
        assert_eq!(retry_after.take(), None, "taken once");
        let date = parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(date.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(), 1_445_412_480);
        assert_eq!(parse_retry_after("soon"), None);
    }
}
