//! Which directive applies to a server: nginx's inheritance from `stream {}` into `server {}`.

use super::super::ast::Directive;

/// A server's directives and those it inherits from `stream {}` (a name set in the server wins).
pub(super) struct Settings<'s, 'a> {
    pub(super) inherited: &'s [&'a Directive],
    pub(super) local: &'s [&'a Directive],
}

impl<'a> Settings<'_, 'a> {
    /// Every directive of that name the server has, else every one in `stream {}`.
    pub(super) fn all(&self, name: &str) -> Vec<&'a Directive> {
        let local = self.local_all(name);
        if !local.is_empty() {
            return local;
        }
        self.inherited.iter().copied().filter(|d| d.name == name).collect()
    }

    /// Every directive of that name written in the server itself.
    pub(super) fn local_all(&self, name: &str) -> Vec<&'a Directive> {
        self.local.iter().copied().filter(|d| d.name == name).collect()
    }

    /// The one that applies to a directive nginx takes once: the last of [`Settings::all`].
    pub(super) fn last(&self, name: &str) -> Option<&'a Directive> {
        self.all(name).pop()
    }
}
