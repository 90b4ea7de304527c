//! snigate: an SNI-routing TLS stream proxy. One listener takes TLS connections for many
//! hostnames, reads the ClientHello's server name, and per route terminates TLS or passes it
//! through, prepending a PROXY v1/v2 header that carries the client's address and, on terminated
//! routes, its verified client-certificate identity. See DESIGN.md for the data flow.

pub mod admin;
pub mod backend;
pub mod config;
pub mod connection;
pub mod demo;
pub mod health;
pub mod hello;
pub mod inbound;
pub mod ip_limit;
pub mod metrics;
pub mod nginx;
pub mod pem_files;
pub mod prefixed;
pub mod proxy_header;
pub mod relay;
pub mod reload;
pub mod routes;
pub mod server;
pub mod sessions;
pub mod signals;
#[cfg(target_os = "linux")]
pub mod splice;
pub mod tls;
pub mod yaml_depth;
pub mod yaml_position;
