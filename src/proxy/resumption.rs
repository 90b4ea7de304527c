//! A terminate route's session resumption: its session cache and ticketer, what they are bound
//! to, how they survive a reload, and re-checking the client certificate of a resumed session.
//!
//! - **Per route.** Each route has its own cache and ticket keys, so a session never resumes on
//!   another tenant's route (the nginx CVE-2025-23419 class of bypass).
//! - **Bound to the route's TLS identity.** The [`Binding`] digests the certificates served, the
//!   client CA certificates and the client-auth policy. A reload that leaves it unchanged keeps
//!   the cache and the ticketer ([`RouteSessions::carry_from`]), so clients resume after a config
//!   push or a CRL publication; a changed certificate, CA or policy starts afresh.
//! - **Shared keys.** With `session_tickets.key_file`, the ticketer is derived from the file's
//!   keys, the route's name and its binding ([`TicketKeys::ticketer`]): replicas with the same
//!   file and the same certificates resume each other's tickets.
//! - **Re-checked.** rustls (like OpenSSL) does not verify the client certificate again when a
//!   session resumes, so a certificate revoked by a newer CRL would keep getting in until its
//!   ticket expired. [`recheck_resumed`] verifies the chain carried in the session against the
//!   route's current verifier (CA, CRLs, time) after every resumed handshake.

use std::fmt;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use aws_lc_rs::digest;
use rustls::pki_types::UnixTime;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ProducesTickets, ServerSessionMemoryCache, StoresServerSessions};
use rustls::{HandshakeKind, ServerConnection};
use rustls_pki_types::CertificateDer;

use crate::proxy::session_tickets::TicketKeys;

/// Sessions each route's stateful resumption cache holds (TLS 1.2 session ids). Tickets, which
/// the server does not store, come on top.
const SESSION_CACHE_ENTRIES: usize = 4096;

/// A digest of what a route's sessions are bound to: served certificates, client CAs, policy.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Binding([u8; digest::SHA256_OUTPUT_LEN]);

impl fmt::Debug for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Binding({:02x}{:02x}{:02x}{:02x}…)", self.0[0], self.0[1], self.0[2], self.0[3])
    }
}

impl Binding {
    /// The binding of a route serving `served` (each chain, leaf first), trusting `client_cas`
    /// for client certificates under `policy` (the `client_auth` setting's name).
    pub fn new<'a>(
        served: impl IntoIterator<Item = &'a [CertificateDer<'static>]>,
        client_cas: &[CertificateDer<'static>],
        policy: &str,
    ) -> Binding {
        let mut context = digest::Context::new(&digest::SHA256);
        let mut field = |bytes: &[u8]| {
            // Length-prefixed, so no two different lists digest alike.
            context.update(&(bytes.len() as u64).to_be_bytes());
            context.update(bytes);
        };
        for chain in served {
            field(b"chain");
            chain.iter().for_each(|cert| field(cert));
        }
        field(b"client ca");
        client_cas.iter().for_each(|cert| field(cert));
        field(policy.as_bytes());
        let mut out = [0u8; digest::SHA256_OUTPUT_LEN];
        out.copy_from_slice(context.finish().as_ref());
        Binding(out)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Where a route's tickets come from.
pub enum TicketSource<'a> {
    /// A random key of this process, rotated by rustls every 6 hours; kept across reloads.
    Local,
    /// The shared key file, for a fleet; derived anew at every load.
    Shared { keys: &'a TicketKeys, lifetime: std::time::Duration },
}

/// A route's session cache and ticketer, installed in each of its `ServerConfig`s.
pub struct RouteSessions {
    binding: Binding,
    shared_keys: bool,
    cache: ArcSwap<LazySessionCache>,
    ticketer: ArcSwap<Arc<dyn ProducesTickets>>,
}

impl fmt::Debug for RouteSessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteSessions").field("binding", &self.binding).field("shared_keys", &self.shared_keys).finish()
    }
}

impl RouteSessions {
    /// Fresh session state for route `route` with `binding`.
    pub fn new(route: &str, binding: Binding, tickets: TicketSource<'_>) -> Result<Arc<RouteSessions>, rustls::Error> {
        let (ticketer, shared_keys) = match tickets {
            TicketSource::Local => (rustls::crypto::aws_lc_rs::Ticketer::new()?, false),
            TicketSource::Shared { keys, lifetime } => (keys.ticketer(route, binding.as_bytes(), lifetime), true),
        };
        Ok(Arc::new(RouteSessions {
            binding,
            shared_keys,
            cache: ArcSwap::from_pointee(LazySessionCache::default()),
            ticketer: ArcSwap::from_pointee(ticketer),
        }))
    }

    /// At reload, before this state serves: takes over `previous`'s cache, and its local ticket
    /// key, when both are bound to the same certificates, CAs and policy. Shared-key tickets need
    /// nothing carried (the keys come from the file). Says whether anything was carried.
    pub fn carry_from(&self, previous: &RouteSessions) -> bool {
        if self.binding != previous.binding {
            return false;
        }
        self.cache.store(previous.cache.load_full());
        if !self.shared_keys && !previous.shared_keys {
            self.ticketer.store(previous.ticketer.load_full());
        }
        true
    }
}

impl StoresServerSessions for RouteSessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.cache.load().put(key, value)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.cache.load().get(key)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.cache.load().take(key)
    }

    fn can_cache(&self) -> bool {
        true
    }
}

impl ProducesTickets for RouteSessions {
    fn enabled(&self) -> bool {
        self.ticketer.load().enabled()
    }

    fn lifetime(&self) -> u32 {
        self.ticketer.load().lifetime()
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.ticketer.load().encrypt(plain)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.ticketer.load().decrypt(cipher)
    }
}

/// A stateful cache allocated on its first session: the 4,096-entry table is most of an idle
/// route's memory, and most routes of a many-tenant file rarely resume.
#[derive(Debug, Default)]
struct LazySessionCache(OnceLock<Arc<ServerSessionMemoryCache>>);

impl LazySessionCache {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.0.get_or_init(|| ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES)).put(key, value)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.get()?.get(key)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.get()?.take(key)
    }
}

/// After a resumed handshake on a route that verifies client certificates: the chain the
/// session carries, verified again with the route's current `verifier` (its CA, CRLs and the
/// time now). A full handshake was verified by rustls already and passes untouched.
pub fn recheck_resumed(
    connection: &ServerConnection,
    verifier: Option<&Arc<dyn ClientCertVerifier>>,
) -> Result<(), rustls::Error> {
    let (Some(verifier), Some(HandshakeKind::Resumed)) = (verifier, connection.handshake_kind()) else {
        return Ok(());
    };
    match connection.peer_certificates() {
        Some([leaf, intermediates @ ..]) => {
            verifier.verify_client_cert(leaf, intermediates, UnixTime::now()).map(|_| ())
        }
        _ if verifier.client_auth_mandatory() => Err(rustls::Error::NoCertificatesPresented),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::session_tickets::new_key_line;

    fn cert(byte: u8) -> CertificateDer<'static> {
        CertificateDer::from(vec![byte; 8])
    }

    #[test]
    fn the_binding_changes_with_certificates_cas_and_policy_only() {
        let chain = [cert(1), cert(2)];
        let base = Binding::new([&chain[..]], &[cert(9)], "required");
        assert_eq!(base, Binding::new([&chain[..]], &[cert(9)], "required"));
        assert_ne!(base, Binding::new([&chain[..1]], &[cert(9)], "required"), "another chain");
        assert_ne!(base, Binding::new([&chain[..]], &[cert(8)], "required"), "another CA");
        assert_ne!(base, Binding::new([&chain[..]], &[cert(9)], "optional"), "another policy");
        let moved = [cert(1)];
        let (first, second) = ([cert(2)], [cert(1), cert(2)]);
        assert_ne!(
            Binding::new([&moved[..], &first[..]], &[], "none"),
            Binding::new([&second[..]], &[], "none"),
            "chains are delimited"
        );
    }

    #[test]
    fn a_reload_with_the_same_binding_keeps_cache_and_local_ticket_key() {
        let binding = Binding::new([&[cert(1)][..]], &[], "none");
        let before = RouteSessions::new("a", binding, TicketSource::Local).unwrap();
        assert!(before.put(b"id".to_vec(), b"state".to_vec()));
        let ticket = before.encrypt(b"ticket state").unwrap();

        let after = RouteSessions::new("a", binding, TicketSource::Local).unwrap();
        assert_eq!(after.decrypt(&ticket), None, "a fresh key does not open the old ticket");
        assert!(after.carry_from(&before));
        assert_eq!(after.get(b"id").as_deref(), Some(&b"state"[..]));
        assert_eq!(after.decrypt(&ticket).as_deref(), Some(&b"ticket state"[..]));

        let changed =
            RouteSessions::new("a", Binding::new([&[cert(2)][..]], &[], "none"), TicketSource::Local).unwrap();
        assert!(!changed.carry_from(&before), "a new certificate: nothing carried");
        assert_eq!(changed.get(b"id"), None);
        assert_eq!(changed.decrypt(&ticket), None);
    }

    #[test]
    fn shared_keys_open_across_processes_only_for_the_same_route_and_binding() {
        let keys = TicketKeys::parse(&new_key_line().unwrap()).unwrap();
        let lifetime = std::time::Duration::from_secs(3600);
        let binding = Binding::new([&[cert(1)][..]], &[], "none");
        let shared = || TicketSource::Shared { keys: &keys, lifetime };
        let replica_a = RouteSessions::new("a", binding, shared()).unwrap();
        let replica_b = RouteSessions::new("a", binding, shared()).unwrap();
        let ticket = replica_a.encrypt(b"state").unwrap();
        assert_eq!(replica_b.decrypt(&ticket).as_deref(), Some(&b"state"[..]));
        assert_eq!(RouteSessions::new("b", binding, shared()).unwrap().decrypt(&ticket), None, "another route");
        let renewed = Binding::new([&[cert(2)][..]], &[], "none");
        assert_eq!(RouteSessions::new("a", renewed, shared()).unwrap().decrypt(&ticket), None, "another certificate");
        assert_eq!(replica_b.lifetime(), 3600);
    }
}
