//! Reads an nginx config file into one directive tree, replacing each `include` with the
//! directives of the files it names.
//!
//! Like nginx, a relative include path is relative to the main config file's directory, and a `*`
//! or `?` in the file name is a glob (files in name order; no match is not an error). Includes
//! inside `http`, `events` and `mail` blocks are left alone: those blocks are ignored anyway
//! (`include mime.types;` need not exist here). Nesting is capped at [`MAX_INCLUDE_DEPTH`], which
//! also ends include cycles, and each file at [`MAX_FILE_BYTES`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::ast::{self, Directive};
use super::lexer;

/// Deepest chain of includes followed; real configs use one or two.
pub const MAX_INCLUDE_DEPTH: usize = 16;
pub use crate::import::source::MAX_FILE_BYTES;
use crate::import::source::{self, strip_line, ReadError};
/// Most files read in all; a glob over a big directory stops here.
pub const MAX_FILES: usize = 1024;

/// Why the config could not be read into a tree.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}: cannot read: {source}", file.display())]
    Read { file: PathBuf, source: std::io::Error },
    #[error("{}: larger than {MAX_FILE_BYTES} bytes", file.display())]
    TooLarge { file: PathBuf },
    #[error("{}: not UTF-8 text", file.display())]
    NotText { file: PathBuf },
    #[error("{}:{line}: {message}", file.display())]
    Syntax { file: PathBuf, line: usize, message: String },
    #[error("{}:{line}: {message}", file.display())]
    Include { file: PathBuf, line: usize, message: String },
}

/// Blocks whose contents the importer never looks at.
const IGNORED_BLOCKS: [&str; 3] = ["http", "events", "mail"];

/// Reads `path` and every file it includes.
pub fn load(path: &Path) -> Result<Vec<Directive>, LoadError> {
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut loader = Loader { base_dir, files_read: 0 };
    loader.file(path, 0)
}

struct Loader {
    base_dir: PathBuf,
    files_read: usize,
}

impl Loader {
    fn file(&mut self, path: &Path, depth: usize) -> Result<Vec<Directive>, LoadError> {
        self.files_read += 1;
        let text = read_text(path)?;
        let tokens = lexer::tokenize(&text).map_err(|error| LoadError::Syntax {
            file: path.to_path_buf(),
            line: error.line(),
            message: strip_line(&error.to_string()),
        })?;
        let tree = ast::parse(&tokens, Arc::new(path.to_path_buf())).map_err(|error| LoadError::Syntax {
            file: path.to_path_buf(),
            line: error.line(),
            message: strip_line(&error.to_string()),
        })?;
        self.expand(tree, depth)
    }

    fn expand(&mut self, tree: Vec<Directive>, depth: usize) -> Result<Vec<Directive>, LoadError> {
        let mut out = Vec::with_capacity(tree.len());
        for mut directive in tree {
            if directive.name == "include" && directive.block.is_none() {
                out.extend(self.include(&directive, depth)?);
                continue;
            }
            if !IGNORED_BLOCKS.contains(&directive.name.as_str()) {
                if let Some(children) = directive.block.take() {
                    directive.block = Some(self.expand(children, depth)?);
                }
            }
            out.push(directive);
        }
        Ok(out)
    }

    fn include(&mut self, directive: &Directive, depth: usize) -> Result<Vec<Directive>, LoadError> {
        let error =
            |message: String| LoadError::Include { file: directive.file.to_path_buf(), line: directive.line, message };
        let [pattern] = directive.args.as_slice() else {
            return Err(error("`include` takes one file name or glob".into()));
        };
        if depth + 1 > MAX_INCLUDE_DEPTH {
            return Err(error(format!("includes nested deeper than {MAX_INCLUDE_DEPTH} (an include cycle?)")));
        }
        let pattern = self.base_dir.join(pattern);
        let files = if is_glob(&pattern) {
            glob(&pattern).map_err(|e| error(format!("cannot list {}: {e}", pattern.display())))?
        } else {
            vec![pattern]
        };
        let mut out = Vec::new();
        for file in files {
            if self.files_read >= MAX_FILES {
                return Err(error(format!("more than {MAX_FILES} files included")));
            }
            let included = self.file(&file, depth + 1).map_err(|inner| match inner {
                LoadError::Read { file, source } => error(format!("cannot read included {}: {source}", file.display())),
                other => other,
            })?;
            out.extend(included);
        }
        Ok(out)
    }
}

fn read_text(path: &Path) -> Result<String, LoadError> {
    source::read_text(path).map_err(|error| match error {
        ReadError::Read { file, source } => LoadError::Read { file, source },
        ReadError::TooLarge { file } => LoadError::TooLarge { file },
        ReadError::NotText { file } => LoadError::NotText { file },
    })
}

fn is_glob(path: &Path) -> bool {
    path.file_name().is_some_and(|name| name.to_string_lossy().contains(['*', '?']))
}

/// The files in the pattern's directory whose names match its last component, in name order.
fn glob(pattern: &Path) -> std::io::Result<Vec<PathBuf>> {
    let dir = pattern.parent().unwrap_or(Path::new("."));
    let name_pattern = pattern.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && wildcard_match(&name_pattern, &name) && entry.path().is_file() {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// `*` matches any run of characters, `?` one character.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    // Iterative matching with one backtrack point: linear in practice, never recursive.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, n));
            p += 1;
        } else if let Some((star_p, star_n)) = star {
            p = star_p + 1;
            n = star_n + 1;
            star = Some((star_p, star_n + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_a_shell() {
        assert!(wildcard_match("*.conf", "a.conf"));
        assert!(wildcard_match("*.conf", ".conf"));
        assert!(!wildcard_match("*.conf", "a.conf.bak"));
        assert!(wildcard_match("a?c*", "abcdef"));
        assert!(!wildcard_match("a?c", "ac"));
    }

    #[test]
    fn includes_are_expanded_relative_to_the_main_file_and_globbed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("conf.d")).unwrap();
        std::fs::write(dir.path().join("conf.d/b.conf"), "b;\n").unwrap();
        std::fs::write(dir.path().join("conf.d/a.conf"), "a;\n").unwrap();
        std::fs::write(dir.path().join("conf.d/skip.txt"), "x;\n").unwrap();
        std::fs::write(
            dir.path().join("main.conf"),
            "stream { include conf.d/*.conf; }\nhttp { include mime.types; }\n",
        )
        .unwrap();
        let tree = load(&dir.path().join("main.conf")).unwrap();
        let names: Vec<&str> = tree[0].children().iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(*tree[0].children()[0].file, dir.path().join("conf.d/a.conf"));
    }

    #[test]
    fn include_cycles_and_missing_files_name_the_include_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("loop.conf"), "\ninclude loop.conf;\n").unwrap();
        let error = load(&dir.path().join("loop.conf")).unwrap_err();
        assert!(matches!(error, LoadError::Include { line: 2, .. }), "{error}");
        std::fs::write(dir.path().join("missing.conf"), "include nope.conf;\n").unwrap();
        let error = load(&dir.path().join("missing.conf")).unwrap_err().to_string();
        assert!(error.contains("missing.conf:1:") && error.contains("nope.conf"), "{error}");
    }
}
