//! snigate's integration tests, one binary (one link step) with a module per topic. Every test
//! runs the real server on loopback with certificates made at test time; `support` holds the
//! test PKI, clients, an independent PROXY decoder, a scriptable backend and the server runner.

mod support;

mod access_log;
mod acme;
mod admin_limits;
mod alpn_routing;
mod backend_balance;
mod backend_failover;
mod cert_dir;
mod check_cli;
mod client_certificates;
mod close_causes;
mod completions_man;
mod container;
mod crl_fetch;
mod deploy;
mod fd_limit;
mod hello_limits;
mod import_haproxy;
mod import_nginx;
mod inbound_proxy;
mod layout_docs;
mod lifecycle;
mod limits;
mod mqtt_identity;
mod mqtt_paho;
mod mqtt_routes;
mod operations_drain;
mod operations_health;
mod operations_metrics;
mod operations_reload;
mod operations_signals;
mod passive_health;
mod passthrough;
mod proxy_decoder;
mod proxy_header;
mod relay;
mod reload_triggers;
mod route_limits;
mod routing;
mod session_resumption;
mod sni_edge_cases;
mod support_selftest;
mod tenant_isolation;
mod terminate;
mod websocket;
mod websocket_browser;
