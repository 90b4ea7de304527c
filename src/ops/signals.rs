//! Process signals: SIGTERM and SIGINT start the drain, a second one ends it at once (closing
//! what is left, as Ctrl-C twice does elsewhere), SIGHUP reloads the config file.

use std::io;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::ops::server::{ReloadError, ReloadHandle};

/// Installs the handlers and returns; the handling runs in a background task. The first
/// SIGTERM/SIGINT cancels `shutdown`, the next one `end_drain`.
pub fn spawn(reload: ReloadHandle, shutdown: CancellationToken, end_drain: CancellationToken) -> io::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = terminate.recv() => stop("SIGTERM", &shutdown, &end_drain),
                _ = interrupt.recv() => stop("SIGINT", &shutdown, &end_drain),
                // In its own task: a slow reload must not keep this loop from seeing SIGTERM.
                _ = hangup.recv() => drop(tokio::spawn(reload_on_hangup(reload.clone()))),
            }
        }
    });
    Ok(())
}

fn stop(signal: &str, shutdown: &CancellationToken, end_drain: &CancellationToken) {
    if shutdown.is_cancelled() {
        tracing::warn!("{signal} again: ending the drain, closing the remaining connections");
        end_drain.cancel();
    } else {
        tracing::info!("{signal}: draining (send it again to close the remaining connections at once)");
        shutdown.cancel();
    }
}

async fn reload_on_hangup(reload: ReloadHandle) {
    match reload.reload().await {
        Ok(reloaded) => tracing::info!(routes = reloaded.routes, "SIGHUP: reloaded"),
        Err(ReloadError::Stopped) => tracing::info!("SIGHUP: not reloaded, shutting down"),
        // The server logged the reason (every problem, file:line:column) once.
        Err(_) => tracing::warn!("SIGHUP: reload failed; the running config stays"),
    }
}
