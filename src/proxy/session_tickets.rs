//! Shared session-ticket keys (`session_tickets.key_file`): the keys a fleet of snigates shares so
//! each resumes the others' TLS tickets, and the rustls ticketer each route derives from them.
//!
//! The file holds one key per line, base64 of 32 random bytes (`snigate ticket-key` prints one);
//! blank lines and `#` comments are allowed. The first key encrypts new tickets, every key
//! decrypts, so a rotation is: prepend a new key everywhere, reload, and remove the oldest once
//! `lifetime` has passed. A route never uses a file key directly: HKDF-SHA256 with the route's
//! name and binding (its certificates, client CAs and policy: `resumption::Binding`) derives its
//! own AES-256-GCM key and key name, so two replicas with the same file and certificates resume
//! each other's tickets while a ticket issued on one route never opens on another.
//!
//! A ticket is `key name (16) ‖ nonce (12) ‖ AES-256-GCM(session state) ‖ tag (16)`, with the key
//! name as additional data. Key bytes never reach a log line or a `Debug` output.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::aead::{Aad, Nonce, RandomizedNonceKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::hkdf;
use base64::Engine as _;
use rustls::server::ProducesTickets;

/// Bytes of one key in the file: 256 bits, as nginx's and HAProxy's 80-byte files carry per
/// purpose, and what AES-256 takes.
pub const KEY_BYTES: usize = 32;
/// Bytes of the name that tells which key sealed a ticket (RFC 5077 §4 uses 16).
const KEY_NAME_BYTES: usize = 16;
/// AES-GCM's tag.
const TAG_BYTES: usize = 16;
/// The HKDF salt: fixed, so every replica derives the same route keys from the same file.
const HKDF_SALT: &[u8] = b"snigate session tickets v1";
/// What each derived secret is for (the HKDF `info` prefix, before the route's name).
const INFO_AEAD_KEY: &[u8] = b"aead key\0";
const INFO_KEY_NAME: &[u8] = b"key name\0";
/// More lines than any rotation needs; a larger file is a mistake (or not a key file).
const MAX_KEYS: usize = 64;
/// Tickets larger than this are not ours (rustls's session state with a client chain is a few KiB).
const MAX_TICKET_BYTES: usize = 64 * 1024;

/// The keys of a key file, in file order (the first encrypts).
#[derive(Clone, PartialEq, Eq)]
pub struct TicketKeys {
    keys: Vec<[u8; KEY_BYTES]>,
}

impl fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TicketKeys({} keys)", self.keys.len())
    }
}

/// Why a key file cannot be used; lines are 1-based. Never contains key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketKeyError {
    #[error("line {line}: not base64")]
    NotBase64 { line: usize },
    #[error("line {line}: a key is {KEY_BYTES} bytes, this one is {bytes}")]
    WrongLength { line: usize, bytes: usize },
    #[error("line {line}: the same key as line {first}")]
    Duplicate { line: usize, first: usize },
    #[error("no key in the file")]
    Empty,
    #[error("more than {MAX_KEYS} keys")]
    TooMany,
}

impl TicketKeys {
    /// Reads a key file's text.
    pub fn parse(text: &str) -> Result<TicketKeys, TicketKeyError> {
        let mut keys: Vec<([u8; KEY_BYTES], usize)> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let entry = raw.trim();
            if entry.is_empty() || entry.starts_with('#') {
                continue;
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(entry)
                .map_err(|_| TicketKeyError::NotBase64 { line })?;
            let key: [u8; KEY_BYTES] =
                bytes.as_slice().try_into().map_err(|_| TicketKeyError::WrongLength { line, bytes: bytes.len() })?;
            if let Some((_, first)) = keys.iter().find(|(known, _)| *known == key) {
                return Err(TicketKeyError::Duplicate { line, first: *first });
            }
            if keys.len() == MAX_KEYS {
                return Err(TicketKeyError::TooMany);
            }
            keys.push((key, line));
        }
        if keys.is_empty() {
            return Err(TicketKeyError::Empty);
        }
        Ok(TicketKeys { keys: keys.into_iter().map(|(key, _)| key).collect() })
    }

    /// The ticketer of route `route` with `binding`: its keys derived from these, tickets
    /// announced as valid for `lifetime` (rustls caps the hint at 7 days).
    pub fn ticketer(&self, route: &str, binding: &[u8], lifetime: Duration) -> Arc<dyn ProducesTickets> {
        let keys = self.keys.iter().map(|key| RouteKey::derive(key, route, binding)).collect();
        let lifetime_s = u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX);
        Arc::new(SharedTicketer { keys, lifetime_s })
    }
}

/// A new key line for a key file: base64 of [`KEY_BYTES`] random bytes.
pub fn new_key_line() -> Result<String, aws_lc_rs::error::Unspecified> {
    let mut key = [0u8; KEY_BYTES];
    aws_lc_rs::rand::fill(&mut key)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(key))
}

/// One file key as a route uses it.
struct RouteKey {
    name: [u8; KEY_NAME_BYTES],
    aead: RandomizedNonceKey,
}

/// An HKDF output length (the crate takes it as a type).
struct OutputBytes(usize);

impl hkdf::KeyType for OutputBytes {
    fn len(&self) -> usize {
        self.0
    }
}

impl RouteKey {
    fn derive(file_key: &[u8; KEY_BYTES], route: &str, binding: &[u8]) -> RouteKey {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(file_key);
        let route_len = (route.len() as u64).to_be_bytes();
        let expand = |purpose: &[u8], out: &mut [u8]| {
            // The route name is length-prefixed: no name and binding run into another's.
            let info = [purpose, &route_len, route.as_bytes(), binding];
            // Only fails for outputs over 255 × 32 bytes; these are 16 and 32.
            prk.expand(&info, OutputBytes(out.len())).and_then(|okm| okm.fill(out)).expect("HKDF output length");
        };
        let mut aead_key = [0u8; KEY_BYTES];
        let mut name = [0u8; KEY_NAME_BYTES];
        expand(INFO_AEAD_KEY, &mut aead_key);
        expand(INFO_KEY_NAME, &mut name);
        let aead = RandomizedNonceKey::new(&AES_256_GCM, &aead_key).expect("a 32-byte AES-256-GCM key");
        RouteKey { name, aead }
    }
}

/// A route's ticketer: seals with the first key, opens with the key whose name the ticket carries.
struct SharedTicketer {
    keys: Vec<RouteKey>,
    lifetime_s: u32,
}

impl fmt::Debug for SharedTicketer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedTicketer({} keys, {} s)", self.keys.len(), self.lifetime_s)
    }
}

impl ProducesTickets for SharedTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        self.lifetime_s
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let key = self.keys.first()?;
        let mut sealed = plain.to_vec();
        let nonce = key.aead.seal_in_place_append_tag(Aad::from(&key.name), &mut sealed).ok()?;
        let mut ticket = Vec::with_capacity(KEY_NAME_BYTES + NONCE_LEN + sealed.len());
        ticket.extend_from_slice(&key.name);
        ticket.extend_from_slice(nonce.as_ref());
        ticket.extend_from_slice(&sealed);
        Some(ticket)
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        if ticket.len() > MAX_TICKET_BYTES || ticket.len() < KEY_NAME_BYTES + NONCE_LEN + TAG_BYTES {
            return None;
        }
        let (name, rest) = ticket.split_at(KEY_NAME_BYTES);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let key = self.keys.iter().find(|key| key.name == name)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut opened = sealed.to_vec();
        let plain_len = key.aead.open_in_place(nonce, Aad::from(&key.name), &mut opened).ok()?.len();
        opened.truncate(plain_len);
        Some(opened)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn key_file(lines: &[String]) -> TicketKeys {
        TicketKeys::parse(&lines.join("\n")).expect("key file")
    }

    #[test]
    fn the_first_key_seals_and_every_key_opens() {
        let (old, new) = (new_key_line().unwrap(), new_key_line().unwrap());
        let before = key_file(std::slice::from_ref(&old)).ticketer("mq", b"binding", DAY);
        let rotated = key_file(&[new.clone(), old.clone()]).ticketer("mq", b"binding", DAY);
        let after = key_file(std::slice::from_ref(&new)).ticketer("mq", b"binding", DAY);

        let old_ticket = before.encrypt(b"session state").unwrap();
        assert_eq!(rotated.decrypt(&old_ticket).as_deref(), Some(&b"session state"[..]), "old ticket after prepend");
        let new_ticket = rotated.encrypt(b"fresh").unwrap();
        assert_eq!(before.decrypt(&new_ticket), None, "sealed under the new key");
        assert_eq!(after.decrypt(&new_ticket).as_deref(), Some(&b"fresh"[..]));
        assert_eq!(after.decrypt(&old_ticket), None, "the old key removed: no longer opens");
    }

    #[test]
    fn replicas_share_tickets_and_routes_do_not() {
        let line = new_key_line().unwrap();
        let (replica_a, replica_b) = (key_file(std::slice::from_ref(&line)), key_file(&[line]));
        let ticket = replica_a.ticketer("mq", b"binding", DAY).encrypt(b"state").unwrap();
        assert_eq!(replica_b.ticketer("mq", b"binding", DAY).decrypt(&ticket).as_deref(), Some(&b"state"[..]));
        assert_eq!(replica_b.ticketer("other", b"binding", DAY).decrypt(&ticket), None);
    }

    #[test]
    fn forged_or_damaged_tickets_never_open_and_never_panic() {
        let ticketer = key_file(&[new_key_line().unwrap()]).ticketer("mq", b"binding", DAY);
        let ticket = ticketer.encrypt(b"state").unwrap();
        for cut in 0..ticket.len() {
            assert_eq!(ticketer.decrypt(&ticket[..cut]), None, "truncated to {cut}");
        }
        for at in 0..ticket.len() {
            let mut flipped = ticket.clone();
            flipped[at] ^= 0x01;
            assert_eq!(ticketer.decrypt(&flipped), None, "bit flipped at {at}");
        }
        assert_eq!(ticketer.decrypt(&vec![0u8; MAX_TICKET_BYTES + 1]), None);
    }

    #[test]
    fn key_file_problems_name_their_line_and_never_the_key() {
        let good = new_key_line().unwrap();
        let cases = [
            (format!("# rotated 2026-12-01\n\n{good}\n"), None),
            (format!("{good}\nnot base64!\n"), Some(TicketKeyError::NotBase64 { line: 2 })),
            ("c2hvcnQ=\n".to_string(), Some(TicketKeyError::WrongLength { line: 1, bytes: 5 })),
            (format!("{good}\n{good}\n"), Some(TicketKeyError::Duplicate { line: 2, first: 1 })),
            ("# only a comment\n".to_string(), Some(TicketKeyError::Empty)),
        ];
        for (text, want) in cases {
            let got = TicketKeys::parse(&text);
            assert_eq!(got.as_ref().err(), want.as_ref(), "{text:?}");
            if let Err(error) = got {
                assert!(!error.to_string().contains(&good), "the message must not carry the key");
            }
        }
        let many: Vec<String> = (0..=MAX_KEYS).map(|_| new_key_line().unwrap()).collect();
        assert_eq!(TicketKeys::parse(&many.join("\n")), Err(TicketKeyError::TooMany));
        assert!(!format!("{:?}", key_file(std::slice::from_ref(&good))).contains(&good));
    }

    #[test]
    fn the_lifetime_hint_is_the_configured_one() {
        let ticketer = key_file(&[new_key_line().unwrap()]).ticketer("mq", b"binding", Duration::from_secs(12 * 3600));
        assert!(ticketer.enabled());
        assert_eq!(ticketer.lifetime(), 12 * 3600);
    }
}
