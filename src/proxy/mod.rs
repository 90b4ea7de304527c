//! The data path, in the order a connection meets it: inbound PROXY header, ClientHello,
//! route, TLS, backend, outbound PROXY header, relay. Nothing here reads the config file
//! or knows about signals; see ARCHITECTURE.md.

pub(crate) mod acme_challenge;
pub(crate) mod backend;
pub(crate) mod cert_dir;
pub(crate) mod cert_resolver;
pub mod connection;
pub(crate) mod fd_exhaustion;
pub(crate) mod fetched_crls;
pub(crate) mod handshake_gate;
pub mod hello;
pub mod inbound;
pub(crate) mod ip_limit;
pub(crate) mod limits;
pub(crate) mod linger;
pub mod mqtt;
pub(crate) mod mqtt_admission;
pub(crate) mod passive_health;
pub(crate) mod pem_files;
pub(crate) mod prefixed;
pub mod proxy_header;
pub(crate) mod relay;
pub(crate) mod resumption;
pub(crate) mod route;
pub(crate) mod route_limits;
pub mod routes;
pub mod session_tickets;
pub(crate) mod sessions;
pub mod tls;
pub(crate) mod tls_settings;
pub(crate) mod token_bucket;
pub mod websocket;
