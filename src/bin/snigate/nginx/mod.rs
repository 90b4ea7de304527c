//! `snigate import-nginx`: reads an nginx `stream {}` config and writes the equivalent routes file.
//!
//! The nginx config language is parsed here, by hand: no maintained Rust crate parses it well
//! (the few that exist are unmaintained, HTTP-only, or panic on odd input), and the importer reads
//! files it did not write, so it must never panic or recurse without bound. The steps are one file
//! each: [`lexer`] (tokens with line numbers), [`ast`] (the directive tree), [`load`] (files and
//! `include`), [`translate`] (nginx semantics → routes) and [`yaml`] (the routes file text).

pub mod ast;
pub mod lexer;
pub mod load;
pub mod translate;

/// The routes-file writer is shared with the HAProxy importer.
pub use crate::import::yaml;

use std::path::Path;

// The library items the importer uses, named here only (the steps reach them through `super`):
// hostname patterns, to refuse map keys the routes file could not hold; and, in tests, the
// routes file's schema. The importer is part of the command, so it reaches the library as `snigate`.
#[cfg(test)]
use snigate::config::RawConfig;
use snigate::routes;

pub use translate::{Diagnostic, Options};

/// A translated config: the routes file text and the warnings about what differs from nginx.
#[derive(Debug)]
pub struct Imported {
    pub yaml: String,
    pub warnings: Vec<Diagnostic>,
}

/// Why no routes file could be written.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The files cannot be read or are not valid nginx syntax.
    #[error(transparent)]
    Load(#[from] load::LoadError),
    /// Parts of the config have no equivalent; every finding, errors and warnings, in file order.
    #[error("cannot translate")]
    Untranslatable(Vec<Diagnostic>),
}

/// Reads the nginx config at `path` (and its includes) and translates it.
pub fn import(path: &Path, options: &Options) -> Result<Imported, ImportError> {
    let tree = load::load(path)?;
    let (file, diagnostics) = translate::translate(&tree, path, options);
    match file {
        Some(file) => Ok(Imported { yaml: file.render(), warnings: diagnostics }),
        None => Err(ImportError::Untranslatable(diagnostics)),
    }
}
