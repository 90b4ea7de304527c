//! Reload triggers: a watch on the config file and every certificate, key, CA and CRL file it
//! names (debounced), next to SIGHUP. Each trigger asks the server to reload; the server parses,
//! validates, builds every TLS config and only then swaps the route table, so a bad file changes
//! nothing. Live connections keep the table they started with.
//!
//! Directories are watched rather than files: editors and Kubernetes replace files by rename
//! (ConfigMap and Secret volumes swap a `..data` symlink), which a file watch would miss. When a
//! reload names other files, the watch moves to them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ops::server::ReloadHandle;

/// Events closer together than this are one change (an editor writes, renames, chmods).
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Watches `files` and reloads on every change until `stop` is cancelled. Returns an error when
/// the OS watch cannot be set up (SIGHUP still works then).
pub fn watch(files: Vec<PathBuf>, handle: ReloadHandle, stop: CancellationToken) -> notify::Result<()> {
    let (changed_tx, mut changed_rx) = mpsc::unbounded_channel();
    let set = WatchedSet::new(&files);
    let mut watching = Watching { _debouncer: watcher(&set, changed_tx.clone())?, set };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                changed = changed_rx.recv() => if changed.is_none() { return },
            }
            while changed_rx.try_recv().is_ok() {}
            let reloaded = match handle.reload().await {
                Ok(reloaded) => reloaded,
                Err(error) => {
                    tracing::error!(%error, "reload after a file change failed; the running config stays");
                    continue;
                }
            };
            tracing::info!(routes = reloaded.routes, "reloaded after a file change");
            let now = WatchedSet::new(&reloaded.files);
            if now.files != watching.set.files {
                // The new config names other files: watch those from now on.
                match watcher(&now, changed_tx.clone()) {
                    Ok(debouncer) => watching = Watching { _debouncer: debouncer, set: now },
                    Err(error) => tracing::warn!(%error, "cannot watch the new config's files; reload with SIGHUP"),
                }
            }
        }
    });
    Ok(())
}

/// The live OS watch (it stops when dropped) and what it covers.
struct Watching {
    _debouncer: Watcher,
    set: WatchedSet,
}

type Watcher = notify_debouncer_full::Debouncer<notify::RecommendedWatcher, notify_debouncer_full::RecommendedCache>;

/// A debounced watch on the directories of `set` that signals `changed` for events concerning it.
fn watcher(set: &WatchedSet, changed: mpsc::UnboundedSender<()>) -> notify::Result<Watcher> {
    let filter = set.clone();
    let mut debouncer = new_debouncer(DEBOUNCE, None, move |result: DebounceEventResult| {
        let relevant = match result {
            Ok(events) => events.iter().flat_map(|e| e.paths.iter()).any(|p| filter.concerns(p)),
            Err(_) => true,
        };
        if relevant {
            let _ = changed.send(());
        }
    })?;
    for directory in &set.directories {
        debouncer.watch(directory, RecursiveMode::NonRecursive)?;
    }
    Ok(debouncer)
}

/// The watched files and the directories that hold them.
#[derive(Debug, Clone)]
struct WatchedSet {
    files: BTreeSet<PathBuf>,
    directories: BTreeSet<PathBuf>,
}

impl WatchedSet {
    fn new(files: &[PathBuf]) -> WatchedSet {
        let files: BTreeSet<PathBuf> = files.iter().map(|f| absolute(f)).collect();
        let directories = files.iter().filter_map(|f| f.parent().map(Path::to_path_buf)).collect();
        WatchedSet { files, directories }
    }

    /// Whether an event on `path` may change what we loaded.
    fn concerns(&self, path: &Path) -> bool {
        let kubernetes_swap = path.file_name().is_some_and(|name| name.to_string_lossy().starts_with(".."));
        self.files.contains(&absolute(path)) || kubernetes_swap
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_on_named_files_and_kubernetes_swaps_concern_us() {
        let set = WatchedSet::new(&[PathBuf::from("/etc/snigate/routes.yaml"), PathBuf::from("/certs/a.pem")]);
        assert!(set.concerns(Path::new("/etc/snigate/routes.yaml")));
        assert!(set.concerns(Path::new("/certs/a.pem")));
        assert!(set.concerns(Path::new("/etc/snigate/..data")));
        assert!(!set.concerns(Path::new("/certs/unrelated.txt")));
        assert_eq!(set.directories.len(), 2);
    }
}
