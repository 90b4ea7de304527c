//! What is measured around the storm, on the probe runtime: tenant B's new connections (open, full
//! handshake, close, at a fixed rate) and the live sessions (an echo of N bytes every interval).
//! Each result is filed under the phase in which its attempt started.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use crate::net::{self, Refusal, Stream, Target};
use crate::stats::{Counts, Samples};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Phase {
    Setup = 0,
    Quiet = 1,
    Storm = 2,
    /// After the storm: results are still collected, never reported.
    Done = 3,
}

const PHASES: usize = 4;

/// A live echo that takes longer than this counts as a broken session.
const ECHO_TIMEOUT: Duration = Duration::from_secs(10);

/// One phase's figures.
#[derive(Default)]
pub struct Figures {
    pub b_attempts: u64,
    pub b_handshakes: Samples,
    pub b_refused: Counts,
    pub b_alerts: Counts,
    pub echoes: Samples,
    /// Live sessions that broke in this phase, by how.
    pub lost: Counts,
}

/// The current phase and every phase's figures, shared by the probe tasks.
#[derive(Default)]
pub struct Recorder {
    phase: AtomicUsize,
    figures: Mutex<[Figures; PHASES]>,
}

impl Recorder {
    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as usize, Ordering::SeqCst);
    }

    fn phase(&self) -> usize {
        self.phase.load(Ordering::SeqCst)
    }

    fn figures(&self) -> MutexGuard<'_, [Figures; PHASES]> {
        self.figures.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a phase's figures out (call once the probes have stopped).
    pub fn take(&self, phase: Phase) -> Figures {
        std::mem::take(&mut self.figures()[phase as usize])
    }
}

/// Echo sessions, `count` of them, spread evenly over one interval.
pub fn spawn_live(
    tasks: &mut JoinSet<()>,
    sessions: Vec<Stream>,
    recorder: &Arc<Recorder>,
    stop: &watch::Receiver<bool>,
    interval: Duration,
    bytes: usize,
) {
    let count = sessions.len().max(1) as u32;
    for (i, stream) in sessions.into_iter().enumerate() {
        let first = Instant::now() + interval * i as u32 / count;
        tasks.spawn(live(stream, recorder.clone(), stop.clone(), first, interval, bytes));
    }
}

async fn live(
    mut stream: Stream,
    recorder: Arc<Recorder>,
    mut stop: watch::Receiver<bool>,
    first: Instant,
    interval: Duration,
    bytes: usize,
) {
    let payload: Vec<u8> = (0..bytes).map(|i| i as u8).collect();
    let mut echoed = vec![0u8; bytes];
    let mut ticks = tokio::time::interval_at(first, interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = ticks.tick() => {}
        }
        let phase = recorder.phase();
        let started = Instant::now();
        let round_trip = async {
            stream.write_all(&payload).await?;
            stream.flush().await?;
            stream.read_exact(&mut echoed).await?;
            Ok::<_, std::io::Error>(())
        };
        let result = tokio::time::timeout(ECHO_TIMEOUT, round_trip).await;
        let lost = match result {
            Ok(Ok(())) if echoed == payload => None,
            Ok(Ok(())) => Some("corrupt"),
            Ok(Err(error)) => Some(Refusal::of(&error).kind()),
            Err(_) => Some("timeout"),
        };
        let mut figures = recorder.figures();
        match lost {
            None => figures[phase].echoes.push(started.elapsed()),
            Some(how) => {
                figures[phase].lost.add(how);
                return;
            }
        }
    }
    net::close(stream).await;
}

/// Tenant B: a new connection every 1/rate seconds until `stop`, each a full handshake and a
/// close; then waits for the attempts still under way (each bounded by the target's timeout).
pub async fn tenant_b(target: Target, rate: f64, recorder: Arc<Recorder>, mut stop: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut attempts = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = ticks.tick() => {}
        }
        let phase = recorder.phase();
        recorder.figures()[phase].b_attempts += 1;
        let (target, recorder) = (target.clone(), recorder.clone());
        attempts.spawn(async move {
            let result = target.connect().await;
            {
                let mut figures = recorder.figures();
                let figures = &mut figures[phase];
                match &result {
                    Ok((_, took)) => figures.b_handshakes.push(*took),
                    Err(refusal) => {
                        figures.b_refused.add(refusal.kind());
                        if let Some(alert) = refusal.alert() {
                            figures.b_alerts.add(&alert);
                        }
                    }
                }
            }
            if let Ok((stream, _)) = result {
                net::close(stream).await;
            }
        });
        while attempts.try_join_next().is_some() {}
    }
    while attempts.join_next().await.is_some() {}
}
