//! Active health checks per backend server: a TCP connect, or an MQTT CONNECT answered by a
//! CONNACK (after the route's PROXY header — Mosquitto refuses the LOCAL command, so the check
//! sends PROXY with the proxy's own addresses). `rise` passes bring a server up, `fall` failures
//! take it down; down servers are skipped by new connections, and with `on_backend_down:
//! close_sessions` their live sessions are closed so clients reconnect to a healthy server.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::metrics::close_cause::CloseCause;
use crate::metrics::Metrics;
use crate::proxy::backend::{self, HealthCheck, HealthCheckKind, OnBackendDown, ProxyProtocol};
use crate::proxy::proxy_header::{self, Meta};
use crate::proxy::route::Route;
use crate::proxy::routes::RouteTable;
use crate::proxy::sessions::Sessions;

/// MQTT 3.1.1 CONNECT: clean session, keep-alive 10 s, client id "snigate-health".
const MQTT_CONNECT: &[u8] = b"\x10\x1a\x00\x04MQTT\x04\x02\x00\x0a\x00\x0esnigate-health";
const MQTT_CONNACK_TYPE: u8 = 0x20;
const MQTT_DISCONNECT: &[u8] = b"\xe0\x00";

/// What the checks need besides the route table.
#[derive(Debug, Clone)]
pub struct Checker {
    pub sessions: Arc<Sessions>,
    pub metrics: Arc<Metrics>,
    pub close_jitter: std::time::Duration,
}

impl Checker {
    /// Starts one check loop per server of every route that has `health_check`; they stop when
    /// `stop` is cancelled (the table was replaced or the server is stopping).
    pub fn spawn(&self, routes: &Arc<RouteTable>, stop: &CancellationToken) {
        for (route_index, route) in routes.routes().iter().enumerate() {
            for (server_index, server) in route.backend.servers.iter().enumerate() {
                let up = backend::server_is_up(&route.backend, server_index);
                self.metrics.backend_health(&route.name, server, up);
                let Some(check) = route.backend.health_check.clone() else {
                    continue;
                };
                let checker = self.clone();
                let routes = Arc::clone(routes);
                let stop = stop.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = checker.run(&routes.routes()[route_index], server_index, &check) => {}
                    }
                });
            }
        }
    }

    async fn run(&self, route: &Route, server_index: usize, check: &HealthCheck) {
        let server = &route.backend.servers[server_index];
        let up_flag = &route.backend.server_up[server_index];
        let (mut passes, mut failures) = (0u32, 0u32);
        let mut interval = tokio::time::interval(check.interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let result = probe(server, route.backend.proxy_protocol, check).await;
            let was_up = up_flag.load(Ordering::Relaxed);
            match result {
                Ok(()) => (passes, failures) = (passes + 1, 0),
                Err(reason) => {
                    (passes, failures) = (0, failures + 1);
                    if was_up && failures == check.fall {
                        up_flag.store(false, Ordering::Relaxed);
                        self.metrics.backend_health(&route.name, server, false);
                        tracing::warn!(route = %route.name, %server, %reason, failures, "backend server down");
                        self.close_sessions_of(route, server);
                    }
                }
            }
            if !was_up && passes == check.rise {
                up_flag.store(true, Ordering::Relaxed);
                let up = route.backend.server_up[server_index].load(Ordering::Relaxed);
                self.metrics.backend_health(&route.name, server, up);
                tracing::info!(route = %route.name, %server, passes, "backend server up");
            }
        }
    }

    fn close_sessions_of(&self, route: &Route, server: &str) {
        if route.backend.on_backend_down != OnBackendDown::CloseSessions {
            return;
        }
        let closed = self.sessions.close_where(self.close_jitter, CloseCause::BackendDown, |session| {
            session.route == route.name && session.backend_server == server
        });
        if closed > 0 {
            tracing::info!(route = %route.name, %server, sessions = closed, jitter = ?self.close_jitter, "closing the sessions of a down server");
        }
    }
}

/// One check of one server.
async fn probe(server: &str, proxy_protocol: ProxyProtocol, check: &HealthCheck) -> Result<(), String> {
    let connected = backend::connect_one(server, check.timeout).await.map_err(|e| e.to_string())?;
    if check.kind == HealthCheckKind::Tcp {
        return Ok(());
    }
    let mut stream = connected.stream;
    let conversation = async {
        let own = stream.local_addr().map_err(|e| e.to_string())?;
        let meta = Meta { source: Some(own), destination: Some(connected.server), ..Meta::default() };
        let mut request = match proxy_protocol {
            ProxyProtocol::None => Vec::new(),
            ProxyProtocol::V1 => proxy_header::encode_v1(&meta),
            ProxyProtocol::V2 => proxy_header::encode_v2(&meta).map_err(|e| e.to_string())?,
        };
        request.extend_from_slice(MQTT_CONNECT);
        stream.write_all(&request).await.map_err(|e| format!("sending CONNECT: {e}"))?;
        let mut connack = [0u8; 4];
        stream.read_exact(&mut connack).await.map_err(|e| format!("no CONNACK: {e}"))?;
        if connack[0] != MQTT_CONNACK_TYPE {
            return Err(format!("expected CONNACK, got packet type {:#04x}", connack[0]));
        }
        let _ = stream.write_all(MQTT_DISCONNECT).await;
        Ok(())
    };
    tokio::time::timeout(check.timeout, conversation)
        .await
        .unwrap_or_else(|_| Err(format!("no CONNACK within {:?}", check.timeout)))
}
