//! Process signals: SIGTERM and SIGINT start the drain, SIGHUP reloads the config file.

use std::io;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::ops::server::ReloadHandle;

/// Installs the handlers and returns; the handling runs in a background task.
pub fn spawn(reload: ReloadHandle, shutdown: CancellationToken) -> io::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = terminate.recv() => {
                    tracing::info!("SIGTERM: draining");
                    shutdown.cancel();
                }
                _ = interrupt.recv() => {
                    tracing::info!("SIGINT: draining");
                    shutdown.cancel();
                }
                _ = hangup.recv() => match reload.reload().await {
                    Ok(reloaded) => tracing::info!(routes = reloaded.routes, "SIGHUP: reloaded"),
                    Err(error) => tracing::error!(%error, "SIGHUP: reload failed; the running config stays"),
                },
            }
        }
    });
    Ok(())
}
