//! Operations: what makes the `snigate` binary reload. Reading a watched file (a `cat`, a
//! `snigate check`, the reload's own read) never does; a write, rename or ConfigMap `..data` swap
//! does exactly once; a metadata-only change or a rewrite with the same bytes does not; SIGHUP
//! always does. Reloads are counted in `snigate_config_reloads_total{result="success"}`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::support::ops::*;
use crate::support::*;

/// Well past the watch's 300 ms debounce: time for a (wrong) reload, or a loop of them, to show.
const QUIET: Duration = Duration::from_secs(2);

fn config_text(listen: SocketAddr, admin: SocketAddr, server: &str) -> String {
    let route = RouteYaml::new("plain", "tcp").proxy("none").server(server);
    format!(
        "admin: {}\n{}",
        q(admin.to_string()),
        config_with_limits(&[&listen.to_string()], "plain", TEST_LIMITS, &[route])
    )
}

async fn assert_reloads_stay(admin: SocketAddr, expected: f64, after: &str, child: &ChildProxy) {
    tokio::time::sleep(QUIET).await;
    let counted = successful_reloads(admin).await;
    assert_eq!(counted, expected, "successful loads after {after}\n--- snigate log ---\n{}", child.log_text());
}

/// A ConfigMap volume as the kubelet writes it: `routes.yaml -> ..data/routes.yaml`,
/// `..data -> ..<timestamp>`; returns the path the proxy is given.
fn configmap_volume(dir: &Path, text: &str) -> std::path::PathBuf {
    let first = dir.join("..2026_01_01_00_00_00.000000001");
    std::fs::create_dir(&first).unwrap();
    std::fs::write(first.join("routes.yaml"), text).unwrap();
    std::os::unix::fs::symlink("..2026_01_01_00_00_00.000000001", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/routes.yaml", dir.join("routes.yaml")).unwrap();
    dir.join("routes.yaml")
}

/// The kubelet's update: a new timestamped directory, a `..data_tmp` symlink to it renamed over
/// `..data`, the old directory removed.
fn configmap_update(dir: &Path, text: &str) {
    let second = dir.join("..2026_01_02_00_00_00.000000002");
    std::fs::create_dir(&second).unwrap();
    std::fs::write(second.join("routes.yaml"), text).unwrap();
    std::os::unix::fs::symlink("..2026_01_02_00_00_00.000000002", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(dir.join("..2026_01_01_00_00_00.000000001")).unwrap();
}

/// The proxy on a plain config file in a fresh directory; returns it with its reload count.
async fn start_on_a_plain_file(dir: &Path) -> (ChildProxy, std::path::PathBuf, SocketAddr, f64) {
    let (listen, admin) = (closed_port().await, closed_port().await);
    let config = dir.join("routes.yaml");
    std::fs::write(&config, config_text(listen, admin, "127.0.0.1:1")).unwrap();
    let mut child = ChildProxy::spawn(&config, dir.join("snigate.log"));
    child.wait_ready(admin).await;
    tokio::time::sleep(QUIET).await;
    let started = successful_reloads(admin).await;
    (child, config, admin, started)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_the_config_or_checking_it_never_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let (child, config, admin, started) = start_on_a_plain_file(dir.path()).await;

    for _ in 0..3 {
        std::fs::read(&config).unwrap();
    }
    assert_reloads_stay(admin, started, "three reads of the config", &child).await;

    let check = std::process::Command::new(env!("CARGO_BIN_EXE_snigate"))
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .expect("run snigate check");
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    assert_reloads_stay(admin, started, "`snigate check`", &child).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_swap_reloads_exactly_once() {
    let (listen, admin) = (closed_port().await, closed_port().await);
    let volume = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let config = configmap_volume(volume.path(), &config_text(listen, admin, "127.0.0.1:1"));
    let mut child = ChildProxy::spawn(&config, logs.path().join("snigate.log"));
    child.wait_ready(admin).await;
    tokio::time::sleep(QUIET).await;
    let started = successful_reloads(admin).await;

    std::fs::read(&config).unwrap();
    configmap_update(volume.path(), &config_text(listen, admin, "127.0.0.1:2"));
    wait_for_reloads(admin, started + 1.0, "the ConfigMap swap to reload").await;
    assert_reloads_stay(admin, started + 1.0, "one ConfigMap swap", &child).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_bytes_and_metadata_changes_do_not_reload_but_writes_and_sighup_do() {
    let dir = tempfile::tempdir().unwrap();
    let (child, config, admin, started) = start_on_a_plain_file(dir.path()).await;
    let text = std::fs::read(&config).unwrap();

    std::fs::write(&config, &text).unwrap();
    let file = std::fs::File::options().write(true).open(&config).unwrap();
    file.set_modified(std::time::SystemTime::now()).unwrap();
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    drop(file);
    assert_reloads_stay(admin, started, "a rewrite with the same bytes, a touch and a chmod", &child).await;

    let changed = String::from_utf8(text).unwrap().replace("127.0.0.1:1", "127.0.0.1:2");
    std::fs::write(&config, changed).unwrap();
    wait_for_reloads(admin, started + 1.0, "an in-place write to reload").await;
    assert_reloads_stay(admin, started + 1.0, "one in-place write", &child).await;

    child.signal("HUP");
    wait_for_reloads(admin, started + 2.0, "SIGHUP to reload unchanged files").await;
    assert_reloads_stay(admin, started + 2.0, "one SIGHUP", &child).await;
}
