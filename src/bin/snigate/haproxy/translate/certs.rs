//! The certificates of a terminating bind, read for the names they carry: HAProxy picks the
//! certificate by SNI among all `crt` files (exact name, then wildcard, else the first one), while
//! a snigate route has one certificate; so each route's hostnames are grouped by the certificate
//! HAProxy would serve them, and each group becomes its own route. A `crt DIRECTORY` becomes
//! `tls.cert_dir`. Only certificates are parsed; key files are checked for presence, never read
//! into the output or a message.

use std::io::Read;
use std::path::Path;

use x509_parser::pem::Pem;

use super::super::lexer::{self, Line};
use super::bind::BindTls;
use super::translator::Translator;

/// Largest certificate or crt-list file read.
const MAX_CERT_FILE_BYTES: u64 = 1024 * 1024;
/// What HAProxy appends to a certificate path to find its key when the PEM has none.
const KEY_SUFFIX: &str = ".key";
/// A PEM private key block, of any algorithm.
const PRIVATE_KEY_MARKER: &[u8] = b"PRIVATE KEY-----";

/// A certificate file and the names HAProxy serves it for.
#[derive(Debug, Clone)]
pub(super) struct CertSource {
    pub(super) cert: String,
    pub(super) key: String,
    /// The certificate's DNS names (or its CN), or a crt-list line's SNI filters.
    pub(super) names: Vec<String>,
}

/// A bind's certificates.
pub(super) enum Certs {
    /// In HAProxy's order: the first is served when no name matches.
    Files(Vec<CertSource>),
    /// `crt DIRECTORY`: every PEM in it, chosen by SNI.
    Dir(String),
}

impl Translator {
    /// The certificates of a bind's `crt` and `crt-list` parameters.
    pub(super) fn certificates(&mut self, tls: &BindTls, line: usize) -> Option<Certs> {
        let dirs: Vec<&String> = tls.crts.iter().filter(|path| Path::new(path).is_dir()).collect();
        if let [dir] = dirs.as_slice() {
            if tls.crts.len() == 1 && tls.crt_lists.is_empty() {
                return Some(Certs::Dir(dir.to_string()));
            }
        }
        if !dirs.is_empty() {
            self.error(line, "`crt DIRECTORY` together with other certificates has no equivalent: one directory (`tls.cert_dir`) or files");
            return None;
        }
        let mut sources = Vec::new();
        for path in &tls.crts {
            sources.push(self.cert_file(line, path, Vec::new())?);
        }
        for list in &tls.crt_lists {
            sources.extend(self.crt_list(line, list)?);
        }
        Some(Certs::Files(sources))
    }

    /// One PEM: its names, and where its key is (in it, or in `FILE.key` beside it).
    fn cert_file(&mut self, line: usize, path: &str, filters: Vec<String>) -> Option<CertSource> {
        let bytes = match read_bounded(path, MAX_CERT_FILE_BYTES) {
            Ok(bytes) => bytes,
            Err(error) => {
                self.error(line, format!("{path}: cannot read the certificate: {error}"));
                return None;
            }
        };
        let key = if bytes.windows(PRIVATE_KEY_MARKER.len()).any(|w| w == PRIVATE_KEY_MARKER) {
            path.to_string()
        } else {
            let key = format!("{path}{KEY_SUFFIX}");
            if !Path::new(&key).is_file() {
                self.error(line, format!("{path} holds no private key and there is no {key}"));
                return None;
            }
            key
        };
        let names = if filters.is_empty() {
            match certificate_names(&bytes) {
                Some(names) => names,
                None => {
                    self.error(line, format!("{path}: no PEM certificate in it"));
                    return None;
                }
            }
        } else {
            filters
        };
        Some(CertSource { cert: path.to_string(), key, names })
    }

    /// A crt-list: `CERT [[options]] [SNI filter…]` per line.
    fn crt_list(&mut self, line: usize, path: &str) -> Option<Vec<CertSource>> {
        let text = match read_bounded(path, MAX_CERT_FILE_BYTES).map(String::from_utf8) {
            Ok(Ok(text)) => text,
            Ok(Err(_)) => {
                self.error(line, format!("{path}: not UTF-8 text"));
                return None;
            }
            Err(error) => {
                self.error(line, format!("{path}: cannot read the crt-list: {error}"));
                return None;
            }
        };
        let entries = match lexer::tokenize(&text) {
            Ok(entries) => entries,
            Err(error) => {
                self.error(line, format!("{path}: {error}"));
                return None;
            }
        };
        let mut sources = Vec::new();
        for entry in &entries {
            let (cert, filters) = self.crt_list_entry(line, path, entry)?;
            let cert = self.crt_path(&cert);
            sources.push(self.cert_file(line, &cert, filters)?);
        }
        Some(sources)
    }

    /// One crt-list line → the certificate path and its SNI filters (options are dropped).
    fn crt_list_entry(&mut self, line: usize, list: &str, entry: &Line) -> Option<(String, Vec<String>)> {
        let mut words = entry.args().iter().peekable();
        if words.peek().is_some_and(|w| w.starts_with('[')) {
            let mut options = Vec::new();
            for word in words.by_ref() {
                options.push(word.as_str());
                if word.ends_with(']') {
                    break;
                }
            }
            self.warn(
                line,
                format!(
                    "{list}:{}: options {} ignored: the bind's settings apply to every certificate",
                    entry.number,
                    options.join(" ")
                ),
            );
        }
        let filters: Vec<String> = words.map(|w| w.to_ascii_lowercase()).collect();
        if filters.iter().any(|f| f.starts_with('!')) {
            self.error(line, format!("{list}:{}: negative SNI filters (`!name`) have no equivalent", entry.number));
            return None;
        }
        Some((entry.keyword().to_string(), filters))
    }
}

/// The first bytes of a regular file (a FIFO or a device would block or never end).
pub(super) fn read_bounded(path: &str, limit: u64) -> std::io::Result<Vec<u8>> {
    if !std::fs::metadata(path)?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(limit).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The DNS names of the first certificate of a PEM, or its CN when it has none; `None`: no
/// certificate.
fn certificate_names(pem: &[u8]) -> Option<Vec<String>> {
    let block = Pem::iter_from_buffer(pem).map_while(Result::ok).find(|block| block.label == "CERTIFICATE")?;
    let cert = block.parse_x509().ok()?;
    let mut names = snigate::tls::certificate_dns_names(&cert);
    if names.is_empty() {
        names.extend(cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()).map(str::to_ascii_lowercase));
    }
    Some(names)
}

/// Whether a certificate name serves a route pattern: the same name, or a one-label wildcard.
fn covers(cert_name: &str, pattern: &str) -> bool {
    if cert_name == pattern {
        return true;
    }
    match (cert_name.strip_prefix("*."), pattern.split_once('.')) {
        (Some(suffix), Some((label, rest))) => label != "*" && rest == suffix,
        _ => false,
    }
}

/// The certificate HAProxy serves for `pattern`: one naming it exactly, else one whose wildcard
/// covers it; `None`: none does (HAProxy then serves the first).
pub(super) fn certificate_for(sources: &[CertSource], pattern: &str) -> Option<usize> {
    let exact = sources.iter().position(|s| s.names.iter().any(|name| name == pattern));
    exact.or_else(|| sources.iter().position(|s| s.names.iter().any(|name| covers(name, pattern))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label_and_exact_names_win() {
        assert!(covers("*.a.test", "x.a.test"));
        assert!(!covers("*.a.test", "x.y.a.test"));
        assert!(!covers("*.a.test", "a.test"));
        assert!(covers("*.a.test", "*.a.test"));
        let source = |names: &[&str]| CertSource {
            cert: String::new(),
            key: String::new(),
            names: names.iter().map(|n| n.to_string()).collect(),
        };
        let sources = [source(&["*.a.test"]), source(&["x.a.test"])];
        assert_eq!(certificate_for(&sources, "x.a.test"), Some(1));
        assert_eq!(certificate_for(&sources, "y.a.test"), Some(0));
        assert_eq!(certificate_for(&sources, "b.test"), None);
    }
}
