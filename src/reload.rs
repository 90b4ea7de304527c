//! Reloading the routes file: parse → validate → build every TLS config → swap the whole route
//! table at once. Live connections keep the table they started with; a bad file changes nothing.
//!
//! Listener addresses and limits are read at start only (see the README).

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{self, ConfigErrors};
use crate::routes::RouteTable;

/// Loads `path` and, if it is valid, makes its routes the ones new connections use.
pub fn reload(path: &Path, routes: &ArcSwap<RouteTable>) -> Result<usize, ConfigErrors> {
    let config = config::load(path)?;
    let count = config.routes.routes().len();
    routes.store(Arc::clone(&config.routes));
    Ok(count)
}
