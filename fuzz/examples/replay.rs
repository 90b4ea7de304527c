//! Runs one fuzz target's body over files or directories on stable Rust, without libFuzzer:
//! `cargo run --manifest-path fuzz/Cargo.toml --example replay -- <target> <path>...`
//!
//! Prints each input's name before running it, so a hang or a panic names its input.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(target) = args.next() else {
        eprintln!("usage: replay <{}> <file or directory>...", snigate_fuzz::TARGETS.join("|"));
        std::process::exit(2);
    };
    let Some(run) = snigate_fuzz::target(&target) else {
        eprintln!("unknown target {target:?}; targets: {}", snigate_fuzz::TARGETS.join(", "));
        std::process::exit(2);
    };
    let mut inputs: Vec<PathBuf> = Vec::new();
    for arg in args {
        let path = Path::new(&arg);
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = fs::read_dir(path).unwrap().map(|e| e.unwrap().path()).collect();
            entries.sort();
            inputs.extend(entries.into_iter().filter(|p| p.is_file()));
        } else {
            inputs.push(path.to_path_buf());
        }
    }
    for input in &inputs {
        let bytes = fs::read(input).unwrap();
        eprint!("{} ({} bytes) ... ", input.display(), bytes.len());
        let started = Instant::now();
        run(&bytes);
        eprintln!("ok in {:?}", started.elapsed());
    }
    eprintln!("{} inputs ran", inputs.len());
}
