//! The relay of passthrough and tcp routes (Linux): small messages are copied, bulk is spliced.
//!
//! A direction starts by copying: one `recv` into the per-thread scratch buffer and one `send`
//! on. A read that does not fill the buffer has emptied the socket (TCP's receive queue had no
//! more), so the direction's read readiness is cleared there and then: no second read that would
//! only find the socket empty (`EAGAIN`), which is what nginx does (`rev->ready = 0` after a
//! short read) and what made splice cost three syscalls per MQTT-sized message instead of two.
//! A read that fills the buffer means a bulk transfer: from then on the direction moves its bytes
//! socket → pipe → socket with splice(2), never through user memory. Splice cannot tell a
//! drained socket from a full pipe, so it keeps reading until `EAGAIN`.
//!
//! A direction borrows a pipe from a small per-thread pool only while bytes are in flight and
//! gives it back once the pipe is drained, so an idle connection holds neither a buffer nor extra
//! descriptors. The idle timeout, stop token and half-close rules are the buffered relay's
//! (`relay::drive`).
//!
//! tokio has no splice, and the crates that wrap it hold a pipe per connection; this is ours
//! (rustix gives the safe syscall wrappers).

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use rustix::pipe::{PipeFlags, SpliceFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::buffered::{SCRATCH, SCRATCH_BYTES};
use super::{both, drive, peer_left, End, HalfError, Spill, Transferred};

/// Pipe capacity asked for, and so the bytes moved per splice: fewer, larger splices per GB.
/// Where the kernel refuses (`fs.pipe-max-size`, the per-user pipe page quota) the pipe keeps its
/// default 64 KiB and the splices are that size.
const PIPE_BYTES: usize = 256 * 1024;

/// Drained pipes kept per thread for the next burst; beyond this they are closed.
pub(crate) const POOLED_PIPES_PER_THREAD: usize = 32;
/// At most this many bytes left in a direction's pipe when its connection ends (a TLS
/// close_notify the client no longer reads, the tail of a response) are read out so the pipe
/// goes back to the pool; more, and the pipe is closed (a new one costs four syscalls: pipe2,
/// fcntl, two closes).
const DRAIN_TO_REUSE_BYTES: usize = 4096;

thread_local! {
    static POOL: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

#[derive(Debug)]
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    /// A pooled pipe, or a new one.
    fn take() -> io::Result<Pipe> {
        if let Some(pipe) = POOL.with_borrow_mut(Vec::pop) {
            return Ok(pipe);
        }
        let (read, write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        let _ = rustix::pipe::fcntl_setpipe_size(&write, PIPE_BYTES);
        Ok(Pipe { read, write })
    }

    /// Back to the pool; only an empty pipe may be given back.
    fn give_back(self) {
        POOL.with_borrow_mut(|pool| {
            if pool.len() < POOLED_PIPES_PER_THREAD {
                pool.push(self);
            }
        });
    }
}

/// One direction's state. A pipe it still holds when dropped goes back to the pool if it can be
/// emptied cheaply (see [`DRAIN_TO_REUSE_BYTES`]).
#[derive(Debug, Default)]
struct Half {
    /// Holds `in_pipe` bytes that the writer has not taken yet; `None` when nothing is in flight.
    pipe: Option<Pipe>,
    in_pipe: usize,
    /// Copied bytes the writer has not taken yet.
    spill: Spill,
    /// A read filled the scratch buffer: bulk, so this direction splices from now on.
    splicing: bool,
    eof: bool,
    done: bool,
    bytes: u64,
}

impl Half {
    /// Moves `from` → `to` until EOF (then half-closes `to`, unless `other_done`: the other
    /// direction has ended already, so the relay ends now and closing sends the FIN).
    fn poll_copy(
        &mut self,
        cx: &mut Context<'_>,
        from: &TcpStream,
        to: &TcpStream,
        other_done: bool,
        last_activity: &mut Instant,
    ) -> Poll<Result<(), HalfError>> {
        loop {
            if self.done {
                return Poll::Ready(Ok(()));
            }
            ready!(self.poll_write_spill(cx, to))?;
            if let Some(pipe) = &self.pipe {
                while self.in_pipe > 0 {
                    ready!(to.poll_write_ready(cx)).map_err(HalfError::Write)?;
                    let spliced = to.try_io(Interest::WRITABLE, || {
                        Ok(rustix::pipe::splice(&pipe.read, None, to, None, self.in_pipe, splice_flags())?)
                    });
                    match spliced {
                        Ok(0) => return Poll::Ready(Err(HalfError::Write(io::ErrorKind::WriteZero.into()))),
                        Ok(n) => self.in_pipe -= n,
                        Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                        Err(error) => return Poll::Ready(Err(HalfError::Write(error))),
                    }
                }
            }
            if let Some(pipe) = self.pipe.take() {
                pipe.give_back();
            }
            // The last direction to end needs no half-close: the relay ends with it and closing
            // the sockets sends the FIN (one syscall fewer per connection).
            if self.eof && other_done {
                self.done = true;
                continue;
            }
            if self.eof {
                match socket2::SockRef::from(to).shutdown(Shutdown::Write) {
                    Ok(()) => {}
                    Err(error) if peer_left(&error) => {}
                    Err(error) => return Poll::Ready(Err(HalfError::Write(error))),
                }
                self.done = true;
                continue;
            }
            ready!(from.poll_read_ready(cx)).map_err(HalfError::Read)?;
            if !self.splicing {
                SCRATCH.with_borrow_mut(|scratch| self.copy_once(from, to, scratch, last_activity))?;
                continue;
            }
            let pipe = self.pipe.insert(Pipe::take().map_err(HalfError::Read)?);
            let spliced = from.try_io(Interest::READABLE, || {
                Ok(rustix::pipe::splice(from, None, &pipe.write, None, PIPE_BYTES, splice_flags())?)
            });
            match spliced {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.in_pipe = n;
                    self.bytes += n as u64;
                    *last_activity = Instant::now();
                }
                // Readiness was stale; `try_io` cleared it, the next poll waits again.
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Poll::Ready(Err(HalfError::Read(error))),
            }
        }
    }
}

impl Half {
    /// Writes out what an earlier copy left over.
    fn poll_write_spill(&mut self, cx: &mut Context<'_>, to: &TcpStream) -> Poll<Result<(), HalfError>> {
        while !self.spill.pending().is_empty() {
            ready!(to.poll_write_ready(cx)).map_err(HalfError::Write)?;
            match to.try_write(self.spill.pending()) {
                Ok(0) => return Poll::Ready(Err(HalfError::Write(io::ErrorKind::WriteZero.into()))),
                Ok(n) => self.spill.advance(n),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Poll::Ready(Err(HalfError::Write(error))),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// One read into `scratch` and its write, the rest spilled if the writer is slow. A short
    /// read clears the read readiness inside the same `try_io` (so a readiness event that came
    /// after the read is never lost); EOF is not cleared by that and is read next time.
    fn copy_once(
        &mut self,
        from: &TcpStream,
        to: &TcpStream,
        scratch: &mut [u8],
        last_activity: &mut Instant,
    ) -> Result<(), HalfError> {
        let mut short_read = None;
        let read = from.try_io(Interest::READABLE, || {
            let n = std::io::Read::read(&mut &*socket2::SockRef::from(from), scratch)?;
            if n > 0 && n < scratch.len() {
                short_read = Some(n);
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        let read = match (read, short_read) {
            (_, Some(n)) => n,
            (Ok(n), None) => n,
            (Err(error), None) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            (Err(error), None) => return Err(HalfError::Read(error)),
        };
        if read == 0 {
            self.eof = true;
            return Ok(());
        }
        self.splicing = read == SCRATCH_BYTES;
        self.bytes += read as u64;
        *last_activity = Instant::now();
        let mut written = 0;
        while written < read {
            match to.try_write(&scratch[written..read]) {
                Ok(0) => return Err(HalfError::Write(io::ErrorKind::WriteZero.into())),
                Ok(n) => written += n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    self.spill.keep(&scratch[written..read]);
                    break;
                }
                Err(error) => return Err(HalfError::Write(error)),
            }
        }
        Ok(())
    }
}

impl Drop for Half {
    fn drop(&mut self) {
        let Some(pipe) = self.pipe.take() else { return };
        if self.in_pipe == 0 || drain(&pipe, self.in_pipe) {
            pipe.give_back();
        }
    }
}

/// Reads the `bytes` a pipe holds and drops them; whether it is empty now.
fn drain(pipe: &Pipe, bytes: usize) -> bool {
    if bytes > DRAIN_TO_REUSE_BYTES {
        return false;
    }
    let mut scratch = [0u8; DRAIN_TO_REUSE_BYTES];
    matches!(rustix::io::read(&pipe.read, &mut scratch[..bytes]), Ok(n) if n == bytes)
}

fn splice_flags() -> SpliceFlags {
    SpliceFlags::MOVE | SpliceFlags::NONBLOCK
}

/// Relays between two TCP sockets until both directions are closed, one side fails, the
/// connection idles out, or `stop` is cancelled.
/// (A plain function returning an `async` block: an `async fn` would keep its arguments twice in
/// the future, and a session lives in it.)
#[allow(clippy::manual_async_fn)]
pub fn relay(
    client: TcpStream,
    backend: TcpStream,
    idle_timeout: Duration,
    stop: &CancellationToken,
) -> impl Future<Output = (Transferred, End)> + Send + '_ {
    async move {
        let mut upstream = Half::default();
        let mut downstream = Half::default();
        let end = drive(idle_timeout, stop, |cx, last_activity| {
            let up = upstream.poll_copy(cx, &client, &backend, downstream.done, last_activity);
            let down = downstream.poll_copy(cx, &backend, &client, upstream.done, last_activity);
            both(up, down)
        })
        .await;
        let transferred = Transferred { client_to_backend: upstream.bytes, backend_to_client: downstream.bytes };
        (transferred, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn holding(pipe: Pipe, in_pipe: usize) -> Half {
        let mut half = Half::default();
        (half.pipe, half.in_pipe) = (Some(pipe), in_pipe);
        half
    }

    fn pooled() -> usize {
        POOL.with_borrow(Vec::len)
    }

    #[test]
    fn a_pipe_left_with_a_few_bytes_is_emptied_and_pooled_and_a_full_one_is_closed() {
        let pipe = Pipe::take().unwrap();
        let before = pooled();
        rustix::io::write(&pipe.write, b"close_notify").unwrap();
        drop(holding(pipe, 12));
        assert_eq!(pooled(), before + 1, "emptied and given back");
        let reused = Pipe::take().unwrap();
        assert_eq!(pooled(), before, "the same pipe taken again");
        let mut probe = [0u8; 1];
        assert!(rustix::io::read(&reused.read, &mut probe).is_err(), "the pooled pipe is empty (EAGAIN)");

        rustix::io::write(&reused.write, &vec![7u8; DRAIN_TO_REUSE_BYTES + 1]).unwrap();
        drop(holding(reused, DRAIN_TO_REUSE_BYTES + 1));
        assert_eq!(pooled(), before, "too much to read out: closed, not pooled");
    }

    /// A connected pair of loopback sockets.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let connect = TcpStream::connect(listener.local_addr().unwrap());
        let (accepted, connected) = tokio::join!(listener.accept(), connect);
        (accepted.unwrap().0, connected.unwrap())
    }

    /// Sends `data` then EOF while reading everything the other end sends; returns what it read.
    async fn exchange(mut stream: TcpStream, data: Vec<u8>) -> Vec<u8> {
        let (mut read, mut write) = stream.split();
        let send = async {
            write.write_all(&data).await.unwrap();
            write.shutdown().await.unwrap();
        };
        let mut got = Vec::new();
        let ((), received) = tokio::join!(send, read.read_to_end(&mut got));
        received.unwrap();
        got
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bulk_both_ways_arrives_in_order_with_half_close() {
        let (client, client_peer) = pair().await;
        let (backend, backend_peer) = pair().await;
        let stop = CancellationToken::new();
        let relay = tokio::spawn(async move { relay(client, backend, Duration::from_secs(10), &stop).await });
        let upload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let download: Vec<u8> = (0..2_000_000u32).map(|i| (i % 241) as u8).collect();

        let client_side = tokio::spawn(exchange(client_peer, upload.clone()));
        let backend_side = tokio::spawn(exchange(backend_peer, download.clone()));
        let at_client = client_side.await.unwrap();
        let at_backend = backend_side.await.unwrap();
        assert!(at_backend == upload, "upload: {} of {} bytes, in order?", at_backend.len(), upload.len());
        assert!(at_client == download, "download: {} of {} bytes, in order?", at_client.len(), download.len());
        let (transferred, end) = relay.await.unwrap();
        assert!(matches!(end, End::Closed), "{end:?}");
        assert_eq!(transferred, Transferred { client_to_backend: 3_000_000, backend_to_client: 2_000_000 });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_messages_ping_pong_then_bulk_then_eof_all_arrive() {
        // MQTT-like traffic (each message copied, readiness cleared after each short read), then a
        // bulk upload that switches the direction to splice, then the half-close.
        let (client, mut client_peer) = pair().await;
        let (backend, mut backend_peer) = pair().await;
        let stop = CancellationToken::new();
        let relay = tokio::spawn(async move { relay(client, backend, Duration::from_secs(10), &stop).await });
        let run = async {
            for i in 0..500u32 {
                let message = format!("PUBLISH {i:04} sensors/room-{i}");
                client_peer.write_all(message.as_bytes()).await.unwrap();
                let mut got = vec![0u8; message.len()];
                backend_peer.read_exact(&mut got).await.unwrap();
                assert_eq!(got, message.as_bytes(), "message {i} to the backend");
                backend_peer.write_all(&i.to_be_bytes()).await.unwrap();
                let mut ack = [0u8; 4];
                client_peer.read_exact(&mut ack).await.unwrap();
                assert_eq!(u32::from_be_bytes(ack), i, "ack {i} to the client");
            }
            let bulk: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
            let (backend_got, ()) = tokio::join!(
                async {
                    let mut got = vec![0u8; bulk.len()];
                    backend_peer.read_exact(&mut got).await.unwrap();
                    got
                },
                async { client_peer.write_all(&bulk).await.unwrap() }
            );
            assert!(backend_got == bulk, "the bulk upload arrives whole and in order");
            client_peer.shutdown().await.unwrap();
            let mut rest = Vec::new();
            backend_peer.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty(), "EOF after the bulk");
            backend_peer.shutdown().await.unwrap();
        };
        tokio::time::timeout(Duration::from_secs(20), run).await.expect("no stall");
        let (transferred, end) = relay.await.unwrap();
        assert!(matches!(end, End::Closed), "{end:?}");
        assert_eq!(transferred.backend_to_client, 500 * 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_reader_is_back_pressure_not_loss() {
        let (client, mut client_peer) = pair().await;
        let (backend, mut backend_peer) = pair().await;
        let stop = CancellationToken::new();
        let relay = tokio::spawn(async move { relay(client, backend, Duration::from_secs(10), &stop).await });
        let upload: Vec<u8> = (0..8_000_000u32).map(|i| (i % 253) as u8).collect();
        let expected = upload.clone();
        let writer = tokio::spawn(async move {
            client_peer.write_all(&upload).await.unwrap();
            client_peer.shutdown().await.unwrap();
            client_peer
        });
        // Let the socket buffers and the pipe fill up before reading at all.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut got = Vec::new();
        backend_peer.read_to_end(&mut got).await.unwrap();
        assert!(got == expected, "{} of {} bytes, in order?", got.len(), expected.len());
        drop(backend_peer);
        drop(writer.await.unwrap());
        let (transferred, _) = relay.await.unwrap();
        assert_eq!(transferred.client_to_backend, 8_000_000);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connection_is_closed_after_idle_timeout() {
        let (client, _client_peer) = pair().await;
        let (backend, _backend_peer) = pair().await;
        let (_, end) = relay(client, backend, Duration::from_secs(30), &CancellationToken::new()).await;
        assert!(matches!(end, End::Idle), "{end:?}");
    }

    #[tokio::test]
    async fn reset_by_the_backend_is_a_backend_error() {
        let (client, _client_peer) = pair().await;
        let (backend, backend_peer) = pair().await;
        // Linger 0: close sends RST instead of FIN.
        socket2::SockRef::from(&backend_peer).set_linger(Some(Duration::ZERO)).unwrap();
        drop(backend_peer);
        let (_, end) = relay(client, backend, Duration::from_secs(30), &CancellationToken::new()).await;
        assert!(matches!(end, End::BackendError(_)), "{end:?}");
    }
}
