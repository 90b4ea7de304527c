//! Bodies of the fuzz targets as plain functions.
//!
//! Each `fuzz_targets/<name>.rs` is a one-line `fuzz_target!` that calls the function of the same
//! name here, and `tests/corpus.rs` calls the same functions over the seed corpus on stable Rust,
//! so the targets keep compiling and their invariants keep holding without cargo-fuzz.
//!
//! A function returns normally for every input; a panic (a failed assertion included) is a finding.

use std::path::Path;

use snigate::hello::{self, HelloError, Progress};
use snigate::inbound;

/// The importers are part of the `snigate` command, not of the library: the fuzz targets compile
/// the command's own source files (`import` is what both share).
#[path = "../../src/bin/snigate/haproxy/mod.rs"]
pub mod haproxy;
#[path = "../../src/bin/snigate/import/mod.rs"]
pub mod import;
#[path = "../../src/bin/snigate/nginx/mod.rs"]
pub mod nginx;

/// The default `limits.max_hello_bytes`.
pub const DEFAULT_MAX_HELLO_BYTES: usize = 16_384;
/// RFC 1035 / RFC 6066: a host name is at most 253 bytes without the trailing dot.
const MAX_NAME_BYTES: usize = 253;
const MAX_LABEL_BYTES: usize = 63;

/// Fixed, non-existent config path: every relative cert/key/CA path in the fuzzed YAML resolves
/// under it, so loading them fails with an error instead of reading a real file.
pub const CONFIG_PATH: &str = "/nonexistent/fuzz.yaml";

/// Target `hello_parse`: `snigate::hello::parse`, ClientHello reassembly and SNI/ALPN extraction.
///
/// Invariants checked:
/// - never panics, whatever `max_bytes`;
/// - `Complete(h)`: `h.records_len <= buf.len()` and `<= max_bytes`; `h.server_name`, when set, is a
///   canonical hostname (lowercase LDH labels joined by dots, no trailing dot, at most 253 bytes,
///   no IPv4 literal), and is set exactly when `sni_status` is `Valid`;
/// - the answer depends only on the records that carried the hello: `buf[..records_len]` gives
///   the same `Complete`, and every shorter prefix gives `Incomplete` (so TCP segmentation can't
///   change the outcome);
/// - a cap one byte below `records_len` gives `TooLarge`.
pub fn hello_parse(data: &[u8]) {
    // Default cap first: that is what production runs with.
    check_hello(data, DEFAULT_MAX_HELLO_BYTES);
    // A second cap taken from the input's length, so the TooLarge paths get explored as well.
    check_hello(data, data.len() / 2);
}

fn check_hello(buf: &[u8], max_bytes: usize) {
    let result = hello::parse(buf, max_bytes);
    let hello = match result {
        Ok(Progress::Complete(hello)) => hello,
        Ok(Progress::NotTls) => {
            assert!(
                buf.first() != Some(&0x16) || buf.get(1).is_some_and(|&major| major != 3),
                "NotTls for a buffer that starts like a handshake record"
            );
            return;
        }
        Ok(Progress::Incomplete) | Err(_) => return,
    };
    assert!(hello.records_len <= buf.len(), "records_len {} > buffer {}", hello.records_len, buf.len());
    assert!(hello.records_len <= max_bytes, "records_len {} > max_bytes {max_bytes}", hello.records_len);
    assert!(hello.records_len >= 5 + 4, "a complete hello needs a record and a handshake header");
    match (&hello.server_name, hello.sni_status) {
        (Some(name), hello::SniStatus::Valid) => assert_canonical_hostname(name),
        (None, hello::SniStatus::Absent | hello::SniStatus::Invalid) => {}
        (name, status) => panic!("server_name {name:?} with sni_status {status:?}"),
    }

    // Exactly the hello's records: the same answer.
    let exact = hello::parse(&buf[..hello.records_len], max_bytes);
    assert_eq!(exact, Ok(Progress::Complete(hello.clone())), "records prefix disagrees");

    // Shorter prefixes: still waiting. Checking all of them is quadratic, so only the record
    // boundaries, the bytes either side of them, and a few fixed points.
    let mut cuts = vec![1, 2, 3, 5, 9, hello.records_len / 2, hello.records_len - 1];
    let mut position = 0;
    while position + 5 <= hello.records_len {
        cuts.extend([position, position + 1, position + 4, position + 5, position + 6]);
        let len = usize::from(u16::from_be_bytes([buf[position + 3], buf[position + 4]]));
        position += 5 + len;
        cuts.push(position - 1);
    }
    for cut in cuts {
        if cut == 0 || cut >= hello.records_len {
            continue;
        }
        let prefix = hello::parse(&buf[..cut], max_bytes);
        assert_eq!(
            prefix,
            Ok(Progress::Incomplete),
            "prefix of {cut} bytes of a complete hello ({} bytes)",
            hello.records_len
        );
    }

    // The cap counts the records that carry the hello.
    let below = hello.records_len - 1;
    assert_eq!(hello::parse(buf, below), Err(HelloError::TooLarge { max_bytes: below }), "cap one below records_len");
}

/// Panics unless `name` is what `routes::canonicalize` may return.
pub fn assert_canonical_hostname(name: &str) {
    assert!(!name.is_empty(), "empty server_name");
    assert!(name.len() <= MAX_NAME_BYTES, "server_name of {} bytes", name.len());
    assert!(!name.ends_with('.'), "trailing dot in {name:?}");
    for label in name.split('.') {
        assert!(!label.is_empty() && label.len() <= MAX_LABEL_BYTES, "bad label length in {name:?}");
        assert!(!label.starts_with('-') && !label.ends_with('-'), "label with edge hyphen in {name:?}");
        assert!(
            label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "non-LDH or uppercase byte in {name:?}"
        );
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    assert!(!last.bytes().all(|b| b.is_ascii_digit()), "IPv4-like server_name {name:?}");
}

/// Target `inbound_parse`: `snigate::inbound::parse`, the PROXY v1/v2 header from a trusted peer.
///
/// Invariants checked:
/// - never panics;
/// - `Some((client, len))`: `0 < len <= bytes.len()`, and `bytes[..len]` gives the same answer
///   (the header's length does not depend on what follows it);
/// - every strict prefix of a parsed header gives `Ok(None)`, so a header that arrives in pieces is
///   never refused part-way.
pub fn inbound_parse(data: &[u8]) {
    let Ok(Some((client, len))) = inbound::parse(data) else {
        return;
    };
    assert!(len > 0, "empty header");
    assert!(len <= data.len(), "header_len {len} > input {}", data.len());
    match inbound::parse(&data[..len]) {
        Ok(Some(again)) => assert_eq!(again, (client, len), "header alone parses differently"),
        other => panic!("header alone ({len} bytes) gives {other:?}"),
    }
    for cut in 1..len {
        match inbound::parse(&data[..cut]) {
            Ok(None) => {}
            other => panic!("prefix of {cut} of a {len}-byte header gives {other:?}"),
        }
    }
}

/// Target `config_parse`: `snigate::config::parse` on arbitrary UTF-8 text.
///
/// Certificate and key files the text names are resolved under `/nonexistent/`, so a terminate
/// route can only fail to load them: the function must return errors, never panic.
pub fn config_parse(data: &[u8]) {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    match snigate::config::parse(source, Path::new(CONFIG_PATH)) {
        Ok(config) => {
            // Whatever validated must at least be printable.
            let _ = format!("{config:?}");
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "Err with no errors");
            let _ = errors.to_string();
        }
    }
}

/// Where the fuzzed nginx config claims to live; relative certificate paths resolve under it.
pub const NGINX_PATH: &str = "/nonexistent/nginx.conf";

/// Target `nginx_import`: `snigate import-nginx` without the file system — the nginx lexer,
/// directive parser and translation on arbitrary UTF-8 text (includes are not followed).
///
/// Invariants checked:
/// - never panics, and never recurses without bound (deep blocks are a syntax error);
/// - a syntax error names a line within the text;
/// - a translation comes with no error finding, and its routes file is YAML that snigate's schema
///   reads (`RawConfig`), whatever names, paths or quotes the nginx text held.
pub fn nginx_import(data: &[u8]) {
    use crate::nginx::{ast, lexer, translate};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.lines().count().max(1);
    let tokens = match lexer::tokenize(text) {
        Ok(tokens) => tokens,
        Err(error) => {
            assert!((1..=lines).contains(&error.line()), "lex error line {} of {lines}", error.line());
            return;
        }
    };
    let tree = match ast::parse(&tokens, std::sync::Arc::new(Path::new(NGINX_PATH).to_path_buf())) {
        Ok(tree) => tree,
        Err(error) => {
            assert!((1..=lines).contains(&error.line()), "syntax error line {} of {lines}", error.line());
            return;
        }
    };
    let (file, diagnostics) = translate::translate(&tree, Path::new(NGINX_PATH), &translate::Options::default());
    let Some(file) = file else {
        assert!(diagnostics.iter().any(|d| d.severity == translate::Severity::Error), "no file and no error");
        return;
    };
    assert!(diagnostics.iter().all(|d| d.severity == translate::Severity::Warning), "a file despite an error");
    let yaml = file.render();
    if let Err(error) = yaml_serde::from_str::<snigate::config::RawConfig>(&yaml) {
        panic!("the routes file does not fit the schema: {error}\n{yaml}");
    }
}

/// The default `mqtt.max_connect_bytes`.
pub const DEFAULT_MAX_CONNECT_BYTES: usize = 8192;

/// Target `mqtt_connect`: `snigate::mqtt::connect::parse`, the first packet of an `mqtt:` route,
/// and `snigate::mqtt::rewrite::with_username` on what it accepts.
///
/// Invariants checked:
/// - never panics, whatever `max_bytes`; errors format, and their refusal encodes;
/// - `Incomplete` only while fewer than `max_bytes` bytes have arrived (a reader never waits past
///   the cap);
/// - `Complete(c)`: `c.len <= buf.len()` and `<= max_bytes`, the offsets are in packet order,
///   `buf[..c.len]` gives the same `Complete` and every shorter prefix gives `Incomplete` (a split
///   CONNECT waits, never fails);
/// - the username rewrite round-trips: the result parses to the same fields but the username, its
///   length is its own `len`, and the properties and the bytes after the username are unchanged.
/// The WebSocket layer's parsers: the upgrade check never panics, and the frame decoder gives
/// the same byte stream whether the input comes whole or one byte at a time.
pub fn websocket(data: &[u8]) {
    use snigate::websocket::frame::Decoder;
    let _ = snigate::websocket::upgrade::check(data, &snigate::websocket::WebSocketSettings::default());
    let max_message_bytes = 4096;
    let mut whole = data.to_vec();
    let at_once =
        Decoder::new(max_message_bytes).decode(&mut whole).map(|decoded| whole[..decoded.data_bytes].to_vec());
    let mut decoder = Decoder::new(max_message_bytes);
    let mut bytewise = Vec::new();
    let mut failed = false;
    for &byte in data {
        let mut one = [byte];
        match decoder.decode(&mut one) {
            Ok(decoded) => bytewise.extend_from_slice(&one[..decoded.data_bytes]),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    match at_once {
        Ok(stream) => assert!(!failed && stream == bytewise, "chunking changed the decoded stream"),
        Err(_) => assert!(failed, "an error whole but not byte by byte"),
    }
}

pub fn mqtt_connect(data: &[u8]) {
    check_connect(data, DEFAULT_MAX_CONNECT_BYTES);
    check_connect(data, data.len() / 2);
}

fn check_connect(buf: &[u8], max_bytes: usize) {
    use snigate::mqtt::connect::{self, Progress};
    let connect = match connect::parse(buf, max_bytes) {
        Ok(Progress::Complete(connect)) => connect,
        Ok(Progress::Incomplete) => {
            assert!(buf.is_empty() || buf.len() < max_bytes, "Incomplete with {} bytes, cap {max_bytes}", buf.len());
            return;
        }
        Err(error) => {
            let _ = error.to_string();
            if let Some((version, refusal)) = error.refusal() {
                let _ = snigate::mqtt::connack::refusal(version, refusal);
            }
            return;
        }
    };
    assert!(connect.len <= buf.len(), "len {} > buffer {}", connect.len, buf.len());
    assert!(connect.len <= max_bytes, "len {} > max_bytes {max_bytes}", connect.len);
    let span = &connect.username_span;
    assert!(connect.header_len < connect.flags_at && connect.flags_at < span.start && span.end <= connect.len);
    assert_eq!(connect.username.is_some(), !span.is_empty(), "username and its span disagree");

    let exact = connect::parse(&buf[..connect.len], max_bytes);
    assert_eq!(exact, Ok(Progress::Complete(connect.clone())), "the packet alone parses differently");
    for cut in 0..connect.len {
        let prefix = connect::parse(&buf[..cut], max_bytes);
        assert_eq!(prefix, Ok(Progress::Incomplete), "prefix of {cut} of a {}-byte CONNECT", connect.len);
    }

    for username in ["", "fuzz-identity", connect.client_id.as_str()] {
        check_rewrite(buf, &connect, username);
    }
}

fn check_rewrite(buf: &[u8], before: &snigate::mqtt::connect::Connect, username: &str) {
    use snigate::mqtt::connect::{self, Progress};
    let rewritten = match snigate::mqtt::rewrite::with_username(buf, before, username) {
        Ok(rewritten) => rewritten,
        Err(error) => panic!("rewrite of a parsed CONNECT to {username:?} failed: {error}"),
    };
    let after = match connect::parse(&rewritten, usize::MAX) {
        Ok(Progress::Complete(after)) => after,
        other => panic!("rewritten CONNECT does not parse: {other:?}"),
    };
    assert_eq!(after.len, rewritten.len(), "rewritten CONNECT with bytes after it");
    assert_eq!(after.username.as_deref(), Some(username));
    let fields = |c: &connect::Connect| {
        (c.version, c.client_id.clone(), c.has_password, c.keepalive_secs, c.clean_start, c.will)
    };
    assert_eq!(fields(&after), fields(before), "fields other than the username changed");
    let properties = |c: &connect::Connect, packet: &[u8]| c.properties_span.clone().map(|s| packet[s].to_vec());
    assert_eq!(properties(&after, &rewritten), properties(before, buf), "properties changed");
    assert_eq!(rewritten[after.username_span.end..], buf[before.username_span.end..before.len], "password changed");
}

/// Where the fuzzed HAProxy config claims to live; relative certificate paths resolve under it.
pub const HAPROXY_PATH: &str = "/nonexistent/haproxy.cfg";

/// Target `haproxy_import`: `snigate import-haproxy` on arbitrary UTF-8 text — the HAProxy lexer,
/// the sections and the translation (certificate and pattern files named relative to the config
/// do not exist, so they are errors).
///
/// Invariants checked:
/// - never panics;
/// - a syntax error, and every finding, names a line within the text (0: the file as a whole);
/// - no translation without an error finding, and none with one;
/// - a translation is YAML that snigate's schema reads (`RawConfig`), whatever names, paths or
///   quotes the HAProxy text held.
pub fn haproxy_import(data: &[u8]) {
    use crate::haproxy::{import_text, ImportError, Options};
    use crate::import::diagnostic::Severity;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.lines().count().max(1);
    match import_text(text, Path::new(HAPROXY_PATH), &Options::default()) {
        Ok(imported) => {
            assert!(imported.warnings.iter().all(|d| d.severity == Severity::Warning), "a file despite an error");
            assert!(imported.warnings.iter().all(|d| d.line <= lines), "a warning past the last line");
            if let Err(error) = yaml_serde::from_str::<snigate::config::RawConfig>(&imported.yaml) {
                panic!("the routes file does not fit the schema: {error}\n{}", imported.yaml);
            }
        }
        Err(ImportError::Syntax { source, .. }) => {
            assert!((1..=lines).contains(&source.line()), "syntax error line {} of {lines}", source.line());
        }
        Err(ImportError::Untranslatable(diagnostics)) => {
            assert!(diagnostics.iter().any(|d| d.severity == Severity::Error), "no file and no error");
            assert!(diagnostics.iter().all(|d| d.line <= lines), "a finding past the last line");
        }
        Err(other) => panic!("text needs no file read: {other}"),
    }
}

/// Target by name, for the corpus test and the `replay` example.
pub fn target(name: &str) -> Option<fn(&[u8])> {
    match name {
        "hello_parse" => Some(hello_parse),
        "inbound_parse" => Some(inbound_parse),
        "config_parse" => Some(config_parse),
        "nginx_import" => Some(nginx_import),
        "haproxy_import" => Some(haproxy_import),
        "mqtt_connect" => Some(mqtt_connect),
        "websocket" => Some(websocket),
        _ => None,
    }
}

/// Names of all targets, as in `Cargo.toml` and `corpus/`.
pub const TARGETS: [&str; 7] =
    ["hello_parse", "inbound_parse", "config_parse", "nginx_import", "haproxy_import", "mqtt_connect", "websocket"];
