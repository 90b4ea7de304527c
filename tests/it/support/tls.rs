//! rustls client and server configs for the tests, always with an explicit aws-lc-rs provider
//! (no process-default provider is ever installed or needed).

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::crypto::aws_lc_rs;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::pki::Leaf;
use super::within;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Versions {
    #[default]
    Both,
    Tls12Only,
    Tls13Only,
}

impl Versions {
    fn list(self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        static BOTH: [&rustls::SupportedProtocolVersion; 2] = [&rustls::version::TLS13, &rustls::version::TLS12];
        static TLS12: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
        static TLS13: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        match self {
            Versions::Both => &BOTH,
            Versions::Tls12Only => &TLS12,
            Versions::Tls13Only => &TLS13,
        }
    }
}

/// What a test client looks like.
#[derive(Default)]
pub struct ClientOpts {
    /// Trust anchors (CA certificates).
    pub roots: Vec<CertificateDer<'static>>,
    /// Client certificate chain and key.
    pub identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    pub alpn: Vec<Vec<u8>>,
    pub versions: Versions,
    /// Only X25519 key exchange: a ~250-byte hello instead of a ~1.4 KiB post-quantum one.
    pub small_hello: bool,
    /// Leave out the server_name extension.
    pub no_sni: bool,
    /// Disable session resumption.
    pub no_resumption: bool,
}

pub fn provider(small_hello: bool) -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = aws_lc_rs::default_provider();
    if small_hello {
        provider.kx_groups = vec![aws_lc_rs::kx_group::X25519];
    }
    Arc::new(provider)
}

pub fn client_config(opts: ClientOpts) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for root in &opts.roots {
        roots.add(root.clone()).expect("add root");
    }
    let builder = ClientConfig::builder_with_provider(provider(opts.small_hello))
        .with_protocol_versions(opts.versions.list())
        .expect("protocol versions")
        .with_root_certificates(roots);
    let mut config = match opts.identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = opts.alpn;
    config.enable_sni = !opts.no_sni;
    if opts.no_resumption {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Arc::new(config)
}

/// A client trusting `ca` (optionally presenting `identity`).
pub fn simple_client(ca: &CertificateDer<'static>, identity: Option<&Leaf>) -> Arc<ClientConfig> {
    client_config(ClientOpts { roots: vec![ca.clone()], identity: identity.map(Leaf::identity), ..Default::default() })
}

/// A server config for a test TLS backend.
pub fn server_config(leaf: &Leaf, alpn: &[&[u8]]) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(provider(false))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(leaf.chain(), leaf.key())
        .expect("server cert");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Connects to `addr` and runs a TLS handshake for `sni` (bounded by the test timeout).
/// Returns the TLS stream and the client's local address as the proxy sees it.
pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    sni: &str,
) -> Result<(TlsStream<TcpStream>, SocketAddr), String> {
    let tcp =
        within("TCP connect to the proxy", TcpStream::connect(addr)).await.map_err(|e| format!("TCP connect: {e}"))?;
    let local = tcp.local_addr().unwrap();
    let name = ServerName::try_from(sni.to_string()).map_err(|e| format!("server name: {e}"))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let stream = within("the TLS handshake through the proxy", connector.connect(name, tcp))
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    Ok((stream, local))
}

/// Connects expecting the proxy to refuse the TLS session (handshake error, or — in TLS 1.3,
/// where a client finishes before the server has judged its certificate — an alert or EOF on
/// the first read). Returns a description of how it was refused; panics if data came through.
pub async fn expect_refused(addr: SocketAddr, config: Arc<ClientConfig>, sni: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    match tls_connect(addr, config, sni).await {
        Err(error) => error,
        Ok((mut tls, _)) => {
            let _ = tls.write_all(b"ping").await;
            let _ = tls.flush().await;
            let mut buf = [0u8; 64];
            match within("the proxy to refuse the session", tls.read(&mut buf)).await {
                Ok(0) => "EOF after the handshake".to_string(),
                Ok(n) => panic!("a refused session delivered data: {:?}", &buf[..n]),
                Err(error) => format!("read error: {error}"),
            }
        }
    }
}
