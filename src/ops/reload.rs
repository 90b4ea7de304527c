//! Reload triggers: a watch on the config file and every certificate, key, CA and CRL file and
//! certificate directory it names (debounced), next to SIGHUP. Each trigger asks the server to reload; the server parses,
//! validates, builds every TLS config and only then swaps the route table, so a bad file changes
//! nothing. Live connections keep the table they started with.
//!
//! Directories are watched rather than files: editors and Kubernetes replace files by rename
//! (ConfigMap and Secret volumes swap a `..data` symlink), which a file watch would miss. When a
//! reload names other files, the watch moves to them. A certificate directory (`cert_dir`) is
//! watched itself, so a file added to it or removed from it is a change like an edit.
//!
//! Only events that can change what is loaded count (a write, create, rename or removal), never a
//! read: a reload reads every watched file, and `snigate check` or a backup job reads them too.
//! Metadata-only changes (chmod, chown, touch) do not count either: the content is the same, so a
//! reload would build the same table and only throw away session caches; SIGHUP reloads always.
//! A burst of events whose files end up with the content already loaded reloads nothing.

use std::collections::BTreeSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ops::server::ReloadHandle;
use crate::proxy::cert_dir;

/// Events closer together than this are one change (an editor writes, renames, chmods).
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Watches `files` and reloads on every change until `stop` is cancelled. Returns an error when
/// the OS watch cannot be set up (SIGHUP still works then).
pub fn watch(files: Vec<PathBuf>, handle: ReloadHandle, stop: CancellationToken) -> notify::Result<()> {
    let (changed_tx, mut changed_rx) = mpsc::unbounded_channel();
    let set = WatchedSet::new(&files);
    // Taken before the watch starts: a change after this point is an event and a new fingerprint.
    let mut loaded = Some(Fingerprint::of(&set.files));
    let mut watching = Watching { _debouncer: watcher(&set, changed_tx.clone())?, set };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                changed = changed_rx.recv() => if changed.is_none() { return },
            }
            while changed_rx.try_recv().is_ok() {}
            let now = fingerprint_off_the_runtime(&watching.set).await;
            if now.is_some() && now == loaded {
                tracing::debug!("watched files touched but their content is what is loaded; no reload");
                continue;
            }
            loaded = now;
            let reloaded = match handle.reload().await {
                Ok(reloaded) => reloaded,
                Err(_) => {
                    // The server logged the reason (every problem, file:line:column) once.
                    tracing::warn!("reload after a file change failed; the running config stays");
                    continue;
                }
            };
            tracing::info!(routes = reloaded.routes, "reloaded after a file change");
            let now = WatchedSet::new(&reloaded.files);
            if now.files != watching.set.files {
                // The new config names other files: watch those from now on.
                match watcher(&now, changed_tx.clone()) {
                    Ok(debouncer) => {
                        loaded = fingerprint_off_the_runtime(&now).await;
                        watching = Watching { _debouncer: debouncer, set: now };
                    }
                    Err(error) => tracing::warn!(%error, "cannot watch the new config's files; reload with SIGHUP"),
                }
            }
        }
    });
    Ok(())
}

/// Reads every watched file on a blocking thread (a slow disk must not stall the runtime); `None`
/// if that thread failed, which counts as a change.
async fn fingerprint_off_the_runtime(set: &WatchedSet) -> Option<Fingerprint> {
    let files = set.files.clone();
    tokio::task::spawn_blocking(move || Fingerprint::of(&files)).await.ok()
}

/// A hash of the content of every watched file (a missing or unreadable file hashes as such) and,
/// for a certificate directory, of the names and content of the files a load reads from it:
/// equal fingerprints mean a reload would read the same bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint(u64);

impl Fingerprint {
    fn of(files: &BTreeSet<PathBuf>) -> Fingerprint {
        let mut hasher = DefaultHasher::new();
        for file in files {
            if file.is_dir() {
                hash_directory(file, &mut hasher);
            } else {
                hash_file(file, &mut hasher);
            }
        }
        Fingerprint(hasher.finish())
    }
}

fn hash_file(file: &Path, hasher: &mut DefaultHasher) {
    file.hash(hasher);
    match std::fs::read(file) {
        Ok(content) => content.hash(hasher),
        Err(error) => error.kind().hash(hasher),
    }
}

/// The certificate files of `dir` (their names and content), as a load lists them.
fn hash_directory(dir: &Path, hasher: &mut DefaultHasher) {
    dir.hash(hasher);
    match cert_dir::candidate_files(dir) {
        Ok(files) => files.iter().for_each(|file| hash_file(file, hasher)),
        Err(error) => error.to_string().hash(hasher),
    }
}

/// Whether an event of this kind can change what a reload reads. Reads (open, access,
/// close-after-read) cannot, nor can metadata-only changes (see the module doc).
fn may_change_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => true,
        // A backend that cannot tell what happened: the fingerprint decides.
        EventKind::Any | EventKind::Other => true,
    }
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
            Ok(events) => events
                .iter()
                .filter(|e| may_change_content(&e.kind))
                .flat_map(|e| e.paths.iter())
                .any(|p| filter.concerns(p)),
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

/// The watched files and certificate directories, and the directories to watch for them.
#[derive(Debug, Clone)]
struct WatchedSet {
    files: BTreeSet<PathBuf>,
    /// The certificate directories among `files`: every entry in them concerns us.
    cert_dirs: BTreeSet<PathBuf>,
    directories: BTreeSet<PathBuf>,
}

impl WatchedSet {
    fn new(files: &[PathBuf]) -> WatchedSet {
        let files: BTreeSet<PathBuf> = files.iter().map(|f| absolute(f)).collect();
        let cert_dirs: BTreeSet<PathBuf> = files.iter().filter(|f| f.is_dir()).cloned().collect();
        let parents = files.iter().filter_map(|f| f.parent().map(Path::to_path_buf));
        let directories = parents.chain(cert_dirs.iter().cloned()).collect();
        WatchedSet { files, cert_dirs, directories }
    }

    /// Whether an event on `path` may change what we loaded.
    fn concerns(&self, path: &Path) -> bool {
        let kubernetes_swap = path.file_name().is_some_and(|name| name.to_string_lossy().starts_with(".."));
        let path = absolute(path);
        let in_cert_dir = path.parent().is_some_and(|parent| self.cert_dirs.contains(parent));
        self.files.contains(&path) || in_cert_dir || kubernetes_swap
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

    #[test]
    fn any_entry_of_a_certificate_directory_concerns_us_and_its_listing_is_fingerprinted() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        std::fs::create_dir(&certs).unwrap();
        let set = WatchedSet::new(&[dir.path().join("routes.yaml"), certs.clone()]);
        assert!(set.concerns(&certs.join("new.pem")));
        assert!(set.directories.contains(&absolute(&certs)));
        let files = set.files.clone();
        let empty = Fingerprint::of(&files);
        std::fs::write(certs.join("notes.txt"), "not a certificate").unwrap();
        assert_eq!(Fingerprint::of(&files), empty, "files a load does not read are not a change");
        std::fs::write(certs.join("a.pem"), "pem").unwrap();
        let added = Fingerprint::of(&files);
        assert_ne!(added, empty, "a file added");
        std::fs::write(certs.join("a.pem"), "other pem").unwrap();
        assert_ne!(Fingerprint::of(&files), added, "a file changed");
        std::fs::remove_file(certs.join("a.pem")).unwrap();
        assert_eq!(Fingerprint::of(&files), empty, "a file removed");
    }

    #[test]
    fn reads_and_metadata_changes_are_not_changes() {
        use notify::event::{DataChange, MetadataKind, RenameMode};
        let ignored = [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Read),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::Permissions)),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::WriteTime)),
        ];
        for kind in ignored {
            assert!(!may_change_content(&kind), "{kind:?} must not reload");
        }
        let changes = [
            EventKind::Create(notify::event::CreateKind::File),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
            EventKind::Remove(notify::event::RemoveKind::File),
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
        ];
        for kind in changes {
            assert!(may_change_content(&kind), "{kind:?} must reload");
        }
    }

    #[test]
    fn fingerprint_follows_content_not_rewrites_of_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("routes.yaml");
        let files = BTreeSet::from([file.clone()]);
        let missing = Fingerprint::of(&files);
        std::fs::write(&file, "listen: []\n").unwrap();
        let first = Fingerprint::of(&files);
        assert_ne!(first, missing);
        std::fs::write(&file, "listen: []\n").unwrap();
        assert_eq!(Fingerprint::of(&files), first, "the same bytes written again");
        std::fs::write(&file, "listen: [\"127.0.0.1:1\"]\n").unwrap();
        assert_ne!(Fingerprint::of(&files), first);
    }
}
