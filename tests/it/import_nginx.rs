//! `snigate import-nginx FILE`: real-world-shaped nginx `stream {}` configs (tests/data/nginx/)
//! become routes files that snigate's own loader accepts with the routes nginx would have used;
//! what has no equivalent is named with file:line. When nginx is installed, the fixtures are also
//! checked with `nginx -t`, so they are configs nginx really runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::*;
use snigate::config::{self, Balance, ClientAuth, Mode, ProxyProtocol, RawConfig, TlsVersion};

const NGINX: &str = "/usr/sbin/nginx";
const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/nginx")
}

/// Copies fixture file or directory `name` into a fresh temp dir; returns the dir and the copy.
fn copy_fixture(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let source = fixtures().join(name);
    copy_tree(&source, &dir.path().join(source.file_name().unwrap()));
    let copy = dir.path().join(name);
    (dir, copy)
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::copy(from, to).unwrap();
    }
}

fn import(file: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_snigate")).arg("import-nginx").arg(file).args(extra).output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs the import, asserts exit 0, and loads the result with snigate's loader (as `run` would).
fn import_and_load(file: &Path, extra: &[&str]) -> (config::Config, RawConfig, String) {
    let output = import(file, extra);
    let (out, err) = (stdout(&output), stderr(&output));
    println!("--- stdout ---\n{out}--- stderr ---\n{err}");
    assert_eq!(output.status.code(), Some(0), "import must succeed; stderr:\n{err}");
    let routes_dir = tempfile::tempdir().unwrap();
    let routes_file = routes_dir.path().join("routes.yaml");
    std::fs::write(&routes_file, &out).unwrap();
    let loaded = config::load(&routes_file).unwrap_or_else(|errors| panic!("snigate rejects the output: {errors}"));
    let raw: RawConfig = yaml_serde::from_str(&out).unwrap();
    (loaded, raw, err)
}

fn route_of<'a>(config: &'a config::Config, sni: &str) -> Option<&'a str> {
    config.routes.resolve(Some(sni)).map(|route| route.name.as_str())
}

fn raw_route<'a>(raw: &'a RawConfig, name: &str) -> &'a config::RawRoute {
    raw.routes.iter().find(|route| route.name == name).unwrap_or_else(|| panic!("no route {name}"))
}

/// `nginx -t` on `config` (a full nginx.conf, or a bare `stream {}` wrapped into one); skipped
/// with a note when nginx is not installed.
fn assert_nginx_accepts(config: &Path) {
    if !Path::new(NGINX).exists() || !Path::new(STREAM_MODULE).exists() {
        println!("note: {NGINX} or its stream module is not installed; `nginx -t` of {} skipped", config.display());
        return;
    }
    let dir = config.parent().unwrap();
    let text = std::fs::read_to_string(config).unwrap();
    let tested = if text.contains("events") {
        config.to_path_buf()
    } else {
        let wrapper = dir.join("nginx-t-wrapper.conf");
        let include = config.file_name().unwrap().to_str().unwrap();
        std::fs::write(&wrapper, format!("load_module {STREAM_MODULE};\nevents {{}}\ninclude {include};\n")).unwrap();
        wrapper
    };
    let globals = format!("pid {}/nginx.pid; error_log stderr;", dir.display());
    let output =
        Command::new(NGINX).arg("-t").arg("-c").arg(&tested).arg("-p").arg(dir).args(["-g", &globals]).output();
    let output = output.expect("run nginx -t");
    assert!(output.status.success(), "nginx -t refuses {}:\n{}", config.display(), stderr(&output));
}

/// The certificates the MQTT recipe names, in `<dir>/certs`.
fn mqtt_certs(dir: &Path) -> (Ca, Leaf) {
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let server_ca = Ca::new(&certs, "server-ca", "Server CA");
    server_ca.server_cert("tenant-a", &["mqtt.tenant-a.example.com"]);
    server_ca.server_cert("tenant-b", &["mqtt.tenant-b.example.com"]);
    let clients_ca = Ca::new(&certs, "clients-ca", "Clients CA");
    let revoked = clients_ca.client_cert("revoked", &ClientSpec::cn("revoked"));
    clients_ca.crl("clients-ca", &[&revoked]);
    let device = clients_ca.client_cert("device-1", &ClientSpec::cn("device-1"));
    (clients_ca, device)
}

#[test]
fn passthrough_map_and_upstreams_become_passthrough_routes_by_hostname() {
    let (_dir, file) = copy_fixture("passthrough.conf");
    let (loaded, raw, err) = import_and_load(&file, &[]);

    let names: Vec<&str> = raw.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["mqtt", "tenants", "eu", "10.0.4.10-443", "fallback"]);
    assert!(raw.routes.iter().all(|r| r.mode == Mode::Passthrough && r.tls.is_none()));
    assert_eq!(loaded.listen.iter().map(ToString::to_string).collect::<Vec<_>>(), ["0.0.0.0:443", "[::]:443"]);

    assert_eq!(route_of(&loaded, "mqtt.example.com"), Some("mqtt"));
    assert_eq!(route_of(&loaded, "tenants.example.com"), Some("tenants"), "`.suffix` also matches the name itself");
    assert_eq!(route_of(&loaded, "x.y.tenants.example.com"), Some("tenants"));
    assert_eq!(route_of(&loaded, "a.eu.example.com"), Some("eu"));
    assert_eq!(route_of(&loaded, "eu.example.com"), Some("fallback"), "`*.suffix` does not match the name itself");
    assert_eq!(route_of(&loaded, "web.example.com"), Some("10.0.4.10-443"));
    assert_eq!(route_of(&loaded, "unknown.test"), Some("fallback"), "the map default is the default route");

    let mqtt = loaded.routes.lookup("mqtt.example.com").unwrap();
    assert_eq!(
        mqtt.backend.servers,
        ["10.0.1.10:8883", "10.0.1.11:8883", "10.0.1.12:8883"],
        "backup after the primaries"
    );
    assert_eq!(mqtt.backend.primaries, 2, "nginx `backup` becomes backup_servers");
    assert_eq!(raw_route(&raw, "mqtt").backend.backup_servers, ["10.0.1.12:8883"]);
    assert_eq!(mqtt.backend.proxy_protocol, ProxyProtocol::V1, "nginx `proxy_protocol on` sends v1");
    assert_eq!(mqtt.backend.connect_timeout, Duration::from_secs(2));
    assert_eq!(raw_route(&raw, "eu").backend.servers, ["localhost:8443"], "hostnames pass through");
    assert_eq!(raw_route(&raw, "10.0.4.10-443").backend.servers, ["10.0.4.10:443"]);
    assert_eq!(loaded.limits.idle_timeout, Duration::from_secs(600), "proxy_timeout 10m");

    let at = |line: usize| format!("{}:{line}: warning:", file.display());
    assert!(err.contains(&format!("{} server parameter `weight=2`", at(14))), "{err}");
    assert!(!err.contains("backup"), "backup servers are translated, not warned about: {err}");
    assert!(stdout(&import(&file, &[])).contains("v2 also carries"), "the v1 choice is explained");
    assert_nginx_accepts(&file);
}

#[test]
fn mqtt_recipe_with_mapped_certificates_becomes_terminate_routes_with_client_auth() {
    let (dir, file) = copy_fixture("mqtt_terminate.conf");
    mqtt_certs(dir.path());
    let (loaded, raw, err) = import_and_load(&file, &[]);
    assert!(!err.contains("warning"), "nothing lost in this recipe: {err}");

    let names: Vec<&str> = raw.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["broker_a", "broker_b"]);
    assert_eq!(route_of(&loaded, "mqtt.tenant-a.example.com"), Some("broker_a"));
    assert_eq!(route_of(&loaded, "mqtt.tenant-b.example.com"), Some("broker_b"));
    assert_eq!(route_of(&loaded, "other.example.com"), None, "the backend map has no default: reject");
    assert_eq!(loaded.listen.iter().map(ToString::to_string).collect::<Vec<_>>(), ["0.0.0.0:8883"]);

    let certs = std::fs::canonicalize(dir.path()).unwrap().join("certs");
    for (name, tenant) in [("broker_a", "tenant-a"), ("broker_b", "tenant-b")] {
        let route = raw_route(&raw, name);
        assert_eq!(route.mode, Mode::Terminate);
        let tls = route.tls.as_ref().unwrap();
        let cert = tls.cert.as_ref().expect("cert");
        assert_eq!(cert, &certs.join(format!("{tenant}.pem")), "relative paths resolve against nginx.conf's dir");
        assert_eq!(tls.key.as_ref(), Some(&certs.join(format!("{tenant}.key"))));
        assert_eq!(tls.client_auth, ClientAuth::Required);
        assert_eq!(tls.client_ca.as_deref(), Some(certs.join("clients-ca.pem").as_path()));
        assert_eq!(tls.crl, [certs.join("clients-ca.crl")]);
        assert_eq!(tls.alpn, ["mqtt"]);
        assert_eq!(tls.min_version, TlsVersion::Tls12);
        assert_eq!(route.backend.proxy_protocol, ProxyProtocol::V1);
    }
    assert_eq!(raw_route(&raw, "broker_b").backend.servers, ["127.0.0.1:1884", "127.0.0.1:1885"]);
    let loaded_b = loaded.routes.lookup("mqtt.tenant-b.example.com").unwrap();
    assert!(loaded_b.tls.is_some());
    assert_eq!(loaded_b.backend.connect_timeout, Duration::from_secs(5));
    assert_eq!(loaded.limits.handshake_timeout, Duration::from_secs(15));
    assert_nginx_accepts(&file);
}

#[test]
fn whole_nginx_conf_with_events_http_and_globbed_includes_is_translated() {
    let (_dir, dir_copy) = copy_fixture("full");
    let file = dir_copy.join("nginx.conf");
    let certs = dir_copy.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    Ca::new(&certs, "ca", "App CA").server_cert("app", &["app.example.com"]);
    let (loaded, raw, err) = import_and_load(&file, &[]);

    assert_eq!(raw.routes.len(), 1);
    let route = &raw.routes[0];
    assert_eq!((route.name.as_str(), route.mode), ("app_pool", Mode::Terminate));
    assert!(route.sni.is_empty());
    assert_eq!(route.backend.servers, ["127.0.0.1:9001", "127.0.0.1:9002"]);
    assert_eq!(route.backend.balance, Balance::LeastConnections, "least_conn");
    let tls = route.tls.as_ref().unwrap();
    assert_eq!(tls.min_version, TlsVersion::Tls13, "ssl_protocols TLSv1.3 inherited from stream {{}}");
    assert!(!tls.session_resumption, "ssl_session_tickets off inherited from stream {{}}");
    assert_eq!(tls.client_auth, ClientAuth::None);
    assert_eq!(route_of(&loaded, "anything.example.com"), Some("app_pool"), "a fixed proxy_pass is the default");
    assert_eq!(loaded.listen.iter().map(ToString::to_string).collect::<Vec<_>>(), ["127.0.0.1:9443"]);
    assert_eq!(loaded.limits.idle_timeout, Duration::from_secs(3600));

    let included = dir_copy.join("stream.d");
    assert!(!err.contains("least_conn"), "least_conn is translated, not warned about: {err}");
    assert!(
        err.contains(&format!("{}:5: warning: `ssl_session_cache` ignored", included.join("20-server.conf").display()))
    );
    for quiet in ["user", "worker_processes", "events", "http", "log_format", "access_log", "load_module"] {
        assert!(!err.contains(&format!("`{quiet}`")), "{quiet} is nginx's own business: {err}");
    }
    assert_nginx_accepts(&file);
}

#[test]
fn untranslatable_parts_are_each_named_with_file_and_line_and_nothing_is_written() {
    let (_dir, file) = copy_fixture("untranslatable.conf");
    let output = import(&file, &[]);
    let err = stderr(&output);
    println!("{err}");
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stdout(&output), "", "no partial routes file");
    let at = |line: usize, severity: &str| format!("{}:{line}: {severity}:", file.display());
    for (line, severity, words) in [
        (4, "warning", "`resolver` ignored"),
        (8, "error", "regex key"),
        (9, "error", "wildcards at the end of a name"),
        (12, "error", "unix:/run/tenants.sock"),
        (20, "error", "`allow`"),
        (21, "error", "`deny`"),
        (22, "error", "does not open TLS connections to backends"),
    ] {
        let expected = format!("{} {}", at(line, severity), "");
        let found = err.lines().any(|l| l.starts_with(expected.trim_end()) && l.contains(words));
        assert!(found, "expected {expected}… {words}:\n{err}");
    }
    assert!(!err.contains("`limit_conn` ignored"), "a per-IP limit_conn is translated: {err}");
    assert!(err.contains("cannot translate"), "{err}");
    assert_nginx_accepts(&file);
}

#[test]
fn per_ip_limit_conn_becomes_max_connections_per_ip() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("limit.conf");
    std::fs::write(
        &file,
        "stream {\n limit_conn_zone $binary_remote_addr zone=per_ip:10m;\n server {\n  listen 127.0.0.1:1883;\n  limit_conn per_ip 20;\n  preread_timeout 2s;\n  preread_buffer_size 32k;\n  proxy_pass 127.0.0.1:11883;\n }\n}\n",
    )
    .unwrap();
    let (loaded, raw, _) = import_and_load(&file, &[]);
    assert_eq!(loaded.limits.max_connections_per_ip, 20);
    assert_eq!(loaded.limits.hello_timeout, Duration::from_secs(2));
    assert_eq!(loaded.limits.max_hello_bytes, 32 * 1024);
    assert_eq!(raw.routes[0].mode, Mode::Tcp, "no ssl_preread and no ssl: plain TCP");
    assert_eq!(raw.default.as_deref(), Some("127.0.0.1-11883"));
    assert_nginx_accepts(&file);
}

#[test]
fn broken_syntax_is_an_error_at_file_and_line() {
    for (name, line, words) in
        [("unterminated.conf", 4, "unterminated \" string"), ("unclosed.conf", 4, "block \"server\" is not closed")]
    {
        let (_dir, file) = copy_fixture(name);
        let output = import(&file, &[]);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{err}");
        assert_eq!(stdout(&output), "");
        assert!(err.contains(&format!("{}:{line}: {words}", file.display())), "{name}: {err}");
    }
}

#[test]
fn garbage_and_missing_files_exit_1_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8]); 5] = [
        ("binary.conf", &[0xff, 0xfe, 0x00, 0x80, b'{']),
        ("braces.conf", b"}}}}{{{{"),
        ("deep.conf", &b"a {".repeat(10_000)),
        ("empty.conf", b""),
        ("http_only.conf", b"events {}\nhttp { server { listen 80; } }\n"),
    ];
    for (name, bytes) in cases {
        let file = dir.path().join(name);
        std::fs::write(&file, bytes).unwrap();
        let output = import(&file, &[]);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains(&file.display().to_string()), "{name} names the file: {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
    let output = import(&dir.path().join("nope.conf"), &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("cannot read"), "{}", stderr(&output));
}

#[test]
fn several_server_blocks_need_a_choice_and_each_translates_alone() {
    let (_dir, file) = copy_fixture("two_servers.conf");
    let output = import(&file, &[]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("--server N") && err.contains("two_servers.conf:5") && err.contains("two_servers.conf:10"));

    let (_, first, _) = import_and_load(&file, &["--server", "1"]);
    assert_eq!((first.routes[0].name.as_str(), first.routes[0].mode), ("web", Mode::Passthrough));
    assert_eq!(first.default.as_deref(), Some("web"));
    let (_, second, _) = import_and_load(&file, &["--server", "2"]);
    assert_eq!((second.routes[0].name.as_str(), second.routes[0].mode), ("mqtt", Mode::Tcp));
    assert_eq!(import(&file, &["--server", "3"]).status.code(), Some(1));
    assert_nginx_accepts(&file);
}

/// End to end: an imported passthrough config, run by snigate, sends each SNI to its nginx upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_passthrough_config_routes_each_name_to_its_upstream() {
    use crate::support::tls::{server_config, simple_client, tls_connect};
    use tokio::io::AsyncWriteExt;

    let pki = Pki::new();
    let ca = pki.ca("backends-ca", "Backends CA");
    let leaf_a = ca.server_cert("a", &["a.test"]);
    let leaf_b = ca.server_cert("b", &["x.b.test"]);
    let mut backend_a = TestBackend::start(BackendOpts::tls(ProxyExpect::V1, server_config(&leaf_a, &[]))).await;
    let mut backend_b = TestBackend::start(BackendOpts::tls(ProxyExpect::V1, server_config(&leaf_b, &[]))).await;
    let nginx_conf = pki.write(
        "nginx.conf",
        &format!(
            "stream {{\n  map $ssl_preread_server_name $up {{\n    hostnames;\n    a.test up_a;\n    .b.test up_b;\n  }}\n  upstream up_a {{ server {}; }}\n  upstream up_b {{ server {}; }}\n  server {{\n    listen 127.0.0.1:0;\n    ssl_preread on;\n    proxy_pass $up;\n    proxy_protocol on;\n  }}\n}}\n",
            backend_a.addr, backend_b.addr
        ),
    );
    let imported = import(&nginx_conf, &[]);
    assert_eq!(imported.status.code(), Some(0), "{}", stderr(&imported));
    assert!(stderr(&imported).is_empty(), "no warnings: {}", stderr(&imported));
    let proxy = start_proxy(&stdout(&imported)).await;

    for (sni, leaf, backend) in [("a.test", &leaf_a, &mut backend_a), ("x.b.test", &leaf_b, &mut backend_b)] {
        let (mut tls, local) = tls_connect(proxy.addr(0), simple_client(&ca.cert_der, None), sni).await.expect(sni);
        assert_eq!(tls.get_ref().1.peer_certificates().unwrap()[0], leaf.cert_der, "{sni} reached its backend");
        tls.write_all(b"ping").await.unwrap();
        assert_eq!(read_n(&mut tls, 4).await, b"ping");
        let accepted = backend.accepted().await;
        assert_eq!(accepted.v1().src, Some(local), "PROXY v1 carries the client address, as nginx sends it");
    }
    let refused = crate::support::tls::expect_refused(proxy.addr(0), simple_client(&ca.cert_der, None), "c.test").await;
    assert!(!refused.is_empty());
    assert_eq!(backend_a.accept_count() + backend_b.accept_count(), 2, "an unlisted name reaches no backend");
    proxy.shutdown().await;
}

/// The README's worked example is what the command prints today.
#[test]
fn readme_worked_example_matches_the_output() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme.split("### `snigate import-nginx`").nth(1).expect("README section").to_string();
    let block = |fence: &str| -> String {
        let start = section.find(fence).unwrap_or_else(|| panic!("no {fence} block")) + fence.len() + 1;
        section[start..].split("```").next().unwrap().to_string()
    };
    let (nginx_conf, expected) = (block("```nginx"), block("```yaml"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("nginx.conf"), nginx_conf).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_snigate"))
        .args(["import-nginx", "nginx.conf"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), expected, "update the README example");
    let warnings = block("```text");
    for line in stderr(&output).lines() {
        assert!(warnings.contains(line), "README lacks the warning {line:?}");
    }
}
