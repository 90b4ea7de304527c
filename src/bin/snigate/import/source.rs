//! Reading a config file to import: bounded in size, text only; and the lexer messages' `line N:`
//! prefix, which the importers replace with `file:line:`.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest config file read; real ones are a few KiB.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Why a config file could not be read as text.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{}: cannot read: {source}", file.display())]
    Read { file: PathBuf, source: std::io::Error },
    #[error("{}: larger than {MAX_FILE_BYTES} bytes", file.display())]
    TooLarge { file: PathBuf },
    #[error("{}: not UTF-8 text", file.display())]
    NotText { file: PathBuf },
}

/// The text of the file at `path`, at most [`MAX_FILE_BYTES`].
pub fn read_text(path: &Path) -> Result<String, ReadError> {
    let read_error = |source| ReadError::Read { file: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(read_error)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(ReadError::TooLarge { file: path.to_path_buf() });
    }
    String::from_utf8(bytes).map_err(|_| ReadError::NotText { file: path.to_path_buf() })
}

/// A lexer message without its `line N: ` prefix (the importer names the file and line itself).
pub fn strip_line(message: &str) -> String {
    match message.split_once(": ") {
        Some((prefix, rest)) if prefix.starts_with("line ") => rest.to_string(),
        _ => message.to_string(),
    }
}
