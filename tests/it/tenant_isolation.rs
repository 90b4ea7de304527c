//! One tenant's TLS state never serves another: a session resumed on a route it was not issued
//! by would skip that route's client-certificate check (nginx CVE-2025-23419), so each route has
//! its own session cache and ticket key, and rustls checks the SNI on resumption.

use std::sync::{Arc, Mutex};

use crate::support::tls::{client_config, expect_refused, tls_connect};
use crate::support::*;
use rustls::client::{ClientSessionStore, Resumption, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::{HandshakeKind, NamedGroup};
use rustls_pki_types::ServerName;
use tokio::io::AsyncWriteExt;

/// A client session store that ignores the server name: whatever ticket it holds is offered to
/// every server, which is what an attacker replaying a ticket to another SNI does.
#[derive(Debug, Default)]
struct OneStoreForAllNames {
    tickets: Mutex<Vec<Tls13ClientSessionValue>>,
}

impl OneStoreForAllNames {
    fn held(&self) -> usize {
        self.tickets.lock().unwrap().len()
    }
}

impl ClientSessionStore for OneStoreForAllNames {
    fn set_kx_hint(&self, _: ServerName<'static>, _: NamedGroup) {}
    fn kx_hint(&self, _: &ServerName<'_>) -> Option<NamedGroup> {
        None
    }
    fn set_tls12_session(&self, _: ServerName<'static>, _: Tls12ClientSessionValue) {}
    fn tls12_session(&self, _: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        None
    }
    fn remove_tls12_session(&self, _: &ServerName<'static>) {}
    fn insert_tls13_ticket(&self, _: ServerName<'static>, value: Tls13ClientSessionValue) {
        self.tickets.lock().unwrap().push(value);
    }
    fn take_tls13_ticket(&self, _: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        self.tickets.lock().unwrap().pop()
    }
}

fn client_with_store(ca: &Ca, identity: Option<&Leaf>, store: Arc<OneStoreForAllNames>) -> Arc<rustls::ClientConfig> {
    let mut config = Arc::unwrap_or_clone(client_config(ClientOpts {
        roots: vec![ca.cert_der.clone()],
        identity: identity.map(Leaf::identity),
        versions: Versions::Tls13Only,
        ..Default::default()
    }));
    config.resumption = Resumption::store(store);
    Arc::new(config)
}

/// Completes a session and one echo round trip (which also delivers the server's tickets).
async fn session(proxy: &RunningProxy, config: Arc<rustls::ClientConfig>, sni: &str) -> HandshakeKind {
    let (mut tls, _) = tls_connect(proxy.addr(0), config, sni).await.expect("handshake");
    tls.write_all(b"ping").await.unwrap();
    assert_eq!(read_n(&mut tls, 4).await, b"ping");
    let kind = tls.get_ref().1.handshake_kind().expect("handshake finished");
    let _ = tls.shutdown().await;
    kind
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_from_one_route_is_never_resumed_on_another_route() {
    let pki = Pki::new();
    let ca = pki.ca("ca", "Shared server CA");
    let tenant_b_clients = pki.ca("b-clients", "Tenant B client CA");
    let a_cert = ca.server_cert("a", &["a.test"]);
    let b_cert = ca.server_cert("b", &["b.test"]);
    let backend_a = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let backend_b = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let routes = [
        RouteYaml::new("a", "terminate").sni(&["a.test"]).cert(&a_cert).server(backend_a.addr),
        RouteYaml::new("b", "terminate")
            .sni(&["b.test"])
            .cert(&b_cert)
            .client_auth("required", &tenant_b_clients)
            .server(backend_b.addr),
    ];
    let proxy = start_proxy(&config_v4("reject", &routes)).await;

    // rustls clients only resume with the config that made the session, so each client reuses one.
    let anonymous_store = Arc::new(OneStoreForAllNames::default());
    let anonymous = client_with_store(&ca, None, anonymous_store.clone());
    // Resumption works on the route that issued the ticket: the checks below are meaningful.
    assert_eq!(session(&proxy, anonymous.clone(), "a.test").await, HandshakeKind::Full);
    assert_eq!(session(&proxy, anonymous.clone(), "a.test").await, HandshakeKind::Resumed);

    // Route a's ticket offered to route b without a client certificate: no session, no bypass.
    assert!(anonymous_store.held() > 0, "a ticket from route a is on offer");
    let how = expect_refused(proxy.addr(0), anonymous.clone(), "b.test").await;
    assert!(!how.is_empty());
    backend_b.assert_untouched(std::time::Duration::from_millis(100)).await;

    // A client holding a tenant-b certificate resumes on a, then offers that ticket to b:
    // route b runs a full handshake (and checks the certificate) instead.
    let device = tenant_b_clients.client_cert("device-b", &ClientSpec::cn("device-b"));
    let device_store = Arc::new(OneStoreForAllNames::default());
    let with_cert = client_with_store(&ca, Some(&device), device_store.clone());
    assert_eq!(session(&proxy, with_cert.clone(), "a.test").await, HandshakeKind::Full);
    assert_eq!(session(&proxy, with_cert.clone(), "a.test").await, HandshakeKind::Resumed);
    assert!(device_store.held() > 0, "a ticket from route a is on offer");
    let kind = session(&proxy, with_cert.clone(), "b.test").await;
    assert_eq!(kind, HandshakeKind::Full, "route b must not resume a session issued by route a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_for_one_name_is_not_resumed_under_another_name_of_the_same_route() {
    let pki = Pki::new();
    let ca = pki.ca("ca", "CA");
    let cert = ca.server_cert("wild", &["*.a.test"]);
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let route = RouteYaml::new("a", "terminate").sni(&["*.a.test"]).cert(&cert).server(backend.addr);
    let proxy = start_proxy(&config_v4("reject", &[route])).await;

    let store = Arc::new(OneStoreForAllNames::default());
    let client = client_with_store(&ca, None, store.clone());
    assert_eq!(session(&proxy, client.clone(), "x.a.test").await, HandshakeKind::Full);
    assert_eq!(session(&proxy, client.clone(), "x.a.test").await, HandshakeKind::Resumed);
    assert!(store.held() > 0, "a ticket for x.a.test is on offer");
    assert_eq!(
        session(&proxy, client.clone(), "y.a.test").await,
        HandshakeKind::Full,
        "a ticket issued for x.a.test is not accepted for y.a.test"
    );
}
