//! The closed sets of labels a connection's end is known by: why it closed (the access log's
//! `cause`, `snigate_connection_closes_total` and `snigate_connections_rejected_total`), why its
//! ClientHello was refused (`snigate_hello_rejects_total`) and why its TLS handshake failed
//! (`snigate_handshake_failures_total`), and why an `mqtt:` route refused a client
//! (`snigate_mqtt_refusals_total`). Each enum has one mapping to its label; the README's
//! tables list the same labels, and a test here checks that they do.
//!
//! To add a cause: add a variant with a doc line and its label to the `labels!` list, and a row
//! to the README's table. Labels are stable: dashboards and alerts use them.

/// Declares a label enum: the variants with their docs and labels, `ALL` in declaration order (the
/// README's), and `label`. One list, so `ALL` cannot miss a variant.
macro_rules! labels {
    ($(#[$doc:meta])* pub enum $name:ident { $($(#[$variant_doc:meta])* $variant:ident => $label:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$variant_doc])* $variant,)*
        }

        impl $name {
            /// Every value, in the README's order.
            pub const ALL: &[$name] = &[$($name::$variant,)*];

            /// The label in logs and metrics.
            pub fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)*
                }
            }
        }
    };
}

labels! {
    /// Why a connection ended.
    pub enum CloseCause {
        /// Both sides ended: an EOF, a TLS close without close_notify, a peer already gone at the
        /// final shutdown.
        Closed => "closed",
        /// No bytes in either direction for `idle_timeout`.
        IdleTimeout => "idle_timeout",
        /// The drain deadline passed (or a second SIGTERM/SIGINT came) while the connection was open.
        Shutdown => "shutdown",
        /// Closed by the drain after `drain_timeout`, at its moment within `close_jitter`.
        DrainTimeout => "drain_timeout",
        /// Closed because a health check took its backend server down (`on_backend_down: close_sessions`).
        BackendDown => "backend_down",
        /// Closed at a reload whose CRLs revoke its client certificate (`revoke_live: true`).
        CertificateRevoked => "certificate_revoked",
        /// A read or write on the client side failed mid-session, e.g. a reset.
        ClientError => "client_error",
        /// A read or write on the backend side failed mid-session, or the PROXY header could not be sent.
        BackendError => "backend_error",
        /// The proxy ran out of file descriptors (EMFILE/ENFILE) for the backend socket or a splice pipe.
        LocalFdExhausted => "local_fd_exhausted",
        /// Every backend server failed to connect or timed out (or all are down).
        BackendUnavailable => "backend_unavailable",
        /// The client address already has `max_connections_per_ip` open connections.
        PerIpLimit => "per_ip_limit",
        /// A peer not in `accept_proxy_from` started with a PROXY header.
        UntrustedProxyHeader => "untrusted_proxy_header",
        /// A trusted peer's PROXY header was not complete within `hello_timeout`.
        ProxyHeaderTimeout => "proxy_header_timeout",
        /// A trusted peer's PROXY header was malformed or larger than the inbound cap.
        ProxyHeaderMalformed => "proxy_header_malformed",
        /// The client closed during the inbound PROXY header, the ClientHello or an `mqtt:` route's CONNECT.
        ClientClosed => "client_closed",
        /// Reading the inbound PROXY header, the ClientHello or an `mqtt:` route's CONNECT failed.
        ClientIo => "client_io",
        /// The first bytes are not TLS and `default` is not a `mode: tcp` route.
        NotTls => "not_tls",
        /// The hello reader stopped before the hello was whole (not expected: it reads until then).
        HelloIncomplete => "hello_incomplete",
        /// The ClientHello was not complete within `hello_timeout`.
        HelloTimeout => "hello_timeout",
        /// The ClientHello is larger than `max_hello_bytes`.
        HelloTooLarge => "hello_too_large",
        /// A record of the ClientHello is longer than TLS allows.
        RecordTooLong => "record_too_long",
        /// The ClientHello's lengths or message types are wrong.
        HelloMalformed => "hello_malformed",
        /// The SNI names no route and `default` is `reject` (the client gets `unrecognized_name`).
        UnknownSni => "unknown_sni",
        /// No valid SNI and `default` is `reject` (the client gets `unrecognized_name`).
        NoSni => "no_sni",
        /// The route already has `routes[].limits.max_connections` open connections.
        RouteConnectionLimit => "route_connection_limit",
        /// No token of `handshakes_per_second` (the route's or the proxy's) within the wait.
        HandshakeRate => "handshake_rate",
        /// No handshake slot (`max_handshakes`, the proxy's or the route's) came free within the wait.
        HandshakeLimit => "handshake_limit",
        /// The TLS handshake did not finish within `handshake_timeout`.
        HandshakeTimeout => "handshake_timeout",
        /// The TLS handshake failed (see the handshake failure reasons).
        HandshakeFailed => "handshake_failed",
        /// An `acme:` route has no certificate yet (the first order is under way or failing): TLS alert internal_error.
        CertificatePending => "certificate_pending",
        /// A TLS-ALPN-01 validation (ALPN `acme-tls/1` for a name being validated) got its challenge certificate.
        AcmeChallenge => "acme_challenge",
        /// The client certificate's identity has NUL or control characters, or is over 255 bytes.
        BadClientIdentity => "bad_client_identity",
        /// The outbound PROXY v2 header could not be built (it would exceed its size limit).
        ProxyHeader => "proxy_header",
        /// An `mqtt:` route's CONNECT was not complete within `mqtt.connect_timeout`.
        MqttConnectTimeout => "mqtt_connect_timeout",
        /// An `mqtt:` route's CONNECT is larger than `mqtt.max_connect_bytes`.
        MqttConnectTooLarge => "mqtt_connect_too_large",
        /// An `mqtt:` route's first packet is not a valid CONNECT.
        MqttConnectMalformed => "mqtt_connect_malformed",
        /// An `mqtt:` route's CONNECT names a protocol level the proxy does not speak.
        MqttUnsupportedVersion => "mqtt_unsupported_version",
        /// An `mqtt:` route's CONNECT client id does not fit the verified client identity.
        MqttClientIdRejected => "mqtt_client_id_rejected",
        /// A `websocket:` route's upgrade request is malformed or no WebSocket upgrade (missing or wrong `Upgrade`, `Connection`, `Sec-WebSocket-Key`, not HTTP/1.1): 400.
        WebSocketBadRequest => "websocket_bad_request",
        /// The upgrade offers none of `websocket.subprotocols`: 400.
        WebSocketNoSubprotocol => "websocket_no_subprotocol",
        /// The upgrade request head is over 8 KiB or 32 headers: 431.
        WebSocketRequestTooLarge => "websocket_request_too_large",
        /// The upgrade request's method is not GET: 405.
        WebSocketMethodNotAllowed => "websocket_method_not_allowed",
        /// The upgrade request's path is not `websocket.path`: 404.
        WebSocketNotFound => "websocket_not_found",
        /// The upgrade asks for a WebSocket version other than 13: 426.
        WebSocketUpgradeRequired => "websocket_upgrade_required",
        /// The upgrade's `Origin` is not in `websocket.allowed_origins`: 403.
        WebSocketForbiddenOrigin => "websocket_forbidden_origin",
        /// The upgrade request was not complete within `hello_timeout`.
        WebSocketUpgradeTimeout => "websocket_upgrade_timeout",
        /// The client broke RFC 6455 framing (an unmasked frame, reserved bits, a bad fragment or control frame): close 1002.
        WebSocketProtocolError => "websocket_protocol_error",
        /// A client message is over `websocket.max_message_bytes`: close 1009.
        WebSocketMessageTooBig => "websocket_message_too_big",
        /// The client sent a text frame (MQTT over WebSocket is binary): close 1003.
        WebSocketTextFrame => "websocket_text_frame",
    }
}

impl CloseCause {
    /// Whether the close is a failure or refusal; the orderly ends of a session are not.
    pub fn is_error(self) -> bool {
        !matches!(
            self,
            CloseCause::Closed
                | CloseCause::IdleTimeout
                | CloseCause::Shutdown
                | CloseCause::DrainTimeout
                | CloseCause::AcmeChallenge
        )
    }
}

impl std::fmt::Display for CloseCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

labels! {
    /// Why a ClientHello was refused.
    pub enum HelloReject {
        /// Not complete within `hello_timeout`.
        Timeout => "hello_timeout",
        /// Larger than `max_hello_bytes`.
        TooLarge => "hello_too_large",
        /// A record longer than TLS allows.
        RecordTooLong => "record_too_long",
        /// Wrong lengths, an empty or non-handshake record, or a first message that is not a ClientHello.
        Malformed => "hello_malformed",
        /// The client closed before the hello was complete.
        ClientClosed => "client_closed",
        /// Reading from the client failed.
        ClientIo => "client_io",
    }
}

impl HelloReject {
    /// The connection's close cause, of the same name.
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

labels! {
    /// Why a terminate route's TLS handshake failed.
    pub enum HandshakeFailure {
        /// Not finished within `handshake_timeout`.
        Timeout => "timeout",
        /// The client closed during the handshake.
        ClientClosed => "client_closed",
        /// Reading or writing the client socket failed.
        Io => "io",
        /// `client_auth: required` and the client sent no certificate.
        CertificateRequired => "certificate_required",
        /// The client certificate is revoked by a CRL of the route.
        CertificateRevoked => "certificate_revoked",
        /// No CRL of the route speaks for the certificate's issuer: a `crl_urls` CRL not fetched
        /// yet (the route fails closed), or no CRL for that issuer at all.
        RevocationUnknown => "revocation_unknown",
        /// The client certificate has expired.
        CertificateExpired => "certificate_expired",
        /// The client certificate does not verify (unknown issuer, bad signature, wrong usage…).
        BadCertificate => "bad_certificate",
        /// The client offered ALPN protocols but none of the route's.
        NoApplicationProtocol => "no_application_protocol",
        /// The client supports none of the versions, suites or groups offered.
        Incompatible => "incompatible",
        /// The client sent a fatal alert.
        AlertReceived => "alert_received",
        /// Any other TLS protocol error.
        ProtocolError => "protocol_error",
    }
}

labels! {
    /// Why an `mqtt:` route refused a client (`snigate_mqtt_refusals_total`).
    pub enum MqttRefusal {
        /// No CONNECT complete within `mqtt.connect_timeout`: closed.
        ConnectTimeout => "connect_timeout",
        /// A CONNECT over `mqtt.max_connect_bytes`: closed (MQTT 5: CONNACK 0x95 first).
        ConnectTooLarge => "connect_too_large",
        /// A first packet that is not a valid CONNECT: CONNACK 0x81 (MQTT 5) or a plain close.
        ConnectMalformed => "connect_malformed",
        /// A protocol level the proxy does not speak: CONNACK return code 1.
        UnsupportedVersion => "unsupported_version",
        /// No backend server could be connected: CONNACK 3 (3.x) or 0x88 (MQTT 5).
        ServerUnavailable => "server_unavailable",
        /// `mqtt.client_id: identity|identity_prefix` and the client id does not fit the verified
        /// client identity: CONNACK 2 (3.x) or 0x85 (MQTT 5).
        ClientIdRejected => "client_id_rejected",
        /// The route is at `limits.max_connections` (tcp routes, after the CONNECT): CONNACK 3
        /// (3.x) or 0x97 quota exceeded (MQTT 5).
        QuotaExceeded => "quota_exceeded",
        /// No token of `handshakes_per_second` (tcp routes, after the CONNECT): CONNACK 3 (3.x) or
        /// 0x9F connection rate exceeded (MQTT 5).
        RateExceeded => "rate_exceeded",
    }
}

impl MqttRefusal {
    /// The connection's close cause.
    pub fn cause(self) -> CloseCause {
        match self {
            MqttRefusal::ConnectTimeout => CloseCause::MqttConnectTimeout,
            MqttRefusal::ConnectTooLarge => CloseCause::MqttConnectTooLarge,
            MqttRefusal::ConnectMalformed => CloseCause::MqttConnectMalformed,
            MqttRefusal::UnsupportedVersion => CloseCause::MqttUnsupportedVersion,
            MqttRefusal::ServerUnavailable => CloseCause::BackendUnavailable,
            MqttRefusal::ClientIdRejected => CloseCause::MqttClientIdRejected,
            MqttRefusal::QuotaExceeded => CloseCause::RouteConnectionLimit,
            MqttRefusal::RateExceeded => CloseCause::HandshakeRate,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The rows of the README table whose header row starts with `| <first_column> |`, as cells
    /// without their backticks.
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

    fn first_column(rows: &[Vec<String>]) -> Vec<&str> {
        rows.iter().map(|row| row[0].as_str()).collect()
    }

    #[test]
    fn readme_close_cause_table_lists_every_cause_and_whether_it_is_an_error() {
        let rows = readme_table("close cause");
        let code: Vec<&str> = CloseCause::ALL.iter().map(|c| c.label()).collect();
        assert_eq!(first_column(&rows), code, "README close causes (left) vs CloseCause::ALL (right)");
        for (row, cause) in rows.iter().zip(CloseCause::ALL) {
            let expected = if cause.is_error() { "yes" } else { "no" };
            assert_eq!(row.last().map(String::as_str), Some(expected), "error? of {cause}");
        }
    }

    #[test]
    fn readme_hello_reject_and_handshake_failure_tables_list_every_reason() {
        let hello: Vec<&str> = HelloReject::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(first_column(&readme_table("hello reject")), hello, "README (left) vs HelloReject::ALL");
        let handshake: Vec<&str> = HandshakeFailure::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(
            first_column(&readme_table("handshake failure")),
            handshake,
            "README (left) vs HandshakeFailure::ALL"
        );
        let mqtt: Vec<&str> = MqttRefusal::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(first_column(&readme_table("mqtt refusal")), mqtt, "README (left) vs MqttRefusal::ALL");
    }

    #[test]
    fn labels_are_distinct_within_each_set() {
        let distinct = |labels: Vec<&str>| labels.iter().collect::<BTreeSet<_>>().len() == labels.len();
        assert!(distinct(CloseCause::ALL.iter().map(|c| c.label()).collect()));
        assert!(distinct(HelloReject::ALL.iter().map(|r| r.label()).collect()));
        assert!(distinct(HandshakeFailure::ALL.iter().map(|r| r.label()).collect()));
        assert!(distinct(MqttRefusal::ALL.iter().map(|r| r.label()).collect()));
    }

    #[test]
    fn a_hello_reject_closes_with_the_cause_of_the_same_name() {
        for reject in HelloReject::ALL {
            assert_eq!(reject.cause().label(), reject.label());
        }
    }
}
