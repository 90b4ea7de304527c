//! One validated route: what it does with a connection (its mode), its TLS and its backend pool.
//! [`RouteTable`](crate::proxy::routes::RouteTable) picks one for a ClientHello.

use serde::Deserialize;

use crate::proxy::backend::Backend;
use crate::proxy::mqtt_admission::MqttSettings;
use crate::proxy::route_limits::RouteLimits;
use crate::proxy::tls::RouteTls;
use crate::proxy::websocket::WebSocketSettings;

/// What a route does with the client's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Terminate,
    Passthrough,
    Tcp,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Terminate => "terminate",
            Mode::Passthrough => "passthrough",
            Mode::Tcp => "tcp",
        }
    }
}

#[derive(Debug)]
pub struct Route {
    pub name: String,
    /// The ALPN protocols this route takes for its names (`routes[].alpn`); empty: the rest.
    pub alpn: Vec<Vec<u8>>,
    pub mode: Mode,
    /// Present exactly when `mode` is terminate.
    pub tls: Option<RouteTls>,
    /// `routes[].mqtt`: the first packet is read as a CONNECT before the backend is connected.
    pub mqtt: Option<MqttSettings>,
    /// `routes[].websocket`: the client's WebSocket upgrade is answered and its frames unwrapped.
    pub websocket: Option<WebSocketSettings>,
    /// `routes[].limits`, within the proxy's.
    pub limits: RouteLimits,
    pub backend: Backend,
}

impl Route {
    /// The protocol this route was picked for: the first one offered that it lists. The `alpn`
    /// sets of one name's routes are disjoint, so this is the protocol the lookup matched.
    pub fn matched_alpn<'h>(&self, offered: &'h [Vec<u8>]) -> Option<&'h [u8]> {
        if self.alpn.is_empty() {
            return None;
        }
        offered.iter().find(|protocol| self.alpn.contains(protocol)).map(Vec::as_slice)
    }
}
