//! nginx time and size units → the routes file's: durations like `90s`, sizes in bytes.

use super::super::ast::Directive;
use super::translator::Translator;
use crate::import::duration::{format_duration, MS_PER_DAY, MS_PER_HOUR, MS_PER_MINUTE, MS_PER_SECOND};

/// nginx's one-letter time units in milliseconds; a month is 30 days and a year 365, as nginx
/// counts them (`ms` is read before `m`).
const NGINX_TIME_UNITS: [(char, u64); 7] = [
    ('s', MS_PER_SECOND),
    ('m', MS_PER_MINUTE),
    ('h', MS_PER_HOUR),
    ('d', MS_PER_DAY),
    ('w', 7 * MS_PER_DAY),
    ('M', 30 * MS_PER_DAY),
    ('y', 365 * MS_PER_DAY),
];

/// nginx's size suffixes are binary: `16k` is 16384 bytes.
const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

impl Translator {
    /// A directive's time as the schema writes it, or an error naming the directive.
    pub(super) fn duration(&mut self, directive: &Directive) -> Option<String> {
        match directive.args.first().and_then(|text| nginx_duration_ms(text)) {
            Some(millis) => Some(format_duration(millis)),
            None => {
                self.error(directive, format!("`{}` needs a time like 3s, 500ms or 1m", directive.name));
                None
            }
        }
    }
}

/// nginx times: `500ms`, `3s`, `1m30s`, `60` (seconds); units ms s m h d w M y.
fn nginx_duration_ms(text: &str) -> Option<u64> {
    if let Ok(seconds) = text.parse::<u64>() {
        return seconds.checked_mul(MS_PER_SECOND);
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let value: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit_ms, length) = if rest.starts_with("ms") {
            (1, "ms".len())
        } else {
            let unit = rest.chars().next()?;
            let &(_, unit_ms) = NGINX_TIME_UNITS.iter().find(|(name, _)| *name == unit)?;
            (unit_ms, unit.len_utf8())
        };
        total = total.checked_add(value.checked_mul(unit_ms)?)?;
        rest = &rest[length..];
    }
    Some(total)
}

/// nginx sizes: `16384`, `16k`, `1m`.
pub(super) fn parse_size(text: &str) -> Option<usize> {
    let suffix = text.chars().last()?;
    let (digits, multiplier) = match suffix {
        'k' | 'K' => (&text[..text.len() - suffix.len_utf8()], KIB),
        'm' | 'M' => (&text[..text.len() - suffix.len_utf8()], MIB),
        _ => (text, 1),
    };
    digits.parse::<usize>().ok()?.checked_mul(multiplier)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_times_become_schema_durations() {
        assert_eq!(nginx_duration_ms("3s").map(format_duration).as_deref(), Some("3s"));
        assert_eq!(nginx_duration_ms("60").map(format_duration).as_deref(), Some("1m"));
        assert_eq!(nginx_duration_ms("1m30s").map(format_duration).as_deref(), Some("90s"));
        assert_eq!(nginx_duration_ms("250ms").map(format_duration).as_deref(), Some("250ms"));
        assert_eq!(nginx_duration_ms("10m").map(format_duration).as_deref(), Some("10m"));
        assert_eq!(nginx_duration_ms("3x"), None);
        assert_eq!(nginx_duration_ms("99999999999999999999d"), None);
    }
}
