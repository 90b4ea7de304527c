//! HAProxy times → milliseconds and the routes file's durations. HAProxy's unit is the
//! millisecond when none is written; it also takes `us`, `ms`, `s`, `m`, `h` and `d`.

use super::super::lexer::Line;
use super::translator::Translator;
use crate::import::duration::{format_duration, MS_PER_DAY, MS_PER_HOUR, MS_PER_MINUTE, MS_PER_SECOND};

const US_PER_MS: u64 = 1_000;

/// HAProxy's time units in milliseconds (`us` is handled apart: it rounds up).
const TIME_UNITS: [(&str, u64); 5] =
    [("ms", 1), ("s", MS_PER_SECOND), ("m", MS_PER_MINUTE), ("h", MS_PER_HOUR), ("d", MS_PER_DAY)];

/// `500`, `500ms`, `5s`, `1m`, `100us` → milliseconds.
pub(super) fn haproxy_millis(text: &str) -> Option<u64> {
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let value: u64 = text.get(..digits)?.parse().ok()?;
    let unit = text.get(digits..)?;
    if unit.is_empty() {
        return Some(value);
    }
    if unit == "us" {
        return Some(value.div_ceil(US_PER_MS));
    }
    let &(_, size) = TIME_UNITS.iter().find(|(name, _)| *name == unit)?;
    value.checked_mul(size)
}

impl Translator {
    /// The time in word `index` of `line`, in milliseconds, or an error naming the keyword.
    pub(super) fn millis(&mut self, line: &Line, index: usize) -> Option<u64> {
        match line.words.get(index).and_then(|text| haproxy_millis(text)) {
            Some(millis) => Some(millis),
            None => {
                self.error(line.number, format!("`{}` needs a time like 5s, 500ms or 1m", line.words.join(" ")));
                None
            }
        }
    }

    /// The same, as the routes file writes durations.
    pub(super) fn duration(&mut self, line: &Line, index: usize) -> Option<String> {
        self.millis(line, index).map(format_duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haproxy_times_default_to_milliseconds() {
        assert_eq!(haproxy_millis("5000"), Some(5000));
        assert_eq!(haproxy_millis("5s"), Some(5000));
        assert_eq!(haproxy_millis("1h").map(format_duration).as_deref(), Some("1h"));
        assert_eq!(haproxy_millis("1500us"), Some(2));
        assert_eq!(haproxy_millis("2d"), Some(2 * MS_PER_DAY));
        assert_eq!(haproxy_millis("5x"), None);
        assert_eq!(haproxy_millis("s"), None);
        assert_eq!(haproxy_millis("99999999999999999999d"), None);
    }
}
