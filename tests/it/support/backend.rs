//! A scriptable test backend: counts accepts, decodes the PROXY header it expects, optionally
//! captures the raw ClientHello records that follow it, optionally speaks TLS, and then runs a
//! [`Behaviour`] (echo, echo + trailer after EOF, greet + half-close, sink).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use super::hello::{read_hello_records, PrefixedStream};
use super::proxy::{read_v1, read_v2, ProxyHeader, V1Header, V2Header};
use super::within;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyExpect {
    None,
    V1,
    V2,
}

#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Echo until EOF, then shut down the write side.
    Echo,
    /// Echo until EOF, then send this trailer and shut down (data still flows back to the
    /// client after the client's half-close).
    EchoThenTrailer(Vec<u8>),
    /// Send this greeting and shut down the write side at once, then read until EOF.
    GreetAndShutdown(Vec<u8>),
}

#[derive(Clone)]
pub struct BackendOpts {
    pub proxy: ProxyExpect,
    pub tls: Option<Arc<ServerConfig>>,
    /// Read the ClientHello records after the header and keep their raw bytes.
    pub capture_hello: bool,
    pub behaviour: Behaviour,
}

impl BackendOpts {
    pub fn plain(proxy: ProxyExpect) -> BackendOpts {
        BackendOpts { proxy, tls: None, capture_hello: false, behaviour: Behaviour::Echo }
    }

    /// A TLS echo server; always captures the hello (it has to read it anyway).
    pub fn tls(proxy: ProxyExpect, config: Arc<ServerConfig>) -> BackendOpts {
        BackendOpts { proxy, tls: Some(config), capture_hello: true, behaviour: Behaviour::Echo }
    }

    pub fn capture_hello(mut self) -> BackendOpts {
        self.capture_hello = true;
        self
    }

    pub fn behaviour(mut self, behaviour: Behaviour) -> BackendOpts {
        self.behaviour = behaviour;
        self
    }
}

/// What the backend saw at the start of one connection.
#[derive(Debug)]
pub struct Accepted {
    pub header: Option<ProxyHeader>,
    /// Raw ClientHello record bytes that followed the header (when captured).
    pub hello: Option<Vec<u8>>,
    /// Why the header or hello could not be read.
    pub error: Option<String>,
}

impl Accepted {
    pub fn v2(&self) -> &V2Header {
        match (&self.header, &self.error) {
            (Some(ProxyHeader::V2(header)), _) => header,
            (_, Some(error)) => panic!("backend could not read a PROXY v2 header: {error}"),
            (other, None) => panic!("expected a PROXY v2 header, got {other:?}"),
        }
    }

    pub fn v1(&self) -> &V1Header {
        match (&self.header, &self.error) {
            (Some(ProxyHeader::V1(header)), _) => header,
            (_, Some(error)) => panic!("backend could not read a PROXY v1 header: {error}"),
            (other, None) => panic!("expected a PROXY v1 header, got {other:?}"),
        }
    }

    pub fn hello(&self) -> &[u8] {
        match (&self.hello, &self.error) {
            (Some(hello), _) => hello,
            (None, Some(error)) => panic!("backend could not read the hello: {error}"),
            (None, None) => panic!("backend did not capture a hello"),
        }
    }
}

/// What the backend saw by the end of one connection (its read side hit EOF or an error).
#[derive(Debug)]
pub struct Finished {
    /// Bytes read after the header (and after the hello, for TLS: plaintext).
    pub received: Vec<u8>,
    /// `None` for a clean EOF.
    pub error: Option<String>,
}

pub struct TestBackend {
    pub addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    accepted_rx: mpsc::UnboundedReceiver<Accepted>,
    finished_rx: mpsc::UnboundedReceiver<Finished>,
    task: JoinHandle<()>,
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestBackend {
    /// Binds 127.0.0.1:0.
    pub async fn start(opts: BackendOpts) -> TestBackend {
        TestBackend::start_on("127.0.0.1:0", opts).await.expect("bind test backend")
    }

    pub async fn start_on(bind: &str, opts: BackendOpts) -> std::io::Result<TestBackend> {
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let accepts = Arc::new(AtomicUsize::new(0));
        let (accepted_tx, accepted_rx) = mpsc::unbounded_channel();
        let (finished_tx, finished_rx) = mpsc::unbounded_channel();
        let counter = accepts.clone();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                counter.fetch_add(1, Ordering::SeqCst);
                connections.spawn(handle(tcp, opts.clone(), accepted_tx.clone(), finished_tx.clone()));
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(TestBackend { addr, accepts, accepted_rx, finished_rx, task })
    }

    /// `servers:` entry for the YAML.
    pub fn server(&self) -> String {
        self.addr.to_string()
    }

    pub fn accept_count(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    /// The next connection's start (waits up to the test timeout).
    pub async fn accepted(&mut self) -> Accepted {
        within("the backend to accept a connection", self.accepted_rx.recv()).await.expect("backend task gone")
    }

    /// The next connection's end (waits up to the test timeout).
    pub async fn finished(&mut self) -> Finished {
        within("the backend connection to reach EOF", self.finished_rx.recv()).await.expect("backend task gone")
    }

    /// Waits `settle`, then asserts that no connection ever reached this backend.
    pub async fn assert_untouched(&self, settle: Duration) {
        tokio::time::sleep(settle).await;
        assert_eq!(self.accept_count(), 0, "the backend must never be connected");
    }
}

async fn handle(
    mut tcp: TcpStream,
    opts: BackendOpts,
    accepted_tx: mpsc::UnboundedSender<Accepted>,
    finished_tx: mpsc::UnboundedSender<Finished>,
) {
    let header = match opts.proxy {
        ProxyExpect::None => Ok(None),
        ProxyExpect::V1 => read_v1(&mut tcp).await.map(|h| Some(ProxyHeader::V1(h))),
        ProxyExpect::V2 => read_v2(&mut tcp).await.map(|h| Some(ProxyHeader::V2(h))),
    };
    let header = match header {
        Ok(header) => header,
        Err(error) => {
            let _ = accepted_tx.send(Accepted { header: None, hello: None, error: Some(error) });
            return;
        }
    };
    let hello = if opts.capture_hello {
        match read_hello_records(&mut tcp, 64 * 1024).await {
            Ok(hello) => Some(hello),
            Err(error) => {
                let _ = accepted_tx.send(Accepted { header, hello: None, error: Some(error) });
                return;
            }
        }
    } else {
        None
    };
    let _ = accepted_tx.send(Accepted { header, hello: hello.clone(), error: None });
    let finished = match opts.tls {
        Some(config) => {
            let stream = PrefixedStream::new(hello.unwrap_or_default(), tcp);
            match tokio_rustls::TlsAcceptor::from(config).accept(stream).await {
                Ok(tls) => run(tls, &opts.behaviour).await,
                Err(error) => Finished { received: Vec::new(), error: Some(format!("backend TLS accept: {error}")) },
            }
        }
        None => run(tcp, &opts.behaviour).await,
    };
    let _ = finished_tx.send(finished);
}

async fn run<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, behaviour: &Behaviour) -> Finished {
    let mut received = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    if let Behaviour::GreetAndShutdown(greeting) = behaviour {
        if let Err(error) = stream.write_all(greeting).await {
            return Finished { received, error: Some(format!("greeting: {error}")) };
        }
        if let Err(error) = stream.shutdown().await {
            return Finished { received, error: Some(format!("shutdown after greeting: {error}")) };
        }
    }
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                received.extend_from_slice(&buf[..n]);
                if matches!(behaviour, Behaviour::Echo | Behaviour::EchoThenTrailer(_)) {
                    if let Err(error) = stream.write_all(&buf[..n]).await {
                        return Finished { received, error: Some(format!("echo write: {error}")) };
                    }
                }
            }
            Err(error) => return Finished { received, error: Some(format!("read: {error}")) },
        }
    }
    match behaviour {
        Behaviour::EchoThenTrailer(trailer) => {
            if let Err(error) = stream.write_all(trailer).await {
                return Finished { received, error: Some(format!("trailer write: {error}")) };
            }
            let _ = stream.shutdown().await;
        }
        Behaviour::Echo => {
            let _ = stream.shutdown().await;
        }
        Behaviour::GreetAndShutdown(_) => {}
    }
    Finished { received, error: None }
}
