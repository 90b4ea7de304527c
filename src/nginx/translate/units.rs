//! nginx time and size units → the routes file's: durations like `90s`, sizes in bytes.

use super::super::ast::Directive;
use super::translator::Translator;

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
        return seconds.checked_mul(1000);
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let value: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit_ms, length) = if rest.starts_with("ms") {
            (1, 2)
        } else {
            let unit = match rest.chars().next()? {
                's' => 1_000,
                'm' => 60_000,
                'h' => 3_600_000,
                'd' => 86_400_000,
                'w' => 7 * 86_400_000,
                'M' => 30 * 86_400_000,
                'y' => 365 * 86_400_000,
                _ => return None,
            };
            (unit, 1)
        };
        total = total.checked_add(value.checked_mul(unit_ms)?)?;
        rest = &rest[length..];
    }
    Some(total)
}

/// Milliseconds in the largest unit of the schema that states them exactly.
fn format_duration(millis: u64) -> String {
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if millis > 0 && millis % size == 0 {
            return format!("{}{unit}", millis / size);
        }
    }
    format!("{millis}ms")
}

/// nginx sizes: `16384`, `16k`, `1m`.
pub(super) fn parse_size(text: &str) -> Option<usize> {
    let (digits, multiplier) = match text.chars().last()? {
        'k' | 'K' => (&text[..text.len() - 1], 1024),
        'm' | 'M' => (&text[..text.len() - 1], 1024 * 1024),
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
