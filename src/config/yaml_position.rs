//! Where things sit in a routes file's text, for problems the YAML parser cannot place.
//!
//! Built once per load: an index of line starts and, per route, the span of lines it occupies,
//! so that every lookup scans only the route's own lines. (Scanning the whole text per route made
//! loading grow with the square of the number of routes.)

use std::collections::{HashMap, VecDeque};
use std::ops::Range;

/// A 1-based line and column; `(0, 0)` when unknown.
pub type Position = (usize, usize);

/// The lines of one route: `start` holds its `name:`, `end` is the next route's first line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    fn lines(self) -> Range<usize> {
        self.start..self.end
    }
}

pub struct Locator<'a> {
    source: &'a str,
    /// Byte offset of each line's start; one more entry for the end of the text.
    line_starts: Vec<usize>,
}

impl<'a> Locator<'a> {
    pub fn new(source: &'a str) -> Locator<'a> {
        let mut line_starts = vec![0];
        line_starts.extend(source.match_indices('\n').map(|(at, _)| at + 1));
        if line_starts.last() != Some(&source.len()) {
            line_starts.push(source.len());
        }
        Locator { source, line_starts }
    }

    /// Lines in the text.
    pub fn line_count(&self) -> usize {
        self.line_starts.len() - 1
    }

    /// All lines, as a span.
    pub fn whole(&self) -> Span {
        Span { start: 1, end: self.line_count() + 1 }
    }

    /// Line `number` (1-based) without its comment and line break.
    fn line(&self, number: usize) -> &'a str {
        let (Some(&start), Some(&end)) = (self.line_starts.get(number - 1), self.line_starts.get(number)) else {
            return "";
        };
        let line = self.source[start..end].trim_end_matches(['\n', '\r']);
        match line.find(" #") {
            Some(at) => &line[..at],
            None if line.trim_start().starts_with('#') => "",
            None => line,
        }
    }

    /// `needle` as a whole word in `span`, else the span's first line.
    pub fn find(&self, needle: &str, span: Span) -> Position {
        self.find_from(needle, (span.start, 1), span.end).unwrap_or((span.start, 1))
    }

    /// `needle` as a whole word at or after `from` and before line `end`.
    fn find_from(&self, needle: &str, from: Position, end: usize) -> Option<Position> {
        if needle.is_empty() {
            return None;
        }
        let boundary = |c: Option<char>| c.is_none_or(|c| !(c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '*')));
        for number in from.0.max(1)..end.min(self.line_count() + 1) {
            let content = self.line(number);
            let mut start = if number == from.0 {
                content.char_indices().nth(from.1.saturating_sub(1)).map_or(content.len(), |(at, _)| at)
            } else {
                0
            };
            while let Some(offset) = content[start..].find(needle) {
                let at = start + offset;
                if boundary(content[..at].chars().next_back()) && boundary(content[at + needle.len()..].chars().next())
                {
                    return Some((number, content[..at].chars().count() + 1));
                }
                start = at + needle.len();
            }
        }
        None
    }

    /// `needle` as a whole word after `from` (past its first character) in `span`, else `from`.
    pub fn find_after(&self, needle: &str, from: Position, span: Span) -> Position {
        self.find_from(needle, (from.0, from.1 + 1), span.end).unwrap_or(from)
    }

    /// `key:` at the route's own level in `span` (indented like the route's first key, not
    /// inside a section such as `tls:`): the key's position. `None` for flow-style routes.
    pub fn find_route_key(&self, key: &str, span: Span) -> Option<Position> {
        let first = self.line(span.start);
        let indent = first.find(|c: char| c != ' ' && c != '-')?;
        let pattern = format!("{key}:");
        span.lines().find_map(|number| {
            let content = self.line(number);
            let (lead, rest) = (content.get(..indent)?, content.get(indent..)?);
            let at_route_level = lead.chars().all(|c| c == ' ' || c == '-') && rest.starts_with(&pattern);
            at_route_level.then(|| (number, lead.chars().count() + 1))
        })
    }

    /// The value of `key:` in `span` (the key itself when the value is on the next lines).
    pub fn find_key(&self, key: &str, span: Span) -> Option<Position> {
        let pattern = format!("{key}:");
        for number in span.lines() {
            let content = self.line(number);
            let mut start = 0;
            while let Some(offset) = content[start..].find(&pattern) {
                let at = start + offset;
                let before = content[..at].trim_end().chars().next_back();
                let after = &content[at + pattern.len()..];
                if before.is_none_or(|c| matches!(c, '-' | '{' | ',')) && (after.is_empty() || after.starts_with(' ')) {
                    let value = after.trim_start();
                    let column = if value.is_empty() { at } else { content.len() - value.len() };
                    return Some((number, content[..column].chars().count() + 1));
                }
                start = at + pattern.len();
            }
        }
        None
    }

    /// `value` under `key:` in `span`: searched from the key's line on; else the key; else the
    /// span's first line.
    pub fn find_value(&self, key: &str, value: &str, span: Span) -> Position {
        let Some(key_at) = self.find_key(key, span) else {
            return self.find(value, span);
        };
        self.find_from(value, key_at, span.end).unwrap_or(key_at)
    }

    /// The span of each route, in order, given the routes' names in order. A name used twice
    /// gets its second `name:` line the second time, so a duplicate is reported where it is.
    pub fn route_spans<'n>(&self, names: impl Iterator<Item = &'n str>) -> Vec<Span> {
        let mut lines_by_name: HashMap<&str, VecDeque<usize>> = HashMap::new();
        for number in 1..=self.line_count() {
            let trimmed = self.line(number).trim_start().trim_start_matches(['-', '{', ' ']);
            if let Some(rest) = trimmed.strip_prefix("name:") {
                let value = rest.split([',', '}']).next().unwrap_or(rest).trim().trim_matches(['"', '\'']);
                lines_by_name.entry(value).or_default().push_back(number);
            }
        }
        let mut previous = 1;
        let starts: Vec<usize> = names
            .map(|name| {
                previous = lines_by_name.get_mut(name).and_then(VecDeque::pop_front).unwrap_or(previous);
                previous
            })
            .collect();
        let mut sorted = starts.clone();
        sorted.sort_unstable();
        let last = self.line_count() + 1;
        starts
            .iter()
            .map(|&start| {
                let next = sorted.partition_point(|&line| line <= start);
                Span { start, end: sorted.get(next).copied().unwrap_or(last).max(start + 1) }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_route_name_gets_its_own_line() {
        let text = "routes:\n  - name: a\n    mode: tcp\n  - name: b\n  - name: a\n    mode: tcp\n";
        let locator = Locator::new(text);
        let spans = locator.route_spans(["a", "b", "a"].into_iter());
        assert_eq!(spans, vec![Span { start: 2, end: 4 }, Span { start: 4, end: 5 }, Span { start: 5, end: 7 }]);
    }

    #[test]
    fn a_key_is_found_in_its_own_span_only() {
        let text = "routes:\n  - name: a\n    tls: {key: k.pem, client_ca: k.pem}\n  - name: b\n    mode: tcp\n";
        let locator = Locator::new(text);
        let spans = locator.route_spans(["a", "b"].into_iter());
        assert_eq!(locator.find_value("client_ca", "k.pem", spans[0]), (3, 34));
        assert_eq!(locator.find_key("key", spans[0]), Some((3, 16)));
        assert_eq!(locator.find_key("mode", spans[0]), None);
    }
}
