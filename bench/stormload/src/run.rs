//! The client's phases:
//!
//! 1. `setup`: `--live` sessions are opened (half tenant A, half tenant B) and start echoing
//!    `--echo-bytes` every `--echo-interval-s`;
//! 2. `quiet`: `--quiet-s` of tenant B's new connections at `--b-rate` per second, and the echoes;
//! 3. `storm`: tenant A's `--conns` connections start at once (see `storm.rs`) while B and the
//!    echoes go on; it ends when every A connection is connected or given up, or after `--cap-s`;
//!
//! then one JSON line per phase and a `summary` line on stdout (progress on stderr).
//!
//! Threads: tenant B, the live sessions and this orchestration share one current-thread runtime
//! (the probe side: little CPU, mostly waiting); the storm runs on a second current-thread runtime
//! on its own OS thread, so the storm's client-side handshake work never queues in front of a
//! probe's timer or read on the same runtime. The kernel shares the two cores between both
//! threads, the proxy and the echo backend.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::args::Flags;
use crate::cpu::{Mark, Meter};
use crate::json::Object;
use crate::net::{self, Stream, Target};
use crate::probe::{self, Figures, Phase, Recorder};
use crate::stats::Counts;
use crate::storm::{self, Outcome, Plan};

const HELP: &str = "stormload run --addr 127.0.0.1:PORT --ca CA.pem [knobs]
  --label NAME            written into every line (default: proxy)
  --sni-a NAME            tenant A's SNI (a.storm.test)
  --sni-b NAME            tenant B's SNI (b.storm.test)
  --conns N               tenant A's storm connections (3000)
  --inflight N            of them connecting at once (500)
  --attempts N            attempts per A connection before it gives up (20)
  --backoff-s S           pause after a refused A attempt (1)
  --b-rate R              tenant B's new connections per second (20)
  --live N                live echo sessions, half A, half B (200)
  --echo-interval-s S     one echo per live session every S (0.1)
  --echo-bytes N          bytes per echo (64)
  --quiet-s S             the quiet phase (10)
  --cap-s S               the storm phase at most (60)
  --timeout-s S           connect + handshake of one attempt at most (10)
  --proxy-pids P,P,...    processes whose CPU is reported (utime+stime from /proc)
  --clk-tck N             clock ticks per second of /proc (getconf CLK_TCK; 100)";

/// Live sessions opened at once during setup.
const SETUP_PARALLEL: usize = 10;
/// Attempts per live session during setup (nothing should refuse them then).
const SETUP_ATTEMPTS: u32 = 3;

struct Config {
    label: String,
    a: Target,
    b: Target,
    plan: Plan,
    b_rate: f64,
    live: usize,
    echo_interval: Duration,
    echo_bytes: usize,
    quiet: Duration,
    timeout: Duration,
    meter: Meter,
}

impl Config {
    fn from_flags(mut flags: Flags) -> Result<Self, String> {
        let addr = flags.loopback("addr")?;
        let ca: PathBuf = flags.required("ca")?;
        let tls = net::client_config(&ca)?;
        let timeout = flags.seconds("timeout-s", 10.0)?;
        let a = Target::new(addr, &flags.get("sni-a", "a.storm.test".to_owned())?, tls.clone(), timeout)?;
        let b = Target::new(addr, &flags.get("sni-b", "b.storm.test".to_owned())?, tls, timeout)?;
        let plan = Plan {
            conns: flags.get("conns", 3000)?,
            inflight: flags.get("inflight", 500)?,
            attempts: flags.get::<u32>("attempts", 20)?.max(1),
            backoff: flags.seconds("backoff-s", 1.0)?,
            cap: flags.seconds("cap-s", 60.0)?,
        };
        let b_rate: f64 = flags.get("b-rate", 20.0)?;
        if !(b_rate > 0.0 && b_rate <= 10_000.0) {
            return Err(format!("--b-rate {b_rate}: between 0 and 10000 per second"));
        }
        let pids = flags.get("proxy-pids", String::new())?;
        let pids = pids
            .split(',')
            .filter(|pid| !pid.is_empty())
            .map(|pid| pid.parse::<u32>().map_err(|_| format!("--proxy-pids: {pid:?} is not a pid")))
            .collect::<Result<Vec<_>, _>>()?;
        let config = Self {
            label: flags.get("label", "proxy".to_owned())?,
            a,
            b,
            plan,
            b_rate,
            live: flags.get("live", 200)?,
            echo_interval: flags.seconds("echo-interval-s", 0.1)?.max(Duration::from_millis(1)),
            echo_bytes: flags.get::<usize>("echo-bytes", 64)?.max(1),
            quiet: flags.seconds("quiet-s", 10.0)?,
            timeout,
            meter: Meter::new(pids, flags.get("clk-tck", 100)?),
        };
        flags.finish()?;
        Ok(config)
    }
}

pub fn main(mut flags: Flags) -> Result<(), String> {
    if flags.has("help") {
        println!("{HELP}");
        return Ok(());
    }
    let config = Config::from_flags(flags)?;
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| format!("runtime: {e}"))?;
    runtime.block_on(run(config))
}

async fn run(config: Config) -> Result<(), String> {
    let started = Instant::now();
    let recorder = Arc::new(Recorder::default());
    let (stop, stopped) = watch::channel(false);
    let mut live_tasks = JoinSet::new();

    // 1. setup
    let setup_from = config.meter.mark();
    let (sessions, setup_failed) = open_live(&config.a, &config.b, config.live).await;
    let established = sessions.len() as u64;
    if established == 0 && config.live > 0 {
        return Err(format!("no live session could be opened: {}", setup_failed.to_json().finish()));
    }
    probe::spawn_live(&mut live_tasks, sessions, &recorder, &stopped, config.echo_interval, config.echo_bytes);
    let setup_to = config.meter.mark();
    eprintln!("stormload: {}: {established} live sessions; quiet phase", config.label);

    // 2. quiet
    recorder.set_phase(Phase::Quiet);
    let quiet_from = config.meter.mark();
    let tenant_b = tokio::spawn(probe::tenant_b(config.b.clone(), config.b_rate, recorder.clone(), stopped.clone()));
    tokio::time::sleep(config.quiet).await;
    let quiet_to = config.meter.mark();

    // 3. storm
    eprintln!("stormload: {}: storm of {} connections", config.label, config.plan.conns);
    recorder.set_phase(Phase::Storm);
    let storm_from = config.meter.mark();
    let (release, released) = oneshot::channel();
    let (storm_thread, outcome) =
        storm::spawn(config.plan, config.a.clone(), released).map_err(|e| format!("storm thread: {e}"))?;
    let outcome = outcome.await.map_err(|_| "the storm thread ended without an outcome".to_owned())?;
    let storm_to = config.meter.mark();

    // Stop the probes (each bounded: an attempt by --timeout-s, an echo by its own timeout), then
    // close the storm's connections.
    recorder.set_phase(Phase::Done);
    let _ = stop.send(true);
    let bound = config.timeout + Duration::from_secs(12);
    let _ = tokio::time::timeout(bound, tenant_b).await;
    let _ = tokio::time::timeout(bound, async { while live_tasks.join_next().await.is_some() {} }).await;
    let _ = release.send(());
    let _ = tokio::task::spawn_blocking(move || storm_thread.join()).await;

    let mut lost = Counts::default();
    let lines = [
        phase_line(&config, "setup", recorder.take(Phase::Setup), (setup_from, setup_to), &mut lost)
            .int("live", config.live as u64)
            .int("live_established", established)
            .object("live_failed", setup_failed.to_json()),
        phase_line(&config, "quiet", recorder.take(Phase::Quiet), (quiet_from, quiet_to), &mut lost),
        storm_fields(
            phase_line(&config, "storm", recorder.take(Phase::Storm), (storm_from, storm_to), &mut lost),
            config.plan.conns,
            outcome,
        ),
    ];
    for line in lines {
        println!("{}", line.finish());
    }
    lost.merge(&recorder.take(Phase::Done).lost);
    println!(
        "{}",
        Object::new()
            .str("phase", "summary")
            .str("label", &config.label)
            .int("live_established", established)
            .int("live_lost", lost.total())
            .object("live_lost_by", lost.to_json())
            .num("wall_s", started.elapsed().as_secs_f64())
            .finish()
    );
    Ok(())
}

/// The figures every phase reports; its lost sessions are added to `lost`.
fn phase_line(config: &Config, phase: &str, figures: Figures, (from, to): (Mark, Mark), lost: &mut Counts) -> Object {
    let usage = config.meter.between(from, to);
    let b_ok = figures.b_handshakes.len() as u64;
    lost.merge(&figures.lost);
    Object::new()
        .str("phase", phase)
        .str("label", &config.label)
        .num("wall_s", usage.wall_s)
        .int("b_attempts", figures.b_attempts)
        .int("b_ok", b_ok)
        .object("b_refused", figures.b_refused.to_json())
        .object("b_alerts", figures.b_alerts.to_json())
        .object("b_handshake_ms", figures.b_handshakes.summary())
        .object("echo_ms", figures.echoes.summary())
        .int("lost", figures.lost.total())
        .object("lost_by", figures.lost.to_json())
        .num("proxy_cpu_ms", usage.proxy_ms)
        .num("proxy_cpu_pct", usage.proxy_pct)
        .num("client_cpu_ms", usage.client_ms)
}

fn storm_fields(line: Object, conns: usize, outcome: Outcome) -> Object {
    line.int("a_conns", conns as u64)
        .int("a_connected", outcome.connected)
        .int("a_gave_up", outcome.gave_up)
        .int("a_pending", outcome.pending)
        .int("a_attempts", outcome.attempts)
        .object("a_refused", outcome.refused.to_json())
        .object("a_alerts", outcome.alerts.to_json())
        .object("a_handshake_ms", outcome.handshakes.summary())
        .opt_num("a_all_connected_s", outcome.all_connected.map(|d| d.as_secs_f64()))
        .num("storm_s", outcome.elapsed.as_secs_f64())
}

/// The live sessions: `count` full handshakes, alternately tenant A and B, a few at a time.
async fn open_live(a: &Target, b: &Target, count: usize) -> (Vec<Stream>, Counts) {
    let slots = Arc::new(Semaphore::new(SETUP_PARALLEL));
    let mut opening = JoinSet::new();
    for i in 0..count {
        let target = if i % 2 == 0 { a.clone() } else { b.clone() };
        let slots = slots.clone();
        opening.spawn(async move {
            let _slot = slots.acquire_owned().await;
            let mut last = None;
            for _ in 0..SETUP_ATTEMPTS {
                match target.connect().await {
                    Ok((stream, _)) => return Ok(stream),
                    Err(refusal) => last = Some(refusal),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(last)
        });
    }
    let (mut sessions, mut failed) = (Vec::with_capacity(count), Counts::default());
    while let Some(joined) = opening.join_next().await {
        match joined {
            Ok(Ok(stream)) => sessions.push(stream),
            Ok(Err(Some(refusal))) => {
                if let net::Refusal::Other(message) = &refusal {
                    eprintln!("stormload: live session failed: {message}");
                }
                failed.add(refusal.kind());
            }
            Ok(Err(None)) | Err(_) => failed.add("other"),
        }
    }
    (sessions, failed)
}
