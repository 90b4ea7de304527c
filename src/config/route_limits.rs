//! `routes[].limits` and the proxy-wide handshake rate: each value checked (at least 1, a burst
//! only with a rate, `max_handshakes` only where snigate does the handshake) and a route's limit
//! never looser than the proxy's of the same name — a route can only be held tighter.

use super::error::{ConfigError, Reporter};
use super::schema::RawRoute;
use super::yaml_position::Span;
use crate::proxy::limits::Limits;
use crate::proxy::route::Mode;
use crate::proxy::route_limits::RouteLimits;
use crate::proxy::token_bucket::Rate;

/// A `handshakes_per_second` with its `handshake_burst` (default: one second's worth), or the
/// problem with the pair. `at` places a key of the section the pair is in.
pub(super) fn rate(
    per_second: Option<u32>,
    burst: Option<u32>,
    at: &dyn Fn(&str) -> (usize, usize),
    report: &Reporter,
    errors: &mut Vec<ConfigError>,
) -> Option<Rate> {
    match (per_second, burst) {
        (None, None) => None,
        (None, Some(_)) => {
            errors.push(report.error(at("handshake_burst"), "handshake_burst needs handshakes_per_second".into()));
            None
        }
        (Some(0), _) | (_, Some(0)) => {
            let key = if per_second == Some(0) { "handshakes_per_second" } else { "handshake_burst" };
            errors.push(report.error(at(key), format!("{key} must be at least 1")));
            None
        }
        (Some(per_second), burst) => Some(Rate { per_second, burst: burst.unwrap_or(per_second) }),
    }
}

/// The route's validated limits; problems go to `errors` and leave that limit unset.
pub(super) fn build(
    raw_route: &RawRoute,
    proxy: &Limits,
    report: &Reporter,
    span: Span,
    errors: &mut Vec<ConfigError>,
) -> RouteLimits {
    let Some(raw) = &raw_route.limits else {
        return RouteLimits::default();
    };
    // The keys are unique within a route (no other section has them), so the route's span finds them.
    let at = |key: &str| report.at.find_key(key, span).unwrap_or((span.start, 1));
    let mut tighter = |key: &str, value: Option<usize>, proxy_value: usize| {
        match value {
            Some(0) => errors.push(report.error(at(key), format!("{key} must be at least 1"))),
            Some(value) if value > proxy_value => errors.push(report.error(
                at(key),
                format!(
                    "route {:?}: limits.{key} {value} is looser than the proxy's {key} {proxy_value}; \
                     a route's limit can only be tighter",
                    raw_route.name
                ),
            )),
            Some(value) => return Some(value),
            None => {}
        }
        None
    };
    let max_connections = tighter("max_connections", raw.max_connections, proxy.max_connections);
    let max_handshakes = tighter("max_handshakes", raw.max_handshakes, proxy.max_handshakes);
    if max_handshakes.is_some() && raw_route.mode != Mode::Terminate {
        errors.push(report.error(
            at("max_handshakes"),
            format!(
                "route {:?}: limits.max_handshakes counts the TLS handshakes snigate does, on terminate routes \
                 only; limit a {} route's new sessions with handshakes_per_second",
                raw_route.name,
                raw_route.mode.as_str()
            ),
        ));
    }
    // A route's default burst is one second's worth, as the proxy's, but never over the proxy's.
    let burst = raw.handshake_burst.or_else(|| {
        let proxy_burst = proxy.handshake_rate?.burst;
        raw.handshakes_per_second.map(|per_second| per_second.min(proxy_burst))
    });
    let route_rate = rate(raw.handshakes_per_second, burst, &at, report, errors);
    if let (Some(route_rate), Some(proxy_rate)) = (route_rate, proxy.handshake_rate) {
        for (key, value, proxy_value) in [
            ("handshakes_per_second", route_rate.per_second, proxy_rate.per_second),
            ("handshake_burst", route_rate.burst, proxy_rate.burst),
        ] {
            if value > proxy_value {
                errors.push(report.error(
                    at(key),
                    format!(
                        "route {:?}: limits.{key} {value} is looser than the proxy's {key} {proxy_value}; \
                         a route's limit can only be tighter",
                        raw_route.name
                    ),
                ));
            }
        }
    }
    let max_handshakes = max_handshakes.filter(|_| raw_route.mode == Mode::Terminate);
    RouteLimits { max_connections, max_handshakes, rate: route_rate }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{parse, ConfigErrors};
    use crate::proxy::token_bucket::Rate;

    /// A file with `limits` as the proxy's and one route of `mode` with `route_limits`.
    fn config(limits: &str, mode: &str, route_limits: &str) -> String {
        let tls = if mode == "terminate" { "    tls: {cert: a.pem, key: a.key}\n" } else { "" };
        format!(
            "listen: [\"127.0.0.1:0\"]\nlimits: {{{limits}}}\nroutes:\n  - name: a\n    sni: [a.test]\n    mode: {mode}\n{tls}    limits: {{{route_limits}}}\n    backend: {{servers: [\"127.0.0.1:1\"]}}\n"
        )
    }

    fn errors(text: &str) -> ConfigErrors {
        parse(text, Path::new("r.yaml")).expect_err("refused")
    }

    #[test]
    fn a_route_limit_looser_than_the_proxys_is_refused_at_its_key() {
        let errors = errors(&config("max_connections: 100", "tcp", "max_connections: 101"));
        assert_eq!(errors.0.len(), 1, "{errors}");
        let error = &errors.0[0];
        assert_eq!((error.line, error.column), (7, 31), "{errors}");
        assert!(error.message.contains("looser than the proxy's max_connections 100"), "{errors}");
    }

    #[test]
    fn a_route_rate_over_the_proxys_rate_or_burst_is_refused() {
        let errors = errors(&config(
            "handshakes_per_second: 100, handshake_burst: 50",
            "tcp",
            "handshakes_per_second: 200, handshake_burst: 60",
        ));
        let messages: Vec<&str> = errors.0.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(messages.len(), 2, "{errors}");
        assert!(messages[0].contains("handshakes_per_second 200"), "{errors}");
        assert!(messages[1].contains("handshake_burst 60"), "{errors}");
    }

    #[test]
    fn zero_values_a_burst_without_a_rate_and_max_handshakes_off_terminate_are_refused() {
        for (limits, mode, route_limits, expected) in [
            ("", "tcp", "max_connections: 0", "max_connections must be at least 1"),
            ("", "tcp", "handshakes_per_second: 0", "handshakes_per_second must be at least 1"),
            ("", "tcp", "handshake_burst: 5", "handshake_burst needs handshakes_per_second"),
            ("handshake_burst: 5", "tcp", "", "handshake_burst needs handshakes_per_second"),
            ("", "passthrough", "max_handshakes: 4", "terminate routes only"),
            ("", "tcp", "max_handshakes: 4", "terminate routes only"),
            ("", "tcp", "max_connection: 4", "unknown field `max_connection`"),
        ] {
            let errors = errors(&config(limits, mode, route_limits));
            assert!(errors.0.iter().any(|e| e.message.contains(expected)), "{route_limits}: {errors}");
        }
    }

    #[test]
    fn limits_within_the_proxys_are_kept_and_the_burst_defaults_to_a_seconds_worth() {
        let text = config(
            "max_connections: 100, handshakes_per_second: 500, handshake_burst: 200",
            "tcp",
            "max_connections: 10, handshakes_per_second: 300",
        );
        let loaded = parse(&text, Path::new("r.yaml")).expect("valid");
        assert_eq!(loaded.limits.handshake_rate, Some(Rate { per_second: 500, burst: 200 }));
        let route = &loaded.routes.routes()[0];
        assert_eq!(route.limits.max_connections, Some(10));
        // One second's worth would be 300, over the proxy's burst of 200: capped there.
        assert_eq!(route.limits.rate, Some(Rate { per_second: 300, burst: 200 }));
        let text = config("", "tcp", "handshakes_per_second: 300");
        let loaded = parse(&text, Path::new("r.yaml")).expect("valid");
        assert_eq!(loaded.routes.routes()[0].limits.rate, Some(Rate { per_second: 300, burst: 300 }));
    }
}
