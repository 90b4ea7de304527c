//! Config problems with their file:line:col positions, and turning positions (from the YAML
//! parser or found by the [`Locator`]) into them.

use std::fmt;
use std::path::{Path, PathBuf};

use super::yaml_position::{Locator, Position};

/// One problem in a config file, with the position it was found at (1-based; 0 = unknown).
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            // No position (the file cannot be read, say): `file:0:0:` would point nowhere.
            return write!(f, "{}: {}", self.file.display(), self.message);
        }
        write!(f, "{}:{}:{}: {}", self.file.display(), self.line, self.column, self.message)
    }
}

/// Every problem found in one file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// Turns positions into errors for one file.
pub(super) struct Reporter<'a> {
    pub(super) file: &'a Path,
    pub(super) at: Locator<'a>,
}

impl Reporter<'_> {
    pub(super) fn error(&self, position: Position, message: String) -> ConfigError {
        ConfigError { file: self.file.to_path_buf(), line: position.0, column: position.1, message }
    }
}

pub(super) fn yaml_error(error: yaml_serde::Error, report: &Reporter) -> ConfigError {
    let (line, column) = error.location().map_or((0, 0), |l| (l.line(), l.column()));
    let message = error.to_string();
    // The position goes in front, as for every other problem.
    let message = match message.rfind(" at line ") {
        Some(at) if line > 0 => message[..at].to_string(),
        _ => message,
    };
    report.error((line, column), message)
}
