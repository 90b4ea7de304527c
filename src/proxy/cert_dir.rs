//! A certificate directory (`tls.cert_dir`): which of its files are certificates and which key
//! goes with each. Nothing here parses PEM (that is `pem_files.rs`, once per load) or chooses a
//! certificate for a handshake (that is `cert_resolver.rs`).
//!
//! A `NAME.pem` holds a chain and its key (HAProxy's one-file format), or takes its key from
//! `NAME.pem.key` next to it when that exists (as HAProxy's `crt` directories do); a `NAME.crt`
//! takes its key from `NAME.key` next to it. Other files (`.ocsp`, `README`), hidden files (Kubernetes'
//! `..data`) and subdirectories are left alone; symlinks are followed. Entries sort by file name,
//! which is what makes "the first file" (the default certificate without `cert`) well defined.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// A one-file certificate: chain and key in one PEM file.
const COMBINED_EXTENSION: &str = "pem";
/// A certificate whose key is the same name with [`KEY_EXTENSION`].
const CERT_EXTENSION: &str = "crt";
const KEY_EXTENSION: &str = "key";

/// One certificate of the directory: its chain's file and its key's file (the same for `.pem`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The certificate's file name, as messages and `check` show it.
    pub name: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A file of the directory that cannot be a certificate, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirFileProblem {
    pub name: String,
    pub message: String,
}

/// What a directory holds: its certificates by file name, and the files that do not pair up.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Listing {
    pub entries: Vec<DirEntry>,
    pub problems: Vec<DirFileProblem>,
}

/// The directory could not be listed.
#[derive(Debug, thiserror::Error)]
#[error("cannot read directory: {0}")]
pub struct CertDirError(#[from] std::io::Error);

/// The files of `dir` that a load reads (`.pem`, `.crt`, `.key`), sorted by name: what the
/// reload watch fingerprints, so a file added, changed or removed there is a change.
pub fn candidate_files(dir: &Path) -> Result<Vec<PathBuf>, CertDirError> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let visible = path.file_name().is_some_and(|name| !name.to_string_lossy().starts_with('.'));
        let known = matches!(extension(&path), Some(COMBINED_EXTENSION | CERT_EXTENSION | KEY_EXTENSION));
        // `metadata` follows symlinks: a Kubernetes Secret's files are links into `..data`.
        if visible && known && std::fs::metadata(&path).is_ok_and(|meta| meta.is_file()) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The certificates of `dir` and the files that do not make one.
pub fn scan(dir: &Path) -> Result<Listing, CertDirError> {
    let files = candidate_files(dir)?;
    Ok(pair_up(&files))
}

/// Pairs `NAME.crt` with `NAME.key`; a `.pem` is its own pair. `files` is sorted.
fn pair_up(files: &[PathBuf]) -> Listing {
    let mut listing = Listing::default();
    for file in files {
        let name = file_name(file);
        match extension(file) {
            Some(COMBINED_EXTENSION) => {
                let beside = pem_key_file(file);
                let key = if files.binary_search(&beside).is_ok() { beside } else { file.clone() };
                listing.entries.push(DirEntry { name, cert: file.clone(), key });
            }
            Some(CERT_EXTENSION) => {
                let key = file.with_extension(KEY_EXTENSION);
                if files.binary_search(&key).is_ok() {
                    listing.entries.push(DirEntry { name, cert: file.clone(), key });
                } else {
                    let message = format!("no {} next to it for its key", file_name(&key));
                    listing.problems.push(DirFileProblem { name, message });
                }
            }
            Some(KEY_EXTENSION)
                if files.binary_search(&file.with_extension(CERT_EXTENSION)).is_err()
                    && files.binary_search(&file.with_extension("")).is_err() =>
            {
                let message = format!("a key without {}", file_name(&file.with_extension(CERT_EXTENSION)));
                listing.problems.push(DirFileProblem { name, message });
            }
            _ => {}
        }
    }
    listing
}

/// HAProxy's key file for a `.pem` without its key: the same name plus `.key`.
fn pem_key_file(pem: &Path) -> PathBuf {
    let mut name = pem.as_os_str().to_owned();
    name.push(".");
    name.push(KEY_EXTENSION);
    PathBuf::from(name)
}

fn extension(path: &Path) -> Option<&str> {
    path.extension().and_then(OsStr::to_str)
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |name| name.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_files_stand_alone_and_crt_files_pair_with_their_key() {
        let dir = tempfile::tempdir().unwrap();
        for name in
            ["b.pem", "a.crt", "a.key", "c.pem", "c.pem.key", "lonely.crt", "orphan.key", "notes.txt", ".hidden.pem"]
        {
            std::fs::write(dir.path().join(name), "x").unwrap();
        }
        std::fs::create_dir(dir.path().join("sub.pem")).unwrap();
        let listing = scan(dir.path()).unwrap();
        let names: Vec<_> = listing.entries.iter().map(|entry| entry.name.as_str()).collect();
        assert_eq!(names, ["a.crt", "b.pem", "c.pem"], "sorted by file name");
        assert_eq!(listing.entries[0].key, dir.path().join("a.key"));
        assert_eq!(listing.entries[1].key, dir.path().join("b.pem"));
        assert_eq!(listing.entries[2].key, dir.path().join("c.pem.key"), "HAProxy's NAME.pem.key");
        let problems: Vec<_> = listing.problems.iter().map(|problem| problem.name.as_str()).collect();
        assert_eq!(problems, ["lonely.crt", "orphan.key"]);
        assert_eq!(candidate_files(dir.path()).unwrap().len(), 7, "no txt, hidden file or directory");
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(scan(&dir.path().join("nope")).is_err());
    }
}
