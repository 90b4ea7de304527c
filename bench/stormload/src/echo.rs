//! The plain TCP echo backend: every byte read is written back. One current-thread runtime (one
//! core at most); the load it sees is small (the live sessions' echoes), the sockets it holds are
//! many (one per proxied connection).

use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

use crate::args::Flags;

/// Room for a storm's worth of connections the proxy opens at once.
const BACKLOG: u32 = 4096;

pub fn main(mut flags: Flags) -> Result<(), String> {
    let listen = flags.loopback("listen")?;
    let lifetime = flags.seconds("lifetime-s", 900.0)?;
    flags.finish()?;
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| format!("runtime: {e}"))?;
    runtime.block_on(async {
        let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
        socket.set_reuseaddr(true).map_err(|e| format!("SO_REUSEADDR: {e}"))?;
        socket.bind(listen).map_err(|e| format!("bind {listen}: {e}"))?;
        let listener = socket.listen(BACKLOG).map_err(|e| format!("listen {listen}: {e}"))?;
        // Bounded in time: a forgotten backend ends by itself.
        let _ = tokio::time::timeout(lifetime, async {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(echo(stream));
                    }
                    // Out of descriptors, most likely: let some connections end first.
                    Err(error) => {
                        eprintln!("stormload echo: accept: {error}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        })
        .await;
        Ok(())
    })
}

async fn echo(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.split();
    let _ = tokio::io::copy(&mut reader, &mut writer).await;
}
