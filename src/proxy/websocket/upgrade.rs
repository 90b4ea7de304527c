//! The HTTP/1.1 upgrade request of RFC 6455 §4.2, without I/O: the request head checked against
//! a route's `websocket:` settings, and the response that accepts it (101) or refuses it.

use aws_lc_rs::digest;
use base64::Engine as _;

use super::WebSocketSettings;

/// Most headers a request head may have; browsers send 10 to 20 on an upgrade.
pub const MAX_REQUEST_HEADERS: usize = 32;
/// RFC 6455 §1.3: appended to the client's key before hashing.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// The only version RFC 6455 defines.
const WEBSOCKET_VERSION: &str = "13";
/// A `Sec-WebSocket-Key` is base64 of 16 bytes.
const KEY_BYTES: usize = 16;

/// Why an upgrade request was refused: each has its status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("malformed request head: {0}")]
    Malformed(String),
    #[error("request head over the size limit")]
    TooLarge,
    #[error("method {0:?}, not GET")]
    MethodNotAllowed(String),
    #[error("path {0:?} is not the route's websocket path")]
    NotFound(String),
    #[error("not a WebSocket upgrade: {0}")]
    NotUpgrade(&'static str),
    #[error("Sec-WebSocket-Version {0:?}, not 13")]
    Version(String),
    #[error("Origin {0:?} not in allowed_origins")]
    Origin(String),
    #[error("no offered subprotocol is one of the route's ({offered:?})")]
    Subprotocol { offered: String },
}

impl Refusal {
    /// The response the client reads before the close.
    pub fn response(&self) -> &'static [u8] {
        match self {
            Refusal::Malformed(_) | Refusal::NotUpgrade(_) | Refusal::Subprotocol { .. } => {
                b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            }
            Refusal::TooLarge => b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            Refusal::MethodNotAllowed(_) => {
                b"HTTP/1.1 405 Method Not Allowed\r\nAllow: GET\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            }
            Refusal::NotFound(_) => b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            Refusal::Version(_) => {
                b"HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            }
            Refusal::Origin(_) => b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        }
    }
}

/// An accepted upgrade: what the 101 response says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// `Sec-WebSocket-Accept`.
    pub accept_key: String,
    /// The subprotocol chosen, an index into the route's `subprotocols`.
    pub subprotocol: Option<usize>,
}

/// What a request head is so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// More bytes are needed.
    Incomplete,
    /// The head is `head_len` bytes and asks for an acceptable upgrade.
    Complete { head_len: usize, accepted: Accepted },
}

/// Parses and checks the request head at the start of `bytes`.
pub fn check(bytes: &[u8], settings: &WebSocketSettings) -> Result<Progress, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_REQUEST_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Progress::Incomplete),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::TooLarge),
        Err(error) => return Err(Refusal::Malformed(error.to_string())),
    };
    let accepted = accept(&request, settings)?;
    Ok(Progress::Complete { head_len, accepted })
}

/// The checks of RFC 6455 §4.2.1, then the route's own (origin, subprotocol).
fn accept(request: &httparse::Request<'_, '_>, settings: &WebSocketSettings) -> Result<Accepted, Refusal> {
    let method = request.method.unwrap_or_default();
    if method != "GET" {
        return Err(Refusal::MethodNotAllowed(method.to_string()));
    }
    let target = request.path.unwrap_or_default();
    let path = target.split_once('?').map_or(target, |(path, _query)| path);
    if path != settings.path {
        return Err(Refusal::NotFound(path.to_string()));
    }
    if request.version != Some(1) {
        return Err(Refusal::NotUpgrade("HTTP version is not 1.1"));
    }
    let header = |name: &str| request.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
    let has_token = |name: &str, token: &str| {
        request
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .flat_map(|h| h.value.split(|&b| b == b','))
            .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    };
    if !has_token("upgrade", "websocket") {
        return Err(Refusal::NotUpgrade("no Upgrade: websocket"));
    }
    if !has_token("connection", "upgrade") {
        return Err(Refusal::NotUpgrade("no Connection: Upgrade"));
    }
    let version = header("sec-websocket-version").unwrap_or_default().trim_ascii();
    if version != WEBSOCKET_VERSION.as_bytes() {
        return Err(Refusal::Version(String::from_utf8_lossy(version).into_owned()));
    }
    let key = header("sec-websocket-key").unwrap_or_default().trim_ascii();
    let decoded = base64::engine::general_purpose::STANDARD.decode(key);
    if !decoded.is_ok_and(|bytes| bytes.len() == KEY_BYTES) {
        return Err(Refusal::NotUpgrade("Sec-WebSocket-Key is not base64 of 16 bytes"));
    }
    if let Some(origin) = header("origin") {
        let allowed = settings.allowed_origins.iter().any(|o| o.as_bytes().eq_ignore_ascii_case(origin.trim_ascii()));
        if !settings.allowed_origins.is_empty() && !allowed {
            return Err(Refusal::Origin(String::from_utf8_lossy(origin).into_owned()));
        }
    }
    let subprotocol = negotiate(request, settings)?;
    Ok(Accepted { accept_key: accept_key(key), subprotocol })
}

/// The first of the route's subprotocols the client offers (the server's order); none when the
/// route lists none.
fn negotiate(request: &httparse::Request<'_, '_>, settings: &WebSocketSettings) -> Result<Option<usize>, Refusal> {
    if settings.subprotocols.is_empty() {
        return Ok(None);
    }
    let offered: Vec<&[u8]> = request
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-protocol"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .collect();
    let chosen = settings.subprotocols.iter().position(|ours| offered.contains(&ours.as_bytes()));
    match chosen {
        Some(index) => Ok(Some(index)),
        None => Err(Refusal::Subprotocol { offered: String::from_utf8_lossy(&offered.join(&b","[..])).into_owned() }),
    }
}

/// `Sec-WebSocket-Accept` for a key: base64 of SHA-1 over the key and the GUID.
pub fn accept_key(key: &[u8]) -> String {
    let mut context = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    context.update(key);
    context.update(ACCEPT_GUID);
    base64::engine::general_purpose::STANDARD.encode(context.finish())
}

/// The 101 response.
pub fn switching_protocols(accepted: &Accepted, settings: &WebSocketSettings) -> Vec<u8> {
    let mut response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
        accepted.accept_key
    );
    if let Some(protocol) = accepted.subprotocol.and_then(|index| settings.subprotocols.get(index)) {
        response.push_str(&format!("Sec-WebSocket-Protocol: {protocol}\r\n"));
    }
    response.push_str("\r\n");
    response.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> WebSocketSettings {
        WebSocketSettings {
            path: "/mqtt".into(),
            subprotocols: vec!["mqtt".into(), "mqttv3.1".into()],
            allowed_origins: vec!["https://dash.example.com".into()],
            ..WebSocketSettings::default()
        }
    }

    const GOOD: &str = "GET /mqtt HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Protocol: mqttv3.1, mqtt\r\nOrigin: https://dash.example.com\r\n\r\n";

    fn check_str(request: &str) -> Result<Progress, Refusal> {
        check(request.as_bytes(), &settings())
    }

    #[test]
    fn rfc_example_key_gets_the_rfc_accept_value() {
        assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn a_good_request_is_accepted_with_the_servers_preferred_subprotocol() {
        let Progress::Complete { head_len, accepted } = check_str(GOOD).unwrap() else { panic!("incomplete") };
        assert_eq!(head_len, GOOD.len());
        assert_eq!(accepted.subprotocol, Some(0), "mqtt comes first in the route's list");
        let response = String::from_utf8(switching_protocols(&accepted, &settings())).unwrap();
        assert!(response.starts_with("HTTP/1.1 101 "), "{response}");
        assert!(response.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"), "{response}");
        assert!(response.contains("Sec-WebSocket-Protocol: mqtt\r\n"), "{response}");
    }

    #[test]
    fn a_cut_off_head_is_incomplete() {
        assert_eq!(check_str(&GOOD[..40]).unwrap(), Progress::Incomplete);
    }

    #[test]
    fn each_violation_gets_its_status() {
        let cases = [
            (GOOD.replace("GET", "POST"), "405"),
            (GOOD.replace("/mqtt", "/other"), "404"),
            (GOOD.replace("Upgrade: websocket\r\n", ""), "400"),
            (GOOD.replace("keep-alive, Upgrade", "keep-alive"), "400"),
            (GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "short"), "400"),
            (GOOD.replace("Version: 13", "Version: 8"), "426"),
            (GOOD.replace("https://dash.example.com", "https://evil.example"), "403"),
            (GOOD.replace("mqttv3.1, mqtt", "chat"), "400"),
            (GOOD.replace("HTTP/1.1", "HTTP/1.0"), "400"),
            ("GET /mqtt HTTP/1.1\r\nBad Header\r\n\r\n".to_string(), "400"),
        ];
        for (request, status) in cases {
            let refusal = check_str(&request).unwrap_err();
            let response = String::from_utf8_lossy(refusal.response()).into_owned();
            assert!(response.starts_with(&format!("HTTP/1.1 {status} ")), "{refusal}: {response}");
        }
    }

    #[test]
    fn refusals_carry_the_headers_rfc_6455_asks_for() {
        let version = check_str(&GOOD.replace("Version: 13", "Version: 8")).unwrap_err();
        assert!(String::from_utf8_lossy(version.response()).contains("Sec-WebSocket-Version: 13\r\n"));
        let method = check_str(&GOOD.replace("GET", "PUT")).unwrap_err();
        assert!(String::from_utf8_lossy(method.response()).contains("Allow: GET\r\n"));
    }

    #[test]
    fn a_query_string_and_a_client_without_origin_are_accepted() {
        let request = GOOD.replace("/mqtt ", "/mqtt?token=1 ").replace("Origin: https://dash.example.com\r\n", "");
        assert!(matches!(check_str(&request).unwrap(), Progress::Complete { .. }));
    }

    #[test]
    fn too_many_headers_is_too_large() {
        let many: String = (0..MAX_REQUEST_HEADERS + 1).map(|i| format!("X-{i}: y\r\n")).collect();
        let request = GOOD.replacen("\r\n", &format!("\r\n{many}"), 1);
        assert_eq!(check_str(&request).unwrap_err(), Refusal::TooLarge);
    }
}
