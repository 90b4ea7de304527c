//! `snigate check --config FILE`: exit 0 on a good file; exit 1 with every problem listed as
//! `file:line:col: message` on a bad one.

use std::path::Path;
use std::process::{Command, Output};

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
