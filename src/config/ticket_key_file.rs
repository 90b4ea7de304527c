//! `session_tickets:` — reading the shared ticket key file at load: its keys (parsed by
//! `proxy::session_tickets`), the lifetime, and a warning when others may read the file. Problems
//! point at `key_file` in the routes file; a key file that cannot be used fails the load, so a
//! reload keeps the old keys.

use std::path::Path;
use std::time::Duration;

use super::error::{ConfigError, Reporter};
use super::schema::RawSessionTickets;
use crate::proxy::session_tickets::TicketKeys;

/// `session_tickets.lifetime`'s default: a rotation a day keeps two keys in the file at most.
pub const DEFAULT_TICKET_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// TLS 1.3 caps a ticket's lifetime at seven days (RFC 8446 §4.6.1).
const MAX_TICKET_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// Permission bits for others: a key file should never be readable by every user.
#[cfg(unix)]
const OTHERS_BITS: u32 = 0o007;
/// Permission bits for the file's group: fine when that group is this process's own (a
/// Kubernetes Secret is mounted root-owned, readable through the pod's `fsGroup`), a warning
/// for any other group.
#[cfg(unix)]
const GROUP_BITS: u32 = 0o070;

/// The keys and lifetime of `raw`, with `key_file` resolved against `base_dir`; or the problems.
pub(super) fn load(
    raw: &RawSessionTickets,
    base_dir: &Path,
    report: &Reporter,
    errors: &mut Vec<ConfigError>,
) -> Option<(TicketKeys, Duration)> {
    let span = report.at.whole();
    let at_file = || report.at.find_value("key_file", &raw.key_file.display().to_string(), span);
    let lifetime = raw.lifetime.unwrap_or(DEFAULT_TICKET_LIFETIME);
    if lifetime.is_zero() || lifetime > MAX_TICKET_LIFETIME {
        let position = report.at.find_key("lifetime", span).unwrap_or_else(at_file);
        errors.push(report.error(position, "session_tickets.lifetime must be more than 0 and at most 7d".into()));
    }
    let path = base_dir.join(&raw.key_file);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) => {
            errors.push(report.error(at_file(), format!("{}: {error}", raw.key_file.display())));
            return None;
        }
    };
    warn_if_others_can_read(&path, "the session ticket key file");
    match TicketKeys::parse(&text) {
        Ok(keys) => Some((keys, lifetime)),
        Err(problem) => {
            errors.push(report.error(at_file(), format!("{}: {problem}", raw.key_file.display())));
            None
        }
    }
}

/// Warns when others than the file's owner and (this process's) group may read the secret `what`.
#[cfg(unix)]
pub(super) fn warn_if_others_can_read(path: &Path, what: &str) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Ok(metadata) = std::fs::metadata(path) else { return };
    let mode = metadata.permissions().mode();
    let own_group = {
        let gid = rustix::process::getegid().as_raw();
        let supplementary = rustix::process::getgroups().unwrap_or_default();
        metadata.gid() == gid || supplementary.iter().any(|group| group.as_raw() == metadata.gid())
    };
    if mode & OTHERS_BITS != 0 || (mode & GROUP_BITS != 0 && !own_group) {
        tracing::warn!(
            file = %path.display(),
            mode = format!("{:o}", mode & 0o777),
            "{what} can be read by others than its owner and group (chmod 600)"
        );
    }
}

#[cfg(not(unix))]
pub(super) fn warn_if_others_can_read(_path: &Path, _what: &str) {}
