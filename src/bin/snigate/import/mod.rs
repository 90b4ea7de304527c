//! What the config importers (`import-nginx`, `import-haproxy`) share: the routes-file model and
//! its writer ([`yaml`]), the findings with file:line ([`diagnostic`]), durations as the
//! routes file writes them ([`duration`]), and reading the file to import ([`source`]).

pub mod diagnostic;
pub mod duration;
pub mod source;
pub mod yaml;
