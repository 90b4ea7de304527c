//! One validated route: what it does with a connection (its mode), its TLS and its backend pool.
//! [`RouteTable`](crate::proxy::routes::RouteTable) picks one for a ClientHello.

use serde::Deserialize;

use crate::proxy::backend::Backend;
use crate::proxy::tls::RouteTls;

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
    pub mode: Mode,
    /// Present exactly when `mode` is terminate.
    pub tls: Option<RouteTls>,
    pub backend: Backend,
}
