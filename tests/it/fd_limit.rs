//! Under a low open-file limit the proxy raises its soft limit to the hard one, warns that the
//! limit holds fewer sessions than `max_connections`, and stops accepting at what it can hold:
//! clients beyond it wait in the listen backlog and are served as others finish, instead of
//! completing a handshake and then being dropped for want of a backend socket.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::support::ops::*;
use crate::support::tls::simple_client;
use crate::support::*;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Clients at once: several times what the limit below holds.
const CLIENTS: usize = 200;
/// The hard open-file limit the proxy runs under; it starts with a soft limit of 64.
const HARD_LIMIT: u32 = 256;
/// Generous bound for one client's whole session, queueing in the backlog included.
const SESSION_BOUND: Duration = Duration::from_secs(90);

/// Starts the binary under `ulimit -S -n 64; ulimit -H -n HARD_LIMIT`.
fn spawn_limited(config: &std::path::Path, log: std::path::PathBuf) -> ChildProxy {
    let out = std::fs::File::create(&log).unwrap();
    let script = format!("ulimit -S -n 64 && ulimit -H -n {HARD_LIMIT} && exec \"$0\" run --config \"$1\"");
    let child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_snigate"))
        .arg(config)
        .env("RUST_LOG", "snigate=info")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("start the snigate binary under sh");
    ChildProxy { child, log }
}

/// Handshake, one echoed message, close: `Err` says where it broke.
async fn session(addr: SocketAddr, config: Arc<rustls::ClientConfig>, i: usize) -> Result<(), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    let name = ServerName::try_from("a.test").unwrap();
    let mut tls =
        tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.map_err(|e| format!("handshake: {e}"))?;
    let message = format!("client {i}");
    tls.write_all(message.as_bytes()).await.map_err(|e| format!("write after the handshake: {e}"))?;
    let mut back = vec![0u8; message.len()];
    tls.read_exact(&mut back).await.map_err(|e| format!("handshake done, then no data relayed: {e}"))?;
    if back != message.as_bytes() {
        return Err(format!("echo mismatch: {back:?}"));
    }
    tls.shutdown().await.map_err(|e| format!("close: {e}"))?;
    let mut rest = Vec::new();
    let _ = tls.read_to_end(&mut rest).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_open_file_limit_caps_connections_instead_of_accepting_and_dropping() {
    let pki = Pki::new();
    let ca = pki.ca("ca", "CA");
    let leaf = ca.server_cert("server", &["a.test"]);
    let _backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let (listen, admin) = (closed_port().await, closed_port().await);
    let route = RouteYaml::new("a", "terminate").sni(&["a.test"]).cert(&leaf).server(_backend.addr);
    let config = pki.write(
        "routes.yaml",
        &format!("admin: {}\n{}", q(admin.to_string()), config_yaml(&[&listen.to_string()], "reject", &[route])),
    );
    let mut child = spawn_limited(&config, pki.path().join("snigate.log"));
    child.wait_ready(admin).await;

    let client = simple_client(&ca.cert_der, None);
    let sessions: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                tokio::time::timeout(SESSION_BOUND, session(listen, client, i))
                    .await
                    .unwrap_or_else(|_| Err("no answer within the bound".into()))
            })
        })
        .collect();
    let mut failures = Vec::new();
    for (i, task) in sessions.into_iter().enumerate() {
        if let Err(error) = task.await.unwrap() {
            failures.push(format!("client {i}: {error}"));
        }
    }
    let log = child.log_text();
    assert!(failures.is_empty(), "{} of {CLIENTS} clients failed: {failures:#?}\n{log}", failures.len());
    assert!(log.contains(&format!("soft={HARD_LIMIT}")), "the soft limit is raised to the hard one:\n{log}");
    assert!(log.contains("the open-file limit cannot hold max_connections sessions"), "startup warning:\n{log}");
    assert!(!log.contains("backend_unavailable") && !log.contains("local_fd_exhausted"), "{log}");
    let slots = metric(&scrape(admin).await, "snigate_connection_slots", &[]).expect("the cap is exported");
    assert!((1.0..1000.0).contains(&slots), "capped below max_connections 1000: {slots}");
}
