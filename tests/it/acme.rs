//! ACME (issue 19) against a real private ACME server, Debian's pebble (`support::pebble`).
//! Skipped, with the reason printed, where pebble is not installed.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::support::pebble::Pebble;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_test_server_serves_its_directory_and_root_on_loopback() {
    let Some(pebble) = Pebble::start(closed_port().await.port()).await else { return };

    let directory = within("GET /dir", pebble.get_acme("/dir")).await.expect("directory");
    assert_eq!(directory.status, 200);
    for resource in ["newNonce", "newAccount", "newOrder"] {
        assert!(directory.body.contains(&format!("\"{resource}\"")), "{resource} missing: {}", directory.body);
    }
    let dir_path = pebble.directory.strip_prefix("https://").and_then(|rest| rest.split_once('/')).map(|(_, p)| p);
    assert_eq!(dir_path, Some("dir"), "directory URL {}", pebble.directory);

    let root = pebble.root_pem().await;
    assert!(CertificateDer::from_pem_slice(root.as_bytes()).is_ok(), "not a PEM certificate: {root}");
    let listener_ca = std::fs::read(&pebble.directory_ca).expect("directory_ca file");
    assert!(CertificateDer::from_pem_slice(&listener_ca).is_ok());

    let log = pebble.log();
    assert!(log.contains("Using custom DNS resolver"), "challtestsrv not used as resolver:\n{log}");
    assert!(log.contains("Disabling random VA sleeps"), "{log}");
}
