//! Raw ClientHello tools: hand-built hellos, real rustls hellos taken from `write_tls`,
//! re-framing into several records, capturing a hello off a socket, and driving a rustls client
//! by hand over a socket after sending its hello in whatever pieces a test wants.

use std::io::{Read, Write};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use rustls::ClientConnection;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

pub const CONTENT_HANDSHAKE: u8 = 0x16;

fn push_u16(out: &mut Vec<u8>, value: usize) {
    out.extend_from_slice(&(value as u16).to_be_bytes());
}

fn push_u24(out: &mut Vec<u8>, value: usize) {
    out.extend_from_slice(&(value as u32).to_be_bytes()[1..]);
}

pub fn extension(out: &mut Vec<u8>, kind: u16, body: &[u8]) {
    out.extend_from_slice(&kind.to_be_bytes());
    push_u16(out, body.len());
    out.extend_from_slice(body);
}

/// The server_name extension body for one host_name entry holding `name` verbatim.
pub fn sni_extension_body(name: &[u8]) -> Vec<u8> {
    let mut entry = vec![0x00];
    push_u16(&mut entry, name.len());
    entry.extend_from_slice(name);
    let mut body = Vec::new();
    push_u16(&mut body, entry.len());
    body.extend_from_slice(&entry);
    body
}

/// A syntactically valid TLS 1.3-style ClientHello record built by hand, with `sni` sent
/// byte-for-byte (so tests can send mixed case, trailing dots, IP literals) and `alpn` offered.
pub fn raw_client_hello(sni: Option<&[u8]>, alpn: &[&[u8]]) -> Vec<u8> {
    let mut extensions = Vec::new();
    if let Some(name) = sni {
        extension(&mut extensions, 0x0000, &sni_extension_body(name));
    }
    extension(&mut extensions, 0x000a, &[0x00, 0x04, 0x00, 0x1d, 0x00, 0x17]); // x25519, secp256r1
    extension(&mut extensions, 0x000d, &[0x00, 0x04, 0x04, 0x03, 0x08, 0x04]); // ecdsa_p256, rsa_pss
    if !alpn.is_empty() {
        let mut list = Vec::new();
        for proto in alpn {
            list.push(proto.len() as u8);
            list.extend_from_slice(proto);
        }
        let mut body = Vec::new();
        push_u16(&mut body, list.len());
        body.extend_from_slice(&list);
        extension(&mut extensions, 0x0010, &body);
    }
    extension(&mut extensions, 0x002b, &[0x04, 0x03, 0x04, 0x03, 0x03]); // TLS 1.3, 1.2
    let mut key_share = Vec::new();
    push_u16(&mut key_share, 36);
    key_share.extend_from_slice(&[0x00, 0x1d, 0x00, 0x20]);
    key_share.extend_from_slice(&[0x42; 32]);
    extension(&mut extensions, 0x0033, &key_share);
    client_hello_with_extensions(&extensions)
}

/// A ClientHello record carrying exactly `extensions` (already encoded, e.g. with [`extension`]).
pub fn client_hello_with_extensions(extensions: &[u8]) -> Vec<u8> {
    let mut hello = vec![0x03, 0x03];
    hello.extend_from_slice(&[0x5a; 32]); // random
    hello.push(32);
    hello.extend_from_slice(&[0x33; 32]); // legacy session id
    hello.extend_from_slice(&[0x00, 0x06, 0x13, 0x01, 0x13, 0x02, 0xc0, 0x2b]);
    hello.extend_from_slice(&[0x01, 0x00]);
    push_u16(&mut hello, extensions.len());
    hello.extend_from_slice(extensions);

    let mut handshake = vec![0x01];
    push_u24(&mut handshake, hello.len());
    handshake.extend_from_slice(&hello);
    wrap_records(&handshake, &[handshake.len()], [0x03, 0x01])
}

/// Frames `handshake` bytes into handshake records of the given sizes (must sum to the length).
pub fn wrap_records(handshake: &[u8], sizes: &[usize], version: [u8; 2]) -> Vec<u8> {
    assert_eq!(sizes.iter().sum::<usize>(), handshake.len(), "record sizes must cover the message");
    let mut out = Vec::new();
    let mut at = 0;
    for &size in sizes {
        out.push(CONTENT_HANDSHAKE);
        out.extend_from_slice(&version);
        push_u16(&mut out, size);
        out.extend_from_slice(&handshake[at..at + size]);
        at += size;
    }
    out
}

/// One TLS record: (content type, legacy version, payload).
pub type Record = (u8, [u8; 2], Vec<u8>);

/// Splits TLS records in `bytes` into (content type, version, payload) triples.
pub fn parse_records(mut bytes: &[u8]) -> Result<Vec<Record>, String> {
    let mut records = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < 5 {
            return Err(format!("{} bytes left, not a record header", bytes.len()));
        }
        let len = u16::from_be_bytes([bytes[3], bytes[4]]) as usize;
        if bytes.len() < 5 + len {
            return Err(format!("record claims {len} bytes, {} left", bytes.len() - 5));
        }
        records.push((bytes[0], [bytes[1], bytes[2]], bytes[5..5 + len].to_vec()));
        bytes = &bytes[5 + len..];
    }
    Ok(records)
}

/// Re-frames a single-record ClientHello into two records of the same type/version, split at
/// `first_len` bytes of handshake payload.
pub fn reframe_into_two_records(hello_record: &[u8], first_len: usize) -> Vec<u8> {
    let records = parse_records(hello_record).expect("hello parses as records");
    assert_eq!(records.len(), 1, "expected one record, got {}", records.len());
    let (kind, version, payload) = &records[0];
    assert_eq!(*kind, CONTENT_HANDSHAKE);
    assert!(first_len > 0 && first_len < payload.len());
    wrap_records(payload, &[first_len, payload.len() - first_len], *version)
}

/// A rustls client connection and the bytes of its first flight (the ClientHello record[s]).
pub fn rustls_hello(config: Arc<rustls::ClientConfig>, server_name: &str) -> (ClientConnection, Vec<u8>) {
    let name = ServerName::try_from(server_name.to_string()).expect("server name");
    let mut conn = ClientConnection::new(config, name).expect("client connection");
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).expect("write_tls into a Vec");
    }
    (conn, hello)
}

/// Reads TLS handshake records from `reader` until one complete handshake message (the
/// ClientHello) has arrived; returns the raw record bytes exactly as read.
pub async fn read_hello_records<R: AsyncRead + Unpin>(reader: &mut R, cap: usize) -> Result<Vec<u8>, String> {
    let mut raw = Vec::new();
    let mut payload = Vec::new();
    loop {
        let mut header = [0u8; 5];
        reader.read_exact(&mut header).await.map_err(|e| format!("reading a record header: {e}"))?;
        if header[0] != CONTENT_HANDSHAKE {
            return Err(format!("expected a handshake record, got header {header:02x?}"));
        }
        let len = u16::from_be_bytes([header[3], header[4]]) as usize;
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body).await.map_err(|e| format!("reading a {len}-byte record body: {e}"))?;
        raw.extend_from_slice(&header);
        raw.extend_from_slice(&body);
        payload.extend_from_slice(&body);
        if raw.len() > cap {
            return Err(format!("hello exceeds {cap} bytes"));
        }
        if payload.len() >= 4 {
            if payload[0] != 0x01 {
                return Err(format!("handshake type {} is not ClientHello", payload[0]));
            }
            let msg_len = u32::from_be_bytes([0, payload[1], payload[2], payload[3]]) as usize;
            if payload.len() >= 4 + msg_len {
                return Ok(raw);
            }
        }
    }
}

/// Finishes a rustls client handshake over `stream` by hand (the hello is assumed sent).
pub async fn drive_handshake(stream: &mut TcpStream, conn: &mut ClientConnection) -> Result<(), String> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        flush_tls(stream, conn).await?;
        if !conn.is_handshaking() {
            return Ok(());
        }
        let n = stream.read(&mut buf).await.map_err(|e| format!("socket read: {e}"))?;
        if n == 0 {
            return Err("EOF during the handshake".into());
        }
        let mut slice = &buf[..n];
        while !slice.is_empty() {
            conn.read_tls(&mut slice).map_err(|e| format!("read_tls: {e}"))?;
            conn.process_new_packets().map_err(|e| format!("TLS error: {e}"))?;
        }
    }
}

/// Writes whatever rustls wants to send.
pub async fn flush_tls(stream: &mut TcpStream, conn: &mut ClientConnection) -> Result<(), String> {
    while conn.wants_write() {
        let mut out = Vec::new();
        conn.write_tls(&mut out).map_err(|e| format!("write_tls: {e}"))?;
        stream.write_all(&out).await.map_err(|e| format!("socket write: {e}"))?;
    }
    Ok(())
}

/// Sends plaintext over a hand-driven connection.
pub async fn send_plaintext(stream: &mut TcpStream, conn: &mut ClientConnection, data: &[u8]) -> Result<(), String> {
    conn.writer().write_all(data).map_err(|e| format!("plaintext write: {e}"))?;
    flush_tls(stream, conn).await
}

/// Reads exactly `n` plaintext bytes over a hand-driven connection.
pub async fn read_plaintext(stream: &mut TcpStream, conn: &mut ClientConnection, n: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let mut chunk = [0u8; 4096];
        loop {
            match conn.reader().read(&mut chunk) {
                Ok(0) => return Err(format!("TLS EOF after {} plaintext bytes", out.len())),
                Ok(k) => out.extend_from_slice(&chunk[..k]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("plaintext read: {e}")),
            }
        }
        if out.len() >= n {
            return Ok(out);
        }
        flush_tls(stream, conn).await?;
        let k = stream.read(&mut buf).await.map_err(|e| format!("socket read: {e}"))?;
        if k == 0 {
            return Err(format!("socket EOF after {} plaintext bytes", out.len()));
        }
        let mut slice = &buf[..k];
        while !slice.is_empty() {
            conn.read_tls(&mut slice).map_err(|e| format!("read_tls: {e}"))?;
            conn.process_new_packets().map_err(|e| format!("TLS error: {e}"))?;
        }
    }
}

/// Sends `bytes` one byte per TCP segment (nodelay, flush, ~1 ms pause between bytes).
pub async fn send_byte_by_byte(stream: &mut TcpStream, bytes: &[u8]) {
    stream.set_nodelay(true).unwrap();
    for byte in bytes {
        stream.write_all(std::slice::from_ref(byte)).await.expect("write one byte");
        stream.flush().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// Wraps a stream and records every byte written through it.
pub struct RecordingStream<S> {
    pub inner: S,
    pub written: Arc<Mutex<Vec<u8>>>,
}

impl<S> RecordingStream<S> {
    pub fn new(inner: S) -> (RecordingStream<S>, Arc<Mutex<Vec<u8>>>) {
        let written = Arc::new(Mutex::new(Vec::new()));
        (RecordingStream { inner, written: written.clone() }, written)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for RecordingStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for RecordingStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &result {
            self.written.lock().unwrap().extend_from_slice(&buf[..*n]);
        }
        result
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A stream that yields `prefix` before reading from `inner` (to hand a captured hello back
/// to a TLS acceptor).
pub struct PrefixedStream<S> {
    prefix: Vec<u8>,
    at: usize,
    pub inner: S,
}

impl<S> PrefixedStream<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> PrefixedStream<S> {
        PrefixedStream { prefix, at: 0, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PrefixedStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PrefixedStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
