//! snigate: an SNI-routing TLS stream proxy. One listener takes TLS connections for many
//! hostnames, reads the ClientHello's server name, and per route terminates TLS or passes it
//! through, prepending a PROXY v1/v2 header that carries the client's address and, on terminated
//! routes, its verified client-certificate identity.
//!
//! The library is three layers (ARCHITECTURE.md has the map): `proxy` is the data path of one
//! connection, `config` turns the routes file into the runtime model that `proxy` defines, and
//! `ops` runs it all (lifecycle, reload, signals, health, admin). `metrics` is shared by all.
//! The command (`src/bin/snigate/`, with the demo and the nginx importer) is not part of it.

#![forbid(unsafe_code)]

pub mod config;
pub mod metrics;
mod ops;
mod proxy;

// The public surface: what the command, the tests, the fuzz targets and the benches use.
pub use ops::{admin, fd_limit, reload, server, signals};
pub use proxy::{connection, hello, inbound, mqtt, proxy_header, routes, session_tickets, tls, websocket};
