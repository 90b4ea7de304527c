//! The files under `deploy/`, checked without Docker, a cluster or systemd as PID 1:
//! - every YAML file parses (Kubernetes files may hold several documents);
//! - Kubernetes: probes on the admin port's `/healthz` and `/readyz`, the security context, no
//!   `subPath`, a grace period that covers the drain, PROXY annotations, a PDB, and a
//!   kustomization that lists existing files;
//! - compose: volume sources exist (or are made by `gen-certs.sh`), images are pinned, the broker
//!   configs use known Mosquitto 2.1 keys and agree with the routes;
//! - both routes files load with snigate's own loader, with throwaway certificates at the paths
//!   they name (absolute container paths are rewritten to a temp dir: the mounts map them);
//! - the systemd unit has the hardening keys, and `systemd-analyze verify` accepts it where the
//!   tool exists.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use yaml_serde::Value;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Every document of a YAML file.
fn documents(path: &Path) -> Vec<Value> {
    let text = read(path);
    yaml_serde::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|value| !value.is_null())
        .collect()
}

fn document(path: &Path) -> Value {
    let mut all = documents(path);
    assert_eq!(all.len(), 1, "{}: expected one YAML document", path.display());
    all.remove(0)
}

/// `value` at a path of mapping keys and sequence indices ("spec.ports.0.port").
fn at<'a>(value: &'a Value, path: &str) -> &'a Value {
    let mut current = value;
    for key in path.split('.') {
        let next = match key.parse::<usize>() {
            Ok(index) => current.get(index),
            Err(_) => current.get(key),
        };
        current = next.unwrap_or_else(|| panic!("no `{path}` (stopped at `{key}`) in {value:?}"));
    }
    current
}

fn text<'a>(value: &'a Value, path: &str) -> &'a str {
    at(value, path).as_str().unwrap_or_else(|| panic!("`{path}` is not a string"))
}

fn list<'a>(value: &'a Value, path: &str) -> &'a Vec<Value> {
    at(value, path).as_sequence().unwrap_or_else(|| panic!("`{path}` is not a list"))
}

fn strings(value: &Value, path: &str) -> Vec<String> {
    list(value, path).iter().map(|v| v.as_str().expect("a string").to_string()).collect()
}

/// Files under `dir` (recursively), skipping generated certificate directories.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "certs") {
                    pending.push(path);
                }
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------------
// All of deploy/

#[test]
fn every_yaml_file_under_deploy_parses() {
    let yaml: Vec<PathBuf> = files_under(&deploy())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    assert!(yaml.len() >= 8, "expected the compose and Kubernetes files, found {yaml:?}");
    for path in yaml {
        assert!(!documents(&path).is_empty(), "{} is empty", path.display());
    }
}

#[test]
fn no_private_key_is_committed_under_deploy() {
    for path in files_under(&deploy()) {
        let bytes = std::fs::read(&path).unwrap();
        let contents = String::from_utf8_lossy(&bytes);
        assert!(!contents.contains("PRIVATE KEY-----"), "{} holds a private key", path.display());
    }
    let ignore = read(&deploy().join("compose/.gitignore"));
    assert!(ignore.lines().any(|l| l.trim() == "certs/"), "deploy/compose/certs/ must be git-ignored");
}

// ---------------------------------------------------------------------------------------------
// Throwaway certificates for the routes files.

/// What a routes file says about one route (the subset these tests need), via the real schema.
fn raw_routes(path: &Path) -> snigate::config::RawConfig {
    yaml_serde::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Writes a CA, a server certificate per terminate route (for its SNI names), its key and a CRL
/// at the paths the routes name, after `map` turned each into a path on this machine.
fn certificates_for(raw: &snigate::config::RawConfig, map: impl Fn(&Path) -> PathBuf) {
    let pki = Pki::new();
    let ca = pki.ca("ca", "deploy test CA");
    let crl = ca.crl("ca", &[]);
    for (index, route) in raw.routes.iter().enumerate() {
        let Some(tls) = &route.tls else { continue };
        let names: Vec<&str> = route.sni.iter().map(String::as_str).collect();
        let leaf = ca.server_cert(&format!("server-{index}"), &names);
        let (cert, key) = (tls.cert.as_deref().expect("cert"), tls.key.as_deref().expect("key"));
        let mut writes = vec![(map(cert), leaf.cert_pem.clone()), (map(key), leaf.key_pem.clone())];
        if let Some(client_ca) = &tls.client_ca {
            writes.push((map(client_ca), read(&ca.cert_path)));
        }
        for path in &tls.crl {
            writes.push((map(path), read(&crl)));
        }
        for (path, contents) in writes {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, contents).unwrap();
        }
    }
}

/// The routes text with every occurrence of a container path prefix replaced, then loaded.
fn load_rewritten(source: &Path, prefixes: &[(String, PathBuf)], into: &Path) -> snigate::config::Config {
    let mut text = read(source);
    for (from, to) in prefixes {
        text = text.replace(from.as_str(), &format!("{}/", to.display()));
    }
    let path = into.join("routes.yaml");
    std::fs::write(&path, text).unwrap();
    snigate::config::load(&path).unwrap_or_else(|errors| panic!("{} does not load:\n{errors}", source.display()))
}

fn mapped(path: &Path, prefixes: &[(String, PathBuf)]) -> PathBuf {
    let text = path.to_str().unwrap();
    for (from, to) in prefixes {
        if let Some(rest) = text.strip_prefix(from.as_str()) {
            return to.join(rest);
        }
    }
    panic!("{text} is under none of the mounts {prefixes:?}");
}

fn seconds(duration: &str) -> Duration {
    snigate::config::parse_duration(duration).unwrap_or_else(|e| panic!("{e}"))
}

/// `drain_timeout + close_jitter` of a routes file (defaults where absent).
fn drain_and_jitter(raw: &snigate::config::RawConfig) -> Duration {
    raw.limits.drain_timeout.unwrap_or(snigate::config::DEFAULT_DRAIN_TIMEOUT)
        + raw.limits.close_jitter.unwrap_or(snigate::config::DEFAULT_CLOSE_JITTER)
}

// ---------------------------------------------------------------------------------------------
// Kubernetes

fn k8s() -> PathBuf {
    deploy().join("kubernetes")
}

/// Every object the kustomization lists, by kind.
fn k8s_objects() -> BTreeMap<String, Value> {
    let kustomization = document(&k8s().join("kustomization.yaml"));
    let mut objects = BTreeMap::new();
    for file in strings(&kustomization, "resources") {
        for object in documents(&k8s().join(&file)) {
            let kind = text(&object, "kind").to_string();
            assert!(objects.insert(kind.clone(), object).is_none(), "two objects of kind {kind}");
        }
    }
    objects
}

fn pod_spec(objects: &BTreeMap<String, Value>) -> &Value {
    at(&objects["Deployment"], "spec.template.spec")
}

fn container(objects: &BTreeMap<String, Value>) -> &Value {
    let containers = list(pod_spec(objects), "containers");
    assert_eq!(containers.len(), 1, "one container");
    &containers[0]
}

fn container_port(container: &Value, name: &str) -> u64 {
    list(container, "ports")
        .iter()
        .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
        .and_then(|p| p.get("containerPort")?.as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

fn k8s_routes() -> snigate::config::RawConfig {
    raw_routes(&k8s().join("routes.yaml"))
}

#[test]
fn kustomization_lists_files_that_exist_and_every_manifest() {
    let kustomization = document(&k8s().join("kustomization.yaml"));
    let mut listed = strings(&kustomization, "resources");
    for generator in list(&kustomization, "configMapGenerator") {
        listed.extend(strings(generator, "files"));
    }
    for file in &listed {
        assert!(k8s().join(file).is_file(), "kustomization.yaml lists {file}, which does not exist");
    }
    for path in files_under(&k8s()) {
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name.ends_with(".yaml") && name != "kustomization.yaml" {
            assert!(listed.contains(&name), "{name} is not in kustomization.yaml");
        }
    }
    // In-place ConfigMap updates (reload without restart) need the generated name to stay fixed.
    assert_eq!(at(&kustomization, "generatorOptions.disableNameSuffixHash").as_bool(), Some(true));
    let image = text(container(&k8s_objects()), "image").to_string();
    assert!(
        list(&kustomization, "images").iter().any(|i| text(i, "name") == image),
        "kustomization `images:` must name the container image {image:?}"
    );
}

#[test]
fn kubernetes_probes_use_the_admin_port_paths() {
    let objects = k8s_objects();
    let container = container(&objects);
    let routes = k8s_routes();
    let admin = routes.admin.expect("routes.yaml sets `admin`, for the probes");
    assert!(admin.ip().is_unspecified(), "admin must listen on all interfaces for the kubelet: {admin}");
    assert_eq!(container_port(container, "admin"), u64::from(admin.port()));
    assert_eq!(container_port(container, "mqtts"), u64::from(routes.listen[0].port()));
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(text(container, &format!("{probe}.httpGet.path")), path, "{probe}");
        assert_eq!(text(container, &format!("{probe}.httpGet.port")), "admin", "{probe}");
    }
    let args = strings(container, "args");
    assert_eq!(args[..3], ["run", "--config", "/etc/snigate/routes.yaml"], "args: {args:?}");
}

#[test]
fn kubernetes_pods_are_locked_down() {
    let objects = k8s_objects();
    let pod = pod_spec(&objects);
    assert_eq!(at(pod, "securityContext.runAsNonRoot").as_bool(), Some(true));
    assert_eq!(at(pod, "securityContext.runAsUser").as_u64(), Some(65532));
    assert_eq!(text(pod, "securityContext.seccompProfile.type"), "RuntimeDefault");
    assert_eq!(at(pod, "automountServiceAccountToken").as_bool(), Some(false));
    let container = container(&objects);
    assert_eq!(at(container, "securityContext.runAsNonRoot").as_bool(), Some(true));
    assert_eq!(at(container, "securityContext.allowPrivilegeEscalation").as_bool(), Some(false));
    assert_eq!(at(container, "securityContext.readOnlyRootFilesystem").as_bool(), Some(true));
    assert_eq!(strings(container, "securityContext.capabilities.drop"), ["ALL"]);
    assert!(at(container, "securityContext.capabilities").get("add").is_none(), "no capability is added");
    assert_eq!(text(container, "securityContext.seccompProfile.type"), "RuntimeDefault");
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            at(container, &format!("resources.{kind}.{resource}"));
        }
    }
}

#[test]
fn kubernetes_config_and_secrets_are_directory_mounts_the_routes_use() {
    let objects = k8s_objects();
    let pod = pod_spec(&objects);
    let volumes: BTreeMap<&str, &Value> = list(pod, "volumes").iter().map(|v| (text(v, "name"), v)).collect();
    let mut mounts: Vec<(String, &Value)> = Vec::new();
    for mount in list(container(&objects), "volumeMounts") {
        assert!(
            mount.get("subPath").is_none() && mount.get("subPathExpr").is_none(),
            "subPath mounts never see ConfigMap/Secret updates: {mount:?}"
        );
        assert_eq!(at(mount, "readOnly").as_bool(), Some(true), "{mount:?}");
        let volume = volumes.get(text(mount, "name")).unwrap_or_else(|| panic!("no volume for {mount:?}"));
        mounts.push((text(mount, "mountPath").to_string(), volume));
    }
    let kustomization = document(&k8s().join("kustomization.yaml"));
    let generated = text(&list(&kustomization, "configMapGenerator")[0], "name");
    let config_mount = mounts
        .iter()
        .find(|(path, _)| path == "/etc/snigate")
        .unwrap_or_else(|| panic!("/etc/snigate is not mounted: {mounts:?}"));
    assert_eq!(text(config_mount.1, "configMap.name"), generated, "/etc/snigate holds the generated ConfigMap");

    // Every certificate file the routes name lives in a mounted Secret.
    let routes = k8s_routes();
    let secret_mounts: Vec<&String> =
        mounts.iter().filter(|(_, volume)| volume.get("secret").is_some()).map(|(path, _)| path).collect();
    for route in &routes.routes {
        let Some(tls) = &route.tls else { continue };
        let mut files: Vec<_> = tls.cert.iter().chain(&tls.key).collect();
        files.extend(tls.client_ca.iter());
        files.extend(tls.crl.iter());
        for file in files {
            let parent = file.parent().unwrap().to_str().unwrap();
            assert!(secret_mounts.iter().any(|m| m.as_str() == parent), "{} is in no Secret mount", file.display());
        }
    }
    // The ticket keys every replica shares come from a Secret too, never from the image or the ConfigMap.
    let key_file = &routes.session_tickets.as_ref().expect("session_tickets in routes.yaml").key_file;
    let parent = key_file.parent().unwrap().to_str().unwrap();
    assert!(secret_mounts.iter().any(|m| m.as_str() == parent), "{} is in no Secret mount", key_file.display());
}

#[test]
fn kubernetes_grace_period_covers_prestop_drain_and_jitter() {
    let objects = k8s_objects();
    let pod = pod_spec(&objects);
    let grace = Duration::from_secs(at(pod, "terminationGracePeriodSeconds").as_u64().expect("a number"));
    let pre_stop = container(&objects)
        .get("lifecycle")
        .and_then(|l| l.get("preStop")?.get("sleep")?.get("seconds")?.as_u64())
        .map_or(Duration::ZERO, Duration::from_secs);
    let needed = pre_stop + drain_and_jitter(&k8s_routes());
    assert!(grace > needed, "terminationGracePeriodSeconds {grace:?} must exceed preStop + drain + jitter {needed:?}");
}

#[test]
fn kubernetes_service_asks_for_proxy_protocol_and_the_routes_trust_only_its_sources() {
    let objects = k8s_objects();
    let service = &objects["Service"];
    assert_eq!(text(service, "spec.type"), "LoadBalancer");
    assert_eq!(text(service, "spec.externalTrafficPolicy"), "Local");
    let annotations = at(service, "metadata.annotations");
    for (key, value) in [
        ("service.beta.kubernetes.io/aws-load-balancer-proxy-protocol", "*"),
        ("service.beta.kubernetes.io/aws-load-balancer-target-group-attributes", "preserve_client_ip.enabled=false"),
        ("load-balancer.hetzner.cloud/uses-proxyprotocol", "true"),
        ("service.beta.kubernetes.io/do-loadbalancer-enable-proxy-protocol", "true"),
        ("service.beta.kubernetes.io/scw-loadbalancer-proxy-protocol-v2", "*"),
    ] {
        assert_eq!(annotations.get(key).and_then(Value::as_str), Some(value), "annotation {key}");
    }
    // The health check the NLB uses is snigate's readiness endpoint.
    let admin_port = k8s_routes().admin.unwrap().port().to_string();
    assert_eq!(
        annotations.get("service.beta.kubernetes.io/aws-load-balancer-healthcheck-port").and_then(Value::as_str),
        Some(admin_port.as_str())
    );
    let port = &list(service, "spec.ports")[0];
    assert_eq!(text(port, "targetPort"), "mqtts");
    let selector = at(service, "spec.selector");
    let pod_labels = at(&objects["Deployment"], "spec.template.metadata.labels");
    for (key, value) in selector.as_mapping().unwrap() {
        assert_eq!(pod_labels.get(key.as_str().unwrap()), Some(value), "Service selector {key:?}");
    }

    let trusted = k8s_routes().accept_proxy_from;
    assert!(!trusted.is_empty(), "the load balancer sends PROXY headers: accept_proxy_from must name it");
    for net in trusted {
        assert!(net.prefix_len() > 0, "accept_proxy_from {net} would let anyone forge client addresses");
    }
}

#[test]
fn kubernetes_pdb_covers_the_deployment_pods() {
    let objects = k8s_objects();
    let pdb = &objects["PodDisruptionBudget"];
    assert_eq!(text(pdb, "apiVersion"), "policy/v1");
    let pod_labels = at(&objects["Deployment"], "spec.template.metadata.labels");
    for (key, value) in at(pdb, "spec.selector.matchLabels").as_mapping().unwrap() {
        assert_eq!(pod_labels.get(key.as_str().unwrap()), Some(value), "PDB selector {key:?}");
    }
    assert!(at(&objects["Deployment"], "spec.replicas").as_u64().unwrap() >= 2, "a PDB needs spare replicas");
}

#[test]
fn kubernetes_routes_load_with_the_real_loader() {
    let routes_file = k8s().join("routes.yaml");
    let raw = k8s_routes();
    let dir = tempfile::tempdir().unwrap();
    // The Secrets are mounted under /etc/snigate-tls/ in the pod: here, a temp dir.
    let prefixes = vec![("/etc/snigate-tls/".to_string(), dir.path().join("tls"))];
    certificates_for(&raw, |p| mapped(p, &prefixes));
    let key_file = mapped(&raw.session_tickets.as_ref().expect("session_tickets").key_file, &prefixes);
    std::fs::create_dir_all(key_file.parent().unwrap()).unwrap();
    std::fs::write(&key_file, format!("{}\n", snigate::session_tickets::new_key_line().unwrap())).unwrap();
    let config = load_rewritten(&routes_file, &prefixes, dir.path());
    let names: Vec<&str> = config.routes.routes().iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["tenant-a", "tenant-b"]);
}

// ---------------------------------------------------------------------------------------------
// Compose

fn compose_dir() -> PathBuf {
    deploy().join("compose")
}

fn compose() -> Value {
    document(&compose_dir().join("compose.yaml"))
}

/// A service's bind mounts: (source relative to deploy/compose, target in the container).
fn bind_mounts(compose: &Value, service: &str) -> Vec<(String, String)> {
    let Some(volumes) = at(compose, &format!("services.{service}")).get("volumes") else { return Vec::new() };
    volumes
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| {
            let spec = v.as_str().expect("short volume syntax");
            let mut parts = spec.split(':');
            let source = parts.next().unwrap().to_string();
            let target = parts.next().unwrap_or_else(|| panic!("volume {spec:?} has no target")).to_string();
            (source, target)
        })
        .collect()
}

/// Whether a compose volume source is made by gen-certs.sh (and so absent from the repository).
fn generated(source: &str) -> bool {
    source.starts_with("./certs/")
}

/// The demo certificates: from gen-certs.sh when openssl is installed (CI installs it), else
/// written with rcgen at the names the routes use.
fn demo_certs(into: &Path) -> bool {
    if Command::new("openssl").arg("version").output().is_err() {
        return false;
    }
    let status = Command::new("sh")
        .arg(compose_dir().join("gen-certs.sh"))
        .env("CERTS_DIR", into)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run gen-certs.sh");
    assert!(status.success(), "gen-certs.sh failed");
    true
}

#[test]
fn compose_services_use_pinned_images_and_existing_files() {
    let compose = compose();
    let services = at(&compose, "services").as_mapping().unwrap();
    assert!(services.len() >= 3, "snigate and two brokers");
    for (name, service) in services {
        let name = name.as_str().unwrap();
        if let Some(image) = service.get("image").and_then(Value::as_str) {
            let tag = image.rsplit_once(':').map(|(_, tag)| tag).unwrap_or_else(|| panic!("{name}: pin {image}"));
            assert_ne!(tag, "latest", "{name}: pin {image}");
            if let Some(version) = image.strip_prefix("eclipse-mosquitto:") {
                let numbers: Vec<u32> = version.split(['.', '-']).map_while(|p| p.parse().ok()).collect();
                assert!(numbers >= vec![2, 1], "{name}: PROXY protocol needs Mosquitto 2.1 or later, not {version}");
            }
        }
        if let Some(context) = service.get("build").and_then(Value::as_str) {
            assert!(compose_dir().join(context).join("Dockerfile").is_file(), "{name}: no Dockerfile in {context}");
        }
        for (source, target) in bind_mounts(&compose, name) {
            assert!(source.starts_with("./"), "{name}: bind mounts are relative to deploy/compose: {source}");
            assert!(target.starts_with('/'), "{name}: {target}");
            if !generated(&source) {
                assert!(compose_dir().join(&source).exists(), "{name} mounts {source}, which does not exist");
            }
        }
    }
    let snigate = at(&compose, "services.snigate");
    assert_eq!(at(snigate, "read_only").as_bool(), Some(true));
    assert_eq!(strings(snigate, "cap_drop"), ["ALL"]);
    let grace = seconds(text(snigate, "stop_grace_period"));
    let routes = raw_routes(&compose_dir().join("snigate/routes.yaml"));
    assert!(grace > drain_and_jitter(&routes), "stop_grace_period {grace:?} must exceed drain + jitter");
    assert!(
        bind_mounts(&compose, "snigate").iter().any(|(_, target)| target == "/etc/snigate"),
        "the image reads /etc/snigate/routes.yaml: mount a directory there"
    );
}

#[test]
fn compose_routes_load_with_the_certificates_gen_certs_makes() {
    let compose = compose();
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let from_script = demo_certs(&certs);
    // Container path prefix -> this machine, from the snigate service's mounts.
    let prefixes: Vec<(String, PathBuf)> = bind_mounts(&compose, "snigate")
        .into_iter()
        .map(|(source, target)| {
            let host = match source.strip_prefix("./certs/") {
                Some(rest) => certs.join(rest),
                None => compose_dir().join(&source),
            };
            (format!("{target}/"), host)
        })
        .collect();
    let routes_file = compose_dir().join("snigate/routes.yaml");
    let raw = raw_routes(&routes_file);
    if from_script {
        for service in ["snigate", "mosquitto-b", "client"] {
            for (source, _) in bind_mounts(&compose, service).into_iter().filter(|(s, _)| generated(s)) {
                let path = certs.join(source.strip_prefix("./certs/").unwrap());
                assert!(path.exists(), "{service} mounts {source}, which gen-certs.sh does not make");
            }
        }
    } else {
        eprintln!("openssl not found: checking the compose routes with rcgen certificates instead of gen-certs.sh");
        certificates_for(&raw, |p| mapped(p, &prefixes));
    }
    let config = load_rewritten(&routes_file, &prefixes, dir.path());
    let names: Vec<&str> = config.routes.routes().iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["tenant-a", "tenant-b"]);
}

fn pem_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path).unwrap().map(|c| c.unwrap()).collect()
}

fn pem_key(path: &Path) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(path).unwrap()
}

/// The walkthrough without Docker: the compose routes on loopback, the brokers replaced by test
/// backends, and the client certificate gen-certs.sh made. Tenant A's backend must get the CN in
/// PROXY v2 (what Mosquitto makes the username); tenant B's TLS session must be the backend's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_tenants_work_with_the_gen_certs_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    if !demo_certs(&certs) {
        eprintln!("openssl not found: skipping the gen-certs.sh round trip");
        return;
    }
    let mut broker_a = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let broker_b_tls = rustls::ServerConfig::builder_with_provider(crate::support::tls::provider(false))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            pem_certs(&certs.join("mosquitto-b/server.pem")),
            pem_key(&certs.join("mosquitto-b/server.key")),
        )
        .unwrap();
    let mut broker_b = TestBackend::start(BackendOpts::tls(ProxyExpect::None, Arc::new(broker_b_tls))).await;
    let text = read(&compose_dir().join("snigate/routes.yaml"))
        .replace("0.0.0.0:8883", "127.0.0.1:0")
        .replace("\"0.0.0.0:9100\"", "\"127.0.0.1:0\"")
        .replace("/etc/snigate-tls/", &format!("{}/", certs.join("snigate").display()))
        .replace("mosquitto-a:1883", &broker_a.server())
        .replace("mosquitto-b:8883", &broker_b.server());
    let proxy = start_proxy(&text).await;

    let client = client_config(ClientOpts {
        roots: pem_certs(&certs.join("ca.pem")),
        identity: Some((pem_certs(&certs.join("client/client.pem")), pem_key(&certs.join("client/client.key")))),
        ..Default::default()
    });
    for (sni, backend) in [("mqtt.tenant-a.test", &mut broker_a), ("mqtt.tenant-b.test", &mut broker_b)] {
        let (mut tls, _) = crate::support::tls::tls_connect(proxy.addr(0), client.clone(), sni)
            .await
            .unwrap_or_else(|e| panic!("{sni}: {e}"));
        tls.write_all(b"CONNECT").await.unwrap();
        assert_eq!(read_n(&mut tls, 7).await, b"CONNECT", "{sni}");
        let accepted = backend.accepted().await;
        if sni.contains("tenant-a") {
            assert_eq!(accepted.v2().ssl_cn().as_deref(), Some("device-1"), "the username Mosquitto will use");
            assert_eq!(accepted.v2().ssl_verify(), Some(0), "require_certificate needs verify == 0");
        } else {
            assert!(accepted.header.is_none(), "no PROXY header before the broker's own TLS");
        }
    }
    let without_certificate = crate::support::tls::simple_client(&pem_certs(&certs.join("ca.pem"))[0], None);
    crate::support::tls::expect_refused(proxy.addr(0), without_certificate, "mqtt.tenant-a.test").await;
    proxy.shutdown().await;
}

/// The keys these configs may use, each checked against Mosquitto v2.1.2's src/conf.c.
const MOSQUITTO_KEYS: &[&str] = &[
    "listener",
    "enable_proxy_protocol",
    "proxy_protocol_v2_require_tls",
    "require_certificate",
    "use_identity_as_username",
    "allow_anonymous",
    "acl_file",
    "certfile",
    "keyfile",
    "cafile",
    "persistence",
    "log_dest",
    "log_type",
    "connection_messages",
];

/// `key value…` lines of a mosquitto.conf (comments and blank lines dropped), in order.
fn mosquitto_conf(path: &Path) -> Vec<(String, String)> {
    read(path)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let (key, value) =
                line.split_once(' ').unwrap_or_else(|| panic!("{}: `{line}` has no value", path.display()));
            assert!(MOSQUITTO_KEYS.contains(&key), "{}: unknown key {key}", path.display());
            (key.to_string(), value.trim().to_string())
        })
        .collect()
}

fn conf_value<'a>(conf: &'a [(String, String)], key: &str) -> Option<&'a str> {
    conf.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[test]
fn compose_brokers_match_their_routes() {
    let compose = compose();
    let routes = raw_routes(&compose_dir().join("snigate/routes.yaml"));
    let mut checked = 0;
    for route in &routes.routes {
        let server = &route.backend.servers[0];
        let (service, port) = server.rsplit_once(':').unwrap();
        let mounts = bind_mounts(&compose, service);
        let host_path = |container: &str| -> PathBuf {
            let (source, target) = mounts
                .iter()
                .find(|(_, target)| container.starts_with(&format!("{target}/")))
                .unwrap_or_else(|| panic!("{service}: {container} is in no mount"));
            let rest = &container[target.len() + 1..];
            compose_dir().join(source).join(rest)
        };
        let conf = mosquitto_conf(&host_path("/mosquitto/config/mosquitto.conf"));
        let listener = conf_value(&conf, "listener").expect("a listener");
        assert_eq!(
            listener.split_whitespace().next(),
            Some(port),
            "{service} listens where route {} connects",
            route.name
        );
        assert_eq!(conf_value(&conf, "require_certificate"), Some("true"), "{service}");
        assert_eq!(conf_value(&conf, "use_identity_as_username"), Some("true"), "{service}");
        let acl = conf_value(&conf, "acl_file").expect("an ACL");
        assert!(host_path(acl).is_file(), "{service}: {acl} is not in the mounted config");

        use snigate::config::{Mode, ProxyProtocol};
        match (route.mode, route.backend.proxy_protocol) {
            (Mode::Terminate, ProxyProtocol::V2) => {
                assert_eq!(conf_value(&conf, "enable_proxy_protocol"), Some("2"), "{service}");
                // Mosquitto 2.1 refuses these with `enable_proxy_protocol 2` (config__check_proxy).
                for key in ["certfile", "keyfile"] {
                    assert!(conf_value(&conf, key).is_none(), "{service}: {key} with enable_proxy_protocol 2");
                }
                assert_eq!(
                    route.tls.as_ref().map(|t| t.client_auth),
                    Some(snigate::config::ClientAuth::Required),
                    "the broker requires a certificate: snigate must require one"
                );
            }
            (Mode::Passthrough, ProxyProtocol::None) => {
                // The broker terminates TLS; Mosquitto reads no PROXY header before a TLS hello.
                assert!(conf_value(&conf, "enable_proxy_protocol").is_none(), "{service}");
                for key in ["certfile", "keyfile", "cafile"] {
                    let file = conf_value(&conf, key).unwrap_or_else(|| panic!("{service}: {key}"));
                    let (source, _) = mounts.iter().find(|(_, t)| file.starts_with(&format!("{t}/"))).unwrap();
                    assert!(generated(source), "{service}: {file} should come from gen-certs.sh");
                }
            }
            other => panic!("route {}: no broker config for {other:?}", route.name),
        }
        checked += 1;
    }
    assert_eq!(checked, 2);
}

// ---------------------------------------------------------------------------------------------
// systemd

/// `[Section]` -> key -> values (keys may repeat), from a unit file.
fn unit_file(text: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut sections: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut current = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name.to_string());
            sections.entry(name.to_string()).or_default();
            continue;
        }
        let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("not `key=value`: {line}"));
        let section = current.clone().unwrap_or_else(|| panic!("{line} is outside a section"));
        sections.get_mut(&section).unwrap().entry(key.trim().to_string()).or_default().push(value.trim().to_string());
    }
    sections
}

fn unit_text() -> String {
    read(&deploy().join("systemd/snigate.service"))
}

#[test]
fn systemd_unit_is_hardened_and_reloads_with_sighup() {
    let unit = unit_file(&unit_text());
    let service = &unit["Service"];
    let one = |key: &str| -> &str {
        let values = service.get(key).unwrap_or_else(|| panic!("[Service] has no {key}"));
        values.last().unwrap()
    };
    for (key, value) in [
        ("AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
        ("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("KillSignal", "SIGTERM"),
        ("Restart", "on-failure"),
        ("ConfigurationDirectory", "snigate"),
    ] {
        assert_eq!(one(key), value, "{key}");
    }
    assert!(one("SystemCallFilter").contains('@') && service["SystemCallFilter"][0] == "@system-service");
    let families = one("RestrictAddressFamilies");
    assert!(families.contains("AF_INET") && families.contains("AF_INET6"), "{families}");
    assert!(one("LimitNOFILE").parse::<u64>().unwrap() >= 100_000, "two sockets per connection");
    assert!(
        service.contains_key("DynamicUser") || service.get("User").is_some_and(|u| u[0] != "root"),
        "a dedicated or dynamic user"
    );
    assert!(one("ExecStartPre").contains("snigate check --config /etc/snigate/routes.yaml"));
    assert!(one("ExecStart").contains("snigate run --config /etc/snigate/routes.yaml"));
    assert_eq!(one("ExecReload"), "/bin/kill -HUP $MAINPID", "the last ExecReload sends SIGHUP");
    let stop = seconds(&format!("{}s", one("TimeoutStopSec")));
    let drain = snigate::config::DEFAULT_DRAIN_TIMEOUT + snigate::config::DEFAULT_CLOSE_JITTER;
    assert!(stop > drain, "TimeoutStopSec {stop:?} must exceed the default drain + jitter {drain:?}");
    assert!(unit["Install"].contains_key("WantedBy"));
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze not installed: skipping `systemd-analyze verify`");
        return;
    };
    assert!(version.status.success());
    let dir = tempfile::tempdir().unwrap();
    // verify checks that ExecStart's binary exists: point it at the test build.
    let unit = unit_text().replace("/usr/local/bin/snigate", env!("CARGO_BIN_EXE_snigate"));
    let path = dir.path().join("snigate.service");
    std::fs::write(&path, unit).unwrap();
    let output = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "systemd-analyze verify failed:\n{said}");
    for complaint in ["Unknown key", "Unknown lvalue", "Failed to parse", "ignoring"] {
        assert!(!said.contains(complaint), "systemd-analyze verify: {said}");
    }
}

// ---------------------------------------------------------------------------------------------
// The README's walkthrough quotes these files: keep them in step.

#[test]
fn readme_walkthrough_quotes_the_compose_files() {
    let readme = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"));
    let walkthrough = readme.split("\n## Mosquitto 2.1 walkthrough\n").nth(1).expect("the walkthrough section");
    let walkthrough = walkthrough.split("\n## ").next().unwrap();
    let blocks: Vec<&str> = walkthrough.split("```").skip(1).step_by(2).collect();
    let conf = read(&compose_dir().join("mosquitto-a/mosquitto.conf"));
    let routes = read(&compose_dir().join("snigate/routes.yaml"));
    let quoted = |block: &str, file: &str, name: &str| {
        for line in block.lines().skip(1) {
            let line = line.split(" #").next().unwrap().trim();
            if !line.is_empty() {
                assert!(file.lines().any(|l| l.trim().starts_with(line)), "README quotes `{line}`, not in {name}");
            }
        }
    };
    let yaml = blocks.iter().find(|b| b.starts_with("yaml")).expect("the routes excerpt");
    quoted(yaml, &routes, "snigate/routes.yaml");
    let text = blocks.iter().find(|b| b.starts_with("text")).expect("the mosquitto.conf excerpt");
    quoted(text, &conf, "mosquitto-a/mosquitto.conf");
    let compose = compose();
    let client_mounts: Vec<String> = bind_mounts(&compose, "client").into_iter().map(|(_, target)| target).collect();
    for path in ["/certs/ca.pem", "/certs/client/client.pem", "/certs/client/client.key"] {
        assert!(walkthrough.contains(path));
        assert!(client_mounts.iter().any(|m| path.starts_with(m.as_str())), "{path} is not mounted in `client`");
    }
}
