//! Operations: the `snigate` binary under signals in the situations operators meet. A closed log
//! pipe does not stop SIGTERM from draining and exiting 0; SIGTERM during a slow reload starts
//! the drain at once; a second SIGTERM/SIGINT ends the drain; the reload log line is short.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::support::ops::*;
use crate::support::*;
use tokio::net::TcpStream;

/// How the child's stderr is set up.
enum Log {
    /// Text lines into this file.
    File(PathBuf),
    /// JSON lines into this file.
    Json(PathBuf),
    /// A pipe the test holds (and closes).
    Pipe,
}

fn spawn(config: &Path, log: Log) -> ChildProxy {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_snigate"));
    command.arg("run").arg("--config").arg(config).env("RUST_LOG", "snigate=debug");
    command.stdin(Stdio::null()).stdout(Stdio::null());
    if matches!(log, Log::Json(_)) {
        command.arg("--log-format").arg("json");
    }
    let path = match log {
        Log::Pipe => {
            command.stderr(Stdio::piped());
            config.with_extension("no-log")
        }
        Log::File(path) | Log::Json(path) => {
            command.stderr(std::fs::File::create(&path).unwrap());
            path
        }
    };
    ChildProxy { child: command.spawn().expect("start the snigate binary"), log: path }
}

fn config_text(listen: SocketAddr, admin: SocketAddr, limits: &str, routes: &[RouteYaml]) -> String {
    format!("admin: {}\n{}", q(admin.to_string()), config_with_limits(&[&listen.to_string()], "plain", limits, routes))
}

fn plain_route(server: impl ToString) -> RouteYaml {
    RouteYaml::new("plain", "tcp").proxy("none").server(server)
}

async fn wait_status(admin: SocketAddr, path: &'static str, status: u16, limit: Duration) {
    eventually(limit, &format!("{path} to answer {status}"), || async move {
        match http_get(admin, path).await {
            Ok(response) if response.status == status => Ok(()),
            Ok(response) => Err(format!("{path} answered {}", response.status)),
            Err(error) => Err(error),
        }
    })
    .await;
}

async fn wait_refused(listen: SocketAddr) {
    eventually(Duration::from_secs(5), "the listener to refuse new connections", || async move {
        match TcpStream::connect(listen).await {
            Err(_) => Ok(()),
            Ok(_) => Err(format!("{listen} still accepts")),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_log_pipe_closed_sigterm_still_drains_and_exits_zero() {
    let (listen, admin) = (closed_port().await, closed_port().await);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("routes.yaml");
    std::fs::write(&config, config_text(listen, admin, TEST_LIMITS, &[plain_route("127.0.0.1:1")])).unwrap();
    let mut child = spawn(&config, Log::Pipe);
    child.wait_ready(admin).await;

    // The reader goes away (`| head -n 2`, or jq exits): every later log write fails with EPIPE.
    drop(child.child.stderr.take());
    for _ in 0..3 {
        // Each connection logs (its backend refuses): the accept loop must survive the EPIPE.
        let mut tcp = TcpStream::connect(listen).await.expect("the proxy accepts with its log pipe closed");
        let _ = read_until_closed(&mut tcp).await;
    }
    wait_status(admin, "/readyz", 200, Duration::from_secs(5)).await;

    child.signal("TERM");
    let status = child.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "exit status with a closed log pipe");
}

/// A FIFO as the config file is a reload as slow as the test wants: reading it blocks until
/// someone writes. The config path is a symlink from another directory, so the file watch does
/// not see the swap and only SIGHUP starts the reload. A live connection keeps the drain going
/// (30 s deadline) while readiness and the listener are checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_slow_reload_stops_readiness_and_accepting_at_once() {
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::None)).await;
    let (listen, admin) = (closed_port().await, closed_port().await);
    let (watched, real) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let target = real.path().join("routes.yaml");
    let limits = "limits: { drain_timeout: 30s, close_jitter: 1s }";
    std::fs::write(&target, config_text(listen, admin, limits, &[plain_route(backend.addr)])).unwrap();
    let config = watched.path().join("routes.yaml");
    std::os::unix::fs::symlink(&target, &config).unwrap();
    let mut child = spawn(&config, Log::File(watched.path().join("snigate.log")));
    child.wait_ready(admin).await;
    let mut live = TcpStream::connect(listen).await.unwrap();
    echo(&mut live, b"before the reload").await.unwrap();

    std::fs::remove_file(&target).unwrap();
    let made = std::process::Command::new("mkfifo").arg(&target).status().expect("run mkfifo");
    assert!(made.success(), "mkfifo failed");
    child.signal("HUP");
    // Opening the write end without blocking succeeds only once the reload has it open to read;
    // holding it open without writing keeps the reload reading.
    let mut writer = None;
    eventually(Duration::from_secs(10), "the reload to open the config FIFO", || {
        let opened = open_fifo_writer(&target);
        let ok = opened.is_ok();
        if let Ok(file) = opened {
            writer = Some(file);
        }
        async move {
            if ok {
                Ok(())
            } else {
                Err("no reader yet".into())
            }
        }
    })
    .await;

    child.signal("TERM");
    wait_status(admin, "/readyz", 503, Duration::from_secs(5)).await;
    wait_refused(listen).await;
    echo(&mut live, b"draining").await.expect("the live connection is drained, not dropped");
    drop(live);
    let status = child.wait_exit(Duration::from_secs(10)).await;
    assert!(writer.is_some(), "the reload was still reading when the process exited");
    assert_eq!(status.code(), Some(0), "exit status:\n{}", child.log_text());
}

fn open_fifo_writer(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    /// O_NONBLOCK on Linux: an open for writing fails (ENXIO) while no one has the FIFO open to read.
    const O_NONBLOCK: i32 = 0o4000;
    std::fs::OpenOptions::new().write(true).custom_flags(O_NONBLOCK).open(path)
}

/// The drain deadline is 5 minutes, so an exit within seconds can only mean the second signal
/// ended the drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_stop_signal_ends_the_drain_at_once() {
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::None)).await;
    let (listen, admin) = (closed_port().await, closed_port().await);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("routes.yaml");
    let limits = "limits: { drain_timeout: 5m, close_jitter: 1m }";
    std::fs::write(&config, config_text(listen, admin, limits, &[plain_route(backend.addr)])).unwrap();
    let mut child = spawn(&config, Log::File(dir.path().join("snigate.log")));
    child.wait_ready(admin).await;
    let mut live = TcpStream::connect(listen).await.unwrap();
    echo(&mut live, b"before SIGTERM").await.unwrap();

    child.signal("TERM");
    wait_status(admin, "/readyz", 503, Duration::from_secs(5)).await;
    echo(&mut live, b"draining").await.expect("the first signal only drains");

    child.signal("INT");
    let closed = within_for(Duration::from_secs(10), "the second signal to close the live connection", async {
        read_until_closed(&mut live).await
    })
    .await;
    assert!(closed.bytes().is_empty(), "nothing more on the closed connection: {closed:?}");
    let status = child.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "exit status:\n{}", child.log_text());
    assert!(child.log_text().contains("ending the drain"), "{}", child.log_text());
}

/// Routes in the reload log test: the old line grew with every route's files.
const MANY_ROUTES: usize = 300;
/// A reload line with a dozen counters is far below this; a list of routes or files is not.
const SHORT_LINE: usize = 600;

fn many_routes(count: usize) -> Vec<RouteYaml> {
    let mut routes = vec![plain_route("127.0.0.1:1")];
    for i in 1..count {
        let name = format!("t{i}.test");
        routes.push(RouteYaml::new(&format!("t{i}"), "passthrough").sni(&[&name]).server("127.0.0.1:1"));
    }
    routes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reload_log_line_is_short_and_carries_counts_as_fields() {
    let (listen, admin) = (closed_port().await, closed_port().await);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("routes.yaml");
    std::fs::write(&config, config_text(listen, admin, TEST_LIMITS, &many_routes(MANY_ROUTES))).unwrap();
    let mut child = spawn(&config, Log::Json(dir.path().join("snigate.log")));
    child.wait_ready(admin).await;

    std::fs::write(&config, config_text(listen, admin, TEST_LIMITS, &many_routes(MANY_ROUTES + 2))).unwrap();
    let log_path = child.log.clone();
    eventually(Duration::from_secs(10), "the reload to be logged", || {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        async move {
            if log.contains("\"config reloaded\"") {
                Ok(())
            } else {
                Err("not yet".into())
            }
        }
    })
    .await;
    let log = child.log_text();
    let line = log.lines().find(|l| l.contains("\"config reloaded\"")).unwrap();
    println!("{line}");
    assert!(line.len() < SHORT_LINE, "the reload line is {} bytes: {line}", line.len());
    let expected = [
        format!("\"routes\":{}", MANY_ROUTES + 2),
        "\"routes_added\":2".to_string(),
        "\"routes_removed\":0".to_string(),
        "\"listeners_opened\":0".to_string(),
        "\"listeners_closed\":0".to_string(),
        "\"revoked_sessions\":0".to_string(),
    ];
    for field in &expected {
        assert!(line.contains(field.as_str()), "{field} missing in {line}");
    }
    let started = log.lines().find(|l| l.contains("admin endpoint listening")).unwrap();
    assert!(started.contains(&format!("\"admin\":\"{admin}\"")), "{started}");
}
