//! The data path, in the order a connection meets it: inbound PROXY header, ClientHello,
//! route, TLS, backend, outbound PROXY header, relay. Nothing here reads the config file
//! or knows about signals; see ARCHITECTURE.md.

pub mod backend;
pub mod connection;
pub mod hello;
pub mod inbound;
pub mod ip_limit;
pub mod limits;
pub mod mqtt;
pub mod passive_health;
pub mod pem_files;
pub mod prefixed;
pub mod proxy_header;
pub mod relay;
pub mod route;
pub mod routes;
pub mod sessions;
pub mod tls;
pub mod tls_settings;
