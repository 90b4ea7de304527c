//! The closed sets of labels a connection's end is known by: why it closed (the access log's
//! `cause`, `snigate_connection_closes_total` and `snigate_connections_rejected_total`), why its
//! ClientHello was refused (`snigate_hello_rejects_total`) and why its TLS handshake failed
//! (`snigate_handshake_failures_total`). Each enum has one mapping to its label; the README's
//! tables list the same labels, and a test here checks that they do.
//!
//! To add a cause: add a variant with a doc line, its label in `label` and in `ALL`, and a row
//! in the README's table. Labels are stable: dashboards and alerts use them.

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCause {
    /// Both sides ended: an EOF, a TLS close without close_notify, a peer already gone at the
    /// final shutdown.
    Closed,
    /// No bytes in either direction for `idle_timeout`.
    IdleTimeout,
    /// The drain deadline passed (or a second SIGTERM/SIGINT came) while the connection was open.
    Shutdown,
    /// Closed by the drain after `drain_timeout`, at its moment within `close_jitter`.
    DrainTimeout,
    /// Closed because a health check took its backend server down (`on_backend_down: close_sessions`).
    BackendDown,
    /// Closed at a reload whose CRLs revoke its client certificate (`revoke_live: true`).
    CertificateRevoked,
    /// A read or write on the client side failed mid-session, e.g. a reset.
    ClientError,
    /// A read or write on the backend side failed mid-session, or the PROXY header could not be sent.
    BackendError,
    /// The proxy ran out of file descriptors (EMFILE/ENFILE) for the backend socket or a splice pipe.
    LocalFdExhausted,
    /// Every backend server failed to connect or timed out (or all are down).
    BackendUnavailable,
    /// The client address already has `max_connections_per_ip` open connections.
    PerIpLimit,
    /// A peer not in `accept_proxy_from` started with a PROXY header.
    UntrustedProxyHeader,
    /// A trusted peer's PROXY header was not complete within `hello_timeout`.
    ProxyHeaderTimeout,
    /// A trusted peer's PROXY header was malformed or larger than the inbound cap.
    ProxyHeaderMalformed,
    /// The client closed during the inbound PROXY header or the ClientHello.
    ClientClosed,
    /// Reading the inbound PROXY header or the ClientHello failed.
    ClientIo,
    /// The first bytes are not TLS and `default` is not a `mode: tcp` route.
    NotTls,
    /// The hello reader stopped before the hello was whole (not expected: it reads until then).
    HelloIncomplete,
    /// The ClientHello was not complete within `hello_timeout`.
    HelloTimeout,
    /// The ClientHello is larger than `max_hello_bytes`.
    HelloTooLarge,
    /// A record of the ClientHello is longer than TLS allows.
    RecordTooLong,
    /// The ClientHello's lengths or message types are wrong.
    HelloMalformed,
    /// The SNI names no route and `default` is `reject` (the client gets `unrecognized_name`).
    UnknownSni,
    /// No valid SNI and `default` is `reject` (the client gets `unrecognized_name`).
    NoSni,
    /// No handshake slot (`max_handshakes`) came free within the queue wait.
    HandshakeLimit,
    /// The TLS handshake did not finish within `handshake_timeout`.
    HandshakeTimeout,
    /// The TLS handshake failed (see the handshake failure reasons).
    HandshakeFailed,
    /// The client certificate's identity has NUL or control characters, or is over 255 bytes.
    BadClientIdentity,
    /// The outbound PROXY v2 header could not be built (it would exceed its size limit).
    ProxyHeader,
}

impl CloseCause {
    /// Every cause, in the README's order.
    pub const ALL: &[CloseCause] = &[
        CloseCause::Closed,
        CloseCause::IdleTimeout,
        CloseCause::Shutdown,
        CloseCause::DrainTimeout,
        CloseCause::BackendDown,
        CloseCause::CertificateRevoked,
        CloseCause::ClientError,
        CloseCause::BackendError,
        CloseCause::LocalFdExhausted,
        CloseCause::BackendUnavailable,
        CloseCause::PerIpLimit,
        CloseCause::UntrustedProxyHeader,
        CloseCause::ProxyHeaderTimeout,
        CloseCause::ProxyHeaderMalformed,
        CloseCause::ClientClosed,
        CloseCause::ClientIo,
        CloseCause::NotTls,
        CloseCause::HelloIncomplete,
        CloseCause::HelloTimeout,
        CloseCause::HelloTooLarge,
        CloseCause::RecordTooLong,
        CloseCause::HelloMalformed,
        CloseCause::UnknownSni,
        CloseCause::NoSni,
        CloseCause::HandshakeLimit,
        CloseCause::HandshakeTimeout,
        CloseCause::HandshakeFailed,
        CloseCause::BadClientIdentity,
        CloseCause::ProxyHeader,
    ];

    /// The label in logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            CloseCause::Closed => "closed",
            CloseCause::IdleTimeout => "idle_timeout",
            CloseCause::Shutdown => "shutdown",
            CloseCause::DrainTimeout => "drain_timeout",
            CloseCause::BackendDown => "backend_down",
            CloseCause::CertificateRevoked => "certificate_revoked",
            CloseCause::ClientError => "client_error",
            CloseCause::BackendError => "backend_error",
            CloseCause::LocalFdExhausted => "local_fd_exhausted",
            CloseCause::BackendUnavailable => "backend_unavailable",
            CloseCause::PerIpLimit => "per_ip_limit",
            CloseCause::UntrustedProxyHeader => "untrusted_proxy_header",
            CloseCause::ProxyHeaderTimeout => "proxy_header_timeout",
            CloseCause::ProxyHeaderMalformed => "proxy_header_malformed",
            CloseCause::ClientClosed => "client_closed",
            CloseCause::ClientIo => "client_io",
            CloseCause::NotTls => "not_tls",
            CloseCause::HelloIncomplete => "hello_incomplete",
            CloseCause::HelloTimeout => "hello_timeout",
            CloseCause::HelloTooLarge => "hello_too_large",
            CloseCause::RecordTooLong => "record_too_long",
            CloseCause::HelloMalformed => "hello_malformed",
            CloseCause::UnknownSni => "unknown_sni",
            CloseCause::NoSni => "no_sni",
            CloseCause::HandshakeLimit => "handshake_limit",
            CloseCause::HandshakeTimeout => "handshake_timeout",
            CloseCause::HandshakeFailed => "handshake_failed",
            CloseCause::BadClientIdentity => "bad_client_identity",
            CloseCause::ProxyHeader => "proxy_header",
        }
    }

    /// Whether the close is a failure or refusal; the orderly ends of a session are not.
    pub fn is_error(self) -> bool {
        !matches!(self, CloseCause::Closed | CloseCause::IdleTimeout | CloseCause::Shutdown | CloseCause::DrainTimeout)
    }
}

impl std::fmt::Display for CloseCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// Why a ClientHello was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HelloReject {
    /// Not complete within `hello_timeout`.
    Timeout,
    /// Larger than `max_hello_bytes`.
    TooLarge,
    /// A record longer than TLS allows.
    RecordTooLong,
    /// Wrong lengths, an empty or non-handshake record, or a first message that is not a ClientHello.
    Malformed,
    /// The client closed before the hello was complete.
    ClientClosed,
    /// Reading from the client failed.
    ClientIo,
}

impl HelloReject {
    /// Every reason, in the README's order.
    pub const ALL: &[HelloReject] = &[
        HelloReject::Timeout,
        HelloReject::TooLarge,
        HelloReject::RecordTooLong,
        HelloReject::Malformed,
        HelloReject::ClientClosed,
        HelloReject::ClientIo,
    ];

    /// The label in metrics.
    pub fn label(self) -> &'static str {
        self.cause().label()
    }

    /// The connection's close cause: the same label.
    pub fn cause(self) -> CloseCause {
        match self {
            HelloReject::Timeout => CloseCause::HelloTimeout,
            HelloReject::TooLarge => CloseCause::HelloTooLarge,
            HelloReject::RecordTooLong => CloseCause::RecordTooLong,
            HelloReject::Malformed => CloseCause::HelloMalformed,
            HelloReject::ClientClosed => CloseCause::ClientClosed,
            HelloReject::ClientIo => CloseCause::ClientIo,
        }
    }
}

/// Why a terminate route's TLS handshake failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandshakeFailure {
    /// Not finished within `handshake_timeout`.
    Timeout,
    /// The client closed during the handshake.
    ClientClosed,
    /// Reading or writing the client socket failed.
    Io,
    /// `client_auth: required` and the client sent no certificate.
    CertificateRequired,
    /// The client certificate is revoked by a CRL of the route.
    CertificateRevoked,
    /// The client certificate has expired.
    CertificateExpired,
    /// The client certificate does not verify (unknown issuer, bad signature, wrong usage…).
    BadCertificate,
    /// The client offered ALPN protocols but none of the route's.
    NoApplicationProtocol,
    /// The client supports none of the versions, suites or groups offered.
    Incompatible,
    /// The client sent a fatal alert.
    AlertReceived,
    /// Any other TLS protocol error.
    ProtocolError,
}

impl HandshakeFailure {
    /// Every reason, in the README's order.
    pub const ALL: &[HandshakeFailure] = &[
        HandshakeFailure::Timeout,
        HandshakeFailure::ClientClosed,
        HandshakeFailure::Io,
        HandshakeFailure::CertificateRequired,
        HandshakeFailure::CertificateRevoked,
        HandshakeFailure::CertificateExpired,
        HandshakeFailure::BadCertificate,
        HandshakeFailure::NoApplicationProtocol,
        HandshakeFailure::Incompatible,
        HandshakeFailure::AlertReceived,
        HandshakeFailure::ProtocolError,
    ];

    /// The label in metrics.
    pub fn label(self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::ClientClosed => "client_closed",
            HandshakeFailure::Io => "io",
            HandshakeFailure::CertificateRequired => "certificate_required",
            HandshakeFailure::CertificateRevoked => "certificate_revoked",
            HandshakeFailure::CertificateExpired => "certificate_expired",
            HandshakeFailure::BadCertificate => "bad_certificate",
            HandshakeFailure::NoApplicationProtocol => "no_application_protocol",
            HandshakeFailure::Incompatible => "incompatible",
            HandshakeFailure::AlertReceived => "alert_received",
            HandshakeFailure::ProtocolError => "protocol_error",
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The rows of the README table whose header row starts with `| <first_column> |`.
    fn readme_table(first_column: &str) -> Vec<Vec<String>> {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
        let header = format!("| {first_column} |");
        let mut lines = readme.lines().skip_while(|line| !line.starts_with(&header));
        assert!(lines.next().is_some(), "README has no table starting with {header}");
        lines
            .skip(1)
            .take_while(|line| line.starts_with('|'))
            .map(|line| {
                line.trim_matches('|').split(" | ").map(|cell| cell.trim().trim_matches('`').to_string()).collect()
            })
            .collect()
    }

    fn labels(rows: &[Vec<String>]) -> BTreeSet<String> {
        rows.iter().map(|row| row[0].clone()).collect()
    }

    fn set(labels: impl Iterator<Item = &'static str>) -> BTreeSet<String> {
        labels.map(String::from).collect()
    }

    #[test]
    fn readme_close_cause_table_lists_every_cause_and_whether_it_is_an_error() {
        let rows = readme_table("close cause");
        assert_eq!(labels(&rows), set(CloseCause::ALL.iter().map(|c| c.label())));
        assert_eq!(rows.len(), CloseCause::ALL.len(), "each cause once");
        for cause in CloseCause::ALL {
            let row = rows.iter().find(|row| row[0] == cause.label()).unwrap();
            let documented = row.last().map(String::as_str);
            assert_eq!(documented, Some(if cause.is_error() { "yes" } else { "no" }), "error? of {cause}");
        }
    }

    #[test]
    fn readme_hello_reject_and_handshake_failure_tables_list_every_reason() {
        assert_eq!(labels(&readme_table("hello reject")), set(HelloReject::ALL.iter().map(|r| r.label())));
        assert_eq!(labels(&readme_table("handshake failure")), set(HandshakeFailure::ALL.iter().map(|r| r.label())));
    }

    #[test]
    fn labels_are_distinct_within_each_set() {
        assert_eq!(set(CloseCause::ALL.iter().map(|c| c.label())).len(), CloseCause::ALL.len());
        assert_eq!(set(HelloReject::ALL.iter().map(|r| r.label())).len(), HelloReject::ALL.len());
        assert_eq!(set(HandshakeFailure::ALL.iter().map(|r| r.label())).len(), HandshakeFailure::ALL.len());
    }
}
