//! A bound on how deeply a routes file nests, checked in one pass before the YAML parser runs.
//!
//! The parser's cost grows with the square of the nesting depth (200,000 nested `[` took over a
//! minute), and the schema itself is about six levels deep. The scan over-counts rather than
//! under-counts (every flow bracket, every indentation step and every `- ` on a line is a level),
//! which is harmless with a limit this far above what a routes file needs.

/// Deepest nesting accepted: the schema needs about 6 levels; anchors and merge keys add a few.
pub const MAX_DEPTH: usize = 64;

/// Where the nesting first went past [`MAX_DEPTH`]: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooDeep {
    pub line: usize,
    pub column: usize,
}

/// Checks `source` against [`MAX_DEPTH`].
pub fn check(source: &str) -> Result<(), TooDeep> {
    let mut scan = Scan::default();
    for (index, line) in source.lines().enumerate() {
        scan.line(line).map_err(|column| TooDeep { line: index + 1, column })?;
    }
    Ok(())
}

#[derive(Default)]
struct Scan {
    /// Indentation of the enclosing block collections.
    indents: Vec<usize>,
    /// Open `[` / `{`, across lines.
    flow: usize,
    /// Inside a quoted scalar that continues on the next line.
    quote: Option<char>,
}

impl Scan {
    /// Scans one line; `Err(column)` where the depth went past the limit.
    fn line(&mut self, line: &str) -> Result<(), usize> {
        let content = line.trim_start_matches(' ');
        let indent = line.len() - content.len();
        let mut block = self.indents.len();
        if self.flow == 0 && self.quote.is_none() && !content.is_empty() && !content.starts_with('#') {
            while self.indents.last().is_some_and(|&top| top >= indent) {
                self.indents.pop();
            }
            self.indents.push(indent);
            block = self.indents.len();
        }
        let mut previous = ' ';
        for (column, c) in line.char_indices().skip(indent) {
            match (self.quote, c) {
                (Some('"'), '\\') if previous != '\\' => {}
                (Some(open), c) if c == open && !(open == '"' && previous == '\\') => self.quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') if previous == ' ' || "[{,:".contains(previous) => self.quote = Some(c),
                (None, '#') if previous == ' ' => return Ok(()),
                (None, '[' | '{') => self.flow += 1,
                (None, ']' | '}') => self.flow = self.flow.saturating_sub(1),
                (None, '-' | '?') if self.flow == 0 && previous == ' ' => block += 1,
                _ => {}
            }
            previous = if previous == '\\' && c == '\\' { ' ' } else { c };
            if block + self.flow > MAX_DEPTH {
                return Err(column + 1);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ordinary_routes_file_passes() {
        let text = "listen: [\"127.0.0.1:0\"]\nroutes:\n  - name: a\n    sni: [\"a.test\", '*.b']\n    mode: tcp\n    backend:\n      servers: [\"x:1\"]\n      health_check: {type: tcp, rise: 2}\n";
        assert_eq!(check(text), Ok(()));
    }

    #[test]
    fn deep_flow_nesting_is_refused_where_it_passes_the_limit() {
        let text = format!("listen: []\nx: {}", "[".repeat(100_000));
        assert_eq!(check(&text), Err(TooDeep { line: 2, column: 3 + MAX_DEPTH }));
    }

    #[test]
    fn deep_block_nesting_is_refused() {
        let text: String = (0..200).map(|depth| format!("{}k{depth}:\n", " ".repeat(depth))).collect();
        assert_eq!(check(&text).map_err(|e| e.line), Err(MAX_DEPTH + 1));
        let dashes = format!("x:\n{}1\n", "- ".repeat(500));
        assert!(check(&dashes).is_err());
    }

    #[test]
    fn brackets_inside_quotes_and_comments_do_not_count() {
        let text = format!("a: \"{}\"\nb: '{}' # {}\n", "[".repeat(100), "{".repeat(100), "[".repeat(100));
        assert_eq!(check(&text), Ok(()));
    }
}
