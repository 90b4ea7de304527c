//! Reload triggers: a watch on the config file and every certificate, key, CA and CRL file it
//! names (debounced), next to SIGHUP. Each trigger asks the server to reload; the server parses,
//! validates, builds every TLS config and only then swaps the route table, so a bad file changes
//! nothing. Live connections keep the table they started with.
//!
//! Directories are watched rather than files: editors and Kubernetes replace files by rename
//! (ConfigMap and Secret volumes swap a `..data` symlink), which a file watch would miss.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::server::ReloadHandle;

/// Events closer together than this are one change (an editor writes, renames, chmods).
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Watches `files` and reloads on every change until `stop` is cancelled. Returns an error when
/// the OS watch cannot be set up (SIGHUP still works then).
pub fn watch(files: Vec<PathBuf>, handle: ReloadHandle, stop: CancellationToken) -> notify::Result<()> {
    let (changed_tx, mut changed_rx) = mpsc::unbounded_channel();
    let mut watched = WatchedSet::new(&files);
    let event_filter = watched.clone();
    let mut debouncer = new_debouncer(DEBOUNCE, None, move |result: DebounceEventResult| {
        let relevant = match result {
            Ok(events) => events.iter().flat_map(|e| e.paths.iter()).any(|p| event_filter.concerns(p)),
            Err(_) => true,
        };
        if relevant {
            let _ = changed_tx.send(());
        }
    })?;
    for directory in &watched.directories {
        debouncer.watch(directory, RecursiveMode::NonRecursive)?;
    }
    tokio::spawn(async move {
        // The debouncer stops watching when dropped, so it lives in this task.
        let _debouncer = debouncer;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                changed = changed_rx.recv() => if changed.is_none() { return },
            }
            while changed_rx.try_recv().is_ok() {}
            match handle.reload().await {
                Ok(reloaded) => {
                    tracing::info!(routes = reloaded.routes, "reloaded after a file change");
                    let now = WatchedSet::new(&reloaded.files);
                    if now.directories != watched.directories {
                        tracing::warn!("the set of watched directories changed; new ones are watched after a restart (SIGHUP still reloads)");
                    }
                    watched = now;
                }
                Err(error) => tracing::error!(%error, "reload after a file change failed; the running config stays"),
            }
        }
    });
    Ok(())
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
