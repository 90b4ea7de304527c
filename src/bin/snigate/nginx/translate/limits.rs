//! nginx timeouts, `preread_buffer_size` and `limit_conn` → the routes file's `limits`.

use std::collections::HashSet;

use super::super::yaml::RoutesFile;
use super::settings::Settings;
use super::translator::Translator;
use super::units::parse_size;

impl Translator {
    /// The `limits` a server's directives set; `per_ip_zones` are the `limit_conn_zone`s keyed by
    /// client address.
    pub(super) fn limits(&mut self, settings: &Settings, per_ip_zones: &HashSet<String>, file: &mut RoutesFile) {
        for (nginx, key) in [
            ("proxy_timeout", "idle_timeout"),
            ("ssl_handshake_timeout", "handshake_timeout"),
            ("preread_timeout", "hello_timeout"),
        ] {
            if let Some(value) = settings.last(nginx).and_then(|d| self.duration(d)) {
                file.limits.push((key, value));
            }
        }
        if let Some(directive) = settings.last("preread_buffer_size") {
            match directive.args.first().and_then(|size| parse_size(size)) {
                Some(bytes) => file.limits.push(("max_hello_bytes", bytes.to_string())),
                None => self.error(directive, "`preread_buffer_size` needs a size like 16k"),
            }
        }
        if let Some(directive) = settings.last("limit_conn") {
            match directive.args.as_slice() {
                [zone, count] if per_ip_zones.contains(zone) && count.parse::<usize>().is_ok() => {
                    file.limits.push(("max_connections_per_ip", count.clone()));
                }
                _ => self.warn(
                    directive,
                    "`limit_conn` ignored: only a zone keyed by `$binary_remote_addr` or `$remote_addr` has an equivalent (`limits.max_connections_per_ip`)",
                ),
            }
        }
    }
}
