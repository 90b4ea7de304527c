//! The client side of one connection: TCP connect to the proxy, a full TLS 1.3 handshake with an
//! explicit SNI, and what a refusal looked like.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

pub type Stream = TlsStream<TcpStream>;

/// What every connection of one tenant shares.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub name: ServerName<'static>,
    pub connector: TlsConnector,
    /// Connect and handshake together must finish within this.
    pub timeout: Duration,
}

impl Target {
    pub fn new(addr: SocketAddr, sni: &str, config: Arc<ClientConfig>, timeout: Duration) -> Result<Self, String> {
        let name = ServerName::try_from(sni.to_owned()).map_err(|e| format!("SNI {sni:?}: {e}"))?;
        Ok(Self { addr, name, connector: TlsConnector::from(config), timeout })
    }

    /// Connects and completes a handshake; how long both took.
    pub async fn connect(&self) -> Result<(Stream, Duration), Refusal> {
        let started = Instant::now();
        let attempt = async {
            let tcp = TcpStream::connect(self.addr).await.map_err(|e| Refusal::of(&e))?;
            let _ = tcp.set_nodelay(true);
            self.connector.connect(self.name.clone(), tcp).await.map_err(|e| Refusal::of(&e))
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(stream)) => Ok((stream, started.elapsed())),
            Ok(Err(refusal)) => Err(refusal),
            Err(_) => Err(Refusal::Timeout),
        }
    }
}

/// TLS 1.3 only, the provider's default suites and groups, the bench's CA as the only root, and
/// no session resumption: every handshake is a full one.
pub fn client_config(ca: &Path) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))? {
        let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots.add(cert).map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("TLS 1.3: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// Ends a session politely (close_notify, then FIN), bounded in time.
pub async fn close(mut stream: Stream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
}

/// How a connection failed before its handshake completed (or how a live session broke).
#[derive(Debug)]
pub enum Refusal {
    /// The server sent a TLS alert.
    Alert(rustls::AlertDescription),
    /// EOF: the server closed the connection.
    Close,
    /// RST (or a write into a closed connection).
    Reset,
    /// No answer within the time allowed.
    Timeout,
    /// The TCP connect was refused (nothing listening, or a full queue that answers with RST).
    Refused,
    /// Anything else, e.g. a certificate the client does not trust.
    Other(String),
}

impl Refusal {
    pub fn of(error: &io::Error) -> Self {
        if let Some(tls) = error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            return match tls {
                rustls::Error::AlertReceived(alert) => Refusal::Alert(*alert),
                other => Refusal::Other(other.to_string()),
            };
        }
        match error.kind() {
            io::ErrorKind::UnexpectedEof => Refusal::Close,
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe => {
                Refusal::Reset
            }
            io::ErrorKind::ConnectionRefused => Refusal::Refused,
            io::ErrorKind::TimedOut => Refusal::Timeout,
            _ => Refusal::Other(error.to_string()),
        }
    }

    /// The name it is counted under.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::Alert(_) => "alert",
            Refusal::Close => "close",
            Refusal::Reset => "reset",
            Refusal::Timeout => "timeout",
            Refusal::Refused => "refused",
            Refusal::Other(_) => "other",
        }
    }

    /// The alert's name, for the `alerts` breakdown.
    pub fn alert(&self) -> Option<String> {
        match self {
            Refusal::Alert(alert) => Some(format!("{alert:?}")),
            _ => None,
        }
    }
}
