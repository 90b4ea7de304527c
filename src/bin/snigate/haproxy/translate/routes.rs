//! The rules of a frontend → routes: one per backend, its `sni` the patterns that lead to it in
//! rule order (HAProxy takes the first rule that matches; snigate looks at exact names before
//! wildcards, so a name an earlier wildcard rule already takes is refused), the default route,
//! and, when terminating, one route per certificate HAProxy would serve the names.

use std::collections::{HashMap, HashSet};

use super::super::sections::{Kind, Section};
use super::backend::Pool;
use super::bind::BindTls;
use super::certs::{certificate_for, CertSource, Certs};
use super::rules::Rules;
use super::settings::{defaults_of, Settings};
use super::translator::Translator;
use crate::import::yaml::{self, route_name, RoutesFile};

/// The first repeat of a route name is written `name-2` (the first one is plain `name`).
const FIRST_REPEAT: usize = 2;

/// A backend and the patterns routed to it.
struct Target<'r> {
    backend: &'r str,
    line: usize,
    patterns: Vec<String>,
}

/// The mode and TLS settings every route of the frontend has.
pub(super) struct Common<'t> {
    pub(super) mode: &'static str,
    pub(super) tls: Option<(&'t BindTls, usize)>,
}

impl Translator {
    /// The routes of a frontend, written into `file`; the backend sections they use.
    pub(super) fn routes<'s>(
        &mut self,
        sections: &'s [Section],
        rules: &Rules,
        common: &Common,
        file: &mut RoutesFile,
    ) -> Option<Vec<&'s Section>> {
        let mut targets = self.targets(rules);
        if let Some((default, line)) = &rules.default {
            if !targets.iter().any(|t| t.backend == default) {
                targets.push(Target { backend: default, line: *line, patterns: Vec::new() });
            }
        }
        if targets.is_empty() {
            self.error_in_file("the frontend has neither `use_backend` nor `default_backend`: nothing to route to");
            return None;
        }
        let certs = match common.tls {
            Some((tls, line)) => Some((self.certificates(tls, line)?, self.tls_template(tls, line))),
            None => None,
        };
        let mut names = HashSet::new();
        let mut backends: HashMap<&str, &'s Section> = HashMap::new();
        let mut used = Vec::new();
        for section in sections.iter().filter(|s| s.is_backend()) {
            backends.entry(section.name()).or_insert(section);
        }
        for target in &targets {
            let Some(section) = backends.get(target.backend).copied() else {
                self.error(target.line, format!("no `backend {}` in the config", target.backend));
                continue;
            };
            let Some(route) = self.route_template(section, sections, common.mode) else { continue };
            used.push(section);
            let is_default = rules.default.as_ref().is_some_and(|(d, _)| d == target.backend);
            let groups = match &certs {
                Some((certs, template)) => self.by_certificate(certs, template, &target.patterns, target.line),
                None => vec![(None, target.patterns.clone())],
            };
            for (index, (tls, sni)) in groups.into_iter().enumerate() {
                let mut name = route_name(target.backend);
                if index > 0 {
                    name =
                        format!("{name}-{}", route_name(sni.first().map_or("default", |p| p.trim_start_matches("*."))));
                }
                let name = unique(&mut names, name);
                if is_default && index == 0 {
                    file.default = Some(name.clone());
                }
                file.routes.push(yaml::Route { name, sni, tls, ..route.clone() });
            }
        }
        self.unused_backends(sections, &targets);
        Some(used)
    }

    /// The backends in rule order, each with its patterns; a pattern only for its first rule.
    fn targets<'r>(&mut self, rules: &'r Rules) -> Vec<Target<'r>> {
        let mut targets: Vec<Target> = Vec::new();
        let mut taken: HashMap<&str, &str> = HashMap::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for rule in &rules.routes {
            let mut patterns = Vec::new();
            for pattern in &rule.patterns {
                if let Some(first) = taken.get(pattern.as_str()) {
                    if *first != rule.backend {
                        self.warn(rule.line, format!("{pattern} already goes to backend {first} by an earlier rule: HAProxy never reaches this one for it"));
                    }
                    continue;
                }
                let earlier_wildcard = wildcards_of(pattern)
                    .find_map(|wildcard| taken.get_key_value(wildcard.as_str()))
                    .filter(|(_, backend)| **backend != rule.backend);
                if let Some((wildcard, backend)) = earlier_wildcard {
                    self.error(rule.line, format!("{pattern} is matched first by {wildcard} (backend {backend}) in HAProxy, but snigate looks at exact names before wildcards: move this rule above the other one"));
                }
                taken.insert(pattern, &rule.backend);
                patterns.push(pattern.clone());
            }
            match index.get(rule.backend.as_str()) {
                Some(&at) => targets[at].patterns.extend(patterns),
                None => {
                    index.insert(&rule.backend, targets.len());
                    targets.push(Target { backend: &rule.backend, line: rule.line, patterns });
                }
            }
        }
        targets
    }

    /// A route of `section`'s backend, without name, `sni` and certificate.
    fn route_template(&mut self, section: &Section, sections: &[Section], mode: &'static str) -> Option<yaml::Route> {
        let defaults = defaults_of(sections, section);
        self.report_untranslated(Kind::Defaults, defaults);
        self.report_untranslated(section.kind, &section.body);
        self.check_mode(&Settings { defaults, local: &section.body }, section);
        let Pool { servers, backups, balance, proxy_protocol, connect_timeout, health_check, on_backend_down } =
            self.pool(section, defaults)?;
        Some(yaml::Route {
            comment: format!("{} {} ({})", section.keyword, section.name(), self.at(section.line)),
            mode,
            servers,
            backup_servers: backups,
            backup_note: "HAProxy `backup`",
            balance,
            proxy_protocol,
            connect_timeout,
            health_check,
            on_backend_down,
            ..yaml::Route::default()
        })
    }

    /// A route's patterns grouped by the certificate HAProxy serves each (default group first).
    fn by_certificate(
        &mut self,
        certs: &Certs,
        template: &yaml::Tls,
        patterns: &[String],
        line: usize,
    ) -> Vec<(Option<yaml::Tls>, Vec<String>)> {
        let sources = match certs {
            Certs::Dir(dir) => {
                let tls = yaml::Tls { cert_dir: Some(dir.clone()), ..template.clone() };
                return vec![(Some(tls), patterns.to_vec())];
            }
            Certs::Files(sources) => sources,
        };
        let with_cert =
            |source: &CertSource| yaml::Tls { cert: source.cert.clone(), key: source.key.clone(), ..template.clone() };
        let mut groups: Vec<(usize, Vec<String>)> = Vec::new();
        for pattern in patterns {
            let index = certificate_for(sources, pattern).unwrap_or_else(|| {
                self.warn(
                    line,
                    format!("no certificate names {pattern}: HAProxy serves it the first one, and so does this route"),
                );
                0
            });
            match groups.iter_mut().find(|(i, _)| *i == index) {
                Some((_, group)) => group.push(pattern.clone()),
                None => groups.push((index, vec![pattern.clone()])),
            }
        }
        if groups.is_empty() {
            groups.push((0, Vec::new()));
        }
        groups.into_iter().filter_map(|(i, sni)| sources.get(i).map(|source| (Some(with_cert(source)), sni))).collect()
    }

    fn unused_backends(&mut self, sections: &[Section], targets: &[Target]) {
        let used: HashSet<&str> = targets.iter().map(|t| t.backend).collect();
        for section in sections.iter().filter(|s| s.kind == Kind::Backend) {
            if !used.contains(section.name()) {
                self.warn(section.line, format!("backend {} is not used by the frontend: left out", section.name()));
            }
        }
    }
}

/// The wildcards that would take an exact name in HAProxy's `-m end .suffix` sense: `*.b.c` and
/// `*.c` for `a.b.c`; none for a wildcard.
fn wildcards_of(pattern: &str) -> impl Iterator<Item = String> + '_ {
    let exact = !pattern.starts_with('*');
    pattern.match_indices('.').filter(move |_| exact).map(move |(at, _)| format!("*{}", &pattern[at..]))
}

/// `name`, or `name-2`, `name-3`… if it is taken.
fn unique(taken: &mut HashSet<String>, name: String) -> String {
    let mut candidate = name.clone();
    let mut counter = FIRST_REPEAT;
    while !taken.insert(candidate.clone()) {
        candidate = format!("{name}-{counter}");
        counter += 1;
    }
    candidate
}
