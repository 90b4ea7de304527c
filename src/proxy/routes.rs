//! Hostname canonicalisation and matching: which route serves a ClientHello's server name.
//!
//! Names compare case-insensitively after one trailing dot is removed. A route pattern is an exact
//! name or `*.suffix`, which matches one or more labels before `.suffix` (not `suffix` itself).
//! Exact names win over wildcards, and the longest wildcard suffix wins over shorter ones. A name
//! that is not a plain LDH hostname (IP literal, NUL, other bytes) is "no valid SNI".
//!
//! One name may have several routes with disjoint `alpn` sets and at most one without: the first
//! protocol the client offers that one of them lists picks that route, else the one without
//! `alpn` serves the name. A name none of whose routes takes the hello is looked up as if unknown
//! (wildcards, then the default).

use std::collections::HashMap;

use crate::proxy::route::Route;

/// Longest DNS name (RFC 1035), without the trailing dot.
const MAX_NAME_BYTES: usize = 253;
/// Longest DNS label.
const MAX_LABEL_BYTES: usize = 63;

/// Returns the canonical form of a server name, or `None` when it is not a valid hostname.
pub fn canonicalize(name: &[u8]) -> Option<String> {
    let name = name.strip_suffix(b".").unwrap_or(name);
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return None;
    }
    let mut all_numeric_last_label = true;
    for label in name.split(|&b| b == b'.') {
        if label.is_empty() || label.len() > MAX_LABEL_BYTES {
            return None;
        }
        if label.first() == Some(&b'-') || label.last() == Some(&b'-') {
            return None;
        }
        if !label.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-') {
            return None;
        }
        all_numeric_last_label = label.iter().all(u8::is_ascii_digit);
    }
    // An all-numeric last label means an IPv4 literal (RFC 6066 forbids IP literals in SNI);
    // IPv6 literals already failed on ':'.
    if all_numeric_last_label {
        return None;
    }
    Some(String::from_utf8_lossy(name).to_ascii_lowercase())
}

/// A route's `sni` entry, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Exact(String),
    /// `*.example.com` stored as `.example.com`.
    Wildcard(String),
}

/// Why `name` is not a hostname [`canonicalize`] accepts: the first rule it breaks.
fn hostname_problem(name: &str) -> &'static str {
    let name = name.strip_suffix('.').unwrap_or(name);
    if !name.is_ascii() {
        return "not ASCII: write an internationalised name in its IDNA `xn--` form \
                (e.g. \"xn--bcher-kva.example\" for \"bücher.example\")";
    }
    if name.len() > MAX_NAME_BYTES {
        return "longer than 253 bytes";
    }
    if name.split('.').any(|label| label.len() > MAX_LABEL_BYTES) {
        return "has a label longer than 63 bytes";
    }
    if name.split('.').any(str::is_empty) {
        return "has an empty label (two dots in a row, or a leading dot)";
    }
    if name.split('.').any(|label| label.starts_with('-') || label.ends_with('-')) {
        return "has a label that starts or ends with '-'";
    }
    if name.rsplit('.').next().is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit())) {
        return "is an IP address or ends in an all-numeric label (SNI carries hostnames only)";
    }
    "not a hostname (letters, digits, '-' and '.' only; IP addresses are not allowed)"
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, &'static str> {
        if let Some(suffix) = text.strip_prefix("*.") {
            return match canonicalize(suffix.as_bytes()) {
                Some(canonical) => Ok(Pattern::Wildcard(format!(".{canonical}"))),
                None if suffix.is_empty() || suffix.contains('*') => {
                    Err("a wildcard is `*.` followed by a hostname, e.g. \"*.example.com\"")
                }
                None => Err(hostname_problem(suffix)),
            };
        }
        if text.contains('*') {
            return Err("`*` is only allowed as the whole first label, e.g. \"*.example.com\"");
        }
        canonicalize(text.as_bytes()).map(Pattern::Exact).ok_or_else(|| hostname_problem(text))
    }

    /// The key two routes may not share.
    pub fn key(&self) -> String {
        match self {
            Pattern::Exact(name) => name.clone(),
            Pattern::Wildcard(suffix) => format!("*{suffix}"),
        }
    }
}

/// The routes that serve one name (or one wildcard suffix).
#[derive(Debug, Default)]
struct NameRoutes {
    /// Protocol → route, for the name's routes with `alpn` (disjoint sets, so one route each).
    /// Empty for most names; a few entries otherwise, so a scan beats hashing.
    by_alpn: Vec<(Vec<u8>, usize)>,
    /// The name's route without `alpn`.
    fallback: Option<usize>,
}

impl NameRoutes {
    fn add(&mut self, route: &Route, index: usize) {
        if route.alpn.is_empty() {
            self.fallback = Some(index);
        }
        self.by_alpn.extend(route.alpn.iter().map(|protocol| (protocol.clone(), index)));
    }

    /// The route for a hello offering `offered` (in the client's order of preference).
    fn pick(&self, offered: &[Vec<u8>]) -> Option<usize> {
        if self.by_alpn.is_empty() {
            return self.fallback;
        }
        offered
            .iter()
            .find_map(|protocol| self.by_alpn.iter().find(|(listed, _)| listed == protocol))
            .map(|&(_, index)| index)
            .or(self.fallback)
    }
}

/// The routes of one loaded config and the index that maps names to them.
#[derive(Debug)]
pub struct RouteTable {
    routes: Vec<Route>,
    exact: HashMap<String, NameRoutes>,
    /// `".suffix"` → routes: a name is looked up by each of its suffixes, longest first, so the
    /// cost grows with the name's labels, not with the number of wildcard routes.
    wildcards: HashMap<String, NameRoutes>,
    default: Option<usize>,
}

impl RouteTable {
    pub fn new(routes: Vec<Route>, patterns: Vec<(Pattern, usize)>, default: Option<usize>) -> Self {
        let mut exact: HashMap<String, NameRoutes> = HashMap::new();
        let mut wildcards: HashMap<String, NameRoutes> = HashMap::new();
        for (pattern, index) in patterns {
            let entry = match pattern {
                Pattern::Exact(name) => exact.entry(name).or_default(),
                Pattern::Wildcard(suffix) => wildcards.entry(suffix).or_default(),
            };
            entry.add(&routes[index], index);
        }
        RouteTable { routes, exact, wildcards, default }
    }

    /// The route for a canonical server name (see [`canonicalize`]) and a hello without ALPN.
    pub fn lookup(&self, name: &str) -> Option<&Route> {
        self.lookup_with_alpn(name, &[])
    }

    /// The route for a canonical server name and the protocols the hello offers, if one matches.
    pub fn lookup_with_alpn(&self, name: &str, offered: &[Vec<u8>]) -> Option<&Route> {
        if let Some(index) = self.exact.get(name).and_then(|routes| routes.pick(offered)) {
            return Some(&self.routes[index]);
        }
        // Suffixes start at a dot after at least one character: the wildcard stands for a label.
        name.char_indices()
            .skip(1)
            .filter(|&(_, c)| c == '.')
            .find_map(|(at, _)| self.wildcards.get(&name[at..]).and_then(|routes| routes.pick(offered)))
            .map(|index| &self.routes[index])
    }

    /// The route for connections whose name matched nothing (or that had none); `None` = reject.
    pub fn default_route(&self) -> Option<&Route> {
        self.default.map(|index| &self.routes[index])
    }

    /// `lookup`, falling back to the default route.
    pub fn resolve(&self, name: Option<&str>) -> Option<&Route> {
        self.resolve_with_alpn(name, &[])
    }

    /// `lookup_with_alpn`, falling back to the default route.
    pub fn resolve_with_alpn(&self, name: Option<&str>, offered: &[Vec<u8>]) -> Option<&Route> {
        name.and_then(|name| self.lookup_with_alpn(name, offered)).or_else(|| self.default_route())
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::backend::{Backend, Identity, ProxyProtocol};
    use crate::proxy::route::Mode;

    fn route(name: &str) -> Route {
        Route {
            name: name.into(),
            alpn: Vec::new(),
            mode: Mode::Tcp,
            tls: None,
            mqtt: None,
            websocket: None,
            limits: Default::default(),
            backend: Backend {
                servers: vec!["127.0.0.1:1".into()],
                primaries: 1,
                balance: Default::default(),
                load: vec![Default::default()],
                on_backup: Default::default(),
                proxy_protocol: ProxyProtocol::None,
                identity: Identity::Cn,
                connect_timeout: std::time::Duration::from_secs(1),
                next_server: Default::default(),
                health_check: None,
                server_up: vec![Default::default()],
                on_backend_down: Default::default(),
                max_fails: 1,
                fail_timeout: std::time::Duration::from_secs(10),
                passive: vec![Default::default()],
            },
        }
    }

    fn table(entries: &[(&str, &str)], default: Option<usize>) -> RouteTable {
        let mut routes: Vec<Route> = Vec::new();
        let mut patterns = Vec::new();
        for (pattern, name) in entries {
            let index = match routes.iter().position(|r| r.name == *name) {
                Some(index) => index,
                None => {
                    routes.push(route(name));
                    routes.len() - 1
                }
            };
            patterns.push((Pattern::parse(pattern).unwrap(), index));
        }
        RouteTable::new(routes, patterns, default)
    }

    fn matched<'a>(table: &'a RouteTable, sni: &[u8]) -> Option<&'a str> {
        table.resolve(canonicalize(sni).as_deref()).map(|r| r.name.as_str())
    }

    #[test]
    fn canonical_form_is_lowercase_without_one_trailing_dot() {
        assert_eq!(canonicalize(b"A.Example.COM.").as_deref(), Some("a.example.com"));
        assert_eq!(canonicalize(b"a.example.com..").as_deref(), None);
        assert_eq!(canonicalize(b"xn--bcher-kva.example").as_deref(), Some("xn--bcher-kva.example"));
    }

    #[test]
    fn invalid_names_are_no_sni() {
        for bad in [
            &b"192.168.1.1"[..],
            b"::1",
            b"[::1]",
            b"a\0.example.com",
            b"a_b.example.com",
            b"a b.example.com",
            b"-a.example.com",
            b"",
            b".",
            b"a..b",
            "é.example.com".as_bytes(),
        ] {
            assert_eq!(canonicalize(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        let long_label = format!("{}.com", "a".repeat(64));
        assert_eq!(canonicalize(long_label.as_bytes()), None);
        let long_name = format!("{}com", "abcdefghi.".repeat(26));
        assert_eq!(canonicalize(long_name.as_bytes()), None);
    }

    #[test]
    fn exact_beats_wildcard_and_longest_wildcard_wins() {
        let t =
            table(&[("a.test", "exact"), ("*.a.test", "wild"), ("*.deep.a.test", "deeper"), ("*.test", "top")], None);
        assert_eq!(matched(&t, b"a.test"), Some("exact"));
        assert_eq!(matched(&t, b"x.a.test"), Some("wild"));
        assert_eq!(matched(&t, b"y.x.a.test"), Some("wild"));
        assert_eq!(matched(&t, b"z.deep.a.test"), Some("deeper"));
        assert_eq!(matched(&t, b"deep.a.test"), Some("wild"));
        assert_eq!(matched(&t, b"b.test"), Some("top"));
        assert_eq!(matched(&t, b"test"), None);
        assert_eq!(matched(&t, b"xa.test"), Some("top"), "suffix matching is label-aligned");
    }

    #[test]
    fn wildcard_does_not_match_its_bare_suffix() {
        let t = table(&[("*.a.test", "wild")], None);
        assert_eq!(matched(&t, b"a.test"), None);
        assert_eq!(matched(&t, b".a.test"), None);
    }

    #[test]
    fn unmatched_and_invalid_names_fall_back_to_default() {
        let t = table(&[("a.test", "a"), ("b.test", "fallback")], Some(1));
        assert_eq!(matched(&t, b"A.TEST."), Some("a"));
        assert_eq!(matched(&t, b"other.test"), Some("fallback"));
        assert_eq!(matched(&t, b"10.0.0.1"), Some("fallback"));
        assert_eq!(table(&[("a.test", "a")], None).resolve(None).map(|r| r.name.as_str()), None);
    }

    fn alpn_table() -> RouteTable {
        let mut routes = vec![route("mqtt"), route("web"), route("rest"), route("wild-mqtt"), route("wild")];
        routes[0].alpn = vec![b"mqtt".to_vec(), b"x-amzn-mqtt-ca".to_vec()];
        routes[1].alpn = vec![b"h2".to_vec()];
        routes[3].alpn = vec![b"mqtt".to_vec()];
        let patterns =
            [("iot.test", 0), ("iot.test", 1), ("iot.test", 2), ("*.test", 3), ("*.test", 4), ("only.test", 1)];
        let patterns = patterns.iter().map(|&(p, index)| (Pattern::parse(p).unwrap(), index)).collect();
        RouteTable::new(routes, patterns, None)
    }

    fn matched_alpn<'a>(table: &'a RouteTable, name: &str, offered: &[&[u8]]) -> Option<&'a str> {
        let offered: Vec<Vec<u8>> = offered.iter().map(|p| p.to_vec()).collect();
        table.resolve_with_alpn(Some(name), &offered).map(|r| r.name.as_str())
    }

    #[test]
    fn one_name_routes_by_offered_alpn_then_falls_back() {
        let t = alpn_table();
        assert_eq!(matched_alpn(&t, "iot.test", &[b"mqtt"]), Some("mqtt"));
        assert_eq!(matched_alpn(&t, "iot.test", &[b"x-amzn-mqtt-ca"]), Some("mqtt"));
        assert_eq!(matched_alpn(&t, "iot.test", &[b"h2", b"http/1.1"]), Some("web"));
        assert_eq!(matched_alpn(&t, "iot.test", &[b"http/1.1"]), Some("rest"));
        assert_eq!(matched_alpn(&t, "iot.test", &[]), Some("rest"));
    }

    #[test]
    fn client_preference_order_picks_among_alpn_routes() {
        let t = alpn_table();
        assert_eq!(matched_alpn(&t, "iot.test", &[b"x-other", b"h2", b"mqtt"]), Some("web"));
        assert_eq!(matched_alpn(&t, "iot.test", &[b"mqtt", b"h2"]), Some("mqtt"));
    }

    #[test]
    fn exact_alpn_routes_come_before_wildcards_and_unmatched_names_look_further() {
        let t = alpn_table();
        assert_eq!(matched_alpn(&t, "a.test", &[b"mqtt"]), Some("wild-mqtt"));
        assert_eq!(matched_alpn(&t, "a.test", &[b"h2"]), Some("wild"));
        assert_eq!(matched_alpn(&t, "only.test", &[b"h2"]), Some("web"));
        assert_eq!(matched_alpn(&t, "only.test", &[b"mqtt"]), Some("wild-mqtt"), "no fallback: looked up as unknown");
        assert_eq!(matched_alpn(&t, "only.test", &[]), Some("wild"));
        assert_eq!(t.resolve(Some("iot.test")).map(|r| r.name.as_str()), Some("rest"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(Pattern::parse("*.").is_err());
        assert!(Pattern::parse("a.*.test").is_err());
        assert!(Pattern::parse("*a.test").is_err());
        assert!(Pattern::parse("**.test").is_err());
        assert!(Pattern::parse("10.0.0.1").is_err());
        assert_eq!(Pattern::parse("*.A.Test.").unwrap(), Pattern::Wildcard(".a.test".into()));
    }

    #[test]
    fn refused_hostnames_say_which_rule_they_break() {
        let long_label = format!("{}.test", "a".repeat(64));
        assert_eq!(Pattern::parse(&long_label), Err("has a label longer than 63 bytes"));
        assert!(Pattern::parse("bücher.test").unwrap_err().contains("xn--"));
        assert!(Pattern::parse("*.bücher.test").unwrap_err().contains("xn--"));
        assert!(Pattern::parse("a..test").unwrap_err().contains("empty label"));
    }
}
