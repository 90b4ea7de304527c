//! `snigate import-haproxy`: reads a TCP-mode HAProxy config and writes the equivalent routes file.
//!
//! The HAProxy config language is parsed here, by hand (no Rust crate parses it), and the importer
//! reads files it did not write, so it must never panic; HAProxy has no nesting, so nothing here
//! recurses. The steps are one file each: [`lexer`] (lines of words, HAProxy's quoting and
//! escapes), [`sections`] (lines → `global`, `defaults`, `frontend`, `backend`, `listen`),
//! [`translate`] (HAProxy semantics → routes, one file per concern); the routes file text is
//! written by the writer shared with `import-nginx` (`crate::import::yaml`).

pub mod lexer;
pub mod sections;
pub mod translate;

use std::path::{Path, PathBuf};

// The library items the importer uses, named here only (the steps reach them through `super`):
// hostname patterns, to refuse SNI patterns the routes file could not hold; and, in tests, the
// routes file's schema.
#[cfg(test)]
use snigate::config::RawConfig;
use snigate::routes;

pub use crate::import::diagnostic::Diagnostic;
use crate::import::source::{self, strip_line, ReadError};
pub use translate::Options;

/// A translated config: the routes file text and the warnings about what differs from HAProxy.
#[derive(Debug)]
pub struct Imported {
    pub yaml: String,
    pub warnings: Vec<Diagnostic>,
}

/// Why no routes file could be written.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file cannot be read, is too large or is not text.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Not text HAProxy reads the same way (quotes, escapes, variables).
    #[error("{}:{}: {}", file.display(), source.line(), strip_line(&source.to_string()))]
    Syntax { file: PathBuf, source: lexer::LexError },
    /// Parts of the config have no equivalent; every finding, errors and warnings, in file order.
    #[error("cannot translate")]
    Untranslatable(Vec<Diagnostic>),
}

/// Reads the HAProxy config at `path` and translates it.
pub fn import(path: &Path, options: &Options) -> Result<Imported, ImportError> {
    let text = source::read_text(path)?;
    import_text(&text, path, options)
}

/// Translates config text as if read from `path` (relative certificate paths resolve against its
/// directory, and certificates are read to learn their names).
pub fn import_text(text: &str, path: &Path, options: &Options) -> Result<Imported, ImportError> {
    let lines = lexer::tokenize(text).map_err(|source| ImportError::Syntax { file: path.to_path_buf(), source })?;
    let (sections, outside) = sections::split(lines);
    let (file, diagnostics) = translate::translate(&sections, &outside, path, options);
    match file {
        Some(file) => Ok(Imported { yaml: file.render(), warnings: diagnostics }),
        None => Err(ImportError::Untranslatable(diagnostics)),
    }
}
