//! Tenant A's storm, on a runtime and OS thread of its own: `conns` connections start at once,
//! at most `inflight` of them connecting at a time. A refused attempt (alert, close, reset,
//! timeout before the handshake completed) is counted and retried after a back-off, up to
//! `attempts` attempts; a connected session is held open (idle) until the storm is released.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::net::{self, Stream, Target};
use crate::stats::{Counts, Samples};

#[derive(Clone, Copy)]
pub struct Plan {
    pub conns: usize,
    pub inflight: usize,
    pub attempts: u32,
    pub backoff: Duration,
    /// The storm ends when every connection is connected or given up, or after this.
    pub cap: Duration,
}

#[derive(Default)]
pub struct Outcome {
    pub connected: u64,
    /// Refused `attempts` times.
    pub gave_up: u64,
    /// Still trying when the cap ended the storm.
    pub pending: u64,
    pub attempts: u64,
    pub refused: Counts,
    pub alerts: Counts,
    /// Connect + handshake of the attempts that succeeded.
    pub handshakes: Samples,
    /// From the start to the last connection's handshake, when every one connected.
    pub all_connected: Option<Duration>,
    pub elapsed: Duration,
}

/// Runs the storm on a new thread; its outcome arrives on the returned channel, and the
/// connections stay open until `release` fires (or is dropped).
pub fn spawn(
    plan: Plan,
    target: Target,
    release: oneshot::Receiver<()>,
) -> std::io::Result<(std::thread::JoinHandle<()>, oneshot::Receiver<Outcome>)> {
    let (done, outcome) = oneshot::channel();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let thread = std::thread::Builder::new().name("storm".into()).spawn(move || {
        runtime.block_on(async {
            let (result, held) = storm(plan, target).await;
            let _ = done.send(result);
            let _ = release.await;
            for stream in held {
                net::close(stream).await;
            }
        });
    })?;
    Ok((thread, outcome))
}

/// Refusals and handshakes as they happen; connections that gave up are counted by their task.
#[derive(Default)]
struct Tally {
    attempts: u64,
    refused: Counts,
    alerts: Counts,
    handshakes: Samples,
}

async fn storm(plan: Plan, target: Target) -> (Outcome, Vec<Stream>) {
    let started = Instant::now();
    let deadline = started + plan.cap;
    let slots = Arc::new(Semaphore::new(plan.inflight.max(1)));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut connections = JoinSet::new();
    for _ in 0..plan.conns {
        let (target, slots, tally) = (target.clone(), slots.clone(), tally.clone());
        connections.spawn(connection(target, slots, tally, plan.attempts, plan.backoff));
    }

    let mut outcome = Outcome::default();
    let mut held = Vec::with_capacity(plan.conns);
    let mut last = started;
    let mut progress = tokio::time::interval_at(started + Duration::from_secs(5), Duration::from_secs(5));
    loop {
        tokio::select! {
            joined = connections.join_next() => match joined {
                None => break,
                Some(Ok(Some((stream, at)))) => {
                    outcome.connected += 1;
                    last = last.max(at);
                    held.push(stream);
                }
                Some(Ok(None)) => outcome.gave_up += 1,
                Some(Err(_)) => outcome.gave_up += 1, // a panicked task (not expected)
            },
            _ = progress.tick() => eprintln!(
                "stormload: storm {:.0} s: {} connected, {} given up",
                started.elapsed().as_secs_f64(), outcome.connected, outcome.gave_up,
            ),
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    outcome.elapsed = started.elapsed();
    outcome.pending = connections.len() as u64;
    connections.abort_all();
    if outcome.connected == plan.conns as u64 {
        outcome.all_connected = Some(last.duration_since(started));
    }
    let tally = std::mem::take(&mut *tally.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
    outcome.attempts = tally.attempts;
    outcome.refused = tally.refused;
    outcome.alerts = tally.alerts;
    outcome.handshakes = tally.handshakes;
    (outcome, held)
}

/// One of A's connections: the stream and when its handshake completed, or None after `attempts`
/// refusals.
async fn connection(
    target: Target,
    slots: Arc<Semaphore>,
    tally: Arc<Mutex<Tally>>,
    attempts: u32,
    backoff: Duration,
) -> Option<(Stream, Instant)> {
    for attempt in 1..=attempts {
        let result = {
            let Ok(_slot) = slots.acquire().await else {
                return None;
            };
            target.connect().await
        };
        {
            let mut counts = tally.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            counts.attempts += 1;
            match result {
                Ok((stream, took)) => {
                    counts.handshakes.push(took);
                    return Some((stream, Instant::now()));
                }
                Err(refusal) => {
                    counts.refused.add(refusal.kind());
                    if let Some(alert) = refusal.alert() {
                        counts.alerts.add(&alert);
                    }
                    // Unexpected failures (a certificate error, say) are worth a look: the first few.
                    if let net::Refusal::Other(message) = &refusal {
                        if counts.refused.get("other") <= 3 {
                            eprintln!("stormload: tenant A attempt failed: {message}");
                        }
                    }
                }
            }
        }
        if attempt < attempts {
            tokio::time::sleep(backoff).await;
        }
    }
    None
}
