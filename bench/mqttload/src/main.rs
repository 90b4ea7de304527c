//! Opens MQTT sessions one after another, as devices reconnecting would: connect, CONNECT (3.1.1
//! or 5.0, a distinct client id each), read the CONNACK, DISCONNECT, wait for the broker's close.
//! `mqttload ADDR THREADS COUNT VERSION` runs COUNT sessions in all over THREADS threads against
//! ADDR (127.0.0.0/8 only) and prints one line:
//! `MQTTLOAD sessions=… refused=… errors=… duration_us=…`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A stuck proxy or broker must not hang the benchmark.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// DISCONNECT, no reason (3.1.1 and 5.0 both accept the two-byte form).
const DISCONNECT: [u8; 2] = [0xe0, 0x00];

fn connect_packet(version: u8, client_id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', version, 0x02, 0, 60];
    if version == 5 {
        body.push(0); // no properties
    }
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend_from_slice(&body);
    packet
}

enum Outcome {
    Accepted,
    Refused,
}

fn session(addr: SocketAddr, version: u8, client_id: &str) -> std::io::Result<Outcome> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    stream.write_all(&connect_packet(version, client_id))?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack)?;
    let accepted = connack[0] == 0x20 && connack[3] == 0;
    if accepted {
        stream.write_all(&DISCONNECT)?;
    }
    let mut rest = [0u8; 64];
    while stream.read(&mut rest)? > 0 {}
    Ok(if accepted { Outcome::Accepted } else { Outcome::Refused })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: mqttload ADDR THREADS COUNT VERSION(4|5)");
        std::process::exit(2);
    }
    let addr: SocketAddr = args[1].parse().expect("ADDR");
    assert!(addr.ip().is_loopback(), "loopback only");
    let threads: usize = args[2].parse().expect("THREADS");
    let count: usize = args[3].parse().expect("COUNT");
    let version: u8 = args[4].parse().expect("VERSION");
    let next = Arc::new(AtomicUsize::new(0));
    let (accepted, refused, errors) =
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (next, accepted, refused, errors) = (next.clone(), accepted.clone(), refused.clone(), errors.clone());
            std::thread::spawn(move || loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return;
                }
                match session(addr, version, &format!("bench-{n}")) {
                    Ok(Outcome::Accepted) => accepted.fetch_add(1, Ordering::Relaxed),
                    Ok(Outcome::Refused) => refused.fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("worker");
    }
    println!(
        "MQTTLOAD sessions={} refused={} errors={} duration_us={}",
        accepted.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        started.elapsed().as_micros()
    );
}
