//! `snigate demo`: the whole shape with nothing else installed. Makes throwaway certificates,
//! starts echo backends that first tell each client the PROXY header they received (decoded),
//! runs the proxy on the example routes, connects one demo client per route and prints what its
//! backend saw, then keeps serving until Ctrl-C for the user's own `openssl s_client` tries.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, RevokedCertParams, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use snigate::config::{self, Mode, ProxyProtocol, Route};
use snigate::proxy_header;
use snigate::server::Server;

/// Where the demo material goes, relative to the config file's directory.
const DEMO_DIR: &str = "certs/demo";
/// A demo client waits this long for its backend's answer.
const DEMO_CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest PROXY v1 line (spec: 107 bytes).
const MAX_V1_LINE_BYTES: usize = 107;

/// Runs the demo until Ctrl-C.
pub async fn run(config_path: &Path) -> Result<()> {
    let base_dir = config_path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let dir = base_dir.join(DEMO_DIR);
    if !dir.join("ca.crl").exists() {
        make_certificates(&dir).with_context(|| format!("writing demo certificates to {}", dir.display()))?;
        println!("made throwaway demo certificates in {}", dir.display());
    }
    let config = config::load(config_path).map_err(|errors| anyhow::anyhow!("{errors}"))?;
    let passthrough_tls = backend_tls_config(&dir)?;
    for route in config.routes.routes() {
        for server in &route.backend.servers {
            let address: SocketAddr =
                server.parse().with_context(|| format!("demo backends need IP:port, got {server}"))?;
            let listener = TcpListener::bind(address).await.with_context(|| format!("demo backend {address}"))?;
            let tls = (route.mode == Mode::Passthrough).then(|| passthrough_tls.clone());
            tokio::spawn(serve_backend(listener, route.name.clone(), route.backend.proxy_protocol, tls));
        }
    }
    let listen = config.listen.clone();
    let routes = config.routes.clone();
    let server = Server::bind(config).await?;
    let proxy_address = *server.local_addrs().first().context("no listener")?;
    let shutdown = CancellationToken::new();
    let proxy = tokio::spawn(server.run(shutdown.clone()));

    println!("\nsnigate is listening on {listen:?}; one demo client per route:\n");
    for route in routes.routes() {
        show_demo_client(route, proxy_address, &dir).await;
    }
    show_revoked_client(proxy_address, &dir).await;
    println!(
        "\nTry it yourself (Ctrl-C stops the demo):\n  openssl s_client -connect {proxy_address} -servername a.snigate.test \
         -cert {d}/client.pem -key {d}/client.key -CAfile {d}/ca.pem -quiet\n",
        d = dir.display()
    );
    tokio::signal::ctrl_c().await?;
    shutdown.cancel();
    proxy.await??;
    Ok(())
}

/// A backend that answers each connection with the PROXY header it received, then echoes.
async fn serve_backend(
    listener: TcpListener,
    route: String,
    proxy_protocol: ProxyProtocol,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let route = route.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let report = match read_header(&mut stream, proxy_protocol).await {
                Ok(report) => report,
                Err(error) => format!("could not read a PROXY header: {error}"),
            };
            let greeting = format!("demo backend for route {route}; {report}\n");
            match tls {
                Some(config) => match tokio_rustls::TlsAcceptor::from(config).accept(stream).await {
                    Ok(tls_stream) => greet_and_echo(tls_stream, &greeting).await,
                    Err(error) => tracing::warn!(%error, "demo passthrough backend: TLS handshake failed"),
                },
                None => greet_and_echo(stream, &greeting).await,
            }
        });
    }
}

async fn greet_and_echo<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, greeting: &str) {
    if stream.write_all(greeting.as_bytes()).await.is_err() {
        return;
    }
    let (mut reader, mut writer) = tokio::io::split(stream);
    let _ = tokio::io::copy(&mut reader, &mut writer).await;
    let _ = writer.shutdown().await;
}

/// Reads exactly the header, byte by byte for v1 (so nothing after it is consumed).
async fn read_header(stream: &mut TcpStream, proxy_protocol: ProxyProtocol) -> Result<String> {
    match proxy_protocol {
        ProxyProtocol::None => Ok("no PROXY header configured".into()),
        ProxyProtocol::V1 => {
            let mut line = Vec::new();
            while !line.ends_with(b"\r\n") && line.len() < MAX_V1_LINE_BYTES {
                line.push(stream.read_u8().await?);
            }
            Ok(format!("PROXY v1: {}", String::from_utf8_lossy(&line).trim_end()))
        }
        ProxyProtocol::V2 => {
            let mut header = vec![0u8; 16];
            stream.read_exact(&mut header).await?;
            let len = proxy_header::v2_header_len(&header).context("not a PROXY v2 header")?;
            header.resize(len, 0);
            stream.read_exact(&mut header[16..]).await?;
            let decoded = proxy_header::decode_v2(&header).context("PROXY v2 header does not decode")?;
            Ok(describe(&decoded))
        }
    }
}

fn describe(header: &proxy_header::Decoded) -> String {
    let mut parts = vec![format!(
        "PROXY v2: client {} -> {}",
        header.source.map_or("?".into(), |a| a.to_string()),
        header.destination.map_or("?".into(), |a| a.to_string())
    )];
    let fields = [
        ("authority", &header.authority),
        ("alpn", &header.alpn),
        ("tls", &header.ssl_version),
        ("cipher", &header.ssl_cipher),
        ("client CN", &header.ssl_cn),
    ];
    for (name, value) in fields {
        if let Some(value) = value {
            parts.push(format!("{name} {value}"));
        }
    }
    if let Some(verify) = header.ssl_verify {
        parts.push(format!(
            "verify {verify}{}",
            if verify == 0 { " (certificate verified)" } else { " (no client certificate)" }
        ));
    }
    parts.join(", ")
}

async fn show_demo_client(route: &Route, proxy: SocketAddr, dir: &Path) {
    let (what, result) = match route.mode {
        Mode::Tcp => ("plain TCP".to_string(), plain_client(proxy).await),
        Mode::Passthrough => {
            let name = "c.snigate.test";
            (format!("TLS to {name}, passed through"), tls_client(proxy, name, dir, false, "backend-ca.pem").await)
        }
        Mode::Terminate => {
            let name = if route.name == "mqtt-a" { "a.snigate.test" } else { "b.snigate.test" };
            let with_cert = route.name == "mqtt-a";
            let label =
                if with_cert { "with client certificate CN=demo-client" } else { "without a client certificate" };
            (format!("TLS to {name} {label}"), tls_client(proxy, name, dir, with_cert, "ca.pem").await)
        }
    };
    match result {
        Ok(answer) => println!("route {} ({what}):\n  {}", route.name, answer.trim_end()),
        Err(error) => println!("route {} ({what}):\n  failed: {error:#}", route.name),
    }
}

async fn show_revoked_client(proxy: SocketAddr, dir: &Path) {
    let result = revoked_client(proxy, dir).await;
    match result {
        Ok(answer) => println!("revoked client certificate on mqtt-a:\n  unexpectedly served: {}", answer.trim_end()),
        Err(error) => println!("revoked client certificate on mqtt-a:\n  refused as it should be: {error:#}"),
    }
}

async fn plain_client(proxy: SocketAddr) -> Result<String> {
    let mut stream = TcpStream::connect(proxy).await?;
    stream.write_all(b"hello from a plain TCP client\n").await?;
    first_line(stream).await
}

async fn tls_client(proxy: SocketAddr, name: &str, dir: &Path, with_cert: bool, ca_file: &str) -> Result<String> {
    let client_cert = with_cert.then(|| (dir.join("client.pem"), dir.join("client.key")));
    tls_client_with(proxy, name, &dir.join(ca_file), client_cert).await
}

async fn revoked_client(proxy: SocketAddr, dir: &Path) -> Result<String> {
    let cert = Some((dir.join("revoked.pem"), dir.join("revoked.key")));
    tls_client_with(proxy, "a.snigate.test", &dir.join("ca.pem"), cert).await
}

async fn tls_client_with(proxy: SocketAddr, name: &str, ca: &Path, cert: Option<(PathBuf, PathBuf)>) -> Result<String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(snigate::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match cert {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(&cert)?.collect::<Result<Vec<_>, _>>()?;
            builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(&key)?)?
        }
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = TcpStream::connect(proxy).await?;
    let server_name = ServerName::try_from(name.to_string())?;
    let tls_stream = tokio::time::timeout(DEMO_CLIENT_TIMEOUT, connector.connect(server_name, stream)).await??;
    first_line(tls_stream).await
}

async fn first_line<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) -> Result<String> {
    let mut answer = Vec::new();
    let read = async {
        let mut byte = [0u8; 1];
        while !answer.ends_with(b"\n") {
            if stream.read(&mut byte).await? == 0 {
                anyhow::bail!("connection closed before the backend answered");
            }
            answer.push(byte[0]);
        }
        Ok(())
    };
    tokio::time::timeout(DEMO_CLIENT_TIMEOUT, read).await.context("no answer in time")??;
    let _ = stream.shutdown().await;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

fn backend_tls_config(dir: &Path) -> Result<Arc<rustls::ServerConfig>> {
    let chain = CertificateDer::pem_file_iter(dir.join("backend-c.pem"))?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(dir.join("backend-c.key"))?;
    let config = rustls::ServerConfig::builder_with_provider(snigate::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(Arc::new(config))
}

/// Writes the demo PKI: a CA, server certificates for a/b, a client certificate (CN=demo-client),
/// a revoked one and the CRL that revokes it, and a separate CA + certificate for the passthrough
/// backend (so a client can tell it reached the backend, not snigate).
fn make_certificates(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let write = |name: &str, text: &str| std::fs::write(dir.join(name), text);
    write(
        "README.txt",
        "Throwaway demo material made by `snigate demo`. NOT for production: the keys sit in plain files.\n",
    )?;
    let demo_ca = ca("snigate demo CA")?;
    write("ca.pem", &demo_ca.0.pem())?;
    let issuer = Issuer::new(demo_ca.1, demo_ca.2);
    for name in ["a.snigate.test", "b.snigate.test"] {
        let (cert, key) = leaf(name, vec![name.to_string(), format!("*.{name}")], None, &issuer)?;
        write(&format!("{name}.pem"), &cert)?;
        write(&format!("{name}.key"), &key)?;
    }
    let (cert, key) = leaf("demo-client", vec![], Some(1001), &issuer)?;
    write("client.pem", &cert)?;
    write("client.key", &key)?;
    let (cert, key) = leaf("revoked-client", vec![], Some(1002), &issuer)?;
    write("revoked.pem", &cert)?;
    write("revoked.key", &key)?;
    let crl = CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2025, 1, 1),
        next_update: rcgen::date_time_ymd(2035, 1, 1),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![RevokedCertParams {
            serial_number: SerialNumber::from(1002u64),
            revocation_time: rcgen::date_time_ymd(2025, 1, 1),
            reason_code: None,
            invalidity_date: None,
        }],
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(&issuer)?;
    write("ca.crl", &crl.pem()?)?;

    let backend_ca = ca("snigate demo passthrough backend CA")?;
    write("backend-ca.pem", &backend_ca.0.pem())?;
    let backend_issuer = Issuer::new(backend_ca.1, backend_ca.2);
    let (cert, key) = leaf("c.snigate.test", vec!["c.snigate.test".into()], None, &backend_issuer)?;
    write("backend-c.pem", &cert)?;
    write("backend-c.key", &key)?;
    Ok(())
}

fn ca(name: &str) -> Result<(rcgen::Certificate, CertificateParams, KeyPair)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let cert = params.self_signed(&key)?;
    Ok((cert, params, key))
}

/// A leaf certificate and its key, PEM; `serial` pins the serial number so the CRL can name it.
fn leaf(
    common_name: &str,
    dns_names: Vec<String>,
    serial: Option<u64>,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<(String, String)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(dns_names)?;
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.serial_number = serial.map(SerialNumber::from);
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}
