//! What the config importers (`import-nginx`, `import-haproxy`) share: the routes-file model and
//! its writer ([`yaml`]), the findings with file:line ([`diagnostic`]), and durations as the
//! routes file writes them ([`duration`]).

pub mod diagnostic;
pub mod duration;
pub mod yaml;
