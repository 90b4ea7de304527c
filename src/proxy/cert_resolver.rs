//! Which certificate a terminate route serves for a ClientHello's server name: a map built once
//! per load from the route's certificates (`cert`/`key` and every file of `cert_dir`), looked up
//! in O(1) per handshake however many files the directory holds.
//!
//! An exact subjectAltName beats a wildcard; a wildcard `*.x.test` stands for exactly one label
//! (RFC 6125 §6.4.3, as `pem_files::covers`). When several certificates name the same host, the
//! first in preference order wins: valid now, then the one that expires last (a renewed file put
//! next to the old one takes over), then file name. No match, or no SNI: the default certificate.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::proxy::pem_files::ServedKey;

/// A route's certificates by the names they serve.
#[derive(Debug)]
pub struct CertResolver {
    exact: HashMap<String, Arc<ServedKey>>,
    /// `*.x.test` stored as `x.test`.
    wildcard: HashMap<String, Arc<ServedKey>>,
    default: Arc<ServedKey>,
}

impl CertResolver {
    /// A resolver serving `default` when nothing else matches. `others` come in preference order
    /// (see [`preference_order`]); the default's own names rank after them.
    pub fn new<'k>(default: &'k Arc<ServedKey>, others: impl IntoIterator<Item = &'k Arc<ServedKey>>) -> CertResolver {
        let mut resolver =
            CertResolver { exact: HashMap::new(), wildcard: HashMap::new(), default: Arc::clone(default) };
        let mut others = others.into_iter().peekable();
        if others.peek().is_none() {
            // Every name gets the default anyway: a route with one certificate keeps no map.
            return resolver;
        }
        for served in others.chain([default]) {
            resolver.add(served);
        }
        resolver
    }

    /// Records `served` under each of its DNS names not taken by an earlier certificate.
    fn add(&mut self, served: &Arc<ServedKey>) {
        for name in &served.leaf.dns_names {
            let name = name.strip_suffix('.').unwrap_or(name);
            let map = match name.strip_prefix("*.") {
                Some(suffix) if !suffix.is_empty() => self.wildcard.entry(suffix.to_string()),
                _ => self.exact.entry(name.to_string()),
            };
            map.or_insert_with(|| Arc::clone(served));
        }
    }

    /// The certificate for `server_name` (any case, one trailing dot allowed), else the default.
    pub fn lookup(&self, server_name: Option<&str>) -> &Arc<ServedKey> {
        server_name.and_then(|name| self.matching(name)).unwrap_or(&self.default)
    }

    fn matching(&self, name: &str) -> Option<&Arc<ServedKey>> {
        let name = name.strip_suffix('.').unwrap_or(name);
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(name.to_ascii_lowercase())
        } else {
            Cow::Borrowed(name)
        };
        if let Some(found) = self.exact.get(name.as_ref()) {
            return Some(found);
        }
        let (label, parent) = name.split_once('.')?;
        if label.is_empty() {
            return None;
        }
        self.wildcard.get(parent)
    }

    /// The certificate served when no name matches.
    pub fn default_key(&self) -> &Arc<ServedKey> {
        &self.default
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.lookup(client_hello.server_name()).certified))
    }
}

/// Sorts certificates (with their file names) into the order [`CertResolver::new`] prefers them
/// at Unix time `now`: valid now first, then the latest expiry, then the file name.
pub fn preference_order<T>(certificates: &mut [T], now: i64, key: impl Fn(&T) -> (&ServedKey, &str)) {
    certificates.sort_by(|a, b| {
        let ((a_key, a_name), (b_key, b_name)) = (key(a), key(b));
        let valid = |served: &ServedKey| served.leaf.not_before <= now && now <= served.leaf.not_after;
        valid(b_key).cmp(&valid(a_key)).then(b_key.leaf.not_after.cmp(&a_key.leaf.not_after)).then(a_name.cmp(b_name))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::pem_files::LeafFacts;

    /// A served key with these names, valid from 0 to `not_after`; the chain is a placeholder.
    fn served(names: &[&str], not_after: i64) -> Arc<ServedKey> {
        let key = rcgen::KeyPair::generate().unwrap();
        let der = rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&der).unwrap();
        let certified = CertifiedKey::new(vec![rustls_pki_types::CertificateDer::from(vec![0u8])], signing);
        let leaf = LeafFacts {
            not_before: 0,
            not_after,
            not_before_text: String::new(),
            not_after_text: String::new(),
            dns_names: names.iter().map(|name| name.to_string()).collect(),
            sig_alg: String::new(),
            key_alg: String::new(),
        };
        Arc::new(ServedKey { certified: Arc::new(certified), leaf })
    }

    fn serves(resolver: &CertResolver, sni: Option<&str>, expected: &Arc<ServedKey>) -> bool {
        Arc::ptr_eq(resolver.lookup(sni), expected)
    }

    #[test]
    fn exact_names_beat_wildcards_and_unknown_names_get_the_default() {
        let default = served(&["default.test"], 100);
        let wildcard = served(&["*.x.test"], 100);
        let exact = served(&["a.x.test", "b.test"], 100);
        let resolver = CertResolver::new(&default, [&wildcard, &exact]);
        assert!(serves(&resolver, Some("a.x.test"), &exact), "exact beats an earlier wildcard");
        assert!(serves(&resolver, Some("c.x.test"), &wildcard));
        assert!(serves(&resolver, Some("d.c.x.test"), &default), "a wildcard stands for one label");
        assert!(serves(&resolver, Some("x.test"), &default), "nor for its bare suffix");
        assert!(serves(&resolver, Some("unknown.test"), &default));
        assert!(serves(&resolver, None, &default));
    }

    #[test]
    fn server_names_match_whatever_their_case_and_trailing_dot() {
        let default = served(&["default.test"], 100);
        let a = served(&["a.test", "*.w.test"], 100);
        let resolver = CertResolver::new(&default, [&a]);
        for sni in ["A.TEST", "a.Test.", "Z.W.test"] {
            assert!(serves(&resolver, Some(sni), &a), "{sni}");
        }
    }

    #[test]
    fn the_first_certificate_in_preference_order_keeps_a_shared_name() {
        let default = served(&["default.test"], 100);
        let (old, renewed) = (served(&["a.test"], 50), served(&["a.test"], 200));
        let mut files = vec![(old, "a-old.pem"), (renewed.clone(), "a-new.pem")];
        preference_order(&mut files, 10, |(served, name)| (served, name));
        let resolver = CertResolver::new(&default, files.iter().map(|(served, _)| served));
        assert!(serves(&resolver, Some("a.test"), &renewed), "the one that expires last");
        let mut not_yet = served(&["a.test"], 300);
        Arc::get_mut(&mut not_yet).unwrap().leaf.not_before = 260;
        let mut files = vec![(not_yet, "a.pem"), (served(&["a.test"], 280), "b.pem")];
        preference_order(&mut files, 250, |(served, name)| (served, name));
        assert_eq!(files[0].1, "b.pem", "a certificate not valid yet ranks after a valid one");
    }

    #[test]
    fn the_default_own_names_rank_after_the_directory_but_before_its_wildcards() {
        let default = served(&["a.x.test", "b.test"], 100);
        let wildcard = served(&["*.x.test"], 100);
        let exact = served(&["b.test"], 100);
        let resolver = CertResolver::new(&default, [&wildcard, &exact]);
        assert!(serves(&resolver, Some("a.x.test"), &default));
        assert!(serves(&resolver, Some("b.test"), &exact));
    }
}
