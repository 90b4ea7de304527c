//! The registry of live relayed sessions: what each one is connected to, so that a backend going
//! down, a CRL revoking a client certificate, or the end of a drain can close exactly the sessions
//! concerned — spread over a jitter window so thousands of MQTT clients do not reconnect at once.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics::close_cause::CloseCause;
use crate::proxy::tls::ClientCertId;

/// What a live session is attached to.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub route: String,
    /// The backend server as configured (`host:port`), as health checks name it.
    pub backend_server: String,
    pub client_cert: Option<ClientCertId>,
}

#[derive(Debug)]
struct Entry {
    info: SessionInfo,
    close: CancellationToken,
    reason: Arc<OnceLock<CloseCause>>,
}

/// A slab, not a hash map: entries sit densely at the front of one allocation, so memory that
/// was never used is never touched (resident memory per idle session), and keys are free slots.
#[derive(Debug, Default)]
pub struct Sessions {
    live: Mutex<slab::Slab<Entry>>,
}

/// A registered session; dropping it removes the registration.
#[derive(Debug)]
pub struct Registration {
    sessions: Arc<Sessions>,
    key: usize,
    reason: Arc<OnceLock<CloseCause>>,
}

impl Registration {
    /// Why the registry closed this session, if it did.
    pub fn close_reason(&self) -> Option<CloseCause> {
        self.reason.get().copied()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.sessions.lock().remove(self.key);
    }
}

impl Sessions {
    pub fn new() -> Arc<Sessions> {
        Arc::new(Sessions::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, slab::Slab<Entry>> {
        self.live.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a session whose relay stops when `close` is cancelled.
    pub fn register(self: &Arc<Self>, info: SessionInfo, close: CancellationToken) -> Registration {
        let reason = Arc::new(OnceLock::new());
        let key = self.lock().insert(Entry { info, close, reason: reason.clone() });
        Registration { sessions: Arc::clone(self), key, reason }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes every session `select` picks, each at a random moment within `jitter`, recording
    /// `reason` for its log line; returns how many were picked.
    pub fn close_where(&self, jitter: Duration, reason: CloseCause, select: impl Fn(&SessionInfo) -> bool) -> usize {
        let tokens: Vec<CancellationToken> = self
            .lock()
            .iter()
            .map(|(_, entry)| entry)
            .filter(|entry| select(&entry.info))
            .map(|entry| {
                let _ = entry.reason.set(reason);
                entry.close.clone()
            })
            .collect();
        let count = tokens.len();
        for token in tokens {
            close_within(token, jitter);
        }
        count
    }
}

/// Cancels `token` after a random delay in `[0, jitter)`.
pub fn close_within(token: CancellationToken, jitter: Duration) {
    let delay = jitter.mul_f64(fastrand::f64());
    if delay.is_zero() {
        token.cancel();
        return;
    }
    tokio::spawn(async move {
        tokio::select! {
            () = tokio::time::sleep(delay) => token.cancel(),
            () = token.cancelled() => {}
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(route: &str, backend: &str) -> SessionInfo {
        SessionInfo { route: route.into(), backend_server: backend.into(), client_cert: None }
    }

    #[tokio::test(start_paused = true)]
    async fn close_where_cancels_only_the_selected_sessions_within_the_jitter() {
        let sessions = Sessions::new();
        let a = CancellationToken::new();
        let b = CancellationToken::new();
        let ra = sessions.register(info("r", "127.0.0.1:1"), a.clone());
        let _rb = sessions.register(info("r", "127.0.0.1:2"), b.clone());
        assert_eq!(
            sessions
                .close_where(Duration::from_secs(10), CloseCause::BackendDown, |s| s.backend_server == "127.0.0.1:1"),
            1
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(a.is_cancelled());
        assert_eq!(ra.close_reason(), Some(CloseCause::BackendDown));
        assert!(!b.is_cancelled());
    }

    #[test]
    fn registration_is_removed_on_drop() {
        let sessions = Sessions::new();
        let registration = sessions.register(info("r", "127.0.0.1:1"), CancellationToken::new());
        assert_eq!(sessions.len(), 1);
        drop(registration);
        assert!(sessions.is_empty());
    }
}
