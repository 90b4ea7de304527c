//! What `stream {}` holds for its servers: the maps and upstreams they may name, the directives
//! they inherit, and the `limit_conn_zone`s keyed by client address.

use std::collections::{HashMap, HashSet};

use super::super::ast::Directive;
use super::directives::ignored_reason;
use super::maps::SniMap;
use super::translator::Translator;
use super::upstream::Upstream;

/// The contents of every `stream {}` block, sorted by kind.
pub(super) struct Stream<'a> {
    /// Maps by the variable they set (without `$`).
    pub(super) maps: HashMap<String, SniMap<'a>>,
    pub(super) upstreams: HashMap<String, Upstream<'a>>,
    pub(super) servers: Vec<&'a Directive>,
    /// Simple directives outside any server, which every server inherits.
    pub(super) inherited: Vec<&'a Directive>,
    /// `limit_conn_zone`s keyed by the client address, by zone name.
    pub(super) per_ip_zones: HashSet<String>,
}

impl Translator {
    /// Sorts the directives of `stream {}`; maps and upstreams are read here, servers later.
    pub(super) fn stream<'a>(&mut self, directives: Vec<&'a Directive>) -> Stream<'a> {
        let mut stream = Stream {
            maps: HashMap::new(),
            upstreams: HashMap::new(),
            servers: Vec::new(),
            inherited: Vec::new(),
            per_ip_zones: HashSet::new(),
        };
        for directive in directives {
            match directive.name.as_str() {
                "map" => {
                    if let Some((variable, map)) = self.map(directive) {
                        stream.maps.insert(variable, map);
                    }
                }
                "upstream" => {
                    if let Some((name, upstream)) = self.upstream(directive) {
                        stream.upstreams.insert(name, upstream);
                    }
                }
                "server" => stream.servers.push(directive),
                "limit_conn_zone" => match (directive.args.first().map(String::as_str), directive.args.get(1)) {
                    (Some("$binary_remote_addr" | "$remote_addr"), Some(zone)) => {
                        let name = zone.trim_start_matches("zone=").split(':').next().unwrap_or_default();
                        stream.per_ip_zones.insert(name.to_string());
                    }
                    _ => self.warn(directive, ignored_reason("limit_conn_zone").unwrap_or_default()),
                },
                _ if directive.block.is_some() => {
                    self.warn(directive, format!("block `{}` in `stream` ignored", directive.name))
                }
                _ => stream.inherited.push(directive),
            }
        }
        stream
    }
}
