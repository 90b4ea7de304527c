//! Which line applies to a proxy section: HAProxy's inheritance from the `defaults` section it
//! follows (or names with `from`); a keyword set in the section itself wins.

use super::super::lexer::Line;
use super::super::sections::{Kind, Section};

/// A proxy's own lines and those of its `defaults`.
pub(super) struct Settings<'a> {
    pub(super) defaults: &'a [Line],
    pub(super) local: &'a [Line],
}

impl<'a> Settings<'a> {
    /// The last line the section or else its defaults has for which `matches` holds.
    pub(super) fn last_where(&self, matches: impl Fn(&Line) -> bool) -> Option<&'a Line> {
        self.local.iter().rev().find(|l| matches(l)).or_else(|| self.defaults.iter().rev().find(|l| matches(l)))
    }

    /// The line that sets `keyword`.
    pub(super) fn last(&self, keyword: &str) -> Option<&'a Line> {
        self.last_where(|line| line.keyword() == keyword)
    }

    /// `timeout NAME VALUE`.
    pub(super) fn timeout(&self, name: &str) -> Option<&'a Line> {
        self.last_where(|line| line.keyword() == "timeout" && line.args().first().is_some_and(|a| a == name))
    }

    /// Every `keyword` line of the defaults, then of the section (`default-server` accumulates).
    pub(super) fn all(&self, keyword: &str) -> Vec<&'a Line> {
        self.defaults.iter().chain(self.local).filter(|line| line.keyword() == keyword).collect()
    }
}

/// `option NAME` / `no option NAME` → `NAME`.
pub(super) fn option_name(line: &Line) -> Option<&str> {
    match line.words.as_slice() {
        [option, name, ..] if option == "option" => Some(name),
        [no, option, name, ..] if no == "no" && option == "option" => Some(name),
        _ => None,
    }
}

/// The `defaults` lines `section` takes: the section it names with `from`, else the last
/// `defaults` above it.
pub(super) fn defaults_of<'a>(sections: &'a [Section], section: &Section) -> &'a [Line] {
    let defaults = sections.iter().filter(|s| s.kind == Kind::Defaults);
    let found = match &section.from {
        Some(name) => defaults.rev().find(|s| s.name.as_deref() == Some(name)),
        None => defaults.rev().find(|s| s.line < section.line),
    };
    found.map_or(&[], |s| s.body.as_slice())
}
