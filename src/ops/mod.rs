//! Running the proxy: server lifecycle, reload triggers, signals, health checks, the admin
//! endpoint and process limits. Built on the data path in `proxy`; see ARCHITECTURE.md.

pub mod admin;
pub(crate) mod crl_fetch;
pub(crate) mod crl_schedule;
pub mod fd_limit;
pub(crate) mod health;
pub mod reload;
pub mod server;
pub mod signals;
