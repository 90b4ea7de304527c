//! Hostnames grouped by the (backend, certificate, key) the maps give them, and one route per group:
//! nginx decides each setting per name, snigate decides the route and the route has them all.

use std::collections::{HashMap, HashSet};

use super::super::ast::Directive;
use super::super::yaml::{self, RoutesFile};
use super::maps::Setting;
use super::translator::Translator;
use super::upstream::Upstream;
pub(super) use crate::import::yaml::route_name;

/// Where each setting's value sits in a group's values: the backend, then, when terminating, the
/// certificate and the key (the order `server` passes the settings in).
const BACKEND: usize = 0;
const CERT: usize = 1;
const KEY: usize = 2;

/// The first repeat of a route name is written `name-2` (the first one is plain `name`).
const FIRST_REPEAT: usize = 2;

/// Hostnames grouped by the values the per-hostname settings give them.
pub(super) struct Grouping {
    /// (values in settings order: backend, then certificate and key when terminating; hostnames),
    /// in the order the maps list them; the default group last, with no hostnames of its own.
    groups: Vec<(Vec<String>, Vec<String>)>,
    /// The values for names no map lists; `None` when a map has no default (reject).
    pub(super) default: Option<Vec<String>>,
    /// Hostnames for which some setting has no value.
    pub(super) left_out: Vec<String>,
}

/// Every hostname the maps list, grouped by the values `settings` give it.
pub(super) fn group_hostnames(settings: &[&Setting]) -> Grouping {
    let mut patterns: Vec<&str> = Vec::new();
    let mut seen = HashSet::new();
    for setting in settings {
        if let Setting::Mapped(map) = setting {
            for (pattern, _) in &map.entries {
                if seen.insert(pattern.as_str()) {
                    patterns.push(pattern);
                }
            }
        }
    }
    let values = |pattern: Option<&str>| -> Option<Vec<String>> {
        settings.iter().map(|setting| setting.value(pattern).filter(|v| !v.is_empty())).collect()
    };
    let mut grouping = Grouping { groups: Vec::new(), default: values(None), left_out: Vec::new() };
    let mut group_of: HashMap<Vec<String>, usize> = HashMap::new();
    for pattern in patterns {
        let Some(values) = values(Some(pattern)) else {
            grouping.left_out.push(pattern.to_string());
            continue;
        };
        match group_of.get(&values) {
            Some(&group) => grouping.groups[group].1.push(pattern.to_string()),
            None => {
                group_of.insert(values.clone(), grouping.groups.len());
                grouping.groups.push((values, vec![pattern.to_string()]));
            }
        }
    }
    if let Some(default) = &grouping.default {
        if !group_of.contains_key(default) {
            grouping.groups.push((default.clone(), Vec::new()));
        }
    }
    grouping
}

impl Translator {
    /// One route per group of hostnames, named after its upstream (and its first hostname when
    /// several groups share an upstream); the group of the default values is the `default` route.
    pub(super) fn routes(
        &mut self,
        grouping: &Grouping,
        template: &yaml::Route,
        proxy_pass: &Directive,
        upstreams: &HashMap<String, Upstream>,
        file: &mut RoutesFile,
    ) -> Option<()> {
        let mut per_backend: HashMap<&str, usize> = HashMap::new();
        for (values, _) in &grouping.groups {
            *per_backend.entry(values[BACKEND].as_str()).or_default() += 1;
        }
        let mut names_used = HashSet::new();
        for (values, sni) in &grouping.groups {
            let backend = &values[BACKEND];
            let mut name = route_name(backend);
            if per_backend.get(backend.as_str()).copied().unwrap_or(0) > 1 {
                let first = sni.first().map_or("default", |first| first.trim_start_matches("*."));
                name = format!("{name}-{}", route_name(first));
            }
            let mut unique = name.clone();
            let mut counter = FIRST_REPEAT;
            while !names_used.insert(unique.clone()) {
                unique = format!("{name}-{counter}");
                counter += 1;
            }
            let (pool, origin) = self.servers(backend, proxy_pass, upstreams)?;
            let tls = template.tls.as_ref().map(|common| yaml::Tls {
                cert: self.path(&values[CERT]),
                key: self.path(&values[KEY]),
                ..common.clone()
            });
            if Some(values) == grouping.default.as_ref() {
                file.default = Some(unique.clone());
            }
            file.routes.push(yaml::Route {
                name: unique,
                comment: origin,
                sni: sni.clone(),
                tls,
                servers: pool.servers,
                backup_servers: pool.backups,
                backup_note: "nginx `backup`",
                connect_timeout: template.connect_timeout.clone(),
                ..template.clone()
            });
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::tests::run;

    #[test]
    fn hostnames_sharing_an_upstream_but_not_a_certificate_get_one_route_each() {
        let (file, messages) = run("stream {
              map $ssl_server_name $c { a.test a.pem; b.test b.pem; c.test a.pem; default a.pem; }
              map $ssl_server_name $k { a.test a.key; b.test b.key; c.test a.key; default a.key; }
              upstream broker { server 127.0.0.1:1883; }
              server { listen 8883 ssl; ssl_certificate $c; ssl_certificate_key $k; proxy_pass broker; }
            }");
        let file = file.unwrap_or_else(|| panic!("{messages:?}"));
        let routes: Vec<(&str, &[String])> = file.routes.iter().map(|r| (r.name.as_str(), r.sni.as_slice())).collect();
        assert_eq!(
            routes,
            [
                ("broker-a.test", &["a.test".to_string(), "c.test".to_string()][..]),
                ("broker-b.test", &["b.test".to_string()][..])
            ]
        );
        assert_eq!(file.default.as_deref(), Some("broker-a.test"), "the defaults equal a.test's values");
        assert_eq!(file.routes[1].tls.as_ref().unwrap().cert.as_deref(), Some(Path::new("/etc/nginx/b.pem")));
    }
}
