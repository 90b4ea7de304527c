//! The findings of an import: what differs from the source config (warnings) and what cannot be
//! translated (errors), each with the file and line it comes from.

use std::fmt;
use std::path::PathBuf;

/// The line of a finding about the file as a whole (lines are 1-based, so it names none).
pub const WHOLE_FILE: usize = 0;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Translated, but not exactly: the message says what differs.
    Warning,
    /// Cannot be translated; no routes file is written.
    Error,
}

/// One finding, with where in which file it comes from (line 0: the file as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(f, "{}:{}: {severity}: {}", self.file.display(), self.line, self.message)
    }
}

/// Files in the order they were first reported, lines in order within each.
pub fn in_file_order(mut diagnostics: Vec<Diagnostic>) -> Vec<Diagnostic> {
    let mut files: Vec<PathBuf> = Vec::new();
    for diagnostic in &diagnostics {
        if !files.contains(&diagnostic.file) {
            files.push(diagnostic.file.clone());
        }
    }
    diagnostics.sort_by_key(|d| (files.iter().position(|f| *f == d.file), d.line));
    diagnostics
}
