//! The container image, checked as far as possible without a Docker engine (this machine and CI
//! have a Docker client but no daemon, so `docker build` cannot run here):
//! - the Dockerfile's COPY sources exist and are not excluded by `.dockerignore`, and what must
//!   stay out of the build context (keys, `.git`, `target/`) is excluded;
//! - the final stage runs as a numeric non-root USER, with the documented entrypoint, command,
//!   config path and ports, and has no RUN (its base image has no shell);
//! - the binary cargo built runs as uid 65532 (the image's user) with no capabilities, from a
//!   read-only directory laid out like the image (`/snigate`, `/etc/snigate/routes.yaml`): `check`
//!   passes and `run` serves a TLS connection on 127.0.0.1.
//!
//! What the last test cannot show: the static musl build itself and the distroless base. The test
//! binary is the host's (glibc) build and runs on the host's filesystem, so the "image root" is a
//! temp directory whose paths the config names, not a chroot.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::ops::http_get;
use crate::support::tls::tls_connect;
use crate::support::*;
use tokio::io::AsyncWriteExt;

/// The image's user (`nonroot` of gcr.io/distroless/static-debian12).
const IMAGE_UID: u32 = 65532;
/// The config path the image's CMD names.
const IMAGE_CONFIG: &str = "/etc/snigate/routes.yaml";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One Dockerfile instruction: the keyword (upper case) and its arguments, continuation lines joined.
#[derive(Debug, Clone)]
struct Instruction {
    keyword: String,
    args: String,
}

/// The stages of a Dockerfile, each starting with its FROM.
fn stages(text: &str) -> Vec<Vec<Instruction>> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(body) = trimmed.strip_suffix('\\') {
            current.push_str(body);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            logical.push(std::mem::take(&mut current));
        }
    }
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    for line in logical {
        let (keyword, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let instruction = Instruction { keyword: keyword.to_ascii_uppercase(), args: args.trim().to_string() };
        if instruction.keyword == "FROM" {
            stages.push(vec![instruction]);
        } else {
            stages.last_mut().expect("an instruction before the first FROM").push(instruction);
        }
    }
    stages
}

fn dockerfile() -> Vec<Vec<Instruction>> {
    stages(&std::fs::read_to_string(repo().join("Dockerfile")).expect("read Dockerfile"))
}

/// `["a", "b"]` (exec form) as its strings.
fn exec_form(args: &str) -> Vec<String> {
    let inner = args.trim().strip_prefix('[').and_then(|s| s.strip_suffix(']')).unwrap_or_else(|| {
        panic!("expected the exec form [\"…\"], got {args:?} (the image has no shell)");
    });
    inner.split(',').map(|item| item.trim().trim_matches('"').to_string()).collect()
}

/// COPY/ADD arguments without flags: sources…, destination.
fn copy_operands(args: &str) -> (Vec<String>, Option<String>) {
    let mut from = None;
    let mut operands = Vec::new();
    for word in args.split_whitespace() {
        if let Some(stage) = word.strip_prefix("--from=") {
            from = Some(stage.to_string());
        } else if !word.starts_with("--") {
            operands.push(word.to_string());
        }
    }
    (operands, from)
}

/// The `.dockerignore` patterns (comments and blanks dropped).
fn dockerignore() -> Vec<String> {
    let text = std::fs::read_to_string(repo().join(".dockerignore")).expect("read .dockerignore");
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string).collect()
}

/// Whether `path` (relative, `/`-separated) or a parent of it matches `pattern` — the subset of
/// Docker's matching our `.dockerignore` uses: `*` within one name, a leading `**/`.
fn ignored_by(pattern: &str, path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    (1..=parts.len()).any(|n| {
        let prefix = parts[..n].join("/");
        match pattern.strip_prefix("**/") {
            Some(rest) => (0..n).any(|skip| glob(rest, &parts[skip..n].join("/"))),
            None => glob(pattern, &prefix),
        }
    })
}

fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            let Some(rest) = text.strip_prefix(head) else { return false };
            // `*` takes any characters of one name: stop at the first `/`.
            let name_end = rest.find('/').unwrap_or(rest.len());
            rest.char_indices()
                .map(|(i, _)| i)
                .chain(std::iter::once(rest.len()))
                .take_while(|&i| i <= name_end)
                .any(|i| glob(tail, &rest[i..]))
        }
    }
}

fn is_ignored(path: &str) -> bool {
    dockerignore().iter().any(|pattern| ignored_by(pattern, path))
}

#[test]
fn copy_sources_exist_and_are_in_the_build_context() {
    let mut sources = 0;
    for stage in dockerfile() {
        for instruction in stage.iter().filter(|i| i.keyword == "COPY" || i.keyword == "ADD") {
            let (mut operands, from) = copy_operands(&instruction.args);
            assert!(
                operands.len() >= 2,
                "{} needs a source and a destination: {}",
                instruction.keyword,
                instruction.args
            );
            operands.pop();
            if from.is_some() {
                continue;
            }
            for source in operands {
                let source = source.trim_start_matches("./").trim_end_matches('/');
                assert!(repo().join(source).exists(), "Dockerfile copies {source:?}, which is not in the repository");
                assert!(!is_ignored(source), "Dockerfile copies {source:?}, but .dockerignore leaves it out");
                sources += 1;
            }
        }
    }
    assert!(sources >= 3, "expected Cargo.toml, Cargo.lock and src to be copied");
}

#[test]
fn build_context_leaves_out_keys_history_and_build_output() {
    for path in [
        ".git",
        "target",
        "target/release/snigate",
        "fuzz/artifacts",
        "certs/demo/ca.key",
        "deploy/compose/certs/ca.key",
        "some/dir/target",
        "server.key",
        "tests/it/support/pki.rs",
    ] {
        assert!(is_ignored(path), "{path} must not be sent to the Docker daemon");
    }
    for path in ["Cargo.toml", "Cargo.lock", "src", "src/bin/snigate/main.rs"] {
        assert!(!is_ignored(path), "{path} is needed by the build");
    }
}

#[test]
fn final_stage_is_non_root_with_the_documented_command() {
    let stages = dockerfile();
    assert!(stages.len() >= 2, "a multi-stage build: a build stage and a small final stage");
    let build_stages: Vec<String> = stages
        .iter()
        .filter_map(|stage| {
            stage[0]
                .args
                .split_whitespace()
                .collect::<Vec<_>>()
                .windows(2)
                .find_map(|w| w[0].eq_ignore_ascii_case("AS").then(|| w[1].to_string()))
        })
        .collect();
    for stage in &stages {
        let image = stage[0].args.split_whitespace().next().unwrap_or_default();
        assert!(image.contains(':') && !image.ends_with(":latest"), "pin the base image's tag: {image}");
    }

    let last = stages.last().unwrap();
    let base = &last[0].args;
    assert!(base.contains("distroless/static") || base == "scratch", "final base {base:?}: no libc or shell needed");
    let find = |keyword: &str| -> Vec<&Instruction> { last.iter().filter(|i| i.keyword == keyword).collect() };

    assert!(find("RUN").is_empty(), "the final stage cannot RUN: its base has no shell");
    let user = find("USER");
    let user = user.last().expect("the final stage sets USER").args.clone();
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("USER {user:?} should be numeric, so Kubernetes' runAsNonRoot can verify it"));
    assert_eq!(uid, IMAGE_UID, "USER");
    assert_ne!(user.split(':').nth(1), Some("0"), "the group must not be root either");

    let copies = find("COPY");
    assert!(
        copies.iter().any(|c| {
            let (operands, from) = copy_operands(&c.args);
            from.is_some_and(|f| build_stages.contains(&f)) && operands.last().map(String::as_str) == Some("/snigate")
        }),
        "the final stage copies the binary from a build stage to /snigate: {copies:?}"
    );
    let entrypoint = find("ENTRYPOINT");
    assert_eq!(exec_form(&entrypoint.last().expect("ENTRYPOINT").args), ["/snigate"]);
    let cmd = find("CMD");
    assert_eq!(exec_form(&cmd.last().expect("CMD").args), ["run", "--config", IMAGE_CONFIG]);
    let exposed: Vec<String> =
        find("EXPOSE").iter().flat_map(|e| e.args.split_whitespace().map(str::to_string)).collect();
    for port in ["8883", "9100"] {
        assert!(exposed.iter().any(|p| p == port || p == &format!("{port}/tcp")), "EXPOSE {port}: {exposed:?}");
    }
}

/// The effective uid of this test process, from /proc.
fn current_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status_field(&status, "Uid:").parse().expect("uid")
}

/// The first value of a `/proc/<pid>/status` line.
fn status_field(status: &str, name: &str) -> String {
    let line = status.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in status"));
    line[name.len()..].split_whitespace().next().unwrap_or_default().to_string()
}

/// A command that runs as the image's user when we are root (tests usually are); otherwise it
/// runs as the current user, which is already not root. std drops supplementary groups too.
fn as_image_user(mut command: Command) -> Command {
    if current_uid() == 0 {
        command.uid(IMAGE_UID).gid(IMAGE_UID);
    }
    command
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A directory laid out like the image's filesystem, read-only for the image's user:
/// `<root>/snigate` and `<root>/etc/snigate/{routes.yaml,tls/…}`. The key is owned by the image's
/// user with mode 0400, as a Kubernetes Secret with fsGroup/defaultMode would make it readable.
struct ImageRoot {
    dir: tempfile::TempDir,
}

impl Drop for ImageRoot {
    /// Writable again, so the temp dir can be removed when the test does not run as root.
    fn drop(&mut self) {
        let root = self.dir.path();
        for dir in [root.to_path_buf(), root.join("etc"), root.join("etc/snigate"), root.join("etc/snigate/tls")] {
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755));
        }
    }
}

impl ImageRoot {
    fn new(routes: &str, files: &[(&str, &str)]) -> ImageRoot {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::copy(env!("CARGO_BIN_EXE_snigate"), root.join("snigate")).expect("copy the binary");
        set_mode(&root.join("snigate"), 0o555);
        let config_dir = root.join("etc/snigate");
        std::fs::create_dir_all(config_dir.join("tls")).unwrap();
        std::fs::write(config_dir.join("routes.yaml"), routes).unwrap();
        set_mode(&config_dir.join("routes.yaml"), 0o444);
        for (name, contents) in files {
            let path = config_dir.join("tls").join(name);
            std::fs::write(&path, contents).unwrap();
            if name.ends_with(".key") {
                if current_uid() == 0 {
                    std::os::unix::fs::chown(&path, Some(IMAGE_UID), Some(IMAGE_UID)).unwrap();
                }
                set_mode(&path, 0o400);
            } else {
                set_mode(&path, 0o444);
            }
        }
        for dir in [config_dir.join("tls"), config_dir.clone(), root.join("etc"), root.to_path_buf()] {
            set_mode(&dir, 0o555);
        }
        ImageRoot { dir }
    }

    fn binary(&self) -> PathBuf {
        self.dir.path().join("snigate")
    }

    /// Where the image's /etc/snigate/routes.yaml is.
    fn config(&self) -> PathBuf {
        self.dir.path().join(IMAGE_CONFIG.trim_start_matches('/'))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_tls_as_uid_65532_from_a_read_only_image_layout() {
    let pki = Pki::new();
    let ca = pki.ca("ca", "Tenant CA");
    let server = ca.server_cert("server", &["mqtt.tenant-a.test"]);
    let device = ca.client_cert("device", &ClientSpec::cn("device-1"));
    let mut backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let listen = closed_port().await;
    let admin = closed_port().await;
    // Relative paths resolve against the config's directory: the same text works at
    // /etc/snigate/routes.yaml in the image.
    let routes = format!(
        "listen: [\"{listen}\"]\nadmin: \"{admin}\"\nlimits: {{ drain_timeout: 1s, close_jitter: 100ms }}\n\
         routes:\n  - name: tenant-a\n    sni: [mqtt.tenant-a.test]\n    mode: terminate\n    tls:\n      \
         cert: tls/server.pem\n      key: tls/server.key\n      client_auth: required\n      \
         client_ca: tls/ca.pem\n    backend:\n      servers: [\"{}\"]\n      proxy_protocol: v2\n",
        backend.addr
    );
    let image = ImageRoot::new(
        &routes,
        &[
            ("server.pem", &server.cert_pem),
            ("server.key", &server.key_pem),
            ("ca.pem", &std::fs::read_to_string(&ca.cert_path).unwrap()),
        ],
    );

    let mut check = as_image_user(Command::new(image.binary()));
    let checked = check.arg("check").arg("--config").arg(image.config()).output().expect("run snigate check");
    assert!(
        checked.status.success(),
        "snigate check as the image user: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(String::from_utf8_lossy(&checked.stdout).contains("ok (1 routes)"));

    let log = pki.path().join("snigate.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut run = as_image_user(Command::new(image.binary()));
    run.arg("run")
        .arg("--config")
        .arg(image.config())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    let mut child = ops::ChildProxy { child: run.spawn().expect("start snigate"), log };
    child.wait_ready(admin).await;

    let status = std::fs::read_to_string(format!("/proc/{}/status", child.child.id())).unwrap();
    let expected_uid = if current_uid() == 0 { IMAGE_UID } else { current_uid() };
    assert_eq!(status_field(&status, "Uid:"), expected_uid.to_string(), "the proxy's uid");
    assert_ne!(status_field(&status, "Uid:"), "0");
    assert_eq!(status_field(&status, "CapEff:"), "0000000000000000", "no effective capabilities");

    let client = client_config(ClientOpts {
        roots: vec![ca.cert_der.clone()],
        identity: Some(device.identity()),
        ..Default::default()
    });
    let (mut tls, _) = tls_connect(listen, client, "mqtt.tenant-a.test").await.expect("TLS through snigate");
    tls.write_all(b"hello").await.unwrap();
    assert_eq!(read_n(&mut tls, 5).await, b"hello");
    let accepted = backend.accepted().await;
    assert_eq!(accepted.v2().ssl_cn().as_deref(), Some("device-1"), "the CN reaches the backend");
    drop(tls);

    assert_eq!(http_get(admin, "/healthz").await.expect("GET /healthz").status, 200);
    child.signal("TERM");
    let exit = child.wait_exit(Duration::from_secs(10)).await;
    assert!(exit.success(), "exit after SIGTERM: {exit:?}\n{}", child.log_text());
}
