//! Backup servers (used only while no primary can be connected) and `balance`:
//! `least_connections` by open sessions, `client_ip` by the client address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::support::ops::*;
use crate::support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

/// Addresses of 127/8 after 127.0.0.1 used as distinct clients (Linux routes all of it to lo).
const DISTINCT_CLIENTS: u8 = 40;

fn backup_line(servers: &[&TestBackend]) -> String {
    let listed: Vec<String> = servers.iter().map(|s| q(s.server())).collect();
    format!("backup_servers: [{}]", listed.join(", "))
}

fn backend_up(proxy: &RunningProxy, server: &str) -> Option<f64> {
    let samples = parse_exposition(&proxy.metrics.encode());
    metric(&samples, "snigate_backend_up", &[("route", "plain"), ("server", server)])
}

fn active(proxy: &RunningProxy) -> f64 {
    let samples = parse_exposition(&proxy.metrics.encode());
    metric(&samples, "snigate_connections_active", &[("route", "plain")]).unwrap_or(0.0)
}

/// A client from `source` whose byte came back: the open connection.
async fn session_from(proxy: &RunningProxy, source: IpAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let mut tcp = socket.connect(proxy.addr(0)).await.unwrap();
    echo(&mut tcp, b"x").await.unwrap();
    tcp
}

async fn session(proxy: &RunningProxy) -> TcpStream {
    session_from(proxy, IpAddr::V4(Ipv4Addr::LOCALHOST)).await
}

/// Which of `backends` accepted the one connection `open` makes (by their accept counts).
async fn lands_on<F: std::future::Future<Output = TcpStream>>(
    backends: &[&TestBackend],
    open: F,
) -> (usize, TcpStream) {
    let before: Vec<usize> = backends.iter().map(|b| b.accept_count()).collect();
    let tcp = open.await;
    let after: Vec<usize> = backends.iter().map(|b| b.accept_count()).collect();
    let reached: Vec<usize> = (0..backends.len()).filter(|&i| after[i] > before[i]).collect();
    assert_eq!(reached.len(), 1, "exactly one backend accepted: {before:?} → {after:?}");
    (reached[0], tcp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_serves_only_while_the_primary_refuses_and_the_primary_takes_over_when_back() {
    let dead = closed_port().await;
    let backup = TestBackend::start(BackendOpts::plain(ProxyExpect::None)).await;
    let route = RouteYaml::new("plain", "tcp")
        .proxy("none")
        .server(dead)
        .backend(backup_line(&[&backup]))
        .backend("fail_timeout: 1s");
    let proxy = start_proxy(&config_v4("plain", &[route])).await;
    eventually(WAIT, "backups to have a snigate_backend_up series", || async {
        match backend_up(&proxy, &backup.server()) {
            Some(1.0) => Ok(()),
            other => Err(format!("snigate_backend_up is {other:?}")),
        }
    })
    .await;

    for _ in 0..3 {
        drop(session(&proxy).await);
    }
    assert_eq!(backup.accept_count(), 3, "the refusing primary's clients went to the backup");
    assert_eq!(backend_up(&proxy, &dead.to_string()), Some(0.0));

    let primary = TestBackend::start_on(&dead.to_string(), BackendOpts::plain(ProxyExpect::None)).await.unwrap();
    eventually(WAIT, "the primary to serve again after fail_timeout", || async {
        drop(session(&proxy).await);
        match primary.accept_count() {
            0 => Err("still on the backup".to_string()),
            _ => Ok(()),
        }
    })
    .await;
    let on_backup = backup.accept_count();
    for _ in 0..3 {
        drop(session(&proxy).await);
    }
    assert_eq!(backup.accept_count(), on_backup, "no stickiness: the primary takes every new connection");
    assert_eq!(backend_up(&proxy, &dead.to_string()), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_are_not_used_while_one_primary_is_up() {
    let dead = closed_port().await;
    let live = TestBackend::start(BackendOpts::plain(ProxyExpect::None)).await;
    let backup = TestBackend::start(BackendOpts::plain(ProxyExpect::None)).await;
    let route =
        RouteYaml::new("plain", "tcp").proxy("none").server(dead).server(live.addr).backend(backup_line(&[&backup]));
    let proxy = start_proxy(&config_v4("plain", &[route])).await;
    for _ in 0..6 {
        drop(session(&proxy).await);
    }
    assert_eq!(live.accept_count(), 6);
    assert_eq!(backup.accept_count(), 0, "a backup takes no connection while a primary is up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_sends_new_clients_to_the_server_with_fewer_open_sessions() {
    let one = TestBackend::start(BackendOpts::plain(ProxyExpect::None)).await;
    let two = TestBackend::start(BackendOpts::plain(ProxyExpect::None)).await;
    let route = RouteYaml::new("plain", "tcp")
        .proxy("none")
        .server(one.addr)
        .server(two.addr)
        .backend("balance: least_connections");
    let proxy = start_proxy(&config_v4("plain", &[route])).await;
    let backends = [&one, &two];
    let mut held: Vec<(usize, TcpStream)> = Vec::new();
    for _ in 0..4 {
        held.push(lands_on(&backends, session(&proxy)).await);
    }
    let on_first = held.iter().filter(|(server, _)| *server == 0).count();
    assert_eq!(on_first, 2, "open sessions are spread evenly");
    // Close the second server's sessions: it now has none, the first two.
    for (_, mut tcp) in held.extract_if(.., |(server, _)| *server == 1) {
        tcp.shutdown().await.unwrap();
        read_until_closed(&mut tcp).await;
    }
    eventually(WAIT, "the closed sessions to end in the proxy", || async {
        match active(&proxy) {
            2.0 => Ok(()),
            other => Err(format!("{other} active")),
        }
    })
    .await;
    for n in 0..2 {
        let (server, tcp) = lands_on(&backends, session(&proxy)).await;
        assert_eq!(server, 1, "new session {n} goes to the server with fewer open sessions");
        held.push((server, tcp));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ip_keeps_an_address_on_one_server_and_spreads_addresses() {
    let one = TestBackend::start(BackendOpts::plain(ProxyExpect::None)).await;
    let two = TestBackend::start(BackendOpts::plain(ProxyExpect::None)).await;
    let route =
        RouteYaml::new("plain", "tcp").proxy("none").server(one.addr).server(two.addr).backend("balance: client_ip");
    let proxy = start_proxy(&config_v4("plain", &[route])).await;
    let backends = [&one, &two];
    let (first, _) = lands_on(&backends, session(&proxy)).await;
    for _ in 0..8 {
        let (server, _) = lands_on(&backends, session(&proxy)).await;
        assert_eq!(server, first, "127.0.0.1 always lands on the same server");
    }
    let mut per_server = [0usize; 2];
    for last in 2..2 + DISTINCT_CLIENTS {
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, last));
        let (server, _) = lands_on(&backends, session_from(&proxy, source)).await;
        let (again, _) = lands_on(&backends, session_from(&proxy, source)).await;
        assert_eq!(server, again, "{source} lands on the same server twice");
        per_server[server] += 1;
    }
    assert!(per_server.iter().all(|&n| n > 0), "distinct addresses spread: {per_server:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_cover_backups_and_a_reload_keeps_their_state() {
    let (primary, backup) = (closed_port().await, closed_port().await);
    let route = RouteYaml::new("plain", "tcp")
        .proxy("none")
        .server(primary)
        .backend(format!("backup_servers: [{}]", q(backup.to_string())))
        // A slow interval: a reload that forgot the state would show the backup up for >= 3 s.
        .backend("health_check: { type: tcp, interval: 3s, timeout: 200ms, rise: 1, fall: 2 }");
    let proxy = start_proxy(&config_v4("plain", &[route])).await;
    let proxy = &proxy;
    for server in [primary, backup] {
        eventually(WAIT, "the health check to mark the server down", || async move {
            match backend_up(proxy, &server.to_string()) {
                Some(0.0) => Ok(()),
                other => Err(format!("snigate_backend_up{{server=\"{server}\"}} is {other:?}")),
            }
        })
        .await;
    }
    within("reload", proxy.reload.reload()).await.expect("reload of an unchanged file");
    assert_eq!(backend_up(proxy, &backup.to_string()), Some(0.0), "the reload kept the backup's state");
    assert_eq!(backend_up(proxy, &primary.to_string()), Some(0.0));
}
