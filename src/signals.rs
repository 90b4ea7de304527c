//! Process signals: SIGTERM and SIGINT start the drain, SIGHUP reloads the routes file.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::reload;
use crate::routes::RouteTable;

/// Installs the handlers and returns; the handling runs in a background task.
pub fn spawn(config_path: PathBuf, routes: Arc<ArcSwap<RouteTable>>, shutdown: CancellationToken) -> io::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = terminate.recv() => {
                    tracing::info!("SIGTERM: stopping");
                    shutdown.cancel();
                }
                _ = interrupt.recv() => {
                    tracing::info!("SIGINT: stopping");
                    shutdown.cancel();
                }
                _ = hangup.recv() => match reload::reload(&config_path, &routes) {
                    Ok(count) => tracing::info!(routes = count, "SIGHUP: routes reloaded"),
                    Err(errors) => {
                        for error in &errors.0 {
                            tracing::error!(%error, "SIGHUP: reload failed; keeping the running routes");
                        }
                    }
                },
            }
        }
    });
    Ok(())
}
