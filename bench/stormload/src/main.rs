//! The load generator of `bench/storm.sh` (issue 17): one tenant's handshake storm beside another
//! tenant's new connections and long-lived echo sessions, through a TLS-terminating proxy on
//! loopback. Two subcommands:
//!
//! - `stormload echo --listen ADDR [--lifetime-s N]`: the plain TCP echo backend the proxy relays
//!   to (one current-thread runtime; it exits by itself after `--lifetime-s`, 900 by default).
//! - `stormload run --addr ADDR --ca FILE [knobs]`: the client. It prints one JSON object a line
//!   per phase (`setup`, `quiet`, `storm`) and a `summary`; see `run.rs` for the phases and
//!   `stormload run --help` for the knobs.
//!
//! Every address must be on 127.0.0.0/8, every loop is bounded in count and time.

mod args;
mod cpu;
mod echo;
mod json;
mod net;
mod probe;
mod run;
mod stats;
mod storm;

use std::process::ExitCode;

const USAGE: &str = "usage: stormload echo --listen ADDR [--lifetime-s N]
       stormload run --addr ADDR --ca FILE [--help for the knobs]";

fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1);
    let result = match argv.next().as_deref() {
        Some("echo") => args::Flags::parse(argv).and_then(echo::main),
        Some("run") => args::Flags::parse(argv).and_then(run::main),
        _ => Err(USAGE.to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("stormload: {message}");
            ExitCode::FAILURE
        }
    }
}
