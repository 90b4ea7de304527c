//! The state of one translation: the findings so far, and the directory relative paths resolve
//! against. Each step of the translation is a method on it, in the file named for the step.

use std::path::{Path, PathBuf};

use super::super::ast::Directive;
use super::diagnostic::{Diagnostic, Severity, WHOLE_FILE};

pub(super) struct Translator {
    /// Every finding, in the order the steps made them.
    pub(super) diagnostics: Vec<Diagnostic>,
    base_dir: PathBuf,
    main_file: PathBuf,
}

impl Translator {
    /// A translation of `main_file`, whose directory anchors relative certificate paths, like nginx.
    pub(super) fn new(main_file: &Path) -> Translator {
        let base_dir = match main_file.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let base_dir = std::fs::canonicalize(&base_dir).unwrap_or(base_dir);
        Translator { diagnostics: Vec::new(), base_dir, main_file: main_file.to_path_buf() }
    }

    fn push(&mut self, severity: Severity, directive: &Directive, message: String) {
        self.diagnostics.push(Diagnostic {
            severity,
            file: directive.file.to_path_buf(),
            line: directive.line,
            message,
        });
    }

    pub(super) fn warn(&mut self, directive: &Directive, message: impl Into<String>) {
        self.push(Severity::Warning, directive, message.into());
    }

    pub(super) fn error(&mut self, directive: &Directive, message: impl Into<String>) {
        self.push(Severity::Error, directive, message.into());
    }

    pub(super) fn error_in_file(&mut self, message: String) {
        self.diagnostics.push(Diagnostic {
            severity: Severity::Error,
            file: self.main_file.clone(),
            line: WHOLE_FILE,
            message,
        });
    }

    /// Relative certificate paths are relative to the main config's directory in nginx; the routes
    /// file may live elsewhere, so they are written absolute.
    pub(super) fn path(&self, path: &str) -> String {
        let path = Path::new(path);
        if path.is_absolute() {
            path.display().to_string()
        } else {
            self.base_dir.join(path).display().to_string()
        }
    }
}
