//! The state of one translation: the findings so far, the file they are about, and the
//! directories relative paths resolve against (`crt-base`, `ca-base`, else the config's own).
//! Each step of the translation is a method on it, in the file named for the step.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::import::diagnostic::{Diagnostic, Severity, WHOLE_FILE};

pub(super) struct Translator {
    /// Every finding, in the order the steps made them.
    pub(super) diagnostics: Vec<Diagnostic>,
    file: PathBuf,
    base_dir: PathBuf,
    /// `global` `crt-base`: where relative `crt` paths are.
    pub(super) crt_base: Option<String>,
    /// `global` `ca-base`: where relative `ca-file` and `crl-file` paths are.
    pub(super) ca_base: Option<String>,
    /// Lines already reported as untranslated (a `defaults` line is read by several sections).
    reported: HashSet<usize>,
}

impl Translator {
    /// A translation of `main_file`, whose directory anchors relative paths.
    pub(super) fn new(main_file: &Path) -> Translator {
        let base_dir = match main_file.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let base_dir = std::fs::canonicalize(&base_dir).unwrap_or(base_dir);
        Translator {
            diagnostics: Vec::new(),
            file: main_file.to_path_buf(),
            base_dir,
            crt_base: None,
            ca_base: None,
            reported: HashSet::new(),
        }
    }

    fn push(&mut self, severity: Severity, line: usize, message: String) {
        self.diagnostics.push(Diagnostic { severity, file: self.file.clone(), line, message });
    }

    pub(super) fn warn(&mut self, line: usize, message: impl Into<String>) {
        self.push(Severity::Warning, line, message.into());
    }

    pub(super) fn error(&mut self, line: usize, message: impl Into<String>) {
        self.push(Severity::Error, line, message.into());
    }

    pub(super) fn error_in_file(&mut self, message: impl Into<String>) {
        self.push(Severity::Error, WHOLE_FILE, message.into());
    }

    /// `haproxy.cfg:12`, for comments in the routes file.
    pub(super) fn at(&self, line: usize) -> String {
        let name =
            self.file.file_name().map_or_else(|| self.file.display().to_string(), |n| n.to_string_lossy().into_owned());
        format!("{name}:{line}")
    }

    /// Whether `line` is reported for the first time (then it is marked reported).
    pub(super) fn first_report(&mut self, line: usize) -> bool {
        self.reported.insert(line)
    }

    /// A path as the routes file writes it: absolute, a relative one joined to `base` (itself
    /// relative to the config's directory) or to the config's directory.
    pub(super) fn path(&self, base: Option<&str>, path: &str) -> String {
        let path = Path::new(path);
        if path.is_absolute() {
            return path.display().to_string();
        }
        let base = match base {
            Some(base) => self.base_dir.join(base),
            None => self.base_dir.clone(),
        };
        base.join(path).display().to_string()
    }

    /// A `crt` path (relative to `crt-base`).
    pub(super) fn crt_path(&self, path: &str) -> String {
        self.path(self.crt_base.clone().as_deref(), path)
    }

    /// A `ca-file` / `crl-file` path (relative to `ca-base`).
    pub(super) fn ca_path(&self, path: &str) -> String {
        self.path(self.ca_base.clone().as_deref(), path)
    }

    /// A file named in the config (`-f`, `crt-list`), relative to the config's directory.
    pub(super) fn config_path(&self, path: &str) -> String {
        self.path(None, path)
    }
}
