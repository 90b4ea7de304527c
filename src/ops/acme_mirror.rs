//! The TLS-ALPN-01 answers of processes sharing an ACME `storage`: the process that orders
//! writes each name's key authorization to `<storage>/challenges/<name>`, and every process
//! following that storage (itself included) loads them into its [`TlsAlpnChallenges`]. So the
//! CA's validation is answered whichever process it reaches: `reuse_port` siblings on one host,
//! or replicas behind one address on a shared volume. Polled, not watched: a watch does not see
//! another host's writes to a network file system.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::ops::acme_storage;
use crate::proxy::acme_challenge::{Answer, TlsAlpnChallenges};

/// How often a storage's published challenges are read: an empty directory listing, four times
/// a second, while the ordering process waits [`PUBLISH_WAIT`] before telling the CA it is ready.
pub const POLL: Duration = Duration::from_millis(250);
/// How long an order waits between publishing its answers and telling the CA to validate: two
/// polls, so every process sharing the storage has loaded them.
pub const PUBLISH_WAIT: Duration = Duration::from_millis(2 * 250);

/// Loads `storage`'s published challenges into `challenges` until `stop`, then takes back what it
/// loaded.
pub async fn mirror(storage: PathBuf, challenges: TlsAlpnChallenges, stop: CancellationToken) {
    let mut loaded: HashMap<String, (String, Answer)> = HashMap::new();
    loop {
        let dir = storage.clone();
        let published = tokio::task::spawn_blocking(move || acme_storage::read_challenges(&dir)).await;
        if let Ok(published) = published {
            sync(&challenges, &mut loaded, published);
        }
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            () = tokio::time::sleep(POLL) => {}
        }
    }
    loaded.values().for_each(|(_, answer)| challenges.remove(answer));
}

/// Makes `loaded` (and what it put in `challenges`) match `published`.
fn sync(
    challenges: &TlsAlpnChallenges,
    loaded: &mut HashMap<String, (String, Answer)>,
    published: HashMap<String, String>,
) {
    loaded.retain(|name, (key_authorization, answer)| {
        let keep = published.get(name) == Some(key_authorization);
        if !keep {
            challenges.remove(answer);
        }
        keep
    });
    for (name, key_authorization) in published {
        if loaded.contains_key(&name) {
            continue;
        }
        match challenges.add(&name, &key_authorization) {
            Ok(answer) => {
                loaded.insert(name, (key_authorization, answer));
            }
            Err(error) => tracing::warn!(%error, file = %name, "a published ACME challenge is not usable; skipped"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme_alpn() -> Vec<Vec<u8>> {
        vec![b"acme-tls/1".to_vec()]
    }

    #[test]
    fn published_challenges_are_answered_until_withdrawn_or_changed() {
        let challenges = TlsAlpnChallenges::new();
        let mut loaded = HashMap::new();
        let published = |entries: &[(&str, &str)]| -> HashMap<String, String> {
            entries.iter().map(|(name, key)| (name.to_string(), key.to_string())).collect()
        };
        sync(&challenges, &mut loaded, published(&[("a.test", "t.1"), ("b.test", "t.2")]));
        assert!(challenges.config_for(Some("a.test"), &acme_alpn()).is_some());
        assert!(challenges.config_for(Some("b.test"), &acme_alpn()).is_some());

        sync(&challenges, &mut loaded, published(&[("a.test", "t.3")]));
        assert!(challenges.config_for(Some("b.test"), &acme_alpn()).is_none(), "withdrawn");
        assert_eq!(loaded.get("a.test").map(|(key, _)| key.as_str()), Some("t.3"), "a new key authorization");
        assert!(challenges.config_for(Some("a.test"), &acme_alpn()).is_some());

        sync(&challenges, &mut loaded, published(&[("*.bad", "t.4")]));
        assert!(loaded.is_empty(), "a wildcard file is skipped and a.test withdrawn");
        assert!(challenges.config_for(Some("a.test"), &acme_alpn()).is_none());
    }
}
