//! Smoke test on stable Rust: every fuzz target's body over its seed corpus, so the targets keep
//! compiling and their invariants keep holding without cargo-fuzz or nightly.

use std::fs;
use std::path::{Path, PathBuf};

use snigate::hello::{self, Progress};

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(entries) => entries.map(|entry| entry.unwrap().path()).filter(|path| path.is_file()).collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

fn corpus(target: &str) -> Vec<PathBuf> {
    files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target))
}

#[test]
fn every_target_runs_over_its_seed_corpus() {
    for target in snigate_fuzz::TARGETS {
        let run = snigate_fuzz::target(target).unwrap();
        let inputs = corpus(target);
        assert!(inputs.len() >= 5, "corpus/{target} has only {} files", inputs.len());
        for path in inputs {
            let bytes = fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&bytes));
            assert!(outcome.is_ok(), "{target} panicked on {}", path.display());
        }
    }
}

#[test]
fn seed_hellos_are_real_and_complete() {
    let mut complete = 0;
    let mut post_quantum = false;
    for path in corpus("hello_parse") {
        let bytes = fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.starts_with("rustls-") || name.starts_with("reframed-")) {
            continue;
        }
        let Ok(Progress::Complete(hello)) = hello::parse(&bytes, snigate_fuzz::DEFAULT_MAX_HELLO_BYTES) else {
            panic!("{name} is not a complete hello");
        };
        complete += 1;
        if name.contains("-default-") && hello.server_name.as_deref() == Some("b.snigate.test") {
            post_quantum |= hello.records_len > 1460;
        }
        if name.contains("alpn-h2") {
            assert_eq!(hello.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()], "{name}");
        }
        if name.contains("no-sni") || name.contains("ip-name") {
            assert_eq!(hello.server_name, None, "{name}");
        }
    }
    assert!(complete >= 10, "only {complete} complete seed hellos");
    assert!(post_quantum, "no seed hello over 1,460 bytes (one TCP segment) for b.snigate.test");
}

#[test]
fn proxy_seed_headers_parse() {
    for name in ["v1-tcp4", "v1-tcp6", "v1-unknown", "v2-proxy-tcp4", "v2-proxy-tcp6-vendor-tlv", "v2-local"] {
        let bytes = fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/inbound_parse").join(name)).unwrap();
        let parsed = snigate::inbound::parse(&bytes);
        assert!(matches!(parsed, Ok(Some((_, len))) if len == bytes.len()), "{name}: {parsed:?}");
    }
}

/// Inputs of past findings (`artifacts-found/<target>/`, see README.md), fixed in `src/` since:
/// a regression test. Each input runs on its own thread with a deadline, so a hang is reported
/// instead of blocking the test.
#[test]
fn found_artifacts_stay_fixed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts-found");
    let mut failures = Vec::new();
    for target in snigate_fuzz::TARGETS {
        let run = snigate_fuzz::target(target).unwrap();
        for path in files(&root.join(target)) {
            let bytes = fs::read(&path).unwrap();
            let (done, outcome) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let result = std::panic::catch_unwind(|| run(&bytes));
                let _ = done.send(result.is_ok());
            });
            match outcome.recv_timeout(std::time::Duration::from_secs(10)) {
                Ok(true) => {}
                Ok(false) => failures.push(format!("{}: panicked", path.display())),
                // The thread is left spinning; the test process ends with the failure below.
                Err(_) => failures.push(format!("{}: still running after 10 s", path.display())),
            }
        }
    }
    assert!(failures.is_empty(), "still failing: {failures:#?}");
}

#[test]
fn mqtt_seed_connects_are_complete() {
    use snigate::mqtt::connect::{self, Progress};
    let names = [
        "paho-v311-user-will",
        "paho-v5-user-will-props",
        "paho-v31",
        "paho-v311-empty-id",
        "v311-user-password",
        "v5-password-only",
        "v5-will-user-password",
        "v31-long-id",
        "v311-then-subscribe-pingreq",
        "v311-padded-length",
    ];
    for name in names {
        let bytes = fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/mqtt_connect").join(name)).unwrap();
        let parsed = connect::parse(&bytes, snigate_fuzz::DEFAULT_MAX_CONNECT_BYTES);
        assert!(matches!(parsed, Ok(Progress::Complete(_))), "{name}: {parsed:?}");
    }
}
