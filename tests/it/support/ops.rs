//! Support shared by the operations tests: HTTP scrapes of the admin endpoint, parsing the
//! Prometheus text exposition, polling until a condition holds, and an echo round trip.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// A hand-written HTTP/1.1 GET (`Connection: close`), bounded by [`WAIT`].
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<HttpResponse, String> {
    let exchange = async {
        let mut tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await.map_err(|e| format!("receive: {e}"))?;
        parse_http(&raw)
    };
    tokio::time::timeout(WAIT, exchange).await.unwrap_or_else(|_| Err(format!("GET {path}: no answer")))
}

pub fn parse_http(raw: &[u8]) -> Result<HttpResponse, String> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status =
        status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or(format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.iter().any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked")) {
        let mut decoded = Vec::new();
        let mut rest = body.as_slice();
        loop {
            let end = rest.windows(2).position(|w| w == b"\r\n").ok_or("bad chunk")?;
            let size_text = String::from_utf8_lossy(&rest[..end]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("bad chunk size {size_text:?}"))?;
            rest = &rest[end + 2..];
            if size == 0 {
                break;
            }
            decoded.extend_from_slice(&rest[..size.min(rest.len())]);
            rest = &rest[(size + 2).min(rest.len())..];
        }
        body = decoded;
    } else if let Some(length) =
        headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body.truncate(length);
    }
    Ok(HttpResponse { status, headers, body: String::from_utf8_lossy(&body).to_string() })
}

/// One sample of the text exposition.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Parses Prometheus / OpenMetrics text into samples (comments and `# EOF` skipped).
pub fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (name, labels, rest) = match line.find(['{', ' ']) {
            Some(at) if line.as_bytes()[at] == b'{' => {
                let (labels, consumed) = parse_labels(&line[at + 1..]).unwrap_or_else(|e| panic!("{e} in {line:?}"));
                (&line[..at], labels, &line[at + 1 + consumed..])
            }
            Some(at) => (&line[..at], Vec::new(), &line[at..]),
            None => panic!("sample without a value: {line:?}"),
        };
        let value_text = rest.split_whitespace().next().unwrap_or_else(|| panic!("no value in {line:?}"));
        let value = value_text.parse().unwrap_or_else(|_| panic!("bad value {value_text:?} in {line:?}"));
        samples.push(Sample { name: name.to_string(), labels, value });
    }
    samples
}

/// Parses `a="x",b="y"}`; returns the labels and the bytes consumed (through the `}`).
pub fn parse_labels(text: &str) -> Result<(Vec<(String, String)>, usize), String> {
    let bytes = text.as_bytes();
    let mut labels = Vec::new();
    let mut at = 0;
    loop {
        match bytes.get(at) {
            Some(b'}') => return Ok((labels, at + 1)),
            Some(b',') | Some(b' ') => at += 1,
            Some(_) => {
                let eq = text[at..].find('=').ok_or("label without `=`")? + at;
                let name = text[at..eq].trim().to_string();
                if bytes.get(eq + 1) != Some(&b'"') {
                    return Err(format!("label {name} value is not quoted"));
                }
                let mut value = String::new();
                let mut chars = text[eq + 2..].char_indices();
                let end = loop {
                    match chars.next() {
                        Some((i, '"')) => break eq + 2 + i,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, c)) => value.push(c),
                            None => return Err("dangling escape".into()),
                        },
                        Some((_, c)) => value.push(c),
                        None => return Err("unterminated label value".into()),
                    }
                };
                labels.push((name, value));
                at = end + 1;
            }
            None => return Err("unterminated label set".into()),
        }
    }
}

/// The value of the one sample called `name` whose labels include `labels`.
pub fn metric(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v)))
        .collect();
    assert!(matching.len() <= 1, "several samples match {name} {labels:?}: {matching:?}");
    matching.first().map(|s| s.value)
}

/// GET /metrics, parsed.
pub async fn scrape(admin: SocketAddr) -> Vec<Sample> {
    let response = http_get(admin, "/metrics").await.unwrap_or_else(|e| panic!("scraping /metrics: {e}"));
    assert_eq!(response.status, 200, "/metrics answered {}: {}", response.status, response.body);
    parse_exposition(&response.body)
}

/// Polls `check` every 50 ms until it passes; panics with its last complaint after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let outcome = check().await;
        match outcome {
            Ok(()) => return,
            Err(complaint) if Instant::now() >= deadline => {
                panic!("timed out after {limit:?} waiting for {what}; last: {complaint}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Writes `message` and expects it back (bounded by [`WAIT`]).
pub async fn echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    message: &[u8],
) -> Result<(), String> {
    let exchange = async {
        stream.write_all(message).await.map_err(|e| format!("write: {e}"))?;
        stream.flush().await.map_err(|e| format!("flush: {e}"))?;
        let mut back = vec![0u8; message.len()];
        stream.read_exact(&mut back).await.map_err(|e| format!("read: {e}"))?;
        if back != message {
            return Err(format!("echo mismatch: sent {message:?}, got {back:?}"));
        }
        Ok(())
    };
    tokio::time::timeout(WAIT, exchange).await.unwrap_or_else(|_| Err("echo timed out".into()))
}

/// The `snigate` binary running `run --config`; killed when dropped.
pub struct ChildProxy {
    pub child: std::process::Child,
    pub log: PathBuf,
}

impl ChildProxy {
    pub fn spawn(config: &Path, log: PathBuf) -> ChildProxy {
        let out = std::fs::File::create(&log).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_snigate"))
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "snigate=debug")
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start the snigate binary");
        ChildProxy { child, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits until `/readyz` answers 200 (panics with the log if the process exits first).
    pub async fn wait_ready(&mut self, admin: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("snigate exited with {status} before it was ready:\n{}", self.log_text());
            }
            if let Ok(response) = http_get(admin, "/readyz").await {
                if response.status == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "snigate not ready after 20 s:\n{}", self.log_text());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ChildProxy {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl ChildProxy {
    /// Waits (bounded by [`WAIT`]) until the log has `text`: a line is written after the step it
    /// reports (an access-log line when its connection closes; a reload's once it serves).
    pub async fn wait_for_log(&self, text: &str) {
        eventually(WAIT, &format!("{text:?} in the log"), || {
            let log = self.log_text();
            async move {
                if log.contains(text) {
                    Ok(())
                } else {
                    Err(log)
                }
            }
        })
        .await;
    }

    /// Waits (bounded) for the process to exit and returns its status.
    pub async fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "snigate did not exit within {limit:?}:\n{}", self.log_text());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// `snigate_config_reloads_total{result="success"}` from the admin endpoint at `admin`.
pub async fn successful_reloads(admin: SocketAddr) -> f64 {
    metric(&scrape(admin).await, "snigate_config_reloads_total", &[("result", "success")]).unwrap_or(0.0)
}

/// Waits (up to 10 s) until at least `expected` successful loads are counted.
pub async fn wait_for_reloads(admin: SocketAddr, expected: f64, after: &str) {
    eventually(Duration::from_secs(10), after, || async move {
        match successful_reloads(admin).await {
            counted if counted >= expected => Ok(()),
            counted => Err(format!("{counted} successful loads, want {expected}")),
        }
    })
    .await;
}
