//! Running the proxy: server lifecycle, reload triggers, signals, health checks, the admin
//! endpoint and process limits. Built on the data path in `proxy`; see ARCHITECTURE.md.

pub(crate) mod acme;
pub(crate) mod acme_http;
pub(crate) mod acme_mirror;
pub(crate) mod acme_schedule;
pub(crate) mod acme_storage;
pub mod admin;
pub(crate) mod clock;
pub(crate) mod crl_fetch;
pub(crate) mod crl_schedule;
pub mod fd_limit;
pub(crate) mod health;
pub mod reload;
pub mod server;
pub mod signals;
