//! `map $ssl_preread_server_name $var { … }` (or `$ssl_server_name`): the only nginx variables the
//! importer resolves. A map's keys become snigate hostname patterns, and a directive whose value is
//! such a variable becomes a [`Setting`] that gives each hostname its value.

use std::collections::{HashMap, HashSet};

use super::super::ast::Directive;
use super::super::routes;
use super::translator::Translator;

/// A `map` on the server name, its keys turned into snigate hostname patterns.
pub(super) struct SniMap<'a> {
    directive: &'a Directive,
    /// (hostname pattern as snigate writes it, value), in map order.
    pub(super) entries: Vec<(String, String)>,
    /// The same, by pattern.
    index: HashMap<String, String>,
    default: Option<String>,
}

impl SniMap<'_> {
    /// The value nginx's map gives the names `pattern` stands for: the entry for the pattern
    /// itself, else the longest wildcard that covers it, else the default.
    fn lookup(&self, pattern: &str) -> Option<&str> {
        if let Some(value) = self.index.get(pattern) {
            return Some(value);
        }
        let mut suffix = match pattern.strip_prefix("*.") {
            Some(suffix) => suffix.split_once('.').map(|(_, parent)| parent),
            None => pattern.split_once('.').map(|(_, parent)| parent),
        };
        while let Some(candidate) = suffix {
            if let Some(value) = self.index.get(&format!("*.{candidate}")) {
                return Some(value);
            }
            suffix = candidate.split_once('.').map(|(_, parent)| parent);
        }
        self.default.as_deref()
    }
}

/// What one of the per-hostname settings (backend, certificate, key) is.
pub(super) enum Setting<'m, 'a> {
    Fixed(String),
    Mapped(&'m SniMap<'a>),
}

impl Setting<'_, '_> {
    pub(super) fn value(&self, pattern: Option<&str>) -> Option<String> {
        match (self, pattern) {
            (Setting::Fixed(value), _) => Some(value.clone()),
            (Setting::Mapped(map), Some(pattern)) => map.lookup(pattern).map(str::to_string),
            (Setting::Mapped(map), None) => map.default.clone(),
        }
    }
}

impl Translator {
    /// `map $source $variable { … }` on the server name.
    pub(super) fn map<'a>(&mut self, directive: &'a Directive) -> Option<(String, SniMap<'a>)> {
        let [source, variable] = directive.args.as_slice() else {
            self.error(directive, "`map` takes a source and a variable");
            return None;
        };
        let Some(variable) = variable_name(variable) else {
            self.error(directive, format!("{variable:?} is not a variable name"));
            return None;
        };
        if !matches!(source.as_str(), "$ssl_preread_server_name" | "$ssl_server_name") {
            // Only an error if the variable is used; remembered without entries.
            return Some((variable, SniMap { directive, entries: Vec::new(), index: HashMap::new(), default: None }));
        }
        let hostnames = directive.children().iter().any(|d| d.name == "hostnames" && d.args.is_empty());
        let explicit: HashSet<String> = directive
            .children()
            .iter()
            .map(|d| d.name.to_ascii_lowercase())
            .filter(|key| !key.starts_with('.'))
            .collect();
        let mut entries: Vec<(String, String)> = Vec::new();
        let mut index = HashMap::new();
        let mut default = None;
        for entry in directive.children() {
            let key = entry.name.as_str();
            match (key, entry.args.as_slice()) {
                ("hostnames" | "volatile", []) => {}
                ("default", [value]) => default = Some(value.clone()),
                (_, [value]) => {
                    for pattern in self.map_key(entry, key, hostnames, &explicit) {
                        if index.insert(pattern.clone(), value.clone()).is_some() {
                            self.error(entry, format!("hostname {pattern:?} is listed twice in this map"));
                        } else {
                            entries.push((pattern, value.clone()));
                        }
                    }
                }
                _ => self.error(entry, format!("map entry `{key}` needs exactly one value")),
            }
        }
        Some((variable, SniMap { directive, entries, index, default }))
    }

    /// A map key as snigate hostname patterns (none when it cannot match or is refused).
    fn map_key(&mut self, entry: &Directive, key: &str, hostnames: bool, explicit: &HashSet<String>) -> Vec<String> {
        if key.starts_with('~') {
            self.error(entry, format!("regex key {key:?} has no equivalent: list the names or use a wildcard"));
            return Vec::new();
        }
        if key.is_empty() {
            self.warn(entry, "key \"\" (no SNI): snigate sends connections without a valid SNI to `default`");
            return Vec::new();
        }
        let wildcard_shaped = key.starts_with('.') || key.starts_with("*.") || key.ends_with(".*");
        if wildcard_shaped && !hostnames {
            self.warn(
                entry,
                format!("{key:?} is a literal string without `hostnames;` in the map and never matches a server name; dropped"),
            );
            return Vec::new();
        }
        if key.ends_with(".*") {
            self.error(entry, format!("{key:?}: wildcards at the end of a name have no equivalent; list the names"));
            return Vec::new();
        }
        let key = key.to_ascii_lowercase();
        let patterns = match key.strip_prefix('.') {
            Some(suffix) if explicit.contains(&format!("*.{suffix}")) => vec![suffix.to_string()],
            Some(suffix) if explicit.contains(suffix) => vec![format!("*.{suffix}")],
            Some(suffix) => vec![suffix.to_string(), format!("*.{suffix}")],
            None => vec![key],
        };
        patterns
            .into_iter()
            .filter(|pattern| match routes::Pattern::parse(pattern) {
                Ok(_) => true,
                Err(reason) => {
                    self.error(entry, format!("hostname {pattern:?}: {reason}"));
                    false
                }
            })
            .collect()
    }

    /// A directive whose value is fixed or a map variable.
    pub(super) fn setting<'m, 'a>(
        &mut self,
        directive: &Directive,
        maps: &'m HashMap<String, SniMap<'a>>,
        mode: &str,
    ) -> Option<Setting<'m, 'a>> {
        let [value] = directive.args.as_slice() else {
            self.error(directive, format!("`{}` takes one value", directive.name));
            return None;
        };
        if !value.contains('$') {
            return Some(Setting::Fixed(value.clone()));
        }
        let Some(variable) = variable_name(value) else {
            self.error(
                directive,
                format!("{value:?}: only a whole variable set by a `map` on the server name can be translated"),
            );
            return None;
        };
        let Some(map) = maps.get(&variable) else {
            self.error(directive, format!("${variable} is not set by any `map` in `stream {{}}`: cannot resolve it"));
            return None;
        };
        let source = map.directive.args.first().map(String::as_str).unwrap_or_default();
        match source {
            "$ssl_preread_server_name" | "$ssl_server_name" => {}
            other => {
                self.error(
                    map.directive,
                    format!("${variable} is mapped from {other}: snigate routes by server name (SNI) only"),
                );
                return None;
            }
        }
        if source == "$ssl_preread_server_name" && mode == "tcp" {
            self.error(
                directive,
                format!("${variable} is mapped from $ssl_preread_server_name, but `ssl_preread on;` is missing: nginx never reads the server name here; add it"),
            );
            return None;
        }
        if source == "$ssl_server_name" && mode != "terminate" {
            self.warn(map.directive, "$ssl_server_name is empty unless nginx terminates TLS; translated as the SNI");
        }
        if let Some((_, value)) = map.entries.iter().find(|(_, value)| value.contains('$')) {
            self.error(map.directive, format!("map value {value:?} holds a variable: cannot resolve it"));
            return None;
        }
        Some(Setting::Mapped(map))
    }
}

/// `$name` or `${name}` as a whole value → `name`.
pub(super) fn variable_name(value: &str) -> Option<String> {
    let name = value.strip_prefix('$')?;
    let name = name.strip_prefix('{').and_then(|n| n.strip_suffix('}')).unwrap_or(name);
    (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::tests::run;

    #[test]
    fn wildcard_entries_give_their_values_to_names_under_them() {
        let (file, messages) = run("stream {
              map $ssl_preread_server_name $b { hostnames; .example.com wide; x.example.com narrow; }
              server { listen 443; ssl_preread on; proxy_pass $b; }
              upstream wide { server 10.0.0.1:443; }
              upstream narrow { server 10.0.0.2:443; }
            }");
        let file = file.unwrap_or_else(|| panic!("{messages:?}"));
        let wide = file.routes.iter().find(|r| r.name == "wide").unwrap();
        assert_eq!(wide.sni, ["example.com", "*.example.com"]);
        assert_eq!(file.routes.iter().find(|r| r.name == "narrow").unwrap().sni, ["x.example.com"]);
        assert_eq!(file.default.as_deref(), Some("reject"), "no map default");
    }

    #[test]
    fn preread_map_without_ssl_preread_is_refused() {
        let (file, messages) = run("stream {
              map $ssl_preread_server_name $b { a.test 10.0.0.1:443; }
              server { listen 443; proxy_pass $b; }
            }");
        assert!(file.is_none());
        assert!(messages.iter().any(|m| m.contains("`ssl_preread on;` is missing")), "{messages:?}");
    }
}
