//! The proxy-wide limits every connection runs under, each default next to the field it sets.
//! The config schema re-exports the defaults (`limits:` in the routes file overrides them).

use std::time::Duration;

use crate::proxy::token_bucket::Rate;

/// Whole ClientHello deadline: a real client sends its hello in one flight, well under a second.
pub const DEFAULT_HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Hello buffer cap: post-quantum hybrid key shares (X25519MLKEM768 alone is 1,216 bytes) make
/// 2–4 KiB hellos normal; 16 KiB leaves room for large session tickets and many extensions.
pub const DEFAULT_MAX_HELLO_BYTES: usize = 16 * 1024;
/// Open client connections; each costs two sockets (client + backend).
pub const DEFAULT_MAX_CONNECTIONS: usize = 50_000;
/// Concurrent TLS handshakes on terminate routes: the CPU-heavy step a flood targets.
pub const DEFAULT_MAX_HANDSHAKES: usize = 1024;
/// Open connections from one client address; 0 = no cap (fleets behind carrier NAT share one).
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 0;
/// No bytes either way for this long closes the connection (MQTT keep-alives are ≤ a few minutes).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// A terminate handshake (after the hello arrived) must finish within this.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long SIGTERM waits for live connections before closing them.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Window over which sessions are closed in bulk (after the drain, or when their backend goes
/// down), so a fleet of MQTT clients does not reconnect in one burst.
pub const DEFAULT_CLOSE_JITTER: Duration = Duration::from_secs(5);

/// The validated `limits:` section.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Default [`DEFAULT_HELLO_TIMEOUT`].
    pub hello_timeout: Duration,
    /// Default [`DEFAULT_MAX_HELLO_BYTES`].
    pub max_hello_bytes: usize,
    /// Default [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// Default [`DEFAULT_MAX_HANDSHAKES`].
    pub max_handshakes: usize,
    /// Default [`DEFAULT_MAX_CONNECTIONS_PER_IP`].
    pub max_connections_per_ip: usize,
    /// Default [`DEFAULT_IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// Default [`DEFAULT_HANDSHAKE_TIMEOUT`].
    pub handshake_timeout: Duration,
    /// Default [`DEFAULT_DRAIN_TIMEOUT`].
    pub drain_timeout: Duration,
    /// Default [`DEFAULT_CLOSE_JITTER`].
    pub close_jitter: Duration,
    /// `handshakes_per_second` / `handshake_burst` across every route; default none.
    pub handshake_rate: Option<Rate>,
}
