//! `snigate check --config FILE`: exit 0 on a good file; exit 1 with every problem listed as
//! `file:line:col: message` on a bad one.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::*;

fn check(config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_snigate"))
        .args(["check", "--config"])
        .arg(config)
        .output()
        .expect("run snigate check")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts exit code 1 and returns stderr.
fn check_fails(config: &Path) -> String {
    let output = check(config);
    let err = stderr(&output);
    println!("--- stderr ---\n{err}");
    assert_eq!(output.status.code(), Some(1), "check must exit 1 on a bad file; stderr:\n{err}");
    err
}

/// Asserts that stderr names `file:line:` for the given line.
fn assert_points_at(err: &str, config: &Path, line: usize) {
    let needle = format!("{}:{line}:", config.display());
    assert!(err.contains(&needle), "stderr should contain {needle:?}:\n{err}");
}

/// 1-based line number of the first line containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1).unwrap_or_else(|| panic!("{needle:?} not in text"))
}

struct Files {
    pki: Pki,
    ca: Ca,
    a: Leaf,
    b: Leaf,
    crl: std::path::PathBuf,
}

fn files() -> Files {
    let pki = Pki::new();
    let ca = pki.ca("ca", "Check CA");
    let a = ca.server_cert("a", &["a.test", "*.a.test"]);
    let b = ca.server_cert("b", &["b.test"]);
    let revoked = ca.client_cert("revoked", &ClientSpec::cn("revoked"));
    let crl = ca.crl("ca", &[&revoked]);
    Files { pki, ca, a, b, crl }
}

fn p(path: &Path) -> String {
    q(path.to_str().unwrap())
}

#[test]
fn check_accepts_a_good_config() {
    let f = files();
    let text = format!(
        r#"listen: ["127.0.0.1:0", "[::1]:0"]
default: plain
limits:
  hello_timeout: 5s
  max_hello_bytes: 16384
  idle_timeout: 15m
  drain_timeout: 250ms
routes:
  - name: tenant-a
    sni: ["a.test", "*.a.test"]
    mode: terminate
    tls:
      cert: {cert}
      key: {key}
      client_auth: required
      client_ca: {ca}
      crl: [{crl}]
      alpn: [mqtt]
      min_version: "1.2"
      session_resumption: true
    backend:
      servers: ["127.0.0.1:1883", "127.0.0.1:1884"]
      proxy_protocol: v2
      identity: cn
      connect_timeout: 1s
  - name: tenant-b
    sni: ["b.test"]
    mode: passthrough
    backend:
      servers: ["127.0.0.1:8883"]
      proxy_protocol: v1
  - name: plain
    mode: tcp
    backend:
      servers: ["localhost:1883"]
"#,
        cert = p(&f.a.cert_path),
        key = p(&f.a.key_path),
        ca = p(&f.ca.cert_path),
        crl = p(&f.crl),
    );
    let config = f.pki.write("good.yaml", &text);
    let output = check(&config);
    assert_eq!(output.status.code(), Some(0), "stderr:\n{}", stderr(&output));
}

#[test]
fn check_unknown_key_names_line_and_key() {
    let f = files();
    let text = "listen: [\"127.0.0.1:0\"]\nroutes:\n  - name: a\n    mode: tcp\n    colour: red\n    backend: {servers: [\"127.0.0.1:1\"]}\n";
    let config = f.pki.write("unknown-key.yaml", text);
    let err = check_fails(&config);
    assert_points_at(&err, &config, 5);
    assert!(err.contains("colour"), "stderr should name the key:\n{err}");
}

#[test]
fn check_unknown_top_level_key_names_line() {
    let f = files();
    let text = "listen: [\"127.0.0.1:0\"]\nroutes:\n  - name: a\n    mode: tcp\n    backend: {servers: [\"127.0.0.1:1\"]}\nlisten_backlog: 5\n";
    let config = f.pki.write("unknown-top.yaml", text);
    let err = check_fails(&config);
    assert_points_at(&err, &config, 6);
    assert!(err.contains("listen_backlog"), "{err}");
}

#[test]
fn check_duplicate_hostname_across_routes() {
    let f = files();
    let text = "listen: [\"127.0.0.1:0\"]\nroutes:\n  - name: a\n    sni: [dup.test]\n    mode: passthrough\n    backend: {servers: [\"127.0.0.1:1\"]}\n  - name: b\n    sni: [other.test, DUP.test]\n    mode: passthrough\n    backend: {servers: [\"127.0.0.1:2\"]}\n";
    let config = f.pki.write("dup.yaml", text);
    let err = check_fails(&config);
    assert_points_at(&err, &config, 8);
    assert!(err.to_lowercase().contains("dup.test"), "{err}");
}

#[test]
fn check_bad_duration() {
    let f = files();
    let text = "listen: [\"127.0.0.1:0\"]\nlimits:\n  hello_timeout: 5 minutes\nroutes:\n  - name: a\n    mode: tcp\n    backend: {servers: [\"127.0.0.1:1\"]}\n";
    let config = f.pki.write("duration.yaml", text);
    let err = check_fails(&config);
    assert_points_at(&err, &config, 3);
    assert!(err.contains("5 minutes") || err.contains("hello_timeout"), "{err}");
}

#[test]
fn check_default_naming_a_missing_route() {
    let f = files();
    let text = "listen: [\"127.0.0.1:0\"]\ndefault: nowhere\nroutes:\n  - name: a\n    mode: tcp\n    backend: {servers: [\"127.0.0.1:1\"]}\n";
    let config = f.pki.write("default.yaml", text);
    let err = check_fails(&config);
    assert_points_at(&err, &config, 2);
    assert!(err.contains("nowhere"), "{err}");
}

#[test]
fn check_cert_key_mismatch() {
    let f = files();
    let text = format!(
        "listen: [\"127.0.0.1:0\"]\nroutes:\n  - name: a\n    sni: [a.test]\n    mode: terminate\n    tls:\n      cert: {}\n      key: {}\n    backend: {{servers: [\"127.0.0.1:1\"]}}\n",
        p(&f.a.cert_path),
        p(&f.b.key_path)
    );
    let config = f.pki.write("mismatch.yaml", &text);
    let err = check_fails(&config);
    let cert_line = format!("{}:7:", config.display());
    let key_line = format!("{}:8:", config.display());
    assert!(err.contains(&cert_line) || err.contains(&key_line), "should point at the cert or key line:\n{err}");
    assert!(err.to_lowercase().contains("key"), "{err}");
}

#[test]
fn check_unreadable_cert_file() {
    let f = files();
    let missing = f.pki.path().join("does-not-exist.pem");
    let text = format!(
        "listen: [\"127.0.0.1:0\"]\nroutes:\n  - name: a\n    sni: [a.test]\n    mode: terminate\n    tls:\n      cert: {}\n      key: {}\n    backend: {{servers: [\"127.0.0.1:1\"]}}\n",
        p(&missing),
        p(&f.a.key_path)
    );
    let config = f.pki.write("missing-cert.yaml", &text);
    let err = check_fails(&config);
    assert_points_at(&err, &config, 7);
    assert!(err.contains("does-not-exist.pem"), "{err}");
}

#[test]
fn check_garbage_cert_file() {
    let f = files();
    let garbage = f.pki.write("garbage.pem", "this is not a certificate\n");
    let text = format!(
        "listen: [\"127.0.0.1:0\"]\nroutes:\n  - name: a\n    sni: [a.test]\n    mode: terminate\n    tls:\n      cert: {}\n      key: {}\n    backend: {{servers: [\"127.0.0.1:1\"]}}\n",
        p(&garbage),
        p(&f.a.key_path)
    );
    let config = f.pki.write("garbage-cert.yaml", &text);
    let err = check_fails(&config);
    assert_points_at(&err, &config, 7);
}

#[test]
fn check_lists_every_problem_in_one_file() {
    let f = files();
    let missing = f.pki.path().join("missing.pem");
    let text = format!(
        r#"listen: ["127.0.0.1:0"]
default: ghost
routes:
  - name: a
    sni: [same.test]
    mode: passthrough
    backend: {{servers: ["127.0.0.1:1"]}}
  - name: b
    sni: [same.test]
    mode: passthrough
    backend: {{servers: ["no-port-here"]}}
  - name: c
    sni: [c.test]
    mode: terminate
    tls:
      cert: {missing}
      key: {key}
    backend: {{servers: ["127.0.0.1:3"]}}
  - name: d
    sni: [d.test]
    mode: terminate
    tls:
      cert: {a_cert}
      key: {b_key}
    backend: {{servers: ["127.0.0.1:4"]}}
"#,
        missing = p(&missing),
        key = p(&f.a.key_path),
        a_cert = p(&f.a.cert_path),
        b_key = p(&f.b.key_path),
    );
    let config = f.pki.write("many.yaml", &text);
    let err = check_fails(&config);
    let default_line = line_of(&text, "default: ghost");
    let dup_line = 9;
    let server_line = line_of(&text, "no-port-here");
    let missing_line = line_of(&text, "missing.pem");
    assert_eq!((default_line, server_line, missing_line), (2, 11, 16), "test text layout");
    for line in [default_line, dup_line, server_line, missing_line] {
        assert_points_at(&err, &config, line);
    }
    // Route d's cert/key mismatch is the fifth problem.
    let d_lines = [line_of(&text, "a.pem"), line_of(&text, "b.key")];
    assert!(
        d_lines.iter().any(|l| err.contains(&format!("{}:{l}:", config.display()))),
        "cert/key mismatch of route d (lines {d_lines:?}) missing:\n{err}"
    );
    let listed = err.lines().filter(|l| l.contains(&config.display().to_string())).count();
    assert!(listed >= 5, "expected at least 5 problems listed, got {listed}:\n{err}");
}

#[test]
fn check_missing_config_file_fails() {
    let f = files();
    let err = check_fails(&f.pki.path().join("nope.yaml"));
    assert!(err.contains("nope.yaml"), "{err}");
}

/// One terminate route `a` with these `sni` names serving `cert` / `key`, and another route
/// after it so that a problem can be told apart from its neighbours.
fn terminate_route(sni: &str, cert: &Path, key: &Path) -> String {
    format!(
        "listen: [\"127.0.0.1:0\"]\nroutes:\n  - name: a\n    sni: [{sni}]\n    mode: terminate\n    tls:\n      cert: {}\n      key: {}\n    backend: {{servers: [\"127.0.0.1:1\"]}}\n  - name: z\n    mode: tcp\n    backend: {{servers: [\"127.0.0.1:2\"]}}\n",
        p(cert),
        p(key)
    )
}

/// A self-signed certificate for `a.test` whose validity ended in 2021.
fn expired_cert(pki: &Pki) -> (std::path::PathBuf, std::path::PathBuf) {
    let mut params = rcgen::CertificateParams::new(vec!["a.test".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (pki.write("expired.pem", &cert.pem()), pki.write("expired.key", &key.serialize_pem()))
}

#[test]
fn check_refuses_an_expired_server_certificate_at_its_cert_line() {
    let f = files();
    let (cert, key) = expired_cert(&f.pki);
    let config = f.pki.write("expired.yaml", &terminate_route("a.test", &cert, &key));
    let err = check_fails(&config);
    assert_points_at(&err, &config, 7);
    assert!(err.contains("expired on"), "{err}");
}

#[test]
fn run_loads_an_expired_certificate_with_a_warning_only() {
    let f = files();
    let (cert, key) = expired_cert(&f.pki);
    let config = f.pki.write("expired-run.yaml", &terminate_route("a.test", &cert, &key));
    // `run` and reload go through `config::load`: it succeeds and hands the problem over to log.
    let loaded = snigate::config::load(&config).unwrap_or_else(|errors| panic!("run must serve it: {errors}"));
    assert_eq!(loaded.certificate_problems.len(), 1, "{:?}", loaded.certificate_problems);
    assert_eq!(loaded.certificate_problems[0].line, 7);
}

#[test]
fn check_with_warn_certificates_passes_an_expired_certificate_with_a_warning() {
    let f = files();
    let (cert, key) = expired_cert(&f.pki);
    let config = f.pki.write("expired-warn.yaml", &terminate_route("a.test", &cert, &key));
    let output = Command::new(env!("CARGO_BIN_EXE_snigate"))
        .args(["check", "--warn-certificates", "--config"])
        .arg(&config)
        .output()
        .expect("run snigate check");
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{err}");
    assert!(err.contains("warning: ") && err.contains("expired on"), "{err}");
}

#[test]
fn check_refuses_a_certificate_that_does_not_cover_a_route_name() {
    let f = files();
    // a.pem names a.test and *.a.test: x.a.test is covered, deep.x.a.test and b.test are not.
    let sni = "x.a.test, b.test, \"*.a.test\", deep.x.a.test";
    let config = f.pki.write("san.yaml", &terminate_route(sni, &f.a.cert_path, &f.a.key_path));
    let err = check_fails(&config);
    assert_eq!(err.matches("does not cover").count(), 2, "{err}");
    assert!(err.contains(&format!("{}:4:21: certificate", config.display())), "b.test at 4:21:\n{err}");
    assert!(err.contains("\"deep.x.a.test\""), "{err}");
    let loaded = snigate::config::load(&config).expect("run only warns");
    assert_eq!(loaded.certificate_problems.len(), 2);
}

#[test]
fn check_reports_a_duplicate_route_name_at_the_duplicate() {
    let f = files();
    let text = "listen: [\"127.0.0.1:0\"]\nroutes:\n  - name: twin\n    mode: tcp\n    backend: {servers: [\"127.0.0.1:1\"]}\n  - name: other\n    mode: tcp\n    backend: {servers: [\"127.0.0.1:2\"]}\n  - name: twin\n    mode: tcp\n    backend: {servers: [\"127.0.0.1:3\"]}\n";
    let config = f.pki.write("dup-name.yaml", text);
    let err = check_fails(&config);
    assert!(err.contains(&format!("{}:9:11: duplicate route name", config.display())), "{err}");
    assert!(!err.contains(&format!("{}:3:", config.display())), "not at the first route:\n{err}");
}

#[test]
fn check_reports_a_key_file_named_as_client_ca_at_the_client_ca_line() {
    let f = files();
    let text = format!(
        "listen: [\"127.0.0.1:0\"]\nroutes:\n  - name: a\n    sni: [a.test]\n    mode: terminate\n    tls:\n      cert: {}\n      key: {key}\n      client_auth: required\n      client_ca: {key}\n    backend: {{servers: [\"127.0.0.1:1\"]}}\n",
        p(&f.a.cert_path),
        key = p(&f.a.key_path),
    );
    let config = f.pki.write("ca-is-key.yaml", &text);
    let err = check_fails(&config);
    assert_points_at(&err, &config, 10);
    assert!(!err.contains(&format!("{}:8:", config.display())), "not at the key line:\n{err}");
    assert!(err.contains("holds a private key, not a PEM certificate"), "{err}");
}

#[test]
fn check_says_encrypted_keys_are_not_supported() {
    let f = files();
    let encrypted = f.pki.write(
        "encrypted.key",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIGbMFcGCSqGSIb3DQEFDTBKMCkGCSqGSIb3DQEFDDAcBAiRiS3D\n-----END ENCRYPTED PRIVATE KEY-----\n",
    );
    let config = f.pki.write("encrypted.yaml", &terminate_route("a.test", &f.a.cert_path, &encrypted));
    let err = check_fails(&config);
    assert_points_at(&err, &config, 8);
    assert!(err.contains("encrypted keys are not supported"), "{err}");
    assert!(!err.contains("no items found"), "{err}");
}

#[test]
fn check_names_an_over_long_label_as_such() {
    let f = files();
    let label = "l".repeat(64);
    let text = format!("listen: [\"127.0.0.1:0\"]\nroutes:\n  - name: a\n    sni: [{label}.test]\n    mode: tcp\n    backend: {{servers: [\"127.0.0.1:1\"]}}\n");
    let config = f.pki.write("long-label.yaml", &text);
    let err = check_fails(&config);
    assert!(err.contains(&format!("{}:4:11:", config.display())), "{err}");
    assert!(err.contains("label longer than 63 bytes"), "{err}");
    assert!(!err.contains("letters, digits"), "{err}");
}

#[test]
fn check_hints_at_the_xn_form_of_a_unicode_hostname() {
    let f = files();
    let text = "listen: [\"127.0.0.1:0\"]\nroutes:\n  - name: a\n    sni: [bücher.test]\n    mode: tcp\n    backend: {servers: [\"127.0.0.1:1\"]}\n";
    let config = f.pki.write("unicode.yaml", text);
    let err = check_fails(&config);
    assert_points_at(&err, &config, 4);
    assert!(err.contains("xn--"), "{err}");
}

#[test]
fn check_of_a_missing_file_has_no_zero_position() {
    let f = files();
    let missing = f.pki.path().join("nope.yaml");
    let err = check_fails(&missing);
    assert!(err.contains(&format!("{}: cannot read config file", missing.display())), "{err}");
    assert!(!err.contains(":0:0:"), "{err}");
}

#[test]
fn check_accepts_yaml_merge_keys() {
    let f = files();
    let text = "listen: [\"127.0.0.1:0\"]\nroutes:\n  - name: a\n    sni: [a.test]\n    mode: passthrough\n    backend: &shared\n      servers: [\"127.0.0.1:1\"]\n      proxy_protocol: v2\n  - name: b\n    sni: [b.test]\n    mode: passthrough\n    backend:\n      <<: *shared\n      connect_timeout: 1s\n";
    let config = f.pki.write("merge.yaml", text);
    let output = check(&config);
    assert_eq!(output.status.code(), Some(0), "stderr:\n{}", stderr(&output));
    let loaded = snigate::config::load(&config).unwrap();
    let b = &loaded.routes.routes()[1].backend;
    assert_eq!((b.servers.as_slice(), b.connect_timeout), (&["127.0.0.1:1".to_string()][..], Duration::from_secs(1)));
}

#[test]
fn check_still_places_errors_in_a_file_with_merge_keys() {
    let f = files();
    let text = "listen: [\"127.0.0.1:0\"]\nroutes:\n  - name: a\n    mode: tcp\n    backend: &shared\n      servers: [\"127.0.0.1:1\"]\n  - name: b\n    mode: tcp\n    backend:\n      <<: *shared\n      colour: red\n";
    let config = f.pki.write("merge-bad.yaml", text);
    let err = check_fails(&config);
    assert_points_at(&err, &config, 11);
    assert!(err.contains("colour"), "{err}");
}

#[test]
fn check_refuses_deep_nesting_with_its_position() {
    let f = files();
    let text = format!(
        "listen: [\"127.0.0.1:0\"]\nroutes: [{{name: a, mode: tcp, backend: {{servers: [\"127.0.0.1:1\"]}}}}]\nx: {}\n",
        "[".repeat(200_000)
    );
    let config = f.pki.write("deep.yaml", &text);
    let err = check_fails(&config);
    let column = 3 + snigate::config::MAX_NESTING_DEPTH;
    assert!(err.contains(&format!("{}:3:{column}: nesting deeper than 64 levels", config.display())), "{err}");
}

#[test]
fn a_certificate_shared_by_many_routes_is_read_and_parsed_once() {
    const ROUTES: usize = 300;
    let f = files();
    let mut text = String::from("listen: [\"127.0.0.1:0\"]\nroutes:\n");
    for i in 0..ROUTES {
        text.push_str(&format!(
            "  - name: r{i}\n    sni: [\"h{i}.a.test\"]\n    mode: terminate\n    tls: {{cert: {}, key: {}, client_auth: optional, client_ca: {}}}\n    backend: {{servers: [\"127.0.0.1:1\"]}}\n",
            p(&f.a.cert_path),
            p(&f.a.key_path),
            p(&f.ca.cert_path),
        ));
    }
    let config = f.pki.write("shared.yaml", &text);
    let loaded = snigate::config::load(&config).unwrap_or_else(|errors| panic!("{errors}"));
    let routes = loaded.routes.routes();
    assert_eq!(routes.len(), ROUTES);
    let first = &routes[0].tls.as_ref().unwrap().certificates.served;
    for route in routes {
        let tls = route.tls.as_ref().unwrap();
        assert!(std::sync::Arc::ptr_eq(&tls.certificates.served, first), "route {} parsed its own copy", route.name);
    }
    // Each route still has its own session state (no resumption across routes).
    let a = &routes[0].tls.as_ref().unwrap().server_config;
    let b = &routes[1].tls.as_ref().unwrap().server_config;
    assert!(!std::sync::Arc::ptr_eq(a, b));
    assert_eq!(loaded.files.len(), 4, "config, cert, key and CA, each listed once: {:?}", loaded.files);
}

#[test]
fn cli_version_and_help() {
    let bin = env!("CARGO_BIN_EXE_snigate");
    let version = Command::new(bin).arg("--version").output().unwrap();
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")));
    for sub in [&["--help"][..], &["check", "--help"], &["run", "--help"]] {
        let output = Command::new(bin).args(sub).output().unwrap();
        assert!(output.status.success(), "{sub:?}: {}", stderr(&output));
        assert!(String::from_utf8_lossy(&output.stdout).contains("--config") || sub == ["--help"], "{sub:?}");
    }
}

/// A routes file of passthrough routes, one per `(name, sni, alpn line)`.
fn alpn_routes(routes: &[(&str, &str, Option<&str>)]) -> String {
    let mut text = String::from("listen: [\"127.0.0.1:0\"]\nroutes:\n");
    for (name, sni, alpn) in routes {
        text += &format!("  - name: {name}\n    sni: [{sni}]\n");
        if let Some(alpn) = alpn {
            text += &format!("    alpn: {alpn}\n");
        }
        text += "    mode: passthrough\n    backend: {servers: [\"127.0.0.1:1\"]}\n";
    }
    text
}

#[test]
fn check_accepts_one_hostname_in_routes_with_disjoint_alpn_sets() {
    let f = files();
    let text = alpn_routes(&[
        ("mqtt", "iot.test", Some("[mqtt, x-amzn-mqtt-ca]")),
        ("web", "iot.test", Some("[h2]")),
        ("rest", "iot.test", None),
    ]);
    let output = check(&f.pki.write("alpn-ok.yaml", &text));
    assert_eq!(output.status.code(), Some(0), "stderr:\n{}", stderr(&output));
}

#[test]
fn check_reports_overlapping_alpn_sets_at_the_protocol() {
    let f = files();
    let text = alpn_routes(&[
        ("mqtt", "iot.test", Some("[mqtt, x-amzn-mqtt-ca]")),
        ("also-mqtt", "iot.test", Some("[h2, mqtt]")),
    ]);
    let config = f.pki.write("alpn-overlap.yaml", &text);
    let err = check_fails(&config);
    let line = line_of(&text, "alpn: [h2, mqtt]");
    let column = text.lines().nth(line - 1).unwrap().find("mqtt").unwrap() + 1;
    let expected = format!(
        "{}:{line}:{column}: ALPN protocol \"mqtt\" for hostname \"iot.test\" is already routed to route \"mqtt\"",
        config.display()
    );
    assert!(err.contains(&expected), "want {expected:?} in:\n{err}");
}

#[test]
fn check_reports_a_second_route_without_alpn_for_one_hostname() {
    let f = files();
    let text =
        alpn_routes(&[("mqtt", "iot.test", Some("[mqtt]")), ("web", "iot.test", None), ("web-too", "iot.test", None)]);
    let config = f.pki.write("alpn-two-fallbacks.yaml", &text);
    let err = check_fails(&config);
    let line = text.lines().position(|l| l.contains("web-too")).unwrap() + 2;
    let expected = format!(
        "{}:{line}:{}: hostname \"iot.test\" is already used by route \"web\" (one route per hostname may go without `alpn`)",
        config.display(),
        "    sni: [".len() + 1
    );
    assert!(err.contains(&expected), "want {expected:?} in:\n{err}");
}

#[test]
fn check_refuses_empty_and_over_long_alpn_protocols_at_their_line() {
    let f = files();
    let long = "p".repeat(256);
    let text = alpn_routes(&[("empty", "a.test", Some("[\"\"]")), ("long", "b.test", Some(&format!("[{long}]")))]);
    let config = f.pki.write("alpn-bad-names.yaml", &text);
    let err = check_fails(&config);
    let empty_line = line_of(&text, "alpn: [\"\"]");
    assert!(
        err.contains(&format!("{}:{empty_line}:5: ALPN protocol \"\" must be 1 to 255 bytes", config.display())),
        "{err}"
    );
    let long_line = line_of(&text, &long);
    let expected = format!("{}:{long_line}:12: ALPN protocol \"{long}\" must be 1 to 255 bytes", config.display());
    assert!(err.contains(&expected), "{err}");
}

#[test]
fn check_refuses_client_id_balance_without_mqtt_at_the_value() {
    let f = files();
    let text = "listen: [\"127.0.0.1:0\"]\nroutes:\n  - name: a\n    mode: tcp\n    backend:\n      servers: [\"127.0.0.1:1\"]\n      balance: client_id\n";
    let config = f.pki.write("client-id.yaml", text);
    let err = check_fails(&config);
    assert!(err.contains(&format!("{}:7:16:", config.display())), "at the value's line and column:\n{err}");
    assert!(err.contains("client_id") && err.contains("`mqtt:`"), "{err}");
}

#[test]
fn check_accepts_backups_and_balances_and_refuses_bad_backup_addresses_where_written() {
    let f = files();
    let good = "listen: [\"127.0.0.1:0\"]\nroutes:\n  - name: a\n    mode: tcp\n    backend:\n      servers: [\"127.0.0.1:1\"]\n      backup_servers: [\"127.0.0.1:2\", \"backup.internal:3\"]\n      balance: least_connections\n  - name: b\n    mode: tcp\n    sni: [b.test]\n    backend: {servers: [\"127.0.0.1:1\"], balance: client_ip}\n";
    let config = f.pki.write("backups-good.yaml", good);
    let output = check(&config);
    assert_eq!(output.status.code(), Some(0), "stderr:\n{}", stderr(&output));

    let bad = "listen: [\"127.0.0.1:0\"]\nroutes:\n  - name: a\n    mode: tcp\n    backend:\n      servers: [\"127.0.0.1:1\"]\n      backup_servers: [\"127.0.0.1:2\", \"nowhere\", \"127.0.0.1:1\"]\n";
    let config = f.pki.write("backups-bad.yaml", bad);
    let err = check_fails(&config);
    assert!(err.contains(&format!("{}:7:40:", config.display())), "at the bad address:\n{err}");
    assert!(err.contains("bad backup server \"nowhere\""), "{err}");
    assert!(err.contains(&format!("{}:7:51:", config.display())), "at the duplicate:\n{err}");
    assert!(err.contains("also in `servers`"), "{err}");
}

#[test]
fn check_refuses_mqtt_on_a_passthrough_route_at_its_position() {
    let pki = Pki::new();
    let text = r#"listen: ["127.0.0.1:0"]
routes:
  - name: encrypted
    sni: ["a.test"]
    mode: passthrough
    mqtt: {connect_timeout: 5s}
    backend:
      servers: ["127.0.0.1:8883"]
"#;
    let config = pki.write("mqtt-passthrough.yaml", text);
    let err = check_fails(&config);
    assert!(err.contains("`mqtt:` on passthrough route \"encrypted\""), "{err}");
    assert_points_at(&err, &config, line_of(text, "mqtt:"));
}

#[test]
fn check_refuses_websocket_on_a_passthrough_route_and_bad_websocket_keys_at_their_positions() {
    let pki = Pki::new();
    let text = r#"listen: ["127.0.0.1:0"]
routes:
  - name: encrypted
    sni: ["a.test"]
    mode: passthrough
    websocket: {path: /mqtt}
    backend:
      servers: ["127.0.0.1:8883"]
  - name: plain
    mode: tcp
    websocket:
      path: mqtt
      max_message_bytes: 0
    backend:
      servers: ["127.0.0.1:1883"]
"#;
    let config = pki.write("websocket-passthrough.yaml", text);
    let err = check_fails(&config);
    assert!(err.contains("`websocket:` on passthrough route \"encrypted\""), "{err}");
    assert_points_at(&err, &config, line_of(text, "websocket: {path"));
    assert!(err.contains("websocket path \"mqtt\" must start with /"), "{err}");
    assert_points_at(&err, &config, line_of(text, "path: mqtt"));
    assert!(err.contains("websocket max_message_bytes must be more than 0"), "{err}");
    assert_points_at(&err, &config, line_of(text, "max_message_bytes: 0"));
}

#[test]
fn check_refuses_identity_mqtt_rules_without_required_client_auth_at_their_keys() {
    let f = files();
    let server = f.ca.server_cert("mq", &["mq.test"]);
    let text = format!(
        r#"listen: ["127.0.0.1:0"]
routes:
  - name: optional
    sni: ["mq.test"]
    mode: terminate
    tls: {{cert: "{cert}", key: "{key}", client_auth: optional, client_ca: "{ca}"}}
    mqtt:
      client_id: identity_prefix
      username: identity
    backend:
      servers: ["127.0.0.1:1883"]
  - name: plain
    mode: tcp
    mqtt:
      connect_timeout: 5s
      client_id: identity
    backend:
      servers: ["127.0.0.1:1883"]
"#,
        cert = server.cert_path.display(),
        key = server.key_path.display(),
        ca = f.ca.cert_path.display(),
    );
    let config = f.pki.write("mqtt-identity.yaml", &text);
    let err = check_fails(&config);
    assert!(err.contains("mqtt client_id: identity_prefix on route \"optional\""), "{err}");
    assert!(err.contains("mqtt username: identity on route \"optional\""), "{err}");
    assert!(err.contains("mqtt client_id: identity on route \"plain\""), "{err}");
    assert!(err.contains("client_auth: required"), "{err}");
    assert_points_at(&err, &config, line_of(&text, "client_id: identity_prefix"));
    assert_points_at(&err, &config, line_of(&text, "username: identity"));
    let plain_line = text.lines().position(|l| l.trim() == "client_id: identity").expect("plain rule") + 1;
    assert_points_at(&err, &config, plain_line);
}

#[test]
fn check_accepts_identity_mqtt_rules_and_client_id_balance_on_mqtt_routes() {
    let f = files();
    let server = f.ca.server_cert("mq", &["mq.test"]);
    let text = format!(
        r#"listen: ["127.0.0.1:0"]
routes:
  - name: devices
    sni: ["mq.test"]
    mode: terminate
    tls: {{cert: "{cert}", key: "{key}", client_auth: required, client_ca: "{ca}"}}
    mqtt: {{client_id: identity, username: identity}}
    backend:
      servers: ["127.0.0.1:1883", "127.0.0.1:1884"]
      balance: client_id
  - name: plain
    mode: tcp
    mqtt: {{}}
    backend: {{servers: ["127.0.0.1:1883"], balance: client_id}}
"#,
        cert = server.cert_path.display(),
        key = server.key_path.display(),
        ca = f.ca.cert_path.display(),
    );
    let config = f.pki.write("mqtt-identity-good.yaml", &text);
    let output = check(&config);
    assert_eq!(output.status.code(), Some(0), "stderr:\n{}", stderr(&output));
}
