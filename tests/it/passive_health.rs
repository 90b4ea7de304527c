//! Passive health on routes without a health check: failed connects mark a server down in
//! `snigate_backend_up`, connections skip it for `fail_timeout` while another server is up, and a
//! connect that succeeds after `fail_timeout` brings it back.

use std::time::Duration;

use crate::support::ops::*;
use crate::support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn samples(proxy: &RunningProxy) -> Vec<Sample> {
    parse_exposition(&proxy.metrics.encode())
}

fn backend_up(proxy: &RunningProxy, server: &str) -> Option<f64> {
    metric(&samples(proxy), "snigate_backend_up", &[("route", "plain"), ("server", server)])
}

fn connect_failures(proxy: &RunningProxy, server: &str) -> f64 {
    metric(&samples(proxy), "snigate_backend_connect_failures_total", &[("route", "plain"), ("server", server)])
        .unwrap_or(0.0)
}

/// One client through the tcp route: `Ok` when its byte came back from a backend.
async fn one_echo(proxy: &RunningProxy) -> Result<(), String> {
    let mut tcp = TcpStream::connect(proxy.addr(0)).await.map_err(|e| format!("connect: {e}"))?;
    echo(&mut tcp, b"x").await
}

/// A client whose connection the proxy closes (no server reachable).
async fn refused_client(proxy: &RunningProxy) {
    let mut tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
    tcp.write_all(b"x").await.unwrap();
    let closed = read_until_closed(&mut tcp).await;
    assert!(closed.bytes().is_empty(), "{closed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusing_server_without_health_check_goes_down_and_a_successful_connect_brings_it_back() {
    let dead = closed_port().await;
    let server = dead.to_string();
    let route = RouteYaml::new("plain", "tcp").server(dead).backend("max_fails: 2").backend("fail_timeout: 1s");
    let proxy = start_proxy(&config_v4("plain", &[route])).await;
    eventually(WAIT, "the gauge to be exported", || async {
        match backend_up(&proxy, &server) {
            Some(1.0) => Ok(()),
            other => Err(format!("snigate_backend_up is {other:?} before any connect")),
        }
    })
    .await;

    refused_client(&proxy).await;
    assert_eq!(backend_up(&proxy, &server), Some(1.0), "one failure of max_fails 2");
    refused_client(&proxy).await;
    assert_eq!(backend_up(&proxy, &server), Some(0.0), "two failures in a row take it down");

    let mut backend = TestBackend::start_on(&server, BackendOpts::plain(ProxyExpect::V2)).await.unwrap();
    // The only server: it is tried although it rests (every server is down).
    one_echo(&proxy).await.unwrap();
    backend.accepted().await.v2();
    assert_eq!(backend_up(&proxy, &server), Some(1.0), "a connect that succeeded brings it back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passively_down_server_is_skipped_while_another_is_up() {
    let dead = closed_port().await;
    let mut live = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let route = RouteYaml::new("plain", "tcp").server(dead).server(live.addr).backend("fail_timeout: 1m");
    let proxy = start_proxy(&config_v4("plain", &[route])).await;
    for i in 0..6 {
        one_echo(&proxy).await.unwrap_or_else(|e| panic!("client {i}: {e}"));
        live.accepted().await.v2();
    }
    assert_eq!(connect_failures(&proxy, &dead.to_string()), 1.0, "tried once, then skipped for fail_timeout");
    assert_eq!(backend_up(&proxy, &dead.to_string()), Some(0.0));
    assert_eq!(backend_up(&proxy, &live.server()), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_down_is_still_tried() {
    let (one, two) = (closed_port().await, closed_port().await);
    let route = RouteYaml::new("plain", "tcp").server(one).server(two).backend("fail_timeout: 1m");
    let proxy = start_proxy(&config_v4("plain", &[route])).await;
    for _ in 0..3 {
        refused_client(&proxy).await;
    }
    assert_eq!(connect_failures(&proxy, &one.to_string()), 3.0, "resting servers are tried when all rest");
    assert_eq!(connect_failures(&proxy, &two.to_string()), 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_fails_zero_keeps_a_refusing_server_up() {
    let dead = closed_port().await;
    let route = RouteYaml::new("plain", "tcp").server(dead).backend("max_fails: 0");
    let proxy = start_proxy(&config_v4("plain", &[route])).await;
    for _ in 0..3 {
        refused_client(&proxy).await;
    }
    assert_eq!(backend_up(&proxy, &dead.to_string()), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_server_is_tried_again_once_fail_timeout_is_over() {
    let dead = closed_port().await;
    let server = dead.to_string();
    let live = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let route = RouteYaml::new("plain", "tcp").server(dead).server(live.addr).backend("fail_timeout: 1s");
    let proxy = start_proxy(&config_v4("plain", &[route])).await;
    for _ in 0..2 {
        one_echo(&proxy).await.unwrap();
    }
    assert_eq!(backend_up(&proxy, &server), Some(0.0), "round-robin tried it once: down");

    let revived = TestBackend::start_on(&server, BackendOpts::plain(ProxyExpect::V2)).await.unwrap();
    eventually(Duration::from_secs(30), "a connection to reach the server again after fail_timeout", || async {
        one_echo(&proxy).await?;
        match revived.accept_count() {
            0 => Err("the revived server got no connection yet".to_string()),
            _ => Ok(()),
        }
    })
    .await;
    assert_eq!(backend_up(&proxy, &server), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_a_passively_down_server_down_and_resting() {
    let dead = closed_port().await;
    let mut live = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let route = RouteYaml::new("plain", "tcp").server(dead).server(live.addr).backend("fail_timeout: 1m");
    let proxy = start_proxy(&config_v4("plain", &[route])).await;
    for i in 0..2 {
        one_echo(&proxy).await.unwrap_or_else(|e| panic!("client {i}: {e}"));
        live.accepted().await.v2();
    }
    assert_eq!(backend_up(&proxy, &dead.to_string()), Some(0.0));

    // The same route in a changed file (a second route added): the dead server stays down.
    let extra = RouteYaml::new("other", "passthrough").sni(&["other.test"]).server(live.addr);
    let route = RouteYaml::new("plain", "tcp").server(dead).server(live.addr).backend("fail_timeout: 1m");
    std::fs::write(&proxy.config_path, config_v4("plain", &[route, extra])).unwrap();
    proxy.reload.reload().await.expect("reload");
    assert_eq!(backend_up(&proxy, &dead.to_string()), Some(0.0), "the reload did not bring it back");
    for i in 0..4 {
        one_echo(&proxy).await.unwrap_or_else(|e| panic!("client {i} after the reload: {e}"));
        live.accepted().await.v2();
    }
    assert_eq!(connect_failures(&proxy, &dead.to_string()), 1.0, "still resting after the reload: not tried again");
}
